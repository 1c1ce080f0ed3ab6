"""Convolution as views and GEMM: `windows`, `unwindows`, `pad`, conv and conv_transpose.

Two structured primitives carry all of convolution and pooling:

- `windows(x, kernel, stride, dilation)`: x (..., *S) with d spatial dims -> (..., *K, *O),
  y[..., k, o] = x[..., o * stride + k * dilation], O = (S - dilation (K - 1) - 1) // stride
  + 1. It copies nothing on the llvm backend: it is a strided view of x (strides
  dilation * s and stride * s per spatial axis).
- `unwindows(y, kernel, stride, dilation, in_shape)` (col2im): zeros of `in_shape` with each
  window element added back at its place. It is windows' VJP, and windows is its VJP.

Everything else is a composite of existing ops, so gradients come from autodiff:
conv = pad -> windows -> transpose + reshape (the im2col copy) -> tensordot (one GEMM over
the batch) -> transpose (+ bias); conv_transpose = tensordot -> unwindows (col2im) ->
crop/pad (grouped convolutions: a batched matmul per sample instead of the tensordot).
Padding is `unslice` (zeros); another fill value adds a constant border (-inf for max
pooling), so there is one mechanism.

Layouts follow torch.nn.functional: x (N, C, *S), weights (out, in / groups, *K) for conv
and (in, out / groups, *K) for conv_transpose.
"""

from __future__ import annotations

import numpy as np

from graphdl.errors import dtype_error, shape_error
from graphdl.graph import Tensor, as_tensor, constant
from graphdl.ops.indexing import _slice
from graphdl.ops.registry import structured
from graphdl.ops.structured import matmul, reshape, sum, swapaxes, tensordot, transpose
from graphdl.shapes import FLOAT_DTYPES, Dim, format_shape


def _ints(value, d: int, what: str) -> tuple:
    """An int or a sequence of d ints as a d-tuple of ints."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * d
    values = tuple(int(v) for v in value)
    if len(values) != d:
        raise shape_error(f"{what} needs one int or {d} ints, got {value!r}")
    return values


def _spatial(x, d: int, what: str) -> tuple:
    """The last d (static) dims of x."""
    if x.ndim < d:
        raise shape_error(f"{what}: a tensor of shape {format_shape(x.shape)} has fewer than "
                          f"{d} spatial dimensions")
    spatial = x.shape[x.ndim - d:]
    if any(isinstance(s, Dim) for s in spatial):
        raise shape_error(f"{what}: spatial dimensions must be static, got "
                          f"{format_shape(x.shape)}")
    return spatial


def windows_shape(spatial, kernel, stride, dilation) -> tuple:
    """O per axis: (S - dilation (K - 1) - 1) // stride + 1 (may be <= 0: no window fits)."""
    return tuple((s - dl * (k - 1) - 1) // st + 1
                 for s, k, st, dl in zip(spatial, kernel, stride, dilation))


# -- windows / unwindows ---------------------------------------------------------------------
def _windows_vjp(gy, node):
    x = node.inputs[0]
    return (unwindows(gy, node.attr("kernel"), node.attr("stride"), node.attr("dilation"),
                      x.shape),)


def _unwindows_vjp(gy, node):
    return (windows(gy, node.attr("kernel"), node.attr("stride"), node.attr("dilation")),)


WINDOWS = structured("windows", vjp=_windows_vjp,
                     doc="Sliding windows of the last d axes: (..., *S) -> (..., *K, *O)")
UNWINDOWS = structured("unwindows", vjp=_unwindows_vjp,
                       doc="Add window elements back into zeros of the input shape (col2im)")


def windows(x, kernel, stride=1, dilation=1) -> Tensor:
    """Sliding windows over the last len(kernel) axes: y[..., k, o] = x[..., o*stride + k*dilation].

    x (..., *S) -> (..., *K, *O) with O = (S - dilation*(K-1) - 1) // stride + 1; a view on
    the llvm backend (no copy). Convolution and pooling are built on it.

    Example:
        >>> p = gd.windows(x, (3, 3), stride=2)      # (N, C, 3, 3, OH, OW)
        >>> pooled = p.max(axis=(2, 3))
    """
    x = as_tensor(x)
    kernel = tuple(int(k) for k in (kernel if not isinstance(kernel, (int, np.integer))
                                    else (kernel,)))
    d = len(kernel)
    stride, dilation = _ints(stride, d, "stride"), _ints(dilation, d, "dilation")
    spatial = _spatial(x, d, "windows")
    if min(kernel + stride + dilation, default=1) < 1:
        raise shape_error(f"windows: kernel {kernel}, stride {stride} and dilation "
                          f"{dilation} must be >= 1")
    out = windows_shape(spatial, kernel, stride, dilation)
    if min(out, default=1) < 1:
        raise shape_error(f"windows: a kernel {kernel} with dilation {dilation} does not fit "
                          f"in the spatial size {spatial} (after padding)")
    shape = x.shape[:x.ndim - d] + kernel + out
    return Tensor.make("windows", (x,), {"kernel": kernel, "stride": stride,
                                         "dilation": dilation}, shape, x.dtype)


