"""Deformable convolution (v1/v2) and position-sensitive RoI align / pooling, as composites.

All three ops read the input at data-dependent positions. They are built from existing
primitives only -- a floor made of casts, comparisons turned into 0/1 masks, int64 index
arithmetic, `gather` (whose VJP is `scatter_add`) and `matmul` -- so autodiff gives their
gradients and every backend runs them unchanged:

- `deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask, groups,
  offset_groups)`: torchvision.ops.deform_conv2d, with weight groups and offset groups.
- `ps_roi_align(x, rois, output_size, spatial_scale, sampling_ratio)`:
  torchvision.ops.ps_roi_align with a static sampling_ratio > 0.
- `ps_roi_pool(x, rois, output_size, spatial_scale)`: torchvision.ops.ps_roi_pool. Its
  integer bins have data-dependent extents, but the output shape is static: each bin is a
  masked average over the whole H x W map, with 0/1 row and column masks computed from the
  RoIs.

Gradients are those of the piecewise formulas (as torchvision's): the floor of a sample
position and the in/out-of-image tests are locally constant, so d/d(offset) is the slope of
the bilinear interpolation, undefined exactly at integer positions (the kinks).
"""

from __future__ import annotations

import numpy as np

from graphdl.errors import dtype_error, shape_error
from graphdl.graph import Tensor, as_tensor, constant
from graphdl.ops.conv import _ints
from graphdl.ops.elementwise import apply, cast
from graphdl.ops.indexing import concat, gather, stop_gradient
from graphdl.ops.structured import broadcast_to, matmul, reshape, sum
from graphdl.shapes import FLOAT_DTYPES, Dim, format_shape


def _floor(p: Tensor) -> Tensor:
    """floor(p) of a float tensor (cast to int64 truncates toward zero; fix the negatives).

    Treated as a constant by autodiff (its derivative is 0 almost everywhere).
    """
    t = cast(cast(p, "int64"), p.dtype)
    return stop_gradient(apply("where", apply("greater", t, p), t - 1.0, t))


def _mask(cond: Tensor, dtype) -> Tensor:
    return cast(cond, dtype)


def _clip(p: Tensor, lo: float, hi: float) -> Tensor:
    return apply("minimum", apply("maximum", p, lo), hi)


def _static(shape, what, names) -> None:
    for d, name in zip(shape, names):
        if isinstance(d, Dim):
            raise shape_error(f"{what}: the {name} dimension must be static, got "
                              f"{format_shape(shape)}")


