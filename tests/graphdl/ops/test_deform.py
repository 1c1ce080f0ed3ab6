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
    """torchvision's deform_conv2d as loops; groups and offset groups read off the shapes."""
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    groups, n_off = c // cg, offset.shape[1] // (2 * kh * kw)
    og, cpo = o // groups, c // n_off
    sh = sw = stride
    ph = pw = padding
    dh = dw = dilation
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, o, oh, ow))
    for b in range(n):
        for a in range(oh):
            for q in range(ow):
                col = np.zeros((c, kh, kw))            # im2col column of every channel
                for ch in range(c):
                    g = ch // cpo                      # the channel's offset group
                    for i in range(kh):
                        for j in range(kw):
                            k = g * kh * kw + i * kw + j
                            y = a * sh - ph + i * dh + offset[b, 2 * k, a, q]
                            xx = q * sw - pw + j * dw + offset[b, 2 * k + 1, a, q]
                            m = 1.0 if mask is None else mask[b, k, a, q]
                            col[ch, i, j] = m * _bilinear_deform(x[b, ch], y, xx)
                for oc in range(o):
                    grp = oc // og
                    out[b, oc, a, q] = np.sum(weight[oc] * col[grp * cg:(grp + 1) * cg])
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


def _c_round(v):
    """C's round(): halves away from zero (Python's round() goes to even)."""
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def ref_ps_roi_pool(x, rois, output_size, spatial_scale):
    """torchvision's ps_roi_pool forward kernel (CPU and CUDA), as loops."""
    ph_, pw_ = output_size
    _, ckk, h, w = x.shape
    c = ckk // (ph_ * pw_)
    out = np.zeros((len(rois), c, ph_, pw_))
    for r, roi in enumerate(rois):
        b = int(roi[0])
        sw, sh, ew, eh = (_c_round(v * spatial_scale) for v in roi[1:])
        bh, bw = max(eh - sh, 1) / ph_, max(ew - sw, 1) / pw_
        for i in range(ph_):
            hs = min(max(math.floor(i * bh) + sh, 0), h - 1)
            he = min(max(math.ceil((i + 1) * bh) + sh, 0), h - 1)
            for j in range(pw_):
                ws = min(max(math.floor(j * bw) + sw, 0), w - 1)
                we = min(max(math.ceil((j + 1) * bw) + sw, 0), w - 1)
                if he <= hs or we <= ws:
                    continue                           # an empty bin gives 0
                for co in range(c):
                    cin = (co * ph_ + i) * pw_ + j
                    out[r, co, i, j] = x[b, cin, hs:he, ws:we].mean()
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


# -- deform_conv2d with weight groups and offset groups --------------------------------------
GROUPED = [  # (C, O, kernel, groups, offset_groups)
    (4, 6, (3, 2), 2, 1),
    (4, 2, (3, 3), 1, 2),
    (4, 6, (2, 3), 2, 4),
    (6, 6, (3, 3), 3, 2),
    (4, 8, (1, 1), 4, 4),      # one channel and one tap per group: a product, no matmul
]


