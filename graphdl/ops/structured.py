"""Structured ops: matmul, reductions, movement, indexing; each a shape rule and a VJP.

A VJP rule has the signature `vjp(gy, node) -> tuple` with one entry per input of `node`
(`None` where there is no gradient); it builds the gradient from other graph ops, so the
gradient is a graph too. Gradients may come back with a broadcast shape: `autodiff`
reduces them to the input's shape (`unbroadcast`), nowhere else.

The NumPy meaning of each op is in `codegen/reference/structured.py`, one function per op.
"""

from __future__ import annotations

import numpy as np

from graphdl.errors import dtype_error, shape_error
from graphdl.graph import Tensor, as_tensor, constant
from graphdl.ops import elementwise as ew
from graphdl.ops.registry import structured
from graphdl.shapes import Dim, FLOAT_DTYPES, as_shape, format_shape, normalize_axes


def _make(op, inputs, attrs, shape, dtype):
    return Tensor.make(op, inputs, attrs, shape, dtype)


# -- matmul --------------------------------------------------------------------------------
def _matmul_vjp(gy, node):
    a, b = node.inputs
    return matmul(gy, swapaxes(b)), matmul(swapaxes(a), gy)


MATMUL = structured("matmul", vjp=_matmul_vjp,
                    doc="Batched matrix product (..., n, k) @ (..., k, m) -> (..., n, m)")


def matmul(a, b) -> Tensor:
    """Matrix product with NumPy's batch broadcasting: y[..., i, j] = sum_k a[..., i, k] b[..., k, j].

    Example:
        >>> h = gd.matmul(x, W)          # same as x @ W
    """
    a, b = as_tensor(a), as_tensor(b, a)
    if a.ndim < 2 or b.ndim < 2:
        raise shape_error(f"matmul needs tensors of at least 2 dimensions, got "
                          f"{format_shape(a.shape)} @ {format_shape(b.shape)} "
                          "(reshape a vector to (1, n) or (n, 1))")
    if a.shape[-1] != b.shape[-2]:
        raise shape_error(f"matmul: inner dimensions differ: {format_shape(a.shape)} @ "
                          f"{format_shape(b.shape)} ({a.shape[-1]!r} != {b.shape[-2]!r})")
    if a.dtype not in FLOAT_DTYPES or b.dtype not in FLOAT_DTYPES:
        raise dtype_error(f"matmul needs float tensors, got {a.dtype} and {b.dtype}")
    from graphdl.shapes import broadcast_shapes, promote
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2], what="the batch dims of matmul")
    shape = batch + (a.shape[-2], b.shape[-1])
    return _make("matmul", (a, b), {}, shape, promote(a.dtype, b.dtype))


def _tensordot_vjp(gy, node):
    a, b = node.inputs
    k = node.attr("axes")
    free_a, free_b = a.ndim - k, b.ndim - k
    # a (I, K), b (K, J), gy (I, J): ga = gy . b^(J, K), gb = a^(K, I) . gy
    b_jk = transpose(b, tuple(range(k, b.ndim)) + tuple(range(k)))
    a_ki = transpose(a, tuple(range(free_a, a.ndim)) + tuple(range(free_a)))
    return tensordot(gy, b_jk, free_b), tensordot(a_ki, gy, free_a)


TENSORDOT = structured("tensordot", vjp=_tensordot_vjp,
                       doc="Contract the last k axes of a with the first k axes of b")


def tensordot(a, b, axes=2) -> Tensor:
    """Sum products over axes, as numpy.tensordot: y[i..., j...] = sum_k a[i..., k...] b[k..., j...].

    `axes` is k (the last k axes of a against the first k of b) or a pair of axis lists.
    Free and contracted axes may be symbolic (the batch): on the llvm backend each group of
    axes becomes one dimension of a single GEMM (convolution uses it to fold the batch).

    Example:
        >>> y = gd.tensordot(W, cols, axes=1)    # (O, K) x (K, N, L) -> (O, N, L)
    """
    a, b = as_tensor(a), as_tensor(b, a)
    if not isinstance(axes, (int, np.integer)):
        try:
            ax_a, ax_b = ([int(i) for i in ((v,) if isinstance(v, (int, np.integer)) else v)]
                          for v in axes)
        except (TypeError, ValueError):
            raise shape_error(f"tensordot: axes must be an int or a pair of axis lists, got "
                              f"{axes!r}") from None
        if len(ax_a) != len(ax_b):
            raise shape_error(f"tensordot: {len(ax_a)} axes of a against {len(ax_b)} of b")
        ax_a = [i % a.ndim if -a.ndim <= i < a.ndim else None for i in ax_a]
        ax_b = [i % b.ndim if -b.ndim <= i < b.ndim else None for i in ax_b]
        if None in ax_a or None in ax_b or len(set(ax_a)) < len(ax_a) \
                or len(set(ax_b)) < len(ax_b):
            raise shape_error(f"tensordot: invalid axes {axes!r} for shapes "
                              f"{format_shape(a.shape)} and {format_shape(b.shape)}")
        a = transpose(a, [i for i in range(a.ndim) if i not in ax_a] + ax_a)
        b = transpose(b, ax_b + [i for i in range(b.ndim) if i not in ax_b])
        axes = len(ax_a)
    k = int(axes)
    if not 0 <= k <= a.ndim or k > b.ndim:
        raise shape_error(f"tensordot: cannot contract {k} axes of {format_shape(a.shape)} "
                          f"and {format_shape(b.shape)}")
    if a.shape[a.ndim - k:] != b.shape[:k]:
        raise shape_error(f"tensordot: contracted axes differ: {format_shape(a.shape)} and "
                          f"{format_shape(b.shape)} over {k} axes")
    if a.dtype not in FLOAT_DTYPES or b.dtype not in FLOAT_DTYPES:
        raise dtype_error(f"tensordot needs float tensors, got {a.dtype} and {b.dtype}")
    from graphdl.shapes import promote
    shape = a.shape[:a.ndim - k] + b.shape[k:]
    return _make("tensordot", (a, b), {"axes": k}, shape, promote(a.dtype, b.dtype))