def unwindows(y, kernel, stride, dilation, in_shape) -> Tensor:
    """col2im: zeros of `in_shape`, then x[..., o*stride + k*dilation] += y[..., k, o].

    The adjoint of gd.windows (its gradient), and the core of conv_transpose.

    Example:
        >>> x_grad = gd.unwindows(g, (3, 3), (1, 1), (1, 1), (None, 4, 8, 8))
    """
    y = as_tensor(y)
    kernel = tuple(int(k) for k in kernel)
    d = len(kernel)
    stride, dilation = _ints(stride, d, "stride"), _ints(dilation, d, "dilation")
    in_shape = tuple(in_shape)
    spatial = tuple(in_shape[len(in_shape) - d:])
    if any(isinstance(s, Dim) for s in spatial):
        raise shape_error("unwindows: spatial dimensions must be static")
    want = in_shape[:len(in_shape) - d] + kernel + windows_shape(spatial, kernel, stride,
                                                                  dilation)
    if tuple(y.shape) != want:
        raise shape_error(f"unwindows: windows of {format_shape(in_shape)} have shape "
                          f"{format_shape(want)}, got {format_shape(y.shape)}")
    return Tensor.make("unwindows", (y,), {"kernel": kernel, "stride": stride,
                                           "dilation": dilation, "in_shape": in_shape},
                       in_shape, y.dtype)


def numpy_windows(a: np.ndarray, kernel, stride, dilation) -> np.ndarray:
    """windows() of a NumPy array (a read-only strided view): build-time constants."""
    d = len(kernel)
    lead, spatial = a.shape[:a.ndim - d], a.shape[a.ndim - d:]
    out = windows_shape(spatial, kernel, stride, dilation)
    st = a.strides[a.ndim - d:]
    strides = a.strides[:a.ndim - d] + tuple(s * dl for s, dl in zip(st, dilation)) + \
        tuple(s * k for s, k in zip(st, stride))
    return np.lib.stride_tricks.as_strided(a, lead + tuple(kernel) + out, strides,
                                           writeable=False)


