"""Constant folding: evaluate, once, every node whose inputs are all constants.

A node is folded when its inputs are constants (or broadcasts of a constant; never params,
state or inputs), its op is pure (the elementwise ops and the structured ops listed in
FOLDABLE), and its shape is static with at most MAX_FOLD_ELEMENTS elements. The value comes
from the reference interpreter (graphdl.codegen.reference), the ground truth, so a folded
graph computes what the original did. `dim_size` of static dimensions is folded whatever
its input (gd.dim_size already returns a constant then). A node whose evaluation raises
(one_hot of an out-of-range constant label) is left alone, so the error still happens when
the graph runs, with its message.

broadcast_to is not folded: it would turn a scalar into a full array for nothing (the
other passes see a broadcast constant as a constant).

Pre-condition: none. Post-condition: no foldable node has only constant inputs.
"""

from __future__ import annotations

import collections

import numpy as np

from graphdl.codegen.reference.interpreter import evaluate
from graphdl.graph import constant
from graphdl.ops.registry import is_elementwise
from graphdl.passes.rewrite import constant_value, rebuild_all
from graphdl.shapes import is_static

# 1e6 elements is 8 MB in float64: folding must not grow the program's memory by more than
# the arrays it already holds; bigger results are computed at run time instead.
MAX_FOLD_ELEMENTS = 1_000_000

FOLDABLE = frozenset({"matmul", "tensordot", "sum", "max", "argmax", "reshape", "transpose", "slice",
                      "unslice", "concat", "gather", "scatter_add", "one_hot",
                      "stop_gradient", "zero_one"})


def _foldable(node) -> bool:
    if not (is_elementwise(node) or node.op in FOLDABLE):
        return False
    if not is_static(node.shape) or int(np.prod(node.shape, dtype=np.int64)) > \
            MAX_FOLD_ELEMENTS:
        return False
    return all(is_static(p.shape) and constant_value(p) is not None for p in node.inputs)


def _static_dim_size(node):
    dims = [node.inputs[0].shape[a] for a in node.attr("axes")]
    if all(isinstance(d, int) for d in dims):
        return constant(float(np.prod(dims, dtype=np.int64)), node.dtype)
    return None


def _fold(node):
    arrays = [np.broadcast_to(constant_value(p), p.shape) for p in node.inputs]
    try:
        value = evaluate(node, arrays, {})
    except Exception:  # noqa: BLE001 - left for run time, which raises with its message
        return None
    value = np.array(value, dtype=node.dtype, order="C")
    if value.shape != node.shape:
        return None
    return constant(value, node.dtype)


def fold_constants(outputs, details: dict | None = None) -> list:
    """Replace every node computed from constants only by its value (a constant).

    Example:
        >>> (y,) = fold_constants([gd.constant(2.0) * 3.0 + x])    # add(x, 6.0)
    """
    folded: collections.Counter = collections.Counter()

    def replace(node, original):
        if node.is_leaf:
            return node
        new = None
        if node.op == "dim_size":
            new = _static_dim_size(node)
        elif _foldable(node):
            new = _fold(node)
        if new is None:
            return node
        folded[node.op] += 1
        return new

    outputs = rebuild_all(outputs, replace)
    if details is not None:
        details["folded"] = dict(folded)
    return outputs