# -- reductions ----------------------------------------------------------------------------
def _reduced_shape(shape, axes, keepdims):
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _keep(gy, node):
    """gy of a reduction, reshaped so it broadcasts against the reduction's input."""
    x = node.inputs[0]
    axes = node.attr("axes")
    return gy if node.attr("keepdims") else reshape(gy, _reduced_shape(x.shape, axes, True))


def _sum_vjp(gy, node):
    return (broadcast_to(_keep(gy, node), node.inputs[0].shape),)


SUM = structured("sum", vjp=_sum_vjp, doc="Sum over axes")


def sum(x, axis=None, keepdims=False) -> Tensor:  # noqa: A001 - NumPy's name
    """Sum over `axis` (None: all): y = sum_i x_i.

    Example:
        >>> total = gd.sum(x, axis=1)    # or x.sum(1)
    """
    x = as_tensor(x)
    axes = normalize_axes(axis, x.ndim)
    if not axes:
        return x
    dtype = x.dtype if x.dtype != "bool" else "int64"
    return _make("sum", (x,), {"axes": axes, "keepdims": bool(keepdims)},
                 _reduced_shape(x.shape, axes, keepdims), dtype)


def _max_vjp(gy, node):
    # The gradient is shared equally by the elements equal to the max. The mask is written
    # x >= y (the same set as x == y, since x <= y; a NaN max gives 0/0 = NaN as before),
    # a different node from the count's x == y, so the count fuses into its sum and the
    # mask (a `where`, no bool -> float cast to end a fusion group) into the gradient's
    # loop: no 0/1 tensor is stored.
    x = node.inputs[0]
    y = _keep(node, node)
    count = sum(ew.cast(ew.apply("equal", x, y), x.dtype), node.attr("axes"), keepdims=True)
    hit = ew.apply("greater_equal", x, y)
    return (ew.apply("where", hit, _keep(gy, node), 0.0) / count,)


MAX = structured("max", vjp=_max_vjp,
                 doc="Maximum over axes; at ties the gradient is shared equally")


def max(x, axis=None, keepdims=False) -> Tensor:  # noqa: A001 - NumPy's name
    """Maximum over `axis` (None: all); ties share the gradient equally (like torch.amax).

    Example:
        >>> m = gd.max(logits, axis=-1, keepdims=True)
    """
    x = as_tensor(x)
    axes = normalize_axes(axis, x.ndim)
    if not axes:
        return x
    return _make("max", (x,), {"axes": axes, "keepdims": bool(keepdims)},
                 _reduced_shape(x.shape, axes, keepdims), x.dtype)


def min(x, axis=None, keepdims=False) -> Tensor:  # noqa: A001 - NumPy's name
    """Minimum over `axis`: -max(-x).

    Example:
        >>> m = gd.min(x, axis=0)
    """
    return -max(-as_tensor(x), axis, keepdims)


ARGMAX = structured("argmax", differentiable=False,
                    why_not="argmax is piecewise constant; its derivative is zero a.e.",
                    doc="Index of the maximum along an axis (int64)")


def argmax(x, axis=-1) -> Tensor:
    """Index of the largest entry along `axis` (int64; the first one at ties).

    Example:
        >>> pred = gd.argmax(logits, axis=1)
    """
    x = as_tensor(x)
    (ax,) = normalize_axes(axis, x.ndim)
    return _make("argmax", (x,), {"axis": ax}, _reduced_shape(x.shape, (ax,), False), "int64")


DIM_SIZE = structured("dim_size", vjp=lambda gy, node: (None,),
                      doc="The product of some dimensions of a tensor, known at run time")


def dim_size(x, axis=None, dtype=None) -> Tensor:
    """The number of elements along `axis` of x as a scalar (a constant when static).

    Example:
        >>> n = gd.dim_size(x, 0)        # the batch size at run time
    """
    x = as_tensor(x)
    axes = normalize_axes(axis, x.ndim)
    dtype = dtype or (x.dtype if x.dtype in FLOAT_DTYPES else "float32")
    dims = [x.shape[a] for a in axes]
    if all(isinstance(d, int) for d in dims):
        return constant(float(np.prod(dims, dtype=np.int64)), dtype)
    return _make("dim_size", (x,), {"axes": axes}, (), dtype)


