"""Convolution layers against NumPy loops written here (always) and torch.nn (when importable):
Conv1D-3D, ConvTranspose1D-3D, DepthwiseSeparableConv2D, LocallyConnected1D/2D; PyTorch's
layouts and init; gradients by finite differences (float64)."""

import math

import numpy as np
import pytest

import graphdl as gd
from graphdl import nn

RNG = np.random.default_rng(11)


def _ref(inputs, outputs, *arrays):
    return gd.function(inputs, outputs, backend="reference")(*arrays)


def _tuple(v, d):
    return (v,) * d if isinstance(v, int) else tuple(v)


# -- independent references ---------------------------------------------------------------------
def np_conv(x, w, b, stride, padding, dilation, groups):
    """Direct convolution: for each output channel and kernel offset, a strided slice."""
    d = w.ndim - 2
    stride, padding, dilation = (_tuple(v, d) for v in (stride, padding, dilation))
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding])
    c_group, kernel = w.shape[1], w.shape[2:]
    o_group = w.shape[0] // groups
    out = [(xp.shape[2 + i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1
           for i in range(d)]
    y = np.zeros((x.shape[0], w.shape[0], *out))
    for o in range(w.shape[0]):
        g = o // o_group
        for k in np.ndindex(*kernel):
            at = tuple(slice(k[i] * dilation[i], k[i] * dilation[i] + stride[i] * (out[i] - 1)
                             + 1, stride[i]) for i in range(d))
            patch = xp[(slice(None), slice(g * c_group, (g + 1) * c_group)) + at]
            y[:, o] += np.tensordot(w[(o, slice(None)) + k], patch, axes=([0], [1]))
    return y if b is None else y + b.reshape((-1,) + (1,) * d)


def np_conv_transpose(x, w, b, stride, padding, output_padding, dilation, groups):
    """Scatter every input element times the kernel into the output, then crop the padding."""
    d = w.ndim - 2
    stride, padding, output_padding, dilation = (_tuple(v, d) for v in (
        stride, padding, output_padding, dilation))
    c_group, o_group, kernel = x.shape[1] // groups, w.shape[1], w.shape[2:]
    spatial = x.shape[2:]
    full = [(spatial[i] - 1) * stride[i] + dilation[i] * (kernel[i] - 1) + 1 for i in range(d)]
    y = np.zeros((x.shape[0], o_group * groups, *[f + op for f, op in zip(full,
                                                                          output_padding)]))
    for c in range(x.shape[1]):
        g = c // c_group
        for o in range(o_group):
            for k in np.ndindex(*kernel):
                at = tuple(slice(k[i] * dilation[i], k[i] * dilation[i] + stride[i] *
                                 (spatial[i] - 1) + 1, stride[i]) for i in range(d))
                y[(slice(None), g * o_group + o) + at] += w[(c, o) + k] * x[:, c]
    crop = tuple(slice(p, f + op - p) for p, f, op in zip(padding, full, output_padding))
    y = y[(slice(None), slice(None)) + crop]
    return y if b is None else y + b.reshape((-1,) + (1,) * d)


def np_locally_connected(x, w, b, stride, padding, dilation):
    """Per output position, its own (out, in, *K) weights applied to its window."""
    d = x.ndim - 2
    out_size, kernel = w.shape[:d], w.shape[d + 2:]
    xp = np.pad(x, [(0, 0), (0, 0)] + [(padding, padding)] * d)
    y = np.zeros((x.shape[0], w.shape[d], *out_size))
    for pos in np.ndindex(*out_size):
        at = tuple(slice(pos[i] * stride, pos[i] * stride + dilation * (kernel[i] - 1) + 1,
                         dilation) for i in range(d))
        patch = xp[(slice(None), slice(None)) + at]                   # (N, C, *K)
        axes = list(range(1, d + 2))
        y[(slice(None), slice(None)) + pos] = np.tensordot(patch, w[pos], axes=(axes, axes))
    return y if b is None else y + b


# -- forward -------------------------------------------------------------------------------------
CONV_CASES = [
    (nn.Conv1D, {"in_channels": 4, "out_channels": 6, "kernel_size": 3, "stride": 2,
                 "padding": 1}, (9,)),
    (nn.Conv1D, {"in_channels": 4, "out_channels": 4, "kernel_size": 3, "dilation": 2,
                 "groups": 4}, (9,)),
    (nn.Conv2D, {"in_channels": 3, "out_channels": 4, "kernel_size": 3, "padding": 1}, (6, 5)),
    (nn.Conv2D, {"in_channels": 4, "out_channels": 6, "kernel_size": (3, 2), "stride": (2, 1),
                 "dilation": (1, 2), "groups": 2, "bias": False}, (7, 6)),
    (nn.Conv2D, {"in_channels": 3, "out_channels": 5, "kernel_size": 1}, (4, 4)),     # 1x1
    (nn.Conv3D, {"in_channels": 2, "out_channels": 3, "kernel_size": 2, "stride": 1,
                 "padding": 1}, (3, 4, 3)),
]


@pytest.mark.parametrize("cls, kwargs, spatial", CONV_CASES,
                         ids=lambda v: v.__name__ if isinstance(v, type) else None)
def test_conv_layers_match_direct_convolution(cls, kwargs, spatial):
    layer = cls(**kwargs)
    d = len(spatial)
    k = _tuple(kwargs["kernel_size"], d)
    groups = kwargs.get("groups", 1)
    assert layer.weight.shape == (kwargs["out_channels"], kwargs["in_channels"] // groups) + k
    xs = RNG.standard_normal((2, kwargs["in_channels"]) + spatial).astype(np.float32)
    x = gd.input("x", (None, kwargs["in_channels"]) + spatial)
    bias = None if layer.bias is None else layer.bias.value
    want = np_conv(xs, layer.weight.value, bias, kwargs.get("stride", 1),
                   kwargs.get("padding", 0), kwargs.get("dilation", 1), groups)
    np.testing.assert_allclose(_ref([x], layer(x), xs), want, rtol=1e-4, atol=1e-5)


def test_conv_accepts_same_padding():
    layer = nn.Conv2D(2, 3, 4, padding="same")
    assert layer(gd.input("x", (None, 2, 7, 5))).shape[1:] == (3, 7, 5)


TRANSPOSE_CASES = [
    (nn.ConvTranspose1D, {"in_channels": 4, "out_channels": 3, "kernel_size": 3, "stride": 2,
                          "padding": 1, "output_padding": 1}, (5,)),
    (nn.ConvTranspose2D, {"in_channels": 4, "out_channels": 6, "kernel_size": (2, 3),
                          "stride": 2, "groups": 2, "dilation": (1, 2)}, (3, 4)),
    (nn.ConvTranspose3D, {"in_channels": 2, "out_channels": 2, "kernel_size": 2, "stride": 2,
                          "bias": False}, (2, 2, 3)),
]


@pytest.mark.parametrize("cls, kwargs, spatial", TRANSPOSE_CASES,
                         ids=lambda v: v.__name__ if isinstance(v, type) else None)
def test_conv_transpose_layers_match_scattering(cls, kwargs, spatial):
    layer = cls(**kwargs)
    groups = kwargs.get("groups", 1)
    assert layer.weight.shape[:2] == (kwargs["in_channels"], kwargs["out_channels"] // groups)
    xs = RNG.standard_normal((2, kwargs["in_channels"]) + spatial).astype(np.float32)
    x = gd.input("x", (None, kwargs["in_channels"]) + spatial)
    bias = None if layer.bias is None else layer.bias.value
    want = np_conv_transpose(xs, layer.weight.value, bias, kwargs.get("stride", 1),
                             kwargs.get("padding", 0), kwargs.get("output_padding", 0),
                             kwargs.get("dilation", 1), groups)
    np.testing.assert_allclose(_ref([x], layer(x), xs), want, rtol=1e-4, atol=1e-5)


def test_depthwise_separable_is_a_depthwise_then_a_pointwise_convolution():
    layer = nn.DepthwiseSeparableConv2D(3, 5, 3, padding=1, depth_multiplier=2)
    dw, pw = layer.depthwise, layer.pointwise
    assert dw.weight.shape == (6, 1, 3, 3) and dw.bias is None and pw.weight.shape == (5, 6, 1, 1)
    xs = RNG.standard_normal((2, 3, 5, 5)).astype(np.float32)
    x = gd.input("x", (None, 3, 5, 5))
    mid = np_conv(xs, dw.weight.value, None, 1, 1, 1, groups=3)
    want = np_conv(mid, pw.weight.value, pw.bias.value, 1, 0, 1, 1)
    np.testing.assert_allclose(_ref([x], layer(x), xs), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls, spatial, kwargs", [
    (nn.LocallyConnected1D, (7,), {"kernel_size": 3, "stride": 2, "padding": 1}),
    (nn.LocallyConnected2D, (5, 6), {"kernel_size": 2, "dilation": 2}),
], ids=["1d", "2d"])
def test_locally_connected_uses_one_weight_per_output_position(cls, spatial, kwargs):
    layer = cls(3, 4, input_size=spatial, **kwargs)
    out = layer.output_size
    assert layer.weight.shape == out + (4, 3) + _tuple(kwargs["kernel_size"], len(spatial))
    assert layer.bias.shape == (4,) + out
    xs = RNG.standard_normal((2, 3) + spatial).astype(np.float32)
    x = gd.input("x", (None, 3) + spatial)
    want = np_locally_connected(xs, layer.weight.value, layer.bias.value,
                                kwargs.get("stride", 1), kwargs.get("padding", 0),
                                kwargs.get("dilation", 1))
    np.testing.assert_allclose(_ref([x], layer(x), xs), want, rtol=1e-4, atol=1e-5)
    with pytest.raises(gd.ShapeError):
        layer(gd.input("z", (None, 3) + tuple(s + 1 for s in spatial)))


def test_default_init_bounds_follow_pytorch():
    gd.seed(2)
    conv = nn.Conv2D(8, 64, 3, groups=2)
    fan_in = 4 * 9
    for p in (conv.weight, conv.bias):
        assert np.abs(p.value).max() <= 1 / math.sqrt(fan_in)
        assert np.abs(p.value).max() > 0.9 / math.sqrt(fan_in)
    up = nn.ConvTranspose2D(8, 64, 3)                          # torch: fan_in = 64 * 9
    assert np.abs(up.weight.value).max() <= 1 / math.sqrt(64 * 9)
    with pytest.raises(ValueError):
        nn.Conv2D(6, 4, 3, groups=4)


def test_conv_layers_match_torch_with_copied_weights():
    torch = pytest.importorskip("torch")
    xs = RNG.standard_normal((2, 4, 7, 6)).astype(np.float32)
    x = gd.input("x", (None, 4, 7, 6))
    pairs = [(nn.Conv2D(4, 6, 3, stride=2, padding=1, groups=2),
              torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)),
             (nn.ConvTranspose2D(4, 2, 3, stride=2, padding=1, output_padding=1),
              torch.nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1))]
    for ours, theirs in pairs:
        with torch.no_grad():
            theirs.weight.copy_(torch.tensor(ours.weight.value))
            theirs.bias.copy_(torch.tensor(ours.bias.value))
        want = theirs(torch.tensor(xs)).detach().numpy()
        np.testing.assert_allclose(_ref([x], ours(x), xs), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("make, shape", [
    (lambda: nn.Conv2D(2, 2, 2, stride=2, padding=1, groups=2, dtype="float64"), (2, 2, 3, 3)),
    (lambda: nn.ConvTranspose1D(2, 3, 2, stride=2, dtype="float64"), (2, 2, 3)),
    (lambda: nn.LocallyConnected1D(2, 2, 4, 2, dtype="float64"), (2, 2, 4)),
    (lambda: nn.DepthwiseSeparableConv2D(2, 2, 2, dtype="float64"), (1, 2, 3, 3)),
], ids=["conv2d", "conv_transpose1d", "locally_connected1d", "separable"])
def test_gradients_match_finite_differences(make, shape):
    layer = make()
    x = gd.input("x", shape, "float64")
    loss = (gd.tanh(layer(x)) ** 2).sum()
    report = gd.check_grad(loss, layer.params() + [x], feed={x: RNG.standard_normal(shape)})
    assert report, str(report)
