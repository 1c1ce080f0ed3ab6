"""Deformable convolution and position-sensitive RoI align (graphdl/ops/deform.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import graphdl as gd


# -- NumPy loop references (torchvision's kernels, written out) ------------------------------
def _bilinear_deform(img, y, x):
    """torchvision deform_conv2d's bilinear_interpolate on one (H, W) image."""
    h, w = img.shape
    if y <= -1 or y >= h or x <= -1 or x >= w:
        return 0.0
    y0, x0 = math.floor(y), math.floor(x)
    ly, lx = y - y0, x - x0
    val = 0.0
    for yc, wy in ((y0, 1 - ly), (y0 + 1, ly)):
        for xc, wx in ((x0, 1 - lx), (x0 + 1, lx)):
            if 0 <= yc <= h - 1 and 0 <= xc <= w - 1:
                val += wy * wx * img[yc, xc]
    return val


def ref_deform_conv2d(x, offset, weight, bias=None, stride=1, padding=0, dilation=1,
                      mask=None):
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    sh = sw = stride
    ph = pw = padding
    dh = dw = dilation
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, o, oh, ow))
    for b in range(n):
        for a in range(oh):
            for q in range(ow):
                col = np.zeros((c, kh, kw))
                for i in range(kh):
                    for j in range(kw):
                        k = i * kw + j
                        y = a * sh - ph + i * dh + offset[b, 2 * k, a, q]
                        xx = q * sw - pw + j * dw + offset[b, 2 * k + 1, a, q]
                        m = 1.0 if mask is None else mask[b, k, a, q]
                        for ch in range(c):
                            col[ch, i, j] = m * _bilinear_deform(x[b, ch], y, xx)
                out[b, :, a, q] = np.tensordot(weight, col, axes=3)
    if bias is not None:
        out += bias[None, :, None, None]
    return out


def _bilinear_roi(img, y, x):
    """torchvision roi_align's bilinear_interpolate."""
    h, w = img.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= h - 1:
        y0 = y1 = h - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= w - 1:
        x0 = x1 = w - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    hy, hx = 1 - ly, 1 - lx
    return hy * hx * img[y0, x0] + hy * lx * img[y0, x1] + ly * hx * img[y1, x0] + \
        ly * lx * img[y1, x1]


def ref_ps_roi_align(x, rois, output_size, spatial_scale, sampling_ratio):
    ph_, pw_ = output_size
    ckk = x.shape[1]
    c = ckk // (ph_ * pw_)
    out = np.zeros((len(rois), c, ph_, pw_))
    g = sampling_ratio
    for r, roi in enumerate(rois):
        b = int(roi[0])
        sw, sh, ew, eh = (v * spatial_scale - 0.5 for v in roi[1:])
        bh, bw = (eh - sh) / ph_, (ew - sw) / pw_
        for co in range(c):
            for i in range(ph_):
                for j in range(pw_):
                    cin = (co * ph_ + i) * pw_ + j
                    acc = 0.0
                    for iy in range(g):
                        y = sh + i * bh + (iy + 0.5) * bh / g
                        for ix in range(g):
                            xx = sw + j * bw + (ix + 0.5) * bw / g
                            acc += _bilinear_roi(x[b, cin], y, xx)
                    out[r, co, i, j] = acc / (g * g)
    return out


def _offsets(rng, shape, scale=2.0):
    """Random offsets whose sample positions stay away from integers (bilinear kinks)."""
    off = rng.uniform(-scale, scale, shape)
    frac = off - np.floor(off)
    return np.where(np.abs(frac - 0.5) > 0.4, off + 0.3, off)


# -- deform_conv2d ---------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["reference", "llvm"])
@pytest.mark.parametrize("stride,padding,dilation", [(1, 0, 1), (1, 1, 1), (2, 1, 2)])
def test_zero_offsets_equal_conv2d(backend, stride, padding, dilation):
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    ws = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
    bs = rng.standard_normal(4).astype(np.float32)
    x = gd.input("x", (None, 3, 7, 6))
    oh = (7 + 2 * padding - dilation * 2 - 1) // stride + 1
    ow = (6 + 2 * padding - dilation * 1 - 1) // stride + 1
    off = gd.input("off", (None, 12, oh, ow))
    m = gd.input("m", (None, 6, oh, ow))
    y = gd.deform_conv2d(x, off, gd.constant(ws), gd.constant(bs), stride, padding, dilation,
                         mask=m)
    ref = gd.conv2d(x, gd.constant(ws), gd.constant(bs), stride=stride, padding=padding,
                    dilation=dilation)
    f = gd.function([x, off, m], [y, ref], backend=backend)
    got, want = f(xs, np.zeros((2, 12, oh, ow), np.float32), np.ones((2, 6, oh, ow), np.float32))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["reference", "llvm"])
