"""NumPy meaning of every structured op: one function per op name (the ground truth).

Each function takes (node, sizes, *input arrays) where `sizes` binds the symbolic dimension
names of this call, and returns an array of the node's shape and dtype.
"""

from __future__ import annotations

import numpy as np

from graphdl.errors import ArgumentError
from graphdl.ops.conv import numpy_windows
from graphdl.ops.random import numpy_random_uniform
from graphdl.shapes import bind_dims


def _slices(spec):
    # (start, stop, step) with stop < 0 after slice.indices means "past the front" when
    # stepping backwards; Python would read -1 as the last element.
    return tuple(slice(a, None if (b is None or b < 0) else b, c) for a, b, c in spec)


def _matmul(node, sizes, a, b):
    return np.matmul(a, b)


def _tensordot(node, sizes, a, b):
    return np.tensordot(a, b, axes=node.attr("axes"))


def _sum(node, sizes, x):
    return np.sum(x, axis=node.attr("axes"), keepdims=node.attr("keepdims"))


def _max(node, sizes, x):
    return np.max(x, axis=node.attr("axes"), keepdims=node.attr("keepdims"))


def _argmax(node, sizes, x):
    return np.argmax(x, axis=node.attr("axis"))


def _dim_size(node, sizes, x):
    return np.prod([x.shape[a] for a in node.attr("axes")], dtype=np.float64)


def _reshape(node, sizes, x):
    return x.reshape(bind_dims(node.attr("shape"), sizes))


def _transpose(node, sizes, x):
    return np.transpose(x, node.attr("perm"))


def _broadcast_to(node, sizes, x):
    return np.broadcast_to(x, bind_dims(node.attr("shape"), sizes))


def _slice(node, sizes, x):
    return x[_slices(node.attr("spec"))]


def _unslice(node, sizes, gy):
    out = np.zeros(bind_dims(node.attr("in_shape"), sizes), dtype=gy.dtype)
    out[_slices(node.attr("spec"))] = gy
    return out


def _concat(node, sizes, *xs):
    return np.concatenate(xs, axis=node.attr("axis"))


def _gather(node, sizes, x, index):
    axis = node.attr("axis")
    _check_range(index, x.shape[axis], "gather")
    return np.take_along_axis(x, index, axis=axis)


def _scatter_add(node, sizes, updates, index):
    axis = node.attr("axis")
    out = np.zeros(bind_dims(node.attr("shape"), sizes), dtype=updates.dtype)
    _check_range(index, out.shape[axis], "scatter_add")
    grid = list(np.indices(index.shape, sparse=True))
    grid[axis] = index
    np.add.at(out, tuple(grid), updates)
    return out


def _check_range(labels, n, what):
    if labels.size and (labels.min() < 0 or labels.max() >= n):
        bad = labels[(labels < 0) | (labels >= n)].ravel()[0]
        raise ArgumentError(f"{what}: label/index {int(bad)} is out of range [0, {n})")


def _one_hot(node, sizes, labels):
    n = node.attr("num_classes")
    _check_range(labels, n, "one_hot")
    return labels[..., None] == np.arange(n)


def _stop_gradient(node, sizes, x):
    return x


def _zero_one(node, sizes, scores, labels):
    return np.argmax(scores, axis=1) != labels


def _windows(node, sizes, x):
    # a strided view (as_strided), copied so that nothing aliases x
    return numpy_windows(x, node.attr("kernel"), node.attr("stride"),
                         node.attr("dilation")).copy()


def _unwindows(node, sizes, y):
    kernel, stride, dilation = node.attr("kernel"), node.attr("stride"), node.attr("dilation")
    out = np.zeros(bind_dims(node.attr("in_shape"), sizes), dtype=y.dtype)
    d = len(kernel)
    lead = (slice(None),) * (out.ndim - d)
    outs = y.shape[y.ndim - d:]
    for k in np.ndindex(*kernel):       # one strided add per kernel position
        where = tuple(slice(kk * dl, kk * dl + (o - 1) * st + 1, st)
                      for kk, dl, o, st in zip(k, dilation, outs, stride))
        out[lead + where] += y[lead + k]
    return out


def _random_uniform(node, sizes, step):
    shape = bind_dims(node.attr("shape"), sizes)
    size = int(np.prod(shape, dtype=np.int64))
    return numpy_random_uniform(node.attr("key"), int(step), size, node.dtype).reshape(shape)


STRUCTURED = {
    "matmul": _matmul,
    "tensordot": _tensordot,
    "sum": _sum,
    "max": _max,
    "argmax": _argmax,
    "dim_size": _dim_size,
    "reshape": _reshape,
    "transpose": _transpose,
    "broadcast_to": _broadcast_to,
    "slice": _slice,
    "unslice": _unslice,
    "concat": _concat,
    "gather": _gather,
    "scatter_add": _scatter_add,
    "one_hot": _one_hot,
    "stop_gradient": _stop_gradient,
    "zero_one": _zero_one,
    "windows": _windows,
    "unwindows": _unwindows,
    "random_uniform": _random_uniform,
}