# -- deformable convolution ------------------------------------------------------------------
def deform_conv2d(x, offset, weight, bias=None, stride=1, padding=0, dilation=1,
                  mask=None, groups: int | None = None,
                  offset_groups: int | None = None) -> Tensor:
    """Deformable 2-D convolution (v1; v2 with `mask`), torchvision.ops.deform_conv2d.

    x (N, C, H, W), weight (O, C/groups, kh, kw), offset (N, 2*G*kh*kw, OH, OW) holding
    (dy, dx) per offset group g < G and kernel tap k = i*kw + j (channels 2*(g*kh*kw + k)
    and 2*(g*kh*kw + k) + 1), mask (N, G*kh*kw, OH, OW) (v2 modulation), bias (O,). Input
    channel c belongs to offset group c // (C/G) and to weight group c // (C/groups):

        p_y = oh*stride_h - pad_h + i*dil_h + offset[n, 2*(g*kh*kw + k), oh, ow]
        p_x = ow*stride_w - pad_w + j*dil_w + offset[n, 2*(g*kh*kw + k) + 1, oh, ow]
        y[n, o, oh, ow] = bias[o] + sum_{c in group(o), k} weight[o, c', i, j]
                          * mask[n, g*kh*kw + k, oh, ow] * bilinear(x[n, c], p_y, p_x)

    bilinear follows torchvision: a point outside (-1, H) x (-1, W) gives 0, otherwise the
    four neighbours floor(p) + {0, 1} are weighted (1 - l) / l and each one outside the image
    counts as 0. OH, OW are those of an ordinary convolution. As in torchvision, `groups` is
    C // weight.shape[1] and `offset_groups` is offset.shape[1] // (2*kh*kw); passing them
    only checks the shapes against them. Built as a gather of the 4 corners (im2col with
    learned positions) followed by one (per group batched) matmul; gradients w.r.t. x,
    offset, mask, weight and bias come from autodiff. Sample indices are formed in int64;
    positions in x's float dtype.

    Example:
        >>> off = gd.conv2d(x, w_off, b_off, padding=1)          # (N, 2*2*9, H, W)
        >>> y = gd.deform_conv2d(x, off, w, b, padding=1, groups=2, offset_groups=2)
    """
    x, offset, weight = as_tensor(x), as_tensor(offset), as_tensor(weight)
    what = "deform_conv2d"
    if x.ndim != 4 or weight.ndim != 4 or offset.ndim != 4:
        raise shape_error(f"{what} needs x (N, C, H, W), offset (N, 2*G*kh*kw, OH, OW) and "
                          f"weight (O, C/groups, kh, kw), got {format_shape(x.shape)}, "
                          f"{format_shape(offset.shape)} and {format_shape(weight.shape)}")
    if x.dtype not in FLOAT_DTYPES or weight.dtype != x.dtype or offset.dtype != x.dtype:
        raise dtype_error(f"{what} needs x, offset and weight of one float dtype, got "
                          f"{x.dtype}, {offset.dtype} and {weight.dtype}")
    _static(x.shape[1:], what, ("channel", "height", "width"))
    _static(weight.shape, what, ("out", "in", "kh", "kw"))
    _static(offset.shape[1:2], what, ("offset channel",))
    n, c, h, w = x.shape
    c_out, c_group, kh, kw = weight.shape
    kk = kh * kw
    if c_group < 1 or c % c_group:
        raise shape_error(f"{what}: weight {format_shape(weight.shape)} (O, C/groups, kh, kw) "
                          f"does not fit x {format_shape(x.shape)}: its {c_group} input "
                          f"channels per group do not divide C = {c}")
    n_groups = c // c_group
    if groups is not None and int(groups) != n_groups:
        raise shape_error(f"{what}: groups={groups} needs weight of shape (O, {c}/{groups}, "
                          f"kh, kw) for x {format_shape(x.shape)}, got "
                          f"{format_shape(weight.shape)}")
    if c_out % n_groups:
        raise shape_error(f"{what}: {n_groups} groups (C / weight.shape[1] = {c} / {c_group})"
                          f" do not divide the {c_out} output channels")
    off_c = offset.shape[1]
    if off_c < 2 * kk or off_c % (2 * kk):
        raise shape_error(f"{what}: offset {format_shape(offset.shape)} needs 2*G*{kh}*{kw} "
                          f"channels (G offset groups), got {off_c}")
    n_off = off_c // (2 * kk)
    if offset_groups is not None and int(offset_groups) != n_off:
        raise shape_error(f"{what}: offset_groups={offset_groups} needs "
                          f"{2 * int(offset_groups) * kk} offset channels, got {off_c}")
    if c % n_off:
        raise shape_error(f"{what}: {n_off} offset groups (offset channels {off_c} / "
                          f"(2*{kh}*{kw})) do not divide the {c} input channels")
    (sh, sw), (ph, pw), (dh, dw) = (_ints(stride, 2, "stride"), _ints(padding, 2, "padding"),
                                    _ints(dilation, 2, "dilation"))
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if oh < 1 or ow < 1 or min(sh, sw, dh, dw) < 1 or min(ph, pw) < 0:
        raise shape_error(f"{what}: kernel ({kh}, {kw}), stride ({sh}, {sw}), padding "
                          f"({ph}, {pw}) and dilation ({dh}, {dw}) do not fit {h}x{w}")
    length = oh * ow
    if tuple(offset.shape[2:]) != (oh, ow) or (offset.shape[0] != n):
        raise shape_error(f"{what}: offset must have shape "
                          f"{format_shape((n, 2 * n_off * kk, oh, ow))}, got "
                          f"{format_shape(offset.shape)}")
    if mask is not None:
        mask = as_tensor(mask)
        if mask.dtype != x.dtype or tuple(mask.shape) != (n, n_off * kk, oh, ow):
            raise shape_error(f"{what}: mask must be {x.dtype} of shape "
                              f"{format_shape((n, n_off * kk, oh, ow))} ({n_off} offset "
                              f"groups), got {mask.dtype} {format_shape(mask.shape)}")
    dt = x.dtype
    cpo = c // n_off                                      # channels per offset group

    # base sampling grid (K, L): tap k = (i, j), output position l = (oh, ow)
    i, j = np.divmod(np.arange(kk), kw)
    r, s = np.divmod(np.arange(length), ow)
    base_y = (r[None, :] * sh - ph + i[:, None] * dh).astype(dt)
    base_x = (s[None, :] * sw - pw + j[:, None] * dw).astype(dt)
    off = reshape(offset, (n, n_off, kk, 2, length))
    py = reshape(off[:, :, :, 0:1, :], (n, n_off, kk, length)) + constant(base_y, dt)
    px = reshape(off[:, :, :, 1:2, :], (n, n_off, kk, length)) + constant(base_x, dt)

    inside = (_mask(apply("greater", py, -1.0), dt) * _mask(apply("less", py, float(h)), dt)
              * _mask(apply("greater", px, -1.0), dt) * _mask(apply("less", px, float(w)), dt))
    if mask is not None:
        inside = inside * reshape(mask, (n, n_off, kk, length))
    y0, x0 = _floor(py), _floor(px)
    ly, lx = py - y0, px - x0
    hy, hx = 1.0 - ly, 1.0 - lx

    def valid(p, size):
        return _mask(apply("greater_equal", p, 0.0), dt) * \
            _mask(apply("less_equal", p, float(size - 1)), dt)

    idx, wts = [], []
    for yc, wy in ((y0, hy), (y0 + 1.0, ly)):
        for xc, wx in ((x0, hx), (x0 + 1.0, lx)):
            flat = (cast(_clip(yc, 0.0, h - 1.0), "int64") * w
                    + cast(_clip(xc, 0.0, w - 1.0), "int64"))
            idx.append(reshape(flat, (n, n_off, 1, kk, length)))
            wts.append(reshape(wy * wx * valid(yc, h) * valid(xc, w) * inside,
                               (n, n_off, 1, 1, kk, length)))
    # (N, G, 1, 4*K*L) -> every channel of its offset group -> (N, C, 4*K*L)
    idx = reshape(concat(idx, axis=2), (n, n_off, 1, 4 * kk * length))
    idx = idx + constant(np.zeros((1, 1, cpo, 1), np.int64), "int64")
    idx = reshape(idx, (n, c, 4 * kk * length))
    picked = gather(reshape(x, (n, c, h * w)), idx, axis=2)
    cols = sum(reshape(picked, (n, n_off, cpo, 4, kk, length))
               * concat(wts, axis=3), axis=3)                    # (N, G, C/G, K, L)
    o_group = c_out // n_groups
    if n_groups == 1:
        if c * kk == 1:     # a 1-long contraction: a product (the llvm matmul of a (1, 1)
            y = reshape(weight, (c_out, 1)) * reshape(cols, (n, 1, length))  # constant fails)
        else:
            y = matmul(reshape(weight, (c_out, c * kk)), reshape(cols, (n, c * kk, length)))
    elif c_group * kk == 1:  # one channel and one tap per group: (N, g, 1, L) * (g, Og, 1)
        y = reshape(cols, (n, n_groups, 1, length)) * reshape(weight, (n_groups, o_group, 1))
    else:                    # (g, Og, Cg*K) @ (N, g, Cg*K, L) -> (N, g, Og, L)
        y = matmul(reshape(weight, (n_groups, o_group, c_group * kk)),
                   reshape(cols, (n, n_groups, c_group * kk, length)))
    y = reshape(y, (n, c_out, oh, ow))
    if bias is not None:
        bias = as_tensor(bias, y)
        if tuple(bias.shape) != (c_out,):
            raise shape_error(f"{what}: bias must have shape ({c_out},), got "
                              f"{format_shape(bias.shape)}")
        y = y + reshape(bias, (c_out, 1, 1))
    return y


