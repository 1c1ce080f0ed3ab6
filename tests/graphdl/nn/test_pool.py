"""Pooling layers against NumPy sliding windows written here (and torch.nn when importable)."""

import numpy as np
import pytest

import graphdl as gd
from graphdl import nn

RNG = np.random.default_rng(13)


def _ref(inputs, outputs, *arrays):
    return gd.function(inputs, outputs, backend="reference")(*arrays)


def np_pool(x, kernel, stride, padding, reduce, fill):
    """reduce over each window of the padded input (padding counted, as count_include_pad)."""
    d = len(kernel)
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding], constant_values=fill)
    view = np.lib.stride_tricks.sliding_window_view(xp, kernel, axis=tuple(range(2, 2 + d)))
    view = view[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in stride)]
    return reduce(view, axis=tuple(range(2 + d, 2 + 2 * d)))


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_layers_match_sliding_windows(kind, d):
    spatial = (7, 6, 5)[:d]
    cls = getattr(nn, f"{kind.capitalize()}Pool{d}D")
    kernel, stride, padding = (3, 2, 2)[:d], (2, 1, 2)[:d], (1, 0, 1)[:d]
    layer = cls(kernel, stride=stride, padding=padding)
    xs = RNG.standard_normal((2, 3) + spatial).astype(np.float32)
    x = gd.input("x", (None, 3) + spatial)
    reduce, fill = (np.max, -np.inf) if kind == "max" else (np.mean, 0.0)
    want = np_pool(xs, kernel, stride, padding, reduce, fill)
    np.testing.assert_allclose(_ref([x], layer(x), xs), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(_ref([x], layer(x, training=True), xs),
                                  _ref([x], layer(x), xs))
    assert layer.params() == [] and layer.updates() == []


def test_stride_defaults_to_the_kernel():
    xs = RNG.standard_normal((1, 2, 8, 8)).astype(np.float32)
    x = gd.input("x", (None, 2, 8, 8))
    want = xs.reshape(1, 2, 4, 2, 4, 2).max(axis=(3, 5))
    np.testing.assert_array_equal(_ref([x], nn.MaxPool2D(2)(x), xs), want)


def test_global_pools_reduce_every_spatial_axis():
    xs = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    x = gd.input("x", (None, 3, 4, 5))
    np.testing.assert_allclose(_ref([x], nn.GlobalAvgPool()(x), xs), xs.mean(axis=(2, 3)),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(_ref([x], nn.GlobalMaxPool()(x), xs), xs.max(axis=(2, 3)))
    assert nn.GlobalAvgPool(keepdims=True)(x).shape[1:] == (3, 1, 1)


def test_pools_match_torch_with_ceil_mode_and_dilation():
    torch = pytest.importorskip("torch")
    xs = RNG.standard_normal((2, 3, 9, 8)).astype(np.float32)
    x = gd.input("x", (None, 3, 9, 8))
    pairs = [(nn.MaxPool2D(3, 2, 1, dilation=2, ceil_mode=True),
              torch.nn.MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True)),
             (nn.AvgPool2D(3, 2, 1, ceil_mode=True, count_include_pad=False),
              torch.nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False))]
    for ours, theirs in pairs:
        want = theirs(torch.tensor(xs)).numpy()
        np.testing.assert_allclose(_ref([x], ours(x), xs), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer", [nn.MaxPool2D(2, 1, 1), nn.AvgPool1D(3, 2, 1),
                                   nn.GlobalAvgPool(), nn.GlobalMaxPool()],
                         ids=["max_pool2d", "avg_pool1d", "global_avg", "global_max"])
def test_gradients_match_finite_differences(layer):
    shape = (2, 2, 5) if isinstance(layer, nn.AvgPool1D) else (2, 2, 3, 3)
    x = gd.input("x", shape, "float64")
    y = layer(x)
    loss = (y * gd.constant(RNG.standard_normal((2, 2) + tuple(y.shape[2:])))).sum()
    xs = RNG.permutation(np.arange(np.prod(shape), dtype=np.float64)).reshape(shape) / 10
    report = gd.check_grad(loss, [x], feed={x: xs})              # distinct values: no ties
    assert report, str(report)