def mean(x, axis=None, keepdims=False) -> Tensor:
    """Mean over `axis`: sum(x) / n, where n may be the batch size known only at run time.

    Example:
        >>> m = gd.mean(x, axis=0)
    """
    x = as_tensor(x)
    if x.dtype not in FLOAT_DTYPES:
        x = ew.cast(x, "float32")
    return sum(x, axis, keepdims) / dim_size(x, axis)


# -- movement ------------------------------------------------------------------------------
RESHAPE = structured("reshape", vjp=lambda gy, node: (reshape(gy, node.inputs[0].shape),),
                     doc="Same elements, another shape")


def _resolve_reshape(old, new):
    """The target shape of a reshape, with one -1 inferred (possibly as a symbolic dim)."""
    new = [d if isinstance(d, (int, np.integer)) and d == -1 else as_shape((d,))[0]
           for d in new]
    if new.count(-1) > 1:
        raise shape_error(f"reshape: at most one -1 in {tuple(new)}")

    def _split(shape):
        syms = sorted(d.name for d in shape if isinstance(d, Dim))
        count = int(np.prod([d for d in shape if isinstance(d, int) and d != -1],
                            dtype=np.int64))
        return syms, count

    sym_old, n_old = _split(old)
    sym_new, n_new = _split(new)
    if -1 in new:
        missing = list(sym_old)
        for name in sym_new:
            if name in missing:
                missing.remove(name)
        if len(missing) > 1 or n_new == 0 or n_old % n_new:
            raise shape_error(f"reshape: cannot infer -1 in {format_shape(tuple(old))} -> "
                              f"{tuple(new)}")
        fill = n_old // n_new
        if missing:
            if fill != 1:
                raise shape_error(f"reshape {format_shape(tuple(old))} -> {tuple(new)}: -1 "
                                  "would mix the symbolic dimension with other dimensions")
            fill = Dim(missing[0])
        new = [fill if isinstance(d, int) and d == -1 else d for d in new]
        sym_new, n_new = _split(new)
    if sym_old != sym_new or n_old != n_new:
        raise shape_error(f"cannot reshape {format_shape(tuple(old))} into "
                          f"{format_shape(tuple(new))}: the sizes differ")
    return tuple(new)


def reshape(x, *shape) -> Tensor:
    """Same elements in another shape; one -1 is inferred (it may be the batch).

    Example:
        >>> flat = x.reshape(-1, 784)
    """
    x = as_tensor(x)
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    new = _resolve_reshape(x.shape, tuple(shape))
    if new == x.shape:
        return x
    return _make("reshape", (x,), {"shape": new}, new, x.dtype)


def _transpose_vjp(gy, node):
    perm = node.attr("perm")
    return (transpose(gy, tuple(int(i) for i in np.argsort(perm))),)


TRANSPOSE = structured("transpose", vjp=_transpose_vjp, doc="Permute axes")


def transpose(x, axes=None) -> Tensor:
    """Permute the axes (default: reverse them), as numpy.transpose.

    Example:
        >>> Wt = gd.transpose(W)         # or W.T
    """
    x = as_tensor(x)
    perm = tuple(reversed(range(x.ndim))) if axes is None else tuple(
        a % x.ndim for a in axes)
    if sorted(perm) != list(range(x.ndim)):
        raise shape_error(f"transpose: {axes!r} is not a permutation of {x.ndim} axes")
    if perm == tuple(range(x.ndim)):
        return x
    return _make("transpose", (x,), {"perm": perm}, tuple(x.shape[p] for p in perm), x.dtype)


def swapaxes(x, a=-1, b=-2) -> Tensor:
    """Swap two axes (default: the last two, the matrix transpose of a batch).

    Example:
        >>> gd.swapaxes(x)               # (..., n, m) -> (..., m, n)
    """
    x = as_tensor(x)
    perm = list(range(x.ndim))
    perm[a], perm[b] = perm[b], perm[a]
    return transpose(x, perm)


BROADCAST_TO = structured("broadcast_to", vjp=lambda gy, node: (gy,),
                          doc="Broadcast to a larger shape (autodiff sums the gradient back)")


def broadcast_to(x, shape) -> Tensor:
    """Broadcast x to `shape` following NumPy's rules.

    Example:
        >>> gd.broadcast_to(b, (None, 128))
    """
    from graphdl.shapes import broadcast_shapes
    x = as_tensor(x)
    shape = as_shape(shape)
    if broadcast_shapes(x.shape, shape, what="broadcast_to") != shape:
        raise shape_error(f"cannot broadcast {format_shape(x.shape)} to {format_shape(shape)}")
    if shape == x.shape:
        return x
    return _make("broadcast_to", (x,), {"shape": shape}, shape, x.dtype)