# -- position-sensitive RoI align ------------------------------------------------------------
def _axis_bilinear(p, size, dt):
    """RoIAlign's 1-D bilinear rule: (low index, high index, low weight, high weight)."""
    ok = _mask(apply("greater_equal", p, -1.0), dt) * _mask(apply("less_equal", p, float(size)),
                                                            dt)
    p = apply("maximum", p, 0.0)
    lo = _floor(p)
    edge = apply("greater_equal", lo, float(size - 1))
    lo = apply("where", edge, float(size - 1), lo)
    hi = apply("where", edge, float(size - 1), lo + 1.0)
    p = apply("where", edge, lo, p)
    frac = p - lo
    return cast(lo, "int64"), cast(hi, "int64"), (1.0 - frac) * ok, frac * ok


def ps_roi_align(x, rois, output_size, spatial_scale: float = 1.0,
                 sampling_ratio: int = 2) -> Tensor:
    """Position-sensitive RoI align (R-FCN score maps), torchvision.ops.ps_roi_align.

    x (N, C*ph*pw, H, W), rois (R, 5) rows (batch index, x1, y1, x2, y2) in input
    coordinates (float; the batch index is cast to int64), output (R, C, ph, pw):

        out[r, c, i, j] = mean over the sampling_ratio^2 points (y, x) of bin (i, j) of
                          bilinear(x[rois[r, 0], (c*ph + i)*pw + j], y, x)

    with the RoI scaled by spatial_scale and shifted by -0.5 (torchvision's rule, no minimum
    size), bins of (y2 - y1)/ph by (x2 - x1)/pw, points at the centres of a regular
    sampling_ratio x sampling_ratio grid per bin, and RoIAlign's bilinear rule (a point beyond
    [-1, H] x [-1, W] gives 0; others are clamped into the image). sampling_ratio must be
    > 0: the sample count is static (torchvision's adaptive ceil(roi_size / bins) for <= 0 is
    data dependent). Gradients flow to x only (rois are treated as constants, as in
    torchvision). With a static batch size and R one flat gather is used; with a symbolic
    one each RoI first gathers its image (memory R*C*ph*pw*H*W).

    Example:
        >>> rois = gd.input("rois", ("R", 5))
        >>> pooled = gd.ps_roi_align(score_maps, rois, 7, spatial_scale=1 / 16)
    """
    x, rois = as_tensor(x), as_tensor(rois)
    what = "ps_roi_align"
    p_h, p_w = _ints(output_size, 2, "output_size")
    g = int(sampling_ratio)
    if g < 1 or p_h < 1 or p_w < 1:
        raise shape_error(f"{what}: output_size {(p_h, p_w)} and sampling_ratio "
                          f"{sampling_ratio} must be >= 1 (a static sample count)")
    if x.ndim != 4 or rois.ndim != 2 or rois.shape[1] != 5:
        raise shape_error(f"{what} needs x (N, C*ph*pw, H, W) and rois (R, 5), got "
                          f"{format_shape(x.shape)} and {format_shape(rois.shape)}")
    if x.dtype not in FLOAT_DTYPES or rois.dtype not in FLOAT_DTYPES:
        raise dtype_error(f"{what} needs float x and rois, got {x.dtype} and {rois.dtype}")
    _static(x.shape[1:], what, ("channel", "height", "width"))
    n, ckk, h, w = x.shape
    if ckk % (p_h * p_w):
        raise shape_error(f"{what}: {ckk} input channels are not a multiple of "
                          f"{p_h}*{p_w} (output_size)")
    c = ckk // (p_h * p_w)
    dt = x.dtype
    nr = rois.shape[0]
    rois = stop_gradient(cast(rois, dt))
    scale = float(spatial_scale)
    b = cast(rois[:, 0:1], "int64")                                  # (R, 1)
    x1, y1 = rois[:, 1:2] * scale - 0.5, rois[:, 2:3] * scale - 0.5
    x2, y2 = rois[:, 3:4] * scale - 0.5, rois[:, 4:5] * scale - 0.5
    bin_h, bin_w = (y2 - y1) / float(p_h), (x2 - x1) / float(p_w)
    frac = (np.arange(g) + 0.5) / g
    fy = (np.arange(p_h)[:, None] + frac[None, :]).reshape(1, p_h * g).astype(dt)
    fx = (np.arange(p_w)[:, None] + frac[None, :]).reshape(1, p_w * g).astype(dt)
    py = y1 + bin_h * constant(fy, dt)                               # (R, ph*g)
    px = x1 + bin_w * constant(fx, dt)                               # (R, pw*g)
    ylo, yhi, wylo, wyhi = _axis_bilinear(py, h, dt)
    xlo, xhi, wxlo, wxhi = _axis_bilinear(px, w, dt)

    # index/weight layout (R, 4 corners, C, ph, pw, g, g)
    def ypart(t):
        return reshape(t, (nr, 1, p_h, 1, g, 1))

    def xpart(t):
        return reshape(t, (nr, 1, 1, p_w, 1, g))

    chan = ((np.arange(c)[:, None, None] * p_h + np.arange(p_h)[None, :, None]) * p_w
            + np.arange(p_w)[None, None, :]).astype(np.int64) * (h * w)
    flat_batch = not isinstance(n, Dim) and not isinstance(nr, Dim)
    base = constant(chan.reshape(1, c, p_h, p_w, 1, 1), "int64")
    if flat_batch:
        base = base + reshape(b, (nr, 1, 1, 1, 1, 1)) * (ckk * h * w)
    idx, wts = [], []
    for yi, wy in ((ylo, wylo), (yhi, wyhi)):
        for xi, wx in ((xlo, wxlo), (xhi, wxhi)):
            full = base + ypart(yi) * w + xpart(xi)     # (R, C, ph, pw, g, g)
            full = full + constant(np.zeros((1, c, p_h, p_w, 1, 1), np.int64), "int64")
            idx.append(reshape(full, (nr, 1, c, p_h, p_w, g, g)))
            wts.append(reshape(ypart(wy) * xpart(wx), (nr, 1, 1, p_h, p_w, g, g)))
    idx = concat(idx, axis=1)
    m = 4 * c * p_h * p_w * g * g
    if flat_batch:
        picked = gather(reshape(x, (n * ckk * h * w,)), reshape(idx, (nr * m,)), axis=0)
    else:
        images = gather(reshape(x, (n, ckk * h * w)),
                        broadcast_to(b, (nr, ckk * h * w)), axis=0)   # (R, C*ph*pw*H*W)
        picked = gather(images, reshape(idx, (nr, m)), axis=1)
    picked = reshape(picked, (nr, 4, c, p_h, p_w, g, g))
    out = sum(picked * concat(wts, axis=1), axis=(1, 5, 6))
    return out * (1.0 / (g * g))


