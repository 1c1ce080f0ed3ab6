"""Pooling: max/avg 1-3D and global pooling against direct loops, torch and finite differences."""

import itertools

import numpy as np
import pytest

import graphdl as gd

RNG = np.random.default_rng(5)

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # torch is optional: the NumPy references still run
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


def _tup(v, d):
    return (v,) * d if isinstance(v, int) else tuple(v)


def _out_size(s, k, st, p, dl, ceil_mode):
    # the size rule written out as PyTorch's documentation states it
    num = s + 2 * p - dl * (k - 1) - 1
    out = (-(-num // st) if ceil_mode else num // st) + 1
    if ceil_mode and (out - 1) * st >= s + p:
        out -= 1
    return out


def np_pool(x, kind, kernel, stride=None, padding=0, dilation=1, ceil_mode=False,
            count_include_pad=True):
    """Direct loops: each output element reads its window, clipped to the input."""
    d = x.ndim - 2
    kernel = _tup(kernel, d)
    stride = kernel if stride is None else _tup(stride, d)
    padding, dilation = _tup(padding, d), _tup(dilation, d)
    spatial = x.shape[2:]
    out = [_out_size(spatial[i], kernel[i], stride[i], padding[i], dilation[i], ceil_mode)
           for i in range(d)]
    y = np.zeros(x.shape[:2] + tuple(out))
    for o in itertools.product(*(range(n) for n in out)):
        start = [o[i] * stride[i] - padding[i] for i in range(d)]
        taps = [k for k in itertools.product(*(range(n) for n in kernel))
                if all(0 <= start[i] + k[i] * dilation[i] < spatial[i] for i in range(d))]
        values = np.stack([x[(slice(None), slice(None)) + tuple(
            start[i] + k[i] * dilation[i] for i in range(d))] for k in taps], axis=-1)
        if kind == "max":
            y[(slice(None), slice(None)) + o] = values.max(axis=-1)
            continue
        if count_include_pad:   # the window clipped to the padded extent, as PyTorch
            count = np.prod([min(start[i] + kernel[i], spatial[i] + padding[i]) - start[i]
                             for i in range(d)])
        else:
            count = len(taps)
        y[(slice(None), slice(None)) + o] = values.sum(axis=-1) / count
    return y


MAX_CASES = [
    ((2, 3, 9), {"kernel_size": 3}),
    ((2, 3, 5), {"kernel_size": 2}),                      # the last element is never read
    ((2, 3, 10), {"kernel_size": 3, "stride": 2, "padding": 1, "dilation": 2, "ceil_mode": True}),
    ((2, 2, 7, 6), {"kernel_size": 2}),
    ((2, 2, 7, 6), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    ((1, 2, 8, 7), {"kernel_size": (3, 2), "stride": (2, 3), "padding": (1, 1), "dilation": (1, 2),
                        "ceil_mode": True}),
    ((1, 2, 5, 6, 7), {"kernel_size": (2, 3, 2), "stride": (1, 2, 2), "padding": (1, 1, 0)}),
]
AVG_CASES = [
    ((2, 3, 9), {"kernel_size": 3}),
    ((2, 3, 5), {"kernel_size": 2, "padding": 1, "stride": 3}),
    ((2, 3, 10), {"kernel_size": 4, "stride": 3, "padding": 2, "ceil_mode": True,
                      "count_include_pad": False}),
    ((2, 2, 7, 6), {"kernel_size": 2}),
    ((2, 2, 7, 6), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    ((2, 2, 7, 6), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True,
                        "count_include_pad": False}),
    ((1, 2, 8, 7), {"kernel_size": (3, 2), "stride": (2, 3), "padding": (1, 1)}),
    ((1, 2, 5, 6, 7), {"kernel_size": (2, 3, 2), "stride": (1, 2, 2), "padding": (1, 1, 0),
                           "count_include_pad": False}),
]


def _pool_fn(kind, d):
    return getattr(gd, f"{kind}_pool{d}d")


@pytest.mark.parametrize("kind, shape, kw", [("max", *c) for c in MAX_CASES]
                         + [("avg", *c) for c in AVG_CASES], ids=str)
def test_pooling_matches_direct_loops(kind, shape, kw):
    x = gd.input("x", (None,) + shape[1:], "float64")
    xv = RNG.standard_normal(shape)
    got = gd.function([x], _pool_fn(kind, len(shape) - 2)(x, **kw), backend="reference")(xv)
    want = np_pool(xv, kind, **{k if k != "kernel_size" else "kernel": v
                                for k, v in kw.items()})
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@needs_torch
@pytest.mark.parametrize("kind, shape, kw", [("max", *c) for c in MAX_CASES]
                         + [("avg", *c) for c in AVG_CASES], ids=str)
def test_pooling_forward_and_gradient_match_torch(kind, shape, kw):
    d = len(shape) - 2
    xv = RNG.standard_normal(shape)
    xt = torch.tensor(xv, requires_grad=True)
    yt = getattr(F, f"{kind}_pool{d}d")(xt, **kw)
    weights = RNG.standard_normal(tuple(yt.shape))
    (yt * torch.tensor(weights)).sum().backward()
    x = gd.input("x", shape, "float64")
    y = _pool_fn(kind, d)(x, **kw)
    got, g = gd.function([x], [y, gd.grad((y * gd.constant(weights)).sum(), x)],
                         backend="reference")(xv)
    np.testing.assert_allclose(got, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-12, atol=1e-12)


@needs_torch
def test_avg_pool_divisor_override_matches_torch():
    xv = RNG.standard_normal((1, 2, 6, 5))
    x = gd.input("x", xv.shape, "float64")
    got = gd.function([x], gd.avg_pool2d(x, 3, 2, 1, divisor_override=4),
                      backend="reference")(xv)
    want = F.avg_pool2d(torch.tensor(xv), 3, 2, 1, divisor_override=4).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("kind, shape, kw", [
    ("max", (2, 2, 6, 5), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    ("max", (2, 3, 7), {"kernel_size": 2, "dilation": 2}),
    ("avg", (2, 2, 6, 5), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True,
                               "count_include_pad": False}),
], ids=str)
def test_pooling_gradients_match_finite_differences(kind, shape, kw):
    x = gd.input("x", shape, "float64")
    y = _pool_fn(kind, len(shape) - 2)(x, **kw)
    loss = (y * gd.constant(RNG.standard_normal(y.shape))).sum()
    report = gd.check_grad(loss, [x], feed={x: RNG.standard_normal(shape)}, rtol=1e-6)
    assert report, str(report)


def test_global_pooling():
    x = gd.input("x", (None, 3, 4, 5), "float64")
    xv = RNG.standard_normal((2, 3, 4, 5))
    a, m, ak = gd.function([x], [gd.global_avg_pool(x), gd.global_max_pool(x),
                                 gd.global_avg_pool(x, keepdims=True)],
                           backend="reference")(xv)
    np.testing.assert_allclose(a, xv.mean(axis=(2, 3)), rtol=1e-12)
    np.testing.assert_allclose(m, xv.max(axis=(2, 3)), rtol=1e-12)
    assert ak.shape == (2, 3, 1, 1)
    report = gd.check_grad((gd.global_avg_pool(x) * 2.0).sum() + gd.global_max_pool(x).sum(),
                           [x], feed={x: xv}, rtol=1e-6)
    assert report, str(report)


def test_pooling_errors():
    x = gd.input("x", (None, 3, 4, 4))
    with pytest.raises(gd.ShapeError, match="half the kernel"):
        gd.max_pool2d(x, 2, padding=2)
    with pytest.raises(gd.ShapeError, match="does not fit"):
        gd.avg_pool2d(x, 5)
    with pytest.raises(gd.DTypeError):
        gd.max_pool1d(gd.input("i", (2, 3, 4), "int64"), 2)
