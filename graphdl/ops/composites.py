"""Composite ops: Python functions that build primitives (no OpDef, no VJP of their own)."""

from __future__ import annotations

from graphdl.graph import Tensor, as_tensor
from graphdl.ops.elementwise import apply
from graphdl.ops.indexing import stop_gradient
from graphdl.ops.structured import max, sum


def _shifted(x, axis):
    # log-softmax is invariant to subtracting a per-row constant; the max is a constant for
    # the derivative, so stop_gradient saves the max's backward pass without changing it.
    return x - stop_gradient(max(x, axis, keepdims=True))


def log_softmax(x, axis: int = -1) -> Tensor:
    """log softmax(x)_i = x_i - log sum_j exp(x_j), computed with the max subtracted first.

    Example:
        >>> logp = gd.log_softmax(logits, axis=-1)
    """
    z = _shifted(as_tensor(x), axis)
    return z - apply("log", sum(apply("exp", z), axis, keepdims=True))


def softmax(x, axis: int = -1) -> Tensor:
    """softmax(x)_i = exp(x_i) / sum_j exp(x_j), computed with the max subtracted first.

    Example:
        >>> p = gd.softmax(logits, axis=-1)
    """
    e = apply("exp", _shifted(as_tensor(x), axis))
    return e / sum(e, axis, keepdims=True)