@pytest.mark.parametrize("modulated", [False, True])
def test_deform_conv2d_matches_numpy_loop(backend, modulated):
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((2, 2, 5, 6))
    ws = rng.standard_normal((3, 2, 3, 3))
    bs = rng.standard_normal(3)
    offs = rng.uniform(-4, 4, (2, 18, 5, 6))        # many points leave the image
    ms = rng.uniform(0, 1, (2, 9, 5, 6))
    x = gd.input("x", (None, 2, 5, 6), dtype="float64")
    off = gd.input("off", (None, 18, 5, 6), dtype="float64")
    m = gd.input("m", (None, 9, 5, 6), dtype="float64")
    y = gd.deform_conv2d(x, off, gd.constant(ws), gd.constant(bs), padding=1,
                         mask=m if modulated else None)
    inputs = [x, off, m] if modulated else [x, off]
    feed = [xs, offs, ms] if modulated else [xs, offs]
    got = gd.function(inputs, y, backend=backend)(*feed)
    want = ref_deform_conv2d(xs, offs, ws, bs, padding=1, mask=ms if modulated else None)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_deform_conv2d_edge_points():
    """Points exactly on the borders of torchvision's (-1, H) x (-1, W) window."""
    xs = np.arange(12, dtype=np.float64).reshape(1, 1, 3, 4) + 1
    ws = np.ones((1, 1, 1, 1))
    offs = np.zeros((1, 2, 3, 4))
    offs[0, 0] = [[-1.0, -0.5, 2.5, 0.0], [0.0, 1.0, 1.5, -1.5], [0.25, -0.75, 0.0, 0.0]]
    offs[0, 1] = [[0.0, 0.5, 0.0, 0.5], [-1.0, 3.0, 0.0, 0.0], [0.0, 0.0, -3.5, 0.5]]
    x = gd.input("x", (1, 1, 3, 4), dtype="float64")
    off = gd.input("off", (1, 2, 3, 4), dtype="float64")
    y = gd.deform_conv2d(x, off, gd.constant(ws))
    for backend in ("reference", "llvm"):
        got = gd.function([x, off], y, backend=backend)(xs, offs)
        np.testing.assert_allclose(got, ref_deform_conv2d(xs, offs, ws), atol=1e-12)


def test_deform_conv2d_against_torchvision():
    torch = pytest.importorskip("torch")
    tv_ops = pytest.importorskip("torchvision.ops")
    rng = np.random.default_rng(2)
    xs = rng.standard_normal((2, 3, 6, 5))
    ws = rng.standard_normal((4, 3, 3, 3))
    bs = rng.standard_normal(4)
    offs = rng.uniform(-3, 3, (2, 18, 3, 3))
    ms = rng.uniform(0, 1, (2, 9, 3, 3))
    want = tv_ops.deform_conv2d(torch.tensor(xs), torch.tensor(offs), torch.tensor(ws),
                                torch.tensor(bs), stride=2, padding=1,
                                mask=torch.tensor(ms)).numpy()
    x = gd.input("x", (None, 3, 6, 5), dtype="float64")
    off = gd.input("off", (None, 18, 3, 3), dtype="float64")
    m = gd.input("m", (None, 9, 3, 3), dtype="float64")
    y = gd.deform_conv2d(x, off, gd.constant(ws), gd.constant(bs), stride=2, padding=1, mask=m)
    np.testing.assert_allclose(gd.function([x, off, m], y)(xs, offs, ms), want, atol=1e-10)


def test_deform_conv2d_gradients():
    rng = np.random.default_rng(3)
    x = gd.input("x", (1, 2, 4, 3), dtype="float64")
    off = gd.input("off", (1, 18, 2, 2), dtype="float64")
    m = gd.input("m", (1, 9, 2, 2), dtype="float64")
    w = gd.param("w", rng.standard_normal((2, 2, 3, 3)))
    b = gd.param("b", rng.standard_normal(2))
    y = gd.deform_conv2d(x, off, w, b, stride=2, padding=1, mask=m)
    loss = gd.sum(y * gd.constant(rng.standard_normal((1, 2, 2, 2))))
    feed = {x: rng.standard_normal((1, 2, 4, 3)), off: _offsets(rng, (1, 18, 2, 2)),
            m: rng.uniform(0.2, 1, (1, 9, 2, 2))}
    report = gd.check_grad(loss, [x, off, m, w, b], feed=feed, rtol=1e-5, atol=1e-7)
    assert report, str(report)


