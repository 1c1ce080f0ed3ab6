"""Slicing, gather/scatter, one-hot and other index ops (structured ops with VJP rules)."""

from __future__ import annotations

import numpy as np

from graphdl.errors import dtype_error, shape_error
from graphdl.graph import Tensor, as_tensor
from graphdl.ops.registry import structured
from graphdl.ops.structured import reshape
from graphdl.shapes import FLOAT_DTYPES, Dim, as_shape, format_shape, normalize_axes, promote


def _make(op, inputs, attrs, shape, dtype):
    return Tensor.make(op, inputs, attrs, shape, dtype)


# -- slicing -------------------------------------------------------------------------------
def _slice_len(start, stop, step):
    return len(range(start, stop, step))


def _slice(x, spec) -> Tensor:
    """Basic slice with one (start, stop, step) per axis; stop None means "to the end"."""
    shape, norm = [], []
    for d, (start, stop, step) in zip(x.shape, spec):
        if isinstance(d, Dim):
            if (start, stop, step) not in ((0, None, 1), (None, None, None)):
                raise shape_error(f"slicing the symbolic dimension {d!r} is not supported; "
                                  "only ':' may index it")
            shape.append(d)
            norm.append((0, None, 1))
            continue
        start, stop, step = slice(start, stop, step).indices(d)
        shape.append(_slice_len(start, stop, step))
        # A negative stop here means "past the front" (stepping backwards); keep it as None
        # so the spec means the same when applied again (Python reads -1 as the last item).
        norm.append((start, None if stop < 0 else stop, step))
    norm = tuple(norm)
    if all(s == (0, d, 1) or s == (0, None, 1) for s, d in zip(norm, x.shape)):
        return x
    return _make("slice", (x,), {"spec": norm}, tuple(shape), x.dtype)


def _slice_vjp(gy, node):
    return (_make("unslice", (gy,), {"spec": node.attr("spec"),
                                     "in_shape": node.inputs[0].shape},
                  node.inputs[0].shape, gy.dtype),)


SLICE = structured("slice", vjp=_slice_vjp, doc="Basic slicing x[start:stop:step, ...]")
UNSLICE = structured("unslice", vjp=lambda gy, node: (_slice(gy, node.attr("spec")),),
                     doc="Place a slice into zeros of the original shape (slice's VJP)")


def getitem(x, key) -> Tensor:
    """NumPy basic indexing: ints, slices, `...` and `None`; the batch axis takes only ':'.

    Example:
        >>> first_cols = x[:, :10]
    """
    x = as_tensor(x)
    key = key if isinstance(key, tuple) else (key,)
    if any(isinstance(k, (Tensor, np.ndarray, list)) for k in key):
        raise shape_error("tensor indices are not basic indexing: use gd.gather or gd.take")
    n_real = sum(1 for k in key if k is not None and k is not Ellipsis)
    if n_real > x.ndim:
        raise shape_error(f"too many indices ({n_real}) for a tensor of shape "
                          f"{format_shape(x.shape)}")
    if Ellipsis in key:
        i = key.index(Ellipsis)
        key = key[:i] + (slice(None),) * (x.ndim - n_real) + key[i + 1:]
    key = key + (slice(None),) * (x.ndim - n_real)
    spec, final_shape, axis = [], [], 0
    for k in key:
        if k is None:
            final_shape.append(1)
            continue
        d = x.shape[axis]
        if isinstance(k, slice):
            spec.append((k.start, k.stop, k.step))
            final_shape.append(None)          # filled from the slice below
        else:
            if isinstance(d, Dim):
                raise shape_error(f"an integer index on the symbolic dimension {d!r} is not "
                                  "supported")
            i = int(k)
            if not -d <= i < d:
                raise shape_error(f"index {i} is out of range for dimension of size {d}")
            i %= d
            spec.append((i, i + 1, 1))
        axis += 1
    y = _slice(x, tuple(spec))
    kept = iter(d for d, k in zip(y.shape, (k for k in key if k is not None))
                if isinstance(k, slice))
    shape = tuple(next(kept) if d is None else d for d in final_shape)
    return reshape(y, shape) if shape != y.shape else y


# -- concat --------------------------------------------------------------------------------
def concat(tensors, axis=0) -> Tensor:
    """Join tensors along an existing axis.

    Example:
        >>> gd.concat([a, b], axis=1)
    """
    tensors = [as_tensor(t) for t in tensors]
    if not tensors:
        raise shape_error("concat needs at least one tensor")
    (ax,) = normalize_axes(axis, tensors[0].ndim)
    first = tensors[0]
    for t in tensors[1:]:
        same = t.ndim == first.ndim and all(
            i == ax or t.shape[i] == first.shape[i] for i in range(first.ndim))
        if not same:
            raise shape_error(f"concat along axis {ax}: shapes {format_shape(first.shape)} and "
                              f"{format_shape(t.shape)} differ elsewhere")
        if isinstance(t.shape[ax], Dim) or isinstance(first.shape[ax], Dim):
            raise shape_error("concat along a symbolic (batch) axis is not supported")
    if len(tensors) == 1:
        return first
    size = int(np.sum([t.shape[ax] for t in tensors]))
    shape = first.shape[:ax] + (size,) + first.shape[ax + 1:]
    return _make("concat", tuple(tensors), {"axis": ax}, shape,
                 promote(*(t.dtype for t in tensors)))