# -- padding ---------------------------------------------------------------------------------
def _pad_pairs(x, pads) -> list:
    """One (before, after) pair per axis of x, from either accepted form of `pads`."""
    pads = list(pads)
    if pads and all(isinstance(p, (tuple, list)) for p in pads):
        if len(pads) != x.ndim or any(len(p) != 2 for p in pads):
            raise shape_error(f"pad: give one (before, after) pair per axis "
                              f"({x.ndim}), got {pads!r}")
        return [(int(a), int(b)) for a, b in pads]
    if len(pads) % 2 or len(pads) // 2 > x.ndim:
        raise shape_error(f"pad: torch order needs an even count of at most {2 * x.ndim} "
                          f"ints (last axis first), got {pads!r}")
    pairs = [(0, 0)] * x.ndim
    for k in range(len(pads) // 2):
        pairs[x.ndim - 1 - k] = (int(pads[2 * k]), int(pads[2 * k + 1]))
    return pairs


def pad(x, pads, value: float = 0.0) -> Tensor:
    """Pad with a constant: y = x inside, `value` in the border; negative pads crop.

    `pads` is either torch.nn.functional.pad's flat order (last axis first:
    (left, right, top, bottom, ...)) or one (before, after) pair per axis, first axis first,
    as numpy.pad. Zeros are `unslice` (whose VJP is slice); another value adds a constant
    border (-inf for max pooling). The batch axis cannot be padded.

    Example:
        >>> xp = gd.pad(x, (1, 1, 2, 2))                  # W by 1, H by 2 on each side
        >>> xm = gd.pad(x, [(0, 0), (0, 0), (1, 1)], value=-np.inf)
    """
    x = as_tensor(x)
    pairs = _pad_pairs(x, pads)
    for (a, b), d in zip(pairs, x.shape):
        if (a or b) and isinstance(d, Dim):
            raise shape_error(f"pad: the symbolic dimension {d!r} cannot be padded")
    if any(a < 0 or b < 0 for a, b in pairs):
        x = _slice(x, tuple((max(0, -a), None if b >= 0 else d + b, 1)
                            for (a, b), d in zip(pairs, x.shape)))
    pairs = [(max(0, a), max(0, b)) for a, b in pairs]
    if not any(a or b for a, b in pairs):
        return x
    shape = tuple(d if isinstance(d, Dim) else d + a + b for (a, b), d in zip(pairs, x.shape))
    spec = tuple((a, None, 1) if isinstance(d, Dim) else (a, a + d, 1)
                 for (a, _), d in zip(pairs, x.shape))
    y = Tensor.make("unslice", (x,), {"spec": spec, "in_shape": shape}, shape, x.dtype)
    if value == 0:
        return y
    # the border as a constant over the axes from the first padded one (a symbolic axis
    # is never padded: size 1 there, broadcast)
    first = next(i for i, (a, b) in enumerate(pairs) if a or b)
    border = np.full(tuple(1 if isinstance(d, Dim) else d for d in shape[first:]), value,
                     dtype=x.dtype)
    border[tuple(slice(None) if isinstance(d, Dim) else slice(a, a + d)
                 for (a, _), d in zip(pairs[first:], x.shape[first:]))] = 0
    return y + constant(border, x.dtype)


# -- convolution -----------------------------------------------------------------------------
def _conv_padding(padding, d, kernel, dilation, stride, what) -> list:
    """Per-axis (before, after) padding from an int, d ints, d pairs, "same" or "valid"."""
    if isinstance(padding, str):
        if padding == "valid":
            return [(0, 0)] * d
        if padding == "same":
            if any(s != 1 for s in stride):
                raise shape_error(f"{what}: padding='same' needs stride 1 (as in PyTorch)")
            total = [dl * (k - 1) for k, dl in zip(kernel, dilation)]
            return [(t // 2, t - t // 2) for t in total]     # extra on the right, as torch
        raise shape_error(f"{what}: padding must be an int, a tuple, 'same' or 'valid', "
                          f"got {padding!r}")
    if isinstance(padding, (int, np.integer)):
        return [(int(padding), int(padding))] * d
    padding = list(padding)
    if len(padding) == d and all(isinstance(p, (int, np.integer)) for p in padding):
        return [(int(p), int(p)) for p in padding]
    if len(padding) == d and all(isinstance(p, (tuple, list)) and len(p) == 2
                                 for p in padding):
        return [(int(a), int(b)) for a, b in padding]
    raise shape_error(f"{what}: padding needs an int, {d} ints or {d} (before, after) pairs, "
                      f"got {padding!r}")


def _check_conv_operands(x, w, d, groups, what, transpose=False):
    if x.ndim != d + 2 or w.ndim != d + 2:
        raise shape_error(f"{what} needs x of {d + 2} dims (N, C, *S) and weights of {d + 2} "
                          f"dims, got {format_shape(x.shape)} and {format_shape(w.shape)}")
    if x.dtype not in FLOAT_DTYPES or w.dtype not in FLOAT_DTYPES:
        raise dtype_error(f"{what} needs float tensors, got {x.dtype} and {w.dtype}")
    if any(isinstance(s, Dim) for s in w.shape):
        raise shape_error(f"{what}: weights need a static shape, got {format_shape(w.shape)}")
    groups = int(groups)
    c_in = x.shape[1]
    if groups < 1 or isinstance(c_in, Dim):
        raise shape_error(f"{what}: groups must be >= 1 and the channel axis static")
    w_in = w.shape[0] if transpose else w.shape[1] * groups
    if c_in != w_in or (not transpose and w.shape[0] % groups) or c_in % groups:
        layout = "(in, out/groups, *K)" if transpose else "(out, in/groups, *K)"
        raise shape_error(f"{what}: x {format_shape(x.shape)} and weights "
                          f"{format_shape(w.shape)} {layout} do not fit with groups={groups}")
    return groups


def _add_bias(y, b, d):
    if b is None:
        return y
    b = as_tensor(b, y)
    if b.shape != (y.shape[1],):
        raise shape_error(f"bias must have shape ({y.shape[1]},), got {format_shape(b.shape)}")
    return y + reshape(b, (y.shape[1],) + (1,) * d)


def conv(x, w, b=None, stride=1, padding=0, dilation=1, groups: int = 1) -> Tensor:
    """N-d convolution (d = w.ndim - 2), torch.nn.functional.conv{d}d semantics.

    y[n, o, p] = b[o] + sum_{c in group(o), k} w[o, c, k] * xpad[n, c, p*stride + k*dilation]

    Built as pad -> windows -> transpose + reshape (the im2col copy, (C*K, N, L)) -> one
    tensordot (a single GEMM over the whole batch) -> transpose; grouped convolution uses
    a batched matmul per sample, depthwise groups (one input channel per group) a
    multiply-and-sum.

    Example:
        >>> y = gd.conv(x, w, b, stride=1, padding="same")
    """
    x, w = as_tensor(x), as_tensor(w)
    d = w.ndim - 2
    what = f"conv{d}d"
    groups = _check_conv_operands(x, w, d, groups, what)
    kernel = tuple(w.shape[2:])
    stride, dilation = _ints(stride, d, "stride"), _ints(dilation, d, "dilation")
    pads = _conv_padding(padding, d, kernel, dilation, stride, what)
    xp = pad(x, [(0, 0), (0, 0)] + pads)
    cols = windows(xp, kernel, stride, dilation)          # (N, C, *K, *O)
    out_spatial = cols.shape[2 + d:]
    n, c_out = x.shape[0], w.shape[0]
    c_group, o_group = w.shape[1], c_out // groups
    kk = int(np.prod(kernel))
    length = int(np.prod(out_spatial))
    if groups == 1:
        # The batch folds into the GEMM's columns, one GEMM for the whole batch (and one for
        # each gradient): (O, C*kk) x (C*kk, N, L) -> (O, N, L), then a free transpose.
        perm = (1,) + tuple(range(2, 2 + d)) + (0,) + tuple(range(2 + d, 2 + 2 * d))
        cols = reshape(transpose(cols, perm), (c_group * kk, n, length))  # the im2col copy
        y = tensordot(reshape(w, (c_out, c_group * kk)), cols, 1)
        y = reshape(y, (c_out, n) + tuple(out_spatial))
        return _add_bias(transpose(y, (1, 0) + tuple(range(2, 2 + d))), b, d)
    if c_group == 1:
        # depthwise: (N, g, 1, kk, L) * (g, Og, kk, 1) summed over kk
        cols = reshape(cols, (n, groups, 1, kk, length))
        y = sum(cols * reshape(w, (groups, o_group, kk, 1)), axis=3)
    else:
        cols = reshape(cols, (n, groups, c_group * kk, length))      # the im2col copy
        y = matmul(reshape(w, (groups, o_group, c_group * kk)), cols)  # (N, g, Og, L)
    y = reshape(y, (n, c_out) + tuple(out_spatial))
    return _add_bias(y, b, d)


def _conv_nd(d):
    def conv_nd(x, w, b=None, stride=1, padding=0, dilation=1, groups: int = 1) -> Tensor:
        w = as_tensor(w)
        if w.ndim != d + 2:
            raise shape_error(f"conv{d}d needs weights of {d + 2} dims, got "
                              f"{format_shape(w.shape)}")
        return conv(x, w, b, stride, padding, dilation, groups)

    layout = {1: "NCL", 2: "NCHW", 3: "NCDHW"}[d]
    conv_nd.__name__ = conv_nd.__qualname__ = f"conv{d}d"
    conv_nd.__doc__ = (
        f"{d}-D convolution of x ({layout}) with w (out, in/groups, *K), as "
        f"torch.nn.functional.conv{d}d.\n\n"
        "y[n, o, p] = b[o] + sum_{c, k} w[o, c, k] * xpad[n, g(o)*C/groups + c, "
        "p*stride + k*dilation]\n\n"
        "padding: an int, one int per axis, one (before, after) pair per axis, 'same' "
        "(stride 1) or 'valid'; groups == channels is depthwise.\n\n"
        f"Example:\n    >>> w = gd.param('w', (16, 3) + (3,) * {d}, "
        "init=gd.init.he_uniform())\n"
        f"    >>> y = gd.conv{d}d(x, w, stride=1, padding=1)\n")
    return conv_nd


conv1d = _conv_nd(1)
conv2d = _conv_nd(2)
conv3d = _conv_nd(3)


def conv_transpose(x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1,
                   groups: int = 1) -> Tensor:
    """N-d transposed convolution (d = w.ndim - 2), torch.nn.functional.conv_transpose{d}d.

    y[n, o, i*stride + k*dilation - padding] += w[c, o, k] * x[n, c, i]  (per group), size
    (S - 1)*stride - 2*padding + dilation*(K - 1) + output_padding + 1.

    Built as one tensordot over the whole batch (a batched matmul per group when
    groups > 1) -> unwindows (col2im) -> crop the padding (+ output_padding zeros).

    Example:
        >>> up = gd.conv_transpose(x, w, stride=2, padding=1, output_padding=1)
    """
    x, w = as_tensor(x), as_tensor(w)
    d = w.ndim - 2
    what = f"conv_transpose{d}d"
    groups = _check_conv_operands(x, w, d, groups, what, transpose=True)
    kernel = tuple(w.shape[2:])
    stride, dilation = _ints(stride, d, "stride"), _ints(dilation, d, "dilation")
    pads = _conv_padding(padding, d, kernel, dilation, (1,) * d, what)
    out_pad = _ints(output_padding, d, "output_padding")
    if any(op >= max(s, dl) for op, s, dl in zip(out_pad, stride, dilation)):
        raise shape_error(f"{what}: output_padding {out_pad} must be smaller than stride "
                          f"{stride} or dilation {dilation}")
    n, c_in = x.shape[0], x.shape[1]
    spatial = tuple(x.shape[2:])
    c_group, o_group = c_in // groups, w.shape[1]
    kk = int(np.prod(kernel))
    length = int(np.prod(spatial))
    if groups == 1:
        # one GEMM for the batch: (Og*kk, C) x (C, N, L) -> (Og*kk, N, L), then a view
        xt = reshape(transpose(x, (1, 0) + tuple(range(2, 2 + d))), (c_in, n, length))
        cols = tensordot(swapaxes(reshape(w, (c_in, o_group * kk))), xt, 1)
        cols = reshape(cols, (o_group,) + kernel + (n,) + spatial)
        cols = transpose(cols, (1 + d, 0) + tuple(range(1, 1 + d))
                         + tuple(range(2 + d, 2 + 2 * d)))
    else:
        wr = swapaxes(reshape(w, (groups, c_group, o_group * kk)))      # (g, Og*kk, Cg)
        cols = matmul(wr, reshape(x, (n, groups, c_group, length)))      # (N, g, Og*kk, L)
        cols = reshape(cols, (n, groups * o_group) + kernel + spatial)
    full = tuple((s - 1) * st + dl * (k - 1) + 1
                 for s, k, st, dl in zip(spatial, kernel, stride, dilation))
    y = unwindows(cols, kernel, stride, dilation, (n, groups * o_group) + full)
    crop = [(0, 0), (0, 0)] + [(-a, op - b) for (a, b), op in zip(pads, out_pad)]
    size = [f - a - b + op for f, (a, b), op in zip(full, pads, out_pad)]
    if min(size, default=1) < 1:
        raise shape_error(f"{what}: the output would be empty ({size})")
    return _add_bias(pad(y, crop), b, d)


def _conv_transpose_nd(d):
    def conv_transpose_nd(x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1,
                          groups: int = 1) -> Tensor:
        w = as_tensor(w)
        if w.ndim != d + 2:
            raise shape_error(f"conv_transpose{d}d needs weights of {d + 2} dims, got "
                              f"{format_shape(w.shape)}")
        return conv_transpose(x, w, b, stride, padding, output_padding, dilation, groups)

    conv_transpose_nd.__name__ = conv_transpose_nd.__qualname__ = f"conv_transpose{d}d"
    conv_transpose_nd.__doc__ = (
        f"{d}-D transposed convolution, w (in, out/groups, *K), as "
        f"torch.nn.functional.conv_transpose{d}d.\n\n"
        "y[n, o, i*stride + k*dilation - padding] += sum_c w[c, o, k] x[n, c, i]; output "
        "size (S-1)*stride - 2*padding + dilation*(K-1) + output_padding + 1.\n\n"
        f"Example:\n    >>> w = gd.param('w', (16, 8) + (2,) * {d}, "
        "init=gd.init.he_uniform())\n"
        f"    >>> up = gd.conv_transpose{d}d(x, w, stride=2)\n")
    return conv_transpose_nd


conv_transpose1d = _conv_transpose_nd(1)
conv_transpose2d = _conv_transpose_nd(2)
conv_transpose3d = _conv_transpose_nd(3)


__all__ = [
    "conv",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "pad",
    "unwindows",
    "windows",
]
