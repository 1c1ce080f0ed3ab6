"""Pooling as reductions over windows: max/avg pooling 1-3D and global pooling (composites).

max_pool = max over the window axes of windows(pad(x, -inf)); avg_pool = sum over the
window axes divided by a build-time constant count (torch.nn.functional semantics for
padding, dilation, ceil_mode, count_include_pad and divisor_override). Gradients come from
the primitives: max's VJP (ties share the gradient) and windows' VJP (col2im).
"""

from __future__ import annotations

import numpy as np

from graphdl.errors import dtype_error, shape_error
from graphdl.graph import Tensor, as_tensor, constant
from graphdl.ops.conv import _ints, _spatial, numpy_windows, pad, windows
from graphdl.ops.structured import max, mean, sum
from graphdl.shapes import FLOAT_DTYPES


def _pool_size(s, k, st, p, dl, ceil_mode) -> int:
    """Output size along one axis, as torch's pooling_output_shape."""
    span = dl * (k - 1) + 1
    out = (s + 2 * p - span + (st - 1 if ceil_mode else 0)) // st + 1
    if ceil_mode and (out - 1) * st >= s + p:
        out -= 1              # the last window would start in the right padding
    return out


def _geometry(x, d, kernel_size, stride, padding, dilation, ceil_mode, what):
    """(kernel, stride, dilation, [(before, after)] per spatial axis, output sizes)."""
    spatial = _spatial(x, d, what)
    kernel = _ints(kernel_size, d, "kernel_size")
    stride = kernel if stride is None or stride == () else _ints(stride, d, "stride")
    padding = _ints(padding, d, "padding")
    dilation = _ints(dilation, d, "dilation")
    if any(2 * p > k for p, k in zip(padding, kernel)):
        raise shape_error(f"{what}: padding {padding} must be at most half the kernel "
                          f"{kernel} (as in PyTorch)")
    out = tuple(_pool_size(s, k, st, p, dl, ceil_mode)
                for s, k, st, p, dl in zip(spatial, kernel, stride, padding, dilation))
    if min(out, default=1) < 1:
        raise shape_error(f"{what}: the kernel {kernel} does not fit in {spatial}")
    # Right padding that makes exactly `out` windows: ceil_mode's partial last window adds
    # to it; a window that never fits (floor mode) makes it smaller, down to a crop.
    pads = [(p, (o - 1) * st + dl * (k - 1) + 1 - s - p)
            for s, k, st, p, dl, o in zip(spatial, kernel, stride, padding, dilation, out)]
    return kernel, stride, dilation, pads, out


def _check_float(x, what):
    if x.dtype not in FLOAT_DTYPES:
        raise dtype_error(f"{what} needs a float tensor, got {x.dtype}")


def max_pool(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False) -> Tensor:
    """Max over windows of the last len(kernel_size) axes (torch's max_pool{d}d).

    y[n, c, o] = max_k xpad[n, c, o*stride + k*dilation], padding with -inf.

    Example:
        >>> y = gd.max_pool(x, (2, 2))
    """
    x = as_tensor(x)
    d = len(kernel_size) if not isinstance(kernel_size, (int, np.integer)) else x.ndim - 2
    what = f"max_pool{d}d"
    _check_float(x, what)
    kernel, stride, dilation, pads, _ = _geometry(x, d, kernel_size, stride, padding,
                                                  dilation, ceil_mode, what)
    lead = [(0, 0)] * (x.ndim - d)
    xp = pad(x, lead + pads, value=-np.inf)
    w = windows(xp, kernel, stride, dilation)
    return max(w, axis=tuple(range(x.ndim - d, x.ndim)))


def _avg_divisor(spatial, kernel, stride, pads, padding, count_include_pad, dtype):
    """The count each window's sum is divided by (torch's avg_pool rules), a constant."""
    padded = tuple(s + a + b for s, (a, b) in zip(spatial, pads))
    mask = np.zeros(padded, dtype=np.float64)
    if count_include_pad:   # the padding counts, the extra ceil_mode padding does not
        mask[tuple(slice(0, min(s + 2 * p, n)) for s, p, n in zip(spatial, padding,
                                                                    padded))] = 1
    else:
        mask[tuple(slice(a, a + s) for s, (a, _) in zip(spatial, pads))] = 1
    w = numpy_windows(mask, kernel, stride, (1,) * len(kernel))
    count = w.sum(axis=tuple(range(len(kernel))))
    if np.all(count == count.flat[0]):
        return constant(float(count.flat[0]), dtype)
    return constant(count.astype(dtype), dtype)