# -- position-sensitive RoI pooling ----------------------------------------------------------
def _round_half_away(v: Tensor) -> Tensor:
    """C's round(v): to the nearest integer, halves away from zero (a constant to autodiff).

    Exact: t = trunc(|v|) via an int64 cast, and |v| - t is exact, so no `|v| + 0.5` rounding.
    """
    a = apply("abs", v)
    t = cast(cast(a, "int64"), v.dtype)
    r = apply("where", apply("greater_equal", a - t, 0.5), t + 1.0, t)
    return stop_gradient(apply("where", apply("less", v, 0.0), -r, r))


def _bin_masks(start, end, pooled: int, size: int, dt):
    """torchvision ps_roi_pool's bins along one axis, as 0/1 masks over the `size` positions.

    start, end (R, 1): the rounded RoI bounds. Returns masks (R, pooled, size) and the bin
    lengths (R, pooled) after the clipping (0 for an empty bin).
    """
    length = apply("maximum", end - start, 1.0)                       # at least one pixel
    bin_size = length / float(pooled)                                 # (R, 1)
    k = np.arange(pooled, dtype=dt).reshape(1, pooled)
    lo = _floor(constant(k, dt) * bin_size) + start                   # (R, pooled)
    hi = -_floor(-(constant(k + 1, dt) * bin_size)) + start           # ceil
    # torchvision's forward kernels (CPU and CUDA) clip both ends to [0, size - 1]
    lo, hi = _clip(lo, 0.0, size - 1.0), _clip(hi, 0.0, size - 1.0)
    pos = constant(np.arange(size, dtype=dt).reshape(1, 1, size), dt)
    lo3, hi3 = reshape(lo, (lo.shape[0], pooled, 1)), reshape(hi, (hi.shape[0], pooled, 1))
    masks = (_mask(apply("greater_equal", pos, lo3), dt) * _mask(apply("less", pos, hi3), dt))
    return stop_gradient(masks), stop_gradient(apply("maximum", hi - lo, 0.0))