def _concat_vjp(gy, node):
    ax = node.attr("axis")
    out, start = [], 0
    for t in node.inputs:
        stop = start + t.shape[ax]
        spec = tuple((0, None, 1) if i != ax else (start, stop, 1) for i in range(gy.ndim))
        out.append(_slice(gy, spec))
        start = stop
    return tuple(out)


CONCAT = structured("concat", vjp=_concat_vjp, doc="Join along an axis")


# -- gather / scatter ----------------------------------------------------------------------
def _check_index(x, index, axis, what):
    if index.dtype != "int64":
        raise dtype_error(f"{what}: indices must be int64, got {index.dtype}")
    if index.ndim != x.ndim or any(
            i != axis and a != b for i, (a, b) in enumerate(zip(index.shape, x.shape))):
        raise shape_error(f"{what}: index shape {format_shape(index.shape)} must match "
                          f"{format_shape(x.shape)} except along axis {axis}")


def gather(x, index, axis) -> Tensor:
    """y[..., i, ...] = x[..., index[..., i, ...], ...] along `axis` (numpy.take_along_axis).

    Example:
        >>> picked = gd.gather(logp, labels.reshape(-1, 1), axis=1)
    """
    x, index = as_tensor(x), as_tensor(index)
    axis %= x.ndim
    _check_index(x, index, axis, "gather")
    return _make("gather", (x, index), {"axis": axis}, index.shape, x.dtype)


def _gather_vjp(gy, node):
    x, index = node.inputs
    return scatter_add(gy, index, node.attr("axis"), x.shape), None


def scatter_add(updates, index, axis, shape) -> Tensor:
    """Zeros of `shape` with `updates` added at `index` along `axis` (gather's adjoint).

    Example:
        >>> g = gd.scatter_add(gy, labels.reshape(-1, 1), 1, (None, 10))
    """
    updates, index = as_tensor(updates), as_tensor(index)
    shape = as_shape(shape)
    return _make("scatter_add", (updates, index), {"axis": axis, "shape": shape}, shape,
                 updates.dtype)


def _scatter_vjp(gy, node):
    _, index = node.inputs
    return gather(gy, index, node.attr("axis")), None


GATHER = structured("gather", vjp=_gather_vjp, doc="Pick entries along an axis")
SCATTER_ADD = structured("scatter_add", vjp=_scatter_vjp,
                         doc="Add entries along an axis into zeros (gather's VJP)")


def take(x, labels) -> Tensor:
    """Pick x[i, labels[i]] from a (N, C) tensor with int64 labels of shape (N,).

    Example:
        >>> correct_scores = gd.take(scores, y)
    """
    x, labels = as_tensor(x), as_tensor(labels)
    if x.ndim != 2 or labels.ndim != 1:
        raise shape_error(f"take needs x of shape (N, C) and labels (N,), got "
                          f"{format_shape(x.shape)} and {format_shape(labels.shape)}")
    picked = gather(x, reshape(labels, (labels.shape[0], 1)), axis=1)
    return reshape(picked, (x.shape[0],))


ONE_HOT = structured("one_hot", vjp=lambda gy, node: (None,),
                     doc="Integer labels to one-hot rows; labels out of range raise")


def one_hot(labels, num_classes: int, dtype="float32") -> Tensor:
    """y[..., c] = 1 if labels[...] == c else 0; a label outside [0, C) raises at call time.

    Example:
        >>> Y = gd.one_hot(y, 10)
    """
    labels = as_tensor(labels)
    if labels.dtype != "int64":
        raise dtype_error(f"one_hot needs int64 labels, got {labels.dtype}")
    return _make("one_hot", (labels,), {"num_classes": int(num_classes)},
                 labels.shape + (int(num_classes),), dtype)


STOP_GRADIENT = structured("stop_gradient", vjp=lambda gy, node: (None,),
                           doc="Identity whose gradient is zero")


def stop_gradient(x) -> Tensor:
    """y = x, treated as a constant by gd.grad.

    Example:
        >>> target = gd.stop_gradient(teacher_logits)
    """
    x = as_tensor(x)
    return _make("stop_gradient", (x,), {}, x.shape, x.dtype)


ZERO_ONE = structured(
    "zero_one", differentiable=False,
    why_not="zero_one loss is a metric: its derivative is zero almost everywhere and "
            "undefined at the decision boundary; train with cross_entropy or hinge instead",
    doc="Per-sample 0/1 error: 1 where argmax(scores) != label")


def zero_one_error(scores, labels) -> Tensor:
    """e_i = 1 if argmax_j scores[i, j] != labels[i] else 0 (course eq. 5), shape (N,).

    Example:
        >>> err = gd.losses.zero_one(logits, y)
    """
    scores, labels = as_tensor(scores), as_tensor(labels)
    if scores.ndim != 2 or labels.ndim != 1 or scores.shape[0] != labels.shape[0]:
        raise shape_error(f"zero_one needs scores (N, C) and labels (N,), got "
                          f"{format_shape(scores.shape)} and {format_shape(labels.shape)}")
    if labels.dtype != "int64":
        raise dtype_error(f"zero_one needs int64 labels, got {labels.dtype}")
    dtype = scores.dtype if scores.dtype in FLOAT_DTYPES else "float32"
    return _make("zero_one", (scores, labels), {}, (scores.shape[0],), dtype)