def avg_pool(x, kernel_size, stride=None, padding=0, ceil_mode=False,
             count_include_pad=True, divisor_override=None) -> Tensor:
    """Mean over windows of the last len(kernel_size) axes (torch's avg_pool{d}d).

    y[n, c, o] = sum_k xpad[n, c, o*stride + k] / count, count = the window size (padding
    included, count_include_pad=True) or the real elements in it, or divisor_override.

    Example:
        >>> y = gd.avg_pool(x, (2, 2))
    """
    x = as_tensor(x)
    d = len(kernel_size) if not isinstance(kernel_size, (int, np.integer)) else x.ndim - 2
    what = f"avg_pool{d}d"
    _check_float(x, what)
    kernel, stride, _, pads, _ = _geometry(x, d, kernel_size, stride, padding, 1,
                                           ceil_mode, what)
    lead = [(0, 0)] * (x.ndim - d)
    w = windows(pad(x, lead + pads), kernel, stride, 1)
    total = sum(w, axis=tuple(range(x.ndim - d, x.ndim)))
    if divisor_override is not None:
        return total / constant(float(divisor_override), x.dtype)
    spatial = x.shape[x.ndim - d:]
    return total / _avg_divisor(spatial, kernel, stride, pads, _ints(padding, d, "padding"),
                                count_include_pad, x.dtype)


def _pool_nd(kind, d):
    layout = {1: "NCL", 2: "NCHW", 3: "NCDHW"}[d]
    if kind == "max":
        def pool(x, kernel_size, stride=None, padding=0, dilation=1,
                 ceil_mode=False) -> Tensor:
            return max_pool(x, _ints(kernel_size, d, "kernel_size"), stride, padding,
                            dilation, ceil_mode)
        formula = "y[n, c, o] = max_k xpad[n, c, o*stride + k*dilation] (padding is -inf)"
    else:
        def pool(x, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None) -> Tensor:
            return avg_pool(x, _ints(kernel_size, d, "kernel_size"), stride, padding,
                            ceil_mode, count_include_pad, divisor_override)
        formula = ("y[n, c, o] = sum_k xpad[n, c, o*stride + k] / count "
                   "(count_include_pad=True: padding counts)")
    name = f"{kind}_pool{d}d"
    pool.__name__ = pool.__qualname__ = name
    pool.__doc__ = (f"{'Max' if kind == 'max' else 'Average'} pooling of x ({layout}), as "
                    f"torch.nn.functional.{name}; stride defaults to the kernel.\n\n"
                    f"{formula}\n\nExample:\n    >>> y = gd.{name}(x, 2)\n"
                    f"    >>> y = gd.{name}(x, 3, stride=2, padding=1, ceil_mode=True)\n")
    return pool


max_pool1d = _pool_nd("max", 1)
max_pool2d = _pool_nd("max", 2)
max_pool3d = _pool_nd("max", 3)
avg_pool1d = _pool_nd("avg", 1)
avg_pool2d = _pool_nd("avg", 2)
avg_pool3d = _pool_nd("avg", 3)


def _spatial_axes(x, what):
    if x.ndim < 3:
        raise shape_error(f"{what} needs x of shape (N, C, *S), got {x.shape}")
    return tuple(range(2, x.ndim))


def global_avg_pool(x, keepdims: bool = False) -> Tensor:
    """Mean over every spatial axis: (N, C, *S) -> (N, C) (or (N, C, 1, ...) with keepdims).

    y[n, c] = mean_s x[n, c, s]

    Example:
        >>> features = gd.global_avg_pool(h)        # (N, C)
    """
    x = as_tensor(x)
    return mean(x, _spatial_axes(x, "global_avg_pool"), keepdims)


def global_max_pool(x, keepdims: bool = False) -> Tensor:
    """Maximum over every spatial axis: (N, C, *S) -> (N, C) (or (N, C, 1, ...)).

    y[n, c] = max_s x[n, c, s]

    Example:
        >>> features = gd.global_max_pool(h)        # (N, C)
    """
    x = as_tensor(x)
    return max(x, _spatial_axes(x, "global_max_pool"), keepdims)


__all__ = [
    "avg_pool",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "global_avg_pool",
    "global_max_pool",
    "max_pool",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
]
