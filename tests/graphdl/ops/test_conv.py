"""Convolution: windows/unwindows/pad, conv1d-3d and conv_transpose1d-3d (reference backend).

Each op is checked against a direct-loop NumPy implementation written here (always runs),
against torch.nn.functional forward and backward when torch is importable, and against
central finite differences (float64).
"""

import itertools

import numpy as np
import pytest

import graphdl as gd

RNG = np.random.default_rng(7)

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # torch is optional: the NumPy references still run
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


# -- independent references (direct loops) -----------------------------------------------------
def _pairs(padding, d):
    if isinstance(padding, int):
        return [(padding, padding)] * d
    return [p if isinstance(p, tuple) else (p, p) for p in padding]


def np_conv(x, w, b, stride, padding, dilation, groups):
    d = w.ndim - 2
    stride, dilation = (stride,) * d if isinstance(stride, int) else stride, \
        (dilation,) * d if isinstance(dilation, int) else dilation
    xp = np.pad(x, [(0, 0), (0, 0)] + _pairs(padding, d))
    n, c_out, c_group, kernel = x.shape[0], w.shape[0], w.shape[1], w.shape[2:]
    o_group = c_out // groups
    out = [(xp.shape[2 + i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1
           for i in range(d)]
    y = np.zeros((n, c_out, *out))
    for o in range(c_out):
        g = o // o_group
        for p in itertools.product(*(range(s) for s in out)):
            for k in itertools.product(*(range(s) for s in kernel)):
                at = tuple(p[i] * stride[i] + k[i] * dilation[i] for i in range(d))
                patch = xp[(slice(None), slice(g * c_group, (g + 1) * c_group)) + at]
                y[(slice(None), o) + p] += patch @ w[(o, slice(None)) + k]
    if b is not None:
        y += b.reshape((c_out,) + (1,) * d)
    return y


def np_conv_transpose(x, w, b, stride, padding, output_padding, dilation, groups):
    d = w.ndim - 2

    def tup(v):
        return (v,) * d if isinstance(v, int) else tuple(v)
    stride, padding, output_padding, dilation = map(tup, (stride, padding, output_padding,
                                                          dilation))
    n, c_in, spatial = x.shape[0], x.shape[1], x.shape[2:]
    kernel, o_group = w.shape[2:], w.shape[1]
    c_group = c_in // groups
    out = [(spatial[i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (kernel[i] - 1)
           + output_padding[i] + 1 for i in range(d)]
    y = np.zeros((n, o_group * groups, *out))
    for g in range(groups):
        xs = x[:, g * c_group:(g + 1) * c_group]
        ws = w[g * c_group:(g + 1) * c_group]
        for i in itertools.product(*(range(s) for s in spatial)):
            for k in itertools.product(*(range(s) for s in kernel)):
                at = [i[a] * stride[a] + k[a] * dilation[a] - padding[a] for a in range(d)]
                if all(0 <= at[a] < out[a] for a in range(d)):
                    y[(slice(None), slice(g * o_group, (g + 1) * o_group)) + tuple(at)] += \
                        xs[(slice(None), slice(None)) + i] @ ws[(slice(None), slice(None)) + k]
    if b is not None:
        y += b.reshape((-1,) + (1,) * d)
    return y


def _run(outputs, feed):
    return gd.function(list(feed), outputs, backend="reference")(*feed.values())


def _inputs(*shapes):
    return [gd.input(f"a{k}", s, "float64") for k, s in enumerate(shapes)]


# -- windows, unwindows, pad -------------------------------------------------------------------
def test_windows_picks_strided_dilated_elements_and_unwindows_adds_them_back():
    (x,) = _inputs((2, 3, 9, 8))
    xv = RNG.standard_normal((2, 3, 9, 8))
    kernel, stride, dilation = (3, 2), (2, 3), (2, 1)
    w, back = _run([gd.windows(x, kernel, stride, dilation),
                    gd.unwindows(gd.windows(x, kernel, stride, dilation), kernel, stride,
                                 dilation, x.shape)], {x: xv})
    assert w.shape == (2, 3, 3, 2, 3, 3)
    counts = np.zeros((9, 8))
    for k0, k1, o0, o1 in itertools.product(range(3), range(2), range(3), range(3)):
        h, v = o0 * 2 + k0 * 2, o1 * 3 + k1
        np.testing.assert_array_equal(w[:, :, k0, k1, o0, o1], xv[:, :, h, v])
        counts[h, v] += 1
    np.testing.assert_allclose(back, xv * counts)


def test_windows_rejects_a_kernel_that_does_not_fit():
    x = gd.input("x", (None, 2, 4, 4))
    with pytest.raises(gd.ShapeError, match="does not fit"):
        gd.windows(x, (5, 1))
    with pytest.raises(gd.ShapeError, match="static"):
        gd.windows(gd.input("y", (2, None)), (1,))


def test_pad_in_both_orders_with_values_and_negative_crops():
    (x,) = _inputs((2, 3, 4))
    xv = RNG.standard_normal((2, 3, 4))
    a, b, c = _run([gd.pad(x, (1, 2, 0, 1)), gd.pad(x, [(0, 0), (2, -1), (-1, 1)], 5.0),
                    gd.pad(x, (1, 1), value=-np.inf)], {x: xv})
    np.testing.assert_array_equal(a, np.pad(xv, [(0, 0), (0, 1), (1, 2)]))
    np.testing.assert_array_equal(b, np.pad(xv[:, :2, 1:], [(0, 0), (2, 0), (0, 1)],
                                            constant_values=5.0))
    np.testing.assert_array_equal(c, np.pad(xv, [(0, 0), (0, 0), (1, 1)],
                                            constant_values=-np.inf))
    with pytest.raises(gd.ShapeError, match="symbolic"):
        gd.pad(gd.input("z", (None, 3)), [(1, 0), (0, 0)])


def test_pad_gradient_is_the_slice_of_the_cotangent():
    (x,) = _inputs((2, 3, 4))
    loss = (gd.pad(x, (1, 2, -1, 1), value=3.0) ** 2).sum()
    report = gd.check_grad(loss, [x], feed={x: RNG.standard_normal((2, 3, 4))}, rtol=1e-6)
    assert report, str(report)


# -- convolution -------------------------------------------------------------------------------
CONV_CASES = [
    # (x shape, w shape, kwargs)
    ((2, 3, 9), (4, 3, 3), {}),
    ((2, 4, 10), (6, 2, 3), {"stride": 2, "padding": 2, "dilation": 2, "groups": 2}),
    ((1, 3, 8), (2, 3, 4), {"padding": "same"}),
    ((2, 3, 7, 6), (4, 3, 3, 3), {"stride": 1, "padding": 1}),
    ((2, 4, 7, 8), (6, 2, 3, 2), {"stride": (2, 1), "padding": (1, 0), "dilation": (1, 2),
                                      "groups": 2}),
    ((2, 4, 6, 6), (8, 1, 3, 3), {"padding": 1, "groups": 4}),              # depthwise x2
    ((2, 3, 5, 5), (5, 3, 1, 1), {}),                                 # 1x1
    ((1, 2, 6, 5), (3, 2, 3, 2), {"padding": "same", "dilation": (2, 1)}),
    ((1, 2, 5, 6), (3, 2, 2, 3), {"padding": "valid", "stride": 2}),
    ((1, 2, 5, 4, 6), (3, 2, 2, 3, 2), {"stride": (1, 2, 2), "padding": (1, 0, 1)}),
    ((1, 4, 4, 5, 4), (4, 2, 3, 2, 2), {"groups": 2, "dilation": (1, 2, 1)}),
]




@pytest.mark.parametrize("xs, ws, kw", CONV_CASES, ids=lambda v: str(v))
def test_conv_matches_direct_loops(xs, ws, kw):
    x, w, b = _inputs(xs, ws, (ws[0],))
    xv, wv, bv = (RNG.standard_normal(s) for s in (xs, ws, (ws[0],)))
    conv = {3: gd.conv1d, 4: gd.conv2d, 5: gd.conv3d}[len(xs)]
    got = _run([conv(x, w, b, **kw)], {x: xv, w: wv, b: bv})[0]
    padding = kw.get("padding", 0)
    d = len(xs) - 2
    if padding == "same":
        dil = kw.get("dilation", 1)
        dil = (dil,) * d if isinstance(dil, int) else dil
        padding = [(dl * (k - 1) // 2, dl * (k - 1) - dl * (k - 1) // 2)
                   for k, dl in zip(ws[2:], dil)]
    elif padding == "valid":
        padding = 0
    want = np_conv(xv, wv, bv, kw.get("stride", 1), padding, kw.get("dilation", 1),
                   kw.get("groups", 1))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_conv_with_per_side_padding_and_a_symbolic_batch():
    x = gd.input("x", (None, 2, 5, 6), "float64")
    w = gd.input("w", (3, 2, 3, 2), "float64")
    y = gd.conv2d(x, w, padding=((2, 0), (1, 3)), stride=(1, 2))
    assert y.shape == (x.shape[0], 3, 5, 5)
    xv, wv = RNG.standard_normal((3, 2, 5, 6)), RNG.standard_normal((3, 2, 3, 2))
    got = _run([y], {x: xv, w: wv})[0]
    np.testing.assert_allclose(got, np_conv(xv, wv, None, (1, 2), [(2, 0), (1, 3)], 1, 1),
                               rtol=1e-12, atol=1e-12)


CONV_T_CASES = [
    ((2, 3, 5), (3, 2, 3), {}),
    ((2, 4, 4), (4, 3, 3), {"stride": 2, "padding": 1, "output_padding": 1, "groups": 2}),
    ((1, 2, 4, 3), (2, 3, 3, 2), {"stride": (2, 3), "padding": (1, 0), "dilation": (2, 1),
                                      "output_padding": (1, 2)}),
    ((2, 4, 3, 3), (4, 1, 2, 2), {"stride": 2, "groups": 4}),
    ((1, 2, 3, 2, 3), (2, 2, 2, 3, 2), {"stride": (2, 1, 2), "padding": (0, 1, 1)}),
]


@pytest.mark.parametrize("xs, ws, kw", CONV_T_CASES, ids=lambda v: str(v))
def test_conv_transpose_matches_direct_loops(xs, ws, kw):
    groups = kw.get("groups", 1)
    x, w, b = _inputs(xs, ws, (ws[1] * groups,))
    xv, wv, bv = (RNG.standard_normal(s) for s in (xs, ws, (ws[1] * groups,)))
    conv_t = {3: gd.conv_transpose1d, 4: gd.conv_transpose2d, 5: gd.conv_transpose3d}[len(xs)]
    got = _run([conv_t(x, w, b, **kw)], {x: xv, w: wv, b: bv})[0]
    want = np_conv_transpose(xv, wv, bv, kw.get("stride", 1), kw.get("padding", 0),
                             kw.get("output_padding", 0), kw.get("dilation", 1), groups)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def _torch_grads(fn, arrays):
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    y = fn(*ts)
    weights = torch.tensor(RNG.standard_normal(tuple(y.shape)))
    (y * weights).sum().backward()
    return y.detach().numpy(), weights.numpy(), [t.grad.numpy() for t in ts]


def _graphdl_grads(build, arrays, weights):
    ins = _inputs(*(a.shape for a in arrays))
    y = build(*ins)
    loss = (y * gd.constant(weights)).sum()
    out = gd.function(ins, [y] + gd.grad(loss, ins), backend="reference")(*arrays)
    return out[0], out[1:]


@needs_torch
@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("xs, ws, kw", CONV_CASES, ids=lambda v: str(v))
def test_conv_forward_and_gradients_match_torch(xs, ws, kw):
    arrays = [RNG.standard_normal(s) for s in (xs, ws, (ws[0],))]
    d = len(xs) - 2
    tconv = getattr(F, f"conv{d}d")
    conv = getattr(gd, f"conv{d}d")
    want, weights, grads = _torch_grads(lambda x, w, b: tconv(x, w, b, **kw), arrays)
    got, ggrads = _graphdl_grads(lambda x, w, b: conv(x, w, b, **kw), arrays, weights)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    for g, t in zip(ggrads, grads):
        np.testing.assert_allclose(g, t, rtol=1e-10, atol=1e-10)


@needs_torch
@pytest.mark.parametrize("xs, ws, kw", CONV_T_CASES, ids=lambda v: str(v))
def test_conv_transpose_forward_and_gradients_match_torch(xs, ws, kw):
    groups = kw.get("groups", 1)
    arrays = [RNG.standard_normal(s) for s in (xs, ws, (ws[1] * groups,))]
    d = len(xs) - 2
    tconv = getattr(F, f"conv_transpose{d}d")
    conv_t = getattr(gd, f"conv_transpose{d}d")
    want, weights, grads = _torch_grads(lambda x, w, b: tconv(x, w, b, **kw), arrays)
    got, ggrads = _graphdl_grads(lambda x, w, b: conv_t(x, w, b, **kw), arrays, weights)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    for g, t in zip(ggrads, grads):
        np.testing.assert_allclose(g, t, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("build, shapes", [
    (lambda x, w, b: gd.conv2d(x, w, b, stride=2, padding=1, groups=2), [(2, 4, 5, 5),
                                                                          (4, 2, 3, 3), (4,)]),
    (lambda x, w, b: gd.conv1d(x, w, b, padding="same", dilation=2), [(2, 2, 6), (3, 2, 3),
                                                                       (3,)]),
    (lambda x, w, b: gd.conv2d(x, w, b, groups=3, padding=(1, 0)), [(1, 3, 4, 4),
                                                                     (3, 1, 2, 3), (3,)]),
    (lambda x, w, b: gd.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1),
     [(2, 3, 3, 3), (3, 2, 3, 3), (2,)]),
], ids=["conv2d_groups", "conv1d_same", "depthwise", "conv_transpose2d"])
def test_conv_gradients_match_finite_differences(build, shapes):
    ins = _inputs(*shapes)
    y = build(*ins)
    loss = (y * gd.constant(RNG.standard_normal(y.shape))).sum()
    report = gd.check_grad(loss, ins, feed={t: RNG.standard_normal(t.shape) for t in ins},
                           rtol=1e-6, atol=1e-8)
    assert report, str(report)


def test_conv_second_derivative_through_windows_and_unwindows():
    x, w = _inputs((1, 2, 5), (2, 2, 3))
    y = gd.conv1d(x, w, stride=2, padding=1)
    gx = gd.grad((y * y).sum(), x)
    loss = (gx * gd.constant(RNG.standard_normal(gx.shape))).sum()
    report = gd.check_grad(loss, [x, w], feed={x: RNG.standard_normal((1, 2, 5)),
                                              w: RNG.standard_normal((2, 2, 3))}, rtol=1e-6)
    assert report, str(report)


def test_conv_shape_errors_name_the_problem():
    x = gd.input("x", (None, 3, 8, 8))
    with pytest.raises(gd.ShapeError, match="groups"):
        gd.conv2d(x, gd.input("w", (4, 2, 3, 3)))
    with pytest.raises(gd.ShapeError, match="stride 1"):
        gd.conv2d(x, gd.input("w2", (4, 3, 3, 3)), stride=2, padding="same")
    with pytest.raises(gd.ShapeError, match="weights of 4 dims"):
        gd.conv2d(x, gd.input("w3", (4, 3, 3)))
    with pytest.raises(gd.ShapeError, match="output_padding"):
        gd.conv_transpose2d(x, gd.input("w4", (3, 2, 3, 3)), stride=2, output_padding=2)