def test_deform_conv2d_shape_errors():
    x = gd.input("x", (None, 3, 6, 6))
    with pytest.raises(gd.ShapeError):
        gd.deform_conv2d(x, gd.input("o", (None, 18, 5, 5)), gd.param("w", (4, 3, 3, 3)))
    with pytest.raises(gd.ShapeError):
        gd.deform_conv2d(x, gd.input("o2", (None, 18, 4, 4)), gd.param("w2", (4, 2, 3, 3)))


# -- ps_roi_align ----------------------------------------------------------------------------
ROIS = np.array([[0, 1.0, 1.5, 6.0, 5.0],
                 [1, -2.0, 0.0, 4.0, 9.5],       # leaves the image
                 [1, 3.2, 2.1, 3.9, 2.6],        # smaller than a pixel
                 [0, 0.0, 0.0, 15.0, 13.0]])


@pytest.mark.parametrize("backend", ["reference", "llvm"])
@pytest.mark.parametrize("symbolic", [False, True])
def test_ps_roi_align_matches_numpy_loop(backend, symbolic):
    rng = np.random.default_rng(4)
    xs = rng.standard_normal((2, 2 * 3 * 2, 7, 8))
    x = gd.input("x", (None if symbolic else 2, 12, 7, 8), dtype="float64")
    rois = gd.input("rois", ("R" if symbolic else 4, 5), dtype="float64")
    for scale, ratio in ((1.0, 2), (0.5, 3)):
        y = gd.ps_roi_align(x, rois, (3, 2), spatial_scale=scale, sampling_ratio=ratio)
        assert y.shape[1:] == (2, 3, 2)
        got = gd.function([x, rois], y, backend=backend)(xs, ROIS)
        want = ref_ps_roi_align(xs, ROIS, (3, 2), scale, ratio)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_ps_roi_align_against_torchvision():
    torch = pytest.importorskip("torch")
    tv_ops = pytest.importorskip("torchvision.ops")
    rng = np.random.default_rng(5)
    xs = rng.standard_normal((2, 8, 7, 8))
    want = tv_ops.ps_roi_align(torch.tensor(xs), torch.tensor(ROIS), 2, 0.5, 2).numpy()
    x = gd.input("x", (2, 8, 7, 8), dtype="float64")
    rois = gd.input("rois", (4, 5), dtype="float64")
    y = gd.ps_roi_align(x, rois, 2, spatial_scale=0.5, sampling_ratio=2)
    np.testing.assert_allclose(gd.function([x, rois], y)(xs, ROIS), want, atol=1e-10)


@pytest.mark.parametrize("symbolic", [False, True])
def test_ps_roi_align_gradient(symbolic):
    rng = np.random.default_rng(6)
    x = gd.input("x", (None if symbolic else 2, 8, 5, 6), dtype="float64")
    rois = gd.input("rois", ("R" if symbolic else 4, 5), dtype="float64")
    y = gd.ps_roi_align(x, rois, 2, spatial_scale=0.6, sampling_ratio=2)
    loss = gd.sum(y * y * 0.5 + y)
    report = gd.check_grad(loss, [x], feed={x: rng.standard_normal((2, 8, 5, 6)), rois: ROIS})
    assert report, str(report)


def test_ps_roi_align_errors():
    x = gd.input("x", (None, 12, 7, 8))
    rois = gd.input("rois", ("R", 5))
    with pytest.raises(gd.ShapeError):
        gd.ps_roi_align(x, rois, 3)                   # 12 is not a multiple of 9
    with pytest.raises(gd.ShapeError):
        gd.ps_roi_align(x, rois, 2, sampling_ratio=0)


# -- the layer -------------------------------------------------------------------------------
@pytest.mark.parametrize("modulated", [False, True])
def test_deformable_conv2d_layer(modulated):
    rng = np.random.default_rng(7)
    layer = gd.nn.DeformableConv2D(3, 5, 3, stride=1, padding=1, modulated=modulated)
    x = gd.input("x", (None, 3, 6, 6))
    y = layer(x)
    assert y.shape[1:] == (5, 6, 6)
    names = {p.name for p in layer.params()}
    assert len(names) == 4
    xs = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w, b = layer.weight.value, layer.bias.value
    want = gd.function([x], gd.conv2d(x, gd.constant(w), gd.constant(b), padding=1))(xs)
    scale = 0.5 if modulated else 1.0                 # zero-initialised mask: sigmoid(0)
    np.testing.assert_allclose(gd.function([x], y)(xs), scale * (want - b[None, :, None, None])
                               + b[None, :, None, None], rtol=1e-4, atol=1e-5)
    loss = gd.sum(y * y)
    grads = gd.grad(loss, layer.params())
    assert len(grads) == len(layer.params())