def ps_roi_pool(x, rois, output_size, spatial_scale: float = 1.0) -> Tensor:
    """Position-sensitive RoI pooling (R-FCN score maps), torchvision.ops.ps_roi_pool.

    x (N, C*ph*pw, H, W), rois (R, 5) rows (batch index, x1, y1, x2, y2) in input
    coordinates (float; the batch index is truncated to int64), output (R, C, ph, pw):

        out[r, c, i, j] = mean of x[rois[r, 0], (c*ph + i)*pw + j, hs:he, ws:we]  (0 if empty)

    with torchvision's integer bins: the RoI corners are scaled by spatial_scale and rounded
    half away from zero (C's round), the RoI is at least 1 x 1, bins are
    (y2 - y1) / ph by (x2 - x1) / pw, hs = floor(i * bin_h) + y1, he = ceil((i + 1) * bin_h)
    + y1 (likewise for w), each clipped to [0, H - 1] ([0, W - 1]) -- as torchvision's
    forward does, so the last row and column are never pooled. The bins depend on the RoIs
    but the output shape does not: each bin is a masked average over the whole H x W map of
    its RoI's image (0/1 row and column masks built from the RoIs; memory R*C*ph*pw*H*W).
    Gradients flow to x only (rois are treated as constants, as in torchvision); they are
    the exact gradients of this forward (torchvision's own backward clips to [0, H] instead,
    so it differs where a bin reaches the last row or column).

    Example:
        >>> rois = gd.input("rois", ("R", 5))
        >>> pooled = gd.ps_roi_pool(score_maps, rois, 7, spatial_scale=1 / 16)
    """
    x, rois = as_tensor(x), as_tensor(rois)
    what = "ps_roi_pool"
    p_h, p_w = _ints(output_size, 2, "output_size")
    if p_h < 1 or p_w < 1:
        raise shape_error(f"{what}: output_size {(p_h, p_w)} must be >= 1")
    if x.ndim != 4 or rois.ndim != 2 or rois.shape[1] != 5:
        raise shape_error(f"{what} needs x (N, C*ph*pw, H, W) and rois (R, 5), got "
                          f"{format_shape(x.shape)} and {format_shape(rois.shape)}")
    if x.dtype not in FLOAT_DTYPES or rois.dtype not in FLOAT_DTYPES:
        raise dtype_error(f"{what} needs float x and rois, got {x.dtype} and {rois.dtype}")
    _static(x.shape[1:], what, ("channel", "height", "width"))
    n, ckk, h, w = x.shape
    if ckk % (p_h * p_w):
        raise shape_error(f"{what}: {ckk} input channels are not a multiple of "
                          f"{p_h}*{p_w} (output_size)")
    c = ckk // (p_h * p_w)
    dt = x.dtype
    nr = rois.shape[0]
    rois = stop_gradient(cast(rois, dt))
    scale = float(spatial_scale)
    b = cast(rois[:, 0:1], "int64")                                  # (R, 1)
    corners = _round_half_away(rois[:, 1:5] * scale)                 # (R, 4) x1 y1 x2 y2
    x1, y1, x2, y2 = (corners[:, k:k + 1] for k in range(4))
    mask_h, len_h = _bin_masks(y1, y2, p_h, h, dt)                    # (R, ph, H), (R, ph)
    mask_w, len_w = _bin_masks(x1, x2, p_w, w, dt)                    # (R, pw, W), (R, pw)
    area = reshape(len_h, (nr, p_h, 1)) * reshape(len_w, (nr, 1, p_w))
    area = apply("maximum", area, 1.0)                                # empty bins sum to 0

    images = gather(reshape(x, (n, ckk * h * w)),
                    broadcast_to(b, (nr, ckk * h * w)), axis=0)       # (R, C*ph*pw*H*W)
    images = reshape(images, (nr, c, p_h, p_w, h, w))
    rows = sum(images * reshape(mask_w, (nr, 1, 1, p_w, 1, w)), axis=5)     # (R, C, ph, pw, H)
    total = sum(rows * reshape(mask_h, (nr, 1, p_h, 1, h)), axis=4)         # (R, C, ph, pw)
    return total / reshape(area, (nr, 1, p_h, p_w))