@pytest.mark.parametrize("backend", ["reference", "llvm"])
@pytest.mark.parametrize("c,o,kernel,groups,offset_groups", GROUPED)
@pytest.mark.parametrize("modulated", [False, True])
def test_grouped_deform_conv2d_matches_numpy_loop(backend, c, o, kernel, groups,
                                                  offset_groups, modulated):
    rng = np.random.default_rng(10)
    kh, kw = kernel
    kk = kh * kw
    xs = rng.standard_normal((2, c, 5, 6))
    ws = rng.standard_normal((o, c // groups, kh, kw))
    bs = rng.standard_normal(o)
    oh, ow = (5 + 2 - kh) // 1 + 1, (6 + 2 - kw) // 1 + 1
    offs = rng.uniform(-3, 3, (2, 2 * offset_groups * kk, oh, ow))
    ms = rng.uniform(0, 1, (2, offset_groups * kk, oh, ow))
    x = gd.input("x", (None, c, 5, 6), dtype="float64")
    off = gd.input("off", (None,) + offs.shape[1:], dtype="float64")
    m = gd.input("m", (None,) + ms.shape[1:], dtype="float64")
    y = gd.deform_conv2d(x, off, gd.constant(ws), gd.constant(bs), padding=1,
                         mask=m if modulated else None, groups=groups,
                         offset_groups=offset_groups)
    assert y.shape[1:] == (o, oh, ow)
    inputs, feed = ([x, off, m], [xs, offs, ms]) if modulated else ([x, off], [xs, offs])
    got = gd.function(inputs, y, backend=backend)(*feed)
    want = ref_deform_conv2d(xs, offs, ws, bs, padding=1, mask=ms if modulated else None)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", ["reference", "llvm"])
def test_grouped_zero_offsets_equal_grouped_conv2d(backend):
    rng = np.random.default_rng(11)
    xs = rng.standard_normal((3, 6, 7, 5)).astype(np.float32)
    ws = rng.standard_normal((9, 2, 3, 3)).astype(np.float32)
    x = gd.input("x", (None, 6, 7, 5))
    off = gd.input("off", (None, 2 * 2 * 9, 4, 3))
    y = gd.deform_conv2d(x, off, gd.constant(ws), stride=2, padding=1, dilation=1)
    ref = gd.conv2d(x, gd.constant(ws), stride=2, padding=1, groups=3)
    got, want = gd.function([x, off], [y, ref], backend=backend)(
        xs, np.zeros((3, 36, 4, 3), np.float32))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_grouped_offsets_move_only_their_channels():
    """Shifting offset group 1 by one pixel moves channels 2, 3 only (offset_groups=2)."""
    xs = np.arange(4 * 4 * 5, dtype=np.float64).reshape(1, 4, 4, 5)
    ws = np.zeros((4, 1, 1, 1))
    ws[:, 0, 0, 0] = 1.0                               # depthwise identity
    offs = np.zeros((1, 4, 4, 5))
    offs[0, 3] = 1.0                                   # group 1, dx = +1
    x = gd.input("x", (1, 4, 4, 5), dtype="float64")
    off = gd.input("off", (1, 4, 4, 5), dtype="float64")
    y = gd.deform_conv2d(x, off, gd.constant(ws), groups=4, offset_groups=2)
    for backend in ("reference", "llvm"):
        got = gd.function([x, off], y, backend=backend)(xs, offs)
        np.testing.assert_array_equal(got[:, :2], xs[:, :2])
        shifted = np.concatenate([xs[:, 2:, :, 1:], np.zeros((1, 2, 4, 1))], axis=3)
        np.testing.assert_array_equal(got[:, 2:], shifted)


def test_grouped_deform_conv2d_against_torchvision():
    torch = pytest.importorskip("torch")
    tv_ops = pytest.importorskip("torchvision.ops")
    rng = np.random.default_rng(12)
    xs = rng.standard_normal((2, 6, 6, 5))
    ws = rng.standard_normal((4, 3, 3, 3))             # groups = 2
    bs = rng.standard_normal(4)
    offs = rng.uniform(-3, 3, (2, 2 * 3 * 9, 3, 3))    # offset groups = 3
    ms = rng.uniform(0, 1, (2, 3 * 9, 3, 3))
    want = tv_ops.deform_conv2d(torch.tensor(xs), torch.tensor(offs), torch.tensor(ws),
                                torch.tensor(bs), stride=2, padding=1,
                                mask=torch.tensor(ms)).numpy()
    x = gd.input("x", (None, 6, 6, 5), dtype="float64")
    off = gd.input("off", (None, 54, 3, 3), dtype="float64")
    m = gd.input("m", (None, 27, 3, 3), dtype="float64")
    y = gd.deform_conv2d(x, off, gd.constant(ws), gd.constant(bs), stride=2, padding=1, mask=m)
    for backend in ("reference", "llvm"):
        got = gd.function([x, off, m], y, backend=backend)(xs, offs, ms)
        np.testing.assert_allclose(got, want, atol=1e-10)


def test_grouped_deform_conv2d_gradients():
    rng = np.random.default_rng(13)
    x = gd.input("x", (1, 4, 4, 3), dtype="float64")
    off = gd.input("off", (1, 2 * 2 * 4, 3, 2), dtype="float64")
    m = gd.input("m", (1, 2 * 4, 3, 2), dtype="float64")
    w = gd.param("w", rng.standard_normal((4, 2, 2, 2)))
    b = gd.param("b", rng.standard_normal(4))
    y = gd.deform_conv2d(x, off, w, b, stride=1, padding=0, mask=m, groups=2,
                         offset_groups=2)
    loss = gd.sum(y * gd.constant(rng.standard_normal((1, 4, 3, 2))))
    feed = {x: rng.standard_normal((1, 4, 4, 3)), off: _offsets(rng, (1, 16, 3, 2)),
            m: rng.uniform(0.2, 1, (1, 8, 3, 2))}
    report = gd.check_grad(loss, [x, off, m, w, b], feed=feed, rtol=1e-5, atol=1e-7)
    assert report, str(report)


def test_grouped_deform_conv2d_shape_errors():
    x = gd.input("x", (None, 6, 6, 6))
    off18 = gd.input("o18", (None, 18, 4, 4))
    cases = [
        lambda: gd.deform_conv2d(x, off18, gd.param("w1", (4, 4, 3, 3))),   # 4 does not divide 6
        lambda: gd.deform_conv2d(x, off18, gd.param("w2", (5, 3, 3, 3))),   # 2 groups, 5 outs
        lambda: gd.deform_conv2d(x, off18, gd.param("w3", (4, 3, 3, 3)), groups=3),
        lambda: gd.deform_conv2d(x, gd.input("o20", (None, 20, 4, 4)),      # not 2*G*9
                                 gd.param("w4", (4, 6, 3, 3))),
        lambda: gd.deform_conv2d(x, gd.input("o72", (None, 72, 4, 4)),      # G = 4 vs C = 6
                                 gd.param("w5", (4, 6, 3, 3))),
        lambda: gd.deform_conv2d(x, off18, gd.param("w6", (4, 6, 3, 3)), offset_groups=2),
        lambda: gd.deform_conv2d(x, gd.input("o36", (None, 36, 4, 4)),      # mask of 1 group
                                 gd.param("w7", (4, 6, 3, 3)),
                                 mask=gd.input("m9", (None, 9, 4, 4))),
    ]
    for make in cases:
        with pytest.raises(gd.ShapeError):
            make()
    # the consistent spelling of the same call builds
    y = gd.deform_conv2d(x, gd.input("o36b", (None, 36, 4, 4)), gd.param("w8", (4, 3, 3, 3)),
                         mask=gd.input("m18", (None, 18, 4, 4)), groups=2, offset_groups=2)
    assert y.shape[1:] == (4, 4, 4)


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


# -- ps_roi_pool -----------------------------------------------------------------------------
POOL_ROIS = np.array([[0, 1.0, 1.5, 6.0, 5.0],
                      [1, -2.0, 0.0, 4.0, 9.5],       # leaves the image
                      [1, 3.2, 2.1, 3.9, 2.6],        # rounds to one pixel or less
                      [0, 0.0, 0.0, 15.0, 13.0],      # bins clipped at the far edge
                      [1, 2.5, -0.5, 6.5, 3.5],       # halves: C rounds them away from zero
                      [0, 6.6, 5.2, 1.0, 2.0],        # x2 < x1: forced to 1 x 1
                      [1, 9.0, 8.0, 12.0, 11.0]])     # entirely outside: empty bins, 0


@pytest.mark.parametrize("backend", ["reference", "llvm"])
@pytest.mark.parametrize("symbolic", [False, True])
def test_ps_roi_pool_matches_numpy_loop(backend, symbolic):
    rng = np.random.default_rng(20)
    xs = rng.standard_normal((2, 2 * 3 * 2, 7, 8))
    nr = len(POOL_ROIS)
    x = gd.input("x", (None if symbolic else 2, 12, 7, 8), dtype="float64")
    rois = gd.input("rois", ("R" if symbolic else nr, 5), dtype="float64")
    for scale in (1.0, 0.5, 0.7):
        y = gd.ps_roi_pool(x, rois, (3, 2), spatial_scale=scale)
        assert y.shape[1:] == (2, 3, 2)
        got = gd.function([x, rois], y, backend=backend)(xs, POOL_ROIS)
        want = ref_ps_roi_pool(xs, POOL_ROIS, (3, 2), scale)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert np.all(got[-1] == 0.0)                      # the RoI outside the image


def test_ps_roi_pool_rounds_like_c():
    """x1 = 2.5 rounds to 3 (C's round), not 2 (Python's): the bin starts at column 3."""
    xs = np.zeros((1, 1, 4, 6))
    xs[0, 0, :, 2] = 100.0                             # only column 2 is non-zero
    x = gd.input("x", (1, 1, 4, 6), dtype="float64")
    rois = gd.input("rois", (2, 5), dtype="float64")
    y = gd.ps_roi_pool(x, rois, 1)
    r = np.array([[0, 2.5, 0.0, 5.0, 3.0], [0, 2.49, 0.0, 5.0, 3.0]])
    for backend in ("reference", "llvm"):
        got = gd.function([x, rois], y, backend=backend)(xs, r)
        np.testing.assert_allclose(got.ravel(), [0.0, 100.0 / 3], rtol=1e-12)


@pytest.mark.parametrize("backend", ["reference", "llvm"])
def test_ps_roi_pool_float32(backend):
    rng = np.random.default_rng(21)
    xs = rng.standard_normal((3, 18, 11, 9)).astype(np.float32)
    rois = np.concatenate([rng.integers(0, 3, (40, 1)),
                           rng.integers(-8, 56, (40, 4)) / 4.0], axis=1).astype(np.float32)
    x = gd.input("x", (None, 18, 11, 9))
    r = gd.input("rois", ("R", 5))
    y = gd.ps_roi_pool(x, r, 3, spatial_scale=0.5)
    got = gd.function([x, r], y, backend=backend)(xs, rois)
    assert got.dtype == np.float32
    want = ref_ps_roi_pool(xs.astype(np.float64), rois.astype(np.float64), (3, 3), 0.5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_ps_roi_pool_against_torchvision():
    torch = pytest.importorskip("torch")
    tv_ops = pytest.importorskip("torchvision.ops")
    rng = np.random.default_rng(22)
    xs = rng.standard_normal((2, 8, 7, 8))
    x = gd.input("x", (2, 8, 7, 8), dtype="float64")
    rois = gd.input("rois", (len(POOL_ROIS), 5), dtype="float64")
    for scale in (1.0, 0.5, 0.7):
        want = tv_ops.ps_roi_pool(torch.tensor(xs), torch.tensor(POOL_ROIS), 2, scale).numpy()
        y = gd.ps_roi_pool(x, rois, 2, spatial_scale=scale)
        for backend in ("reference", "llvm"):
            got = gd.function([x, rois], y, backend=backend)(xs, POOL_ROIS)
            np.testing.assert_allclose(got, want, atol=1e-12)
    # float32 with random RoIs, several batch images
    xs32 = rng.standard_normal((3, 18, 11, 9)).astype(np.float32)
    r32 = np.concatenate([rng.integers(0, 3, (100, 1)), rng.uniform(-3, 14, (100, 4))],
                         axis=1).astype(np.float32)
    x32 = gd.input("x32", (None, 18, 11, 9))
    rois32 = gd.input("rois32", ("R", 5))
    for scale in (1.0, 0.3):
        want = tv_ops.ps_roi_pool(torch.tensor(xs32), torch.tensor(r32), 3, scale).numpy()
        got = gd.function([x32, rois32], gd.ps_roi_pool(x32, rois32, 3, scale))(xs32, r32)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    # gradients: torchvision's backward clips the bins to [0, H] where its forward clips to
    # [0, H - 1]; for RoIs whose bins stay off the last row and column the two agree
    inner = np.concatenate([rng.integers(0, 2, (12, 1)), rng.uniform(0, 5.4, (12, 4))], axis=1)
    gout = rng.standard_normal((12, 2, 2, 2))
    xt = torch.tensor(xs, requires_grad=True)
    tv_ops.ps_roi_pool(xt, torch.tensor(inner), 2, 1.0).backward(torch.tensor(gout))
    r = gd.input("r", (12, 5), dtype="float64")
    g = gd.grad(gd.sum(gd.ps_roi_pool(x, r, 2) * gd.constant(gout)), [x])[0]
    np.testing.assert_allclose(gd.function([x, r], g)(xs, inner), xt.grad.numpy(), atol=1e-12)


@pytest.mark.parametrize("symbolic", [False, True])
def test_ps_roi_pool_gradient(symbolic):
    rng = np.random.default_rng(23)
    x = gd.input("x", (None if symbolic else 2, 4, 5, 6), dtype="float64")
    rois = gd.input("rois", ("R" if symbolic else 4, 5), dtype="float64")
    y = gd.ps_roi_pool(x, rois, 2, spatial_scale=0.6)
    loss = gd.sum(y * y * 0.5 + y)
    feed = {x: rng.standard_normal((2, 4, 5, 6)), rois: POOL_ROIS[:4]}
    report = gd.check_grad(loss, [x], feed=feed)
    assert report, str(report)
    # out is linear in x, so sum(out(x)) = <d sum(out) / dx, x>; llvm agrees with reference
    g = gd.grad(gd.sum(y), [x])[0]
    grads = [gd.function([x, rois], g, backend=backend)(feed[x], feed[rois])
             for backend in ("reference", "llvm")]
    np.testing.assert_allclose(grads[1], grads[0], atol=1e-12)
    xs = rng.standard_normal((2, 4, 5, 6))
    np.testing.assert_allclose(np.sum(grads[0] * xs),
                               ref_ps_roi_pool(xs, POOL_ROIS[:4], (2, 2), 0.6).sum())


def test_ps_roi_pool_errors():
    x = gd.input("x", (None, 12, 7, 8))
    rois = gd.input("rois", ("R", 5))
    with pytest.raises(gd.ShapeError):
        gd.ps_roi_pool(x, rois, 3)                    # 12 is not a multiple of 9
    with pytest.raises(gd.ShapeError):
        gd.ps_roi_pool(x, rois, (2, 0))
    with pytest.raises(gd.ShapeError):
        gd.ps_roi_pool(x, gd.input("r4", ("R", 4)), 2)
    with pytest.raises(gd.ShapeError):
        gd.ps_roi_pool(gd.input("x3", (None, 12, 7)), rois, 2)
    with pytest.raises(gd.ShapeError):
        gd.ps_roi_pool(gd.input("xs", (None, 12, "H", 8)), rois, 2)   # symbolic height
    with pytest.raises(gd.DTypeError):
        gd.ps_roi_pool(x, gd.input("ri", ("R", 5), dtype="int64"), 2)


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


@pytest.mark.parametrize("modulated", [False, True])
def test_deformable_conv2d_layer_groups(modulated):
    rng = np.random.default_rng(8)
    layer = gd.nn.DeformableConv2D(4, 6, (3, 2), padding=1, modulated=modulated, groups=2,
                                   offset_groups=4)
    assert layer.weight.shape == (6, 2, 3, 2)
    assert layer.offset_conv.weight.shape[0] == (3 if modulated else 2) * 4 * 6
    assert "groups=2, offset_groups=4" in repr(layer)
    x = gd.input("x", (None, 4, 5, 5))
    y = layer(x)
    assert y.shape[1:] == (6, 5, 6)
    xs = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    w, b = layer.weight.value, layer.bias.value
    want = gd.function([x], gd.conv2d(x, gd.constant(w), gd.constant(b), padding=1,
                                      groups=2))(xs)
    scale = 0.5 if modulated else 1.0
    for backend in ("reference", "llvm"):
        got = gd.function([x], y, backend=backend)(xs)
        np.testing.assert_allclose(got, scale * (want - b[None, :, None, None])
                                   + b[None, :, None, None], rtol=1e-4, atol=1e-5)
    # a trained offset branch: the layer is deform_conv2d of its own offsets
    layer.offset_conv.weight.value = rng.uniform(
        -0.3, 0.3, layer.offset_conv.weight.shape).astype(np.float32)
    got = gd.function([x], y)(xs)
    out = gd.function([x], layer.offset_conv(x))(xs).astype(np.float64)
    n_off = 2 * 4 * 6
    mask = 1 / (1 + np.exp(-out[:, n_off:])) if modulated else None
    want = ref_deform_conv2d(xs.astype(np.float64), out[:, :n_off], w.astype(np.float64),
                             b.astype(np.float64), padding=1, mask=mask)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    grads = gd.grad(gd.sum(y * y), layer.params())
    assert len(grads) == len(layer.params())


def test_deformable_conv2d_layer_group_errors():
    with pytest.raises(gd.ShapeError):
        gd.nn.DeformableConv2D(4, 6, 3, groups=3)       # 3 does not divide 4
    with pytest.raises(gd.ShapeError):
        gd.nn.DeformableConv2D(4, 5, 3, groups=2)       # nor 5 outputs
    with pytest.raises(gd.ShapeError):
        gd.nn.DeformableConv2D(4, 6, 3, offset_groups=3)
    with pytest.raises(gd.ShapeError):
        gd.nn.DeformableConv2D(4, 6, 3, groups=0)
