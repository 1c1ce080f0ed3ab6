"""The pass pipeline: a plain ordered tuple of graph -> graph functions, and `verify`.

Every pass is `pass_(outputs, details=None) -> outputs`: it takes the output tensors of a
graph and returns new output tensors computing the same values (leaves, that is inputs,
params and state, are the same objects; constants may be new). `details`, when a dict,
receives what the pass did. Any pass can be switched off by name:

    >>> outs = optimize([loss, *grads], skip={"fuse_elementwise"}, check=True)
"""

from __future__ import annotations

import time

import numpy as np

from graphdl.errors import GraphdlError
from graphdl.graph import Tensor, toposort
from graphdl.ops import registry
from graphdl.ops.elementwise import result_dtype  # the dtype rule of apply
from graphdl.ops.registry import OUT, I, is_elementwise
from graphdl.passes.canonicalize import canonicalize
from graphdl.passes.cse import cse
from graphdl.passes.dce import dce
from graphdl.passes.fold import fold_constants
from graphdl.passes.fuse import fuse_elementwise
from graphdl.passes.simplify import simplify
from graphdl.shapes import DTYPES, Dim, broadcast_shapes

PIPELINE = (canonicalize, simplify, cse, dce, fold_constants, fuse_elementwise)
PASS_NAMES = tuple(p.__name__ for p in PIPELINE)


class InvalidGraph(GraphdlError, ValueError):
    """A graph that breaks a structural rule (a pass bug): shape, dtype or a dangling input."""


def optimize(outputs, skip=frozenset(), check: bool = False, report: list | None = None):
    """Run the pipeline on the graph of `outputs`; returns the new outputs, in order.

    `skip` names passes to switch off; `check=True` verifies the graph after each pass;
    `report`, when a list, receives one dict per pass run: {"pass", "nodes_before",
    "nodes_after", "seconds", "changed", "details"}.

    Example:
        >>> report = []
        >>> loss2, *grads2 = optimize([loss, *grads], report=report)
    """
    skip = frozenset(skip)
    unknown = skip - set(PASS_NAMES)
    if unknown:
        raise ValueError(f"unknown pass name(s) {sorted(unknown)}; the passes are "
                         f"{', '.join(PASS_NAMES)}")
    outputs = list(outputs)
    if check:
        verify(outputs)
    for pass_ in PIPELINE:
        if pass_.__name__ in skip:
            continue
        before = len(toposort(outputs)) if report is not None else 0
        details: dict = {}
        start = time.perf_counter()
        new = list(pass_(outputs, details=details))
        seconds = time.perf_counter() - start
        if check:
            verify(new)
        if report is not None:
            report.append({"pass": pass_.__name__, "nodes_before": before,
                           "nodes_after": len(toposort(new)), "seconds": seconds,
                           "changed": any(a is not b for a, b in zip(new, outputs)),
                           "details": details})
        outputs = new
    return outputs


# -- verify --------------------------------------------------------------------------------
def verify(outputs) -> None:
    """Check every node: dtypes and shapes follow the op rules; no dangling inputs.

    Raises InvalidGraph naming the node and the rule it breaks.

    Example:
        >>> verify([loss])
    """
    for node in toposort(list(outputs)):
        problem = _problem(node)
        if problem:
            raise InvalidGraph(f"{node!r} (built at {node.site}): {problem}")


def _problem(node: Tensor) -> str | None:
    if not all(isinstance(t, Tensor) for t in node.inputs):
        return "an input is not a Tensor"
    if node.dtype not in DTYPES:
        return f"unknown dtype {node.dtype!r}"
    if not all(isinstance(d, Dim) or (isinstance(d, int) and d >= 0) for d in node.shape):
        return f"invalid shape {node.shape!r}"
    if node.is_leaf:
        return _leaf_problem(node)
    if node.op == "fused":
        return _fused_problem(node)
    if is_elementwise(node):
        return _elementwise_problem(node)
    return _STRUCTURED_CHECKS.get(node.op, lambda n: None)(node)


def _leaf_problem(node):
    if node.inputs:
        return "a leaf has inputs"
    if node.storage is not None:
        array = node.storage.array
        if tuple(array.shape) != tuple(node.shape) or array.dtype.name != node.dtype:
            return f"its value is {array.dtype.name} {array.shape}"
    elif node.op != "input":
        return f"a {node.op} without a value"
    return None


def _broadcast_problem(node):
    try:
        shape = broadcast_shapes(*(t.shape for t in node.inputs))
    except GraphdlError as e:
        return f"inputs do not broadcast: {e}"
    return None if shape == node.shape else f"shape {node.shape}, inputs give {shape}"


def _fused_problem(node):
    expr = node.attr("expr")
    if OUT in expr.free_symbols:
        return "the expression refers to the node's own output"
    allowed = set(I[:len(node.inputs)])
    dangling = expr.free_symbols - allowed
    if dangling:
        return f"the expression uses {sorted(map(str, dangling))}, which are not inputs"
    if node.attr("dtype") != node.dtype:
        return f"dtype attribute {node.attr('dtype')} differs from {node.dtype}"
    return _broadcast_problem(node)


def _elementwise_problem(node):
    op = registry.get(node.op)
    if len(node.inputs) != op.arity:
        return f"{node.op} takes {op.arity} inputs, has {len(node.inputs)}"
    if node.op == "cast":
        return None if node.attr("to") == node.dtype and node.shape == node.inputs[0].shape \
            else "cast to another dtype or shape than its attribute"
    missing = [p for p in op.params if node.attr(p) is None]
    if missing:
        return f"missing parameter(s) {missing}"
    try:
        # The op's own rules (apply would return this very node: it is interned).
        shape = broadcast_shapes(*(t.shape for t in node.inputs))
        dtype = result_dtype(op, node.inputs)
    except GraphdlError as e:
        return f"its inputs break the op's rules: {e}"
    if (shape, dtype) != (node.shape, node.dtype):
        return f"the op's rules give {dtype} {shape}"
    return None


def _same_as_input(node):
    x = node.inputs[0]
    return None if (x.shape, x.dtype) == (node.shape, node.dtype) else \
        "shape or dtype differs from its input"


def _reshape_problem(node):
    x = node.inputs[0]
    if tuple(node.attr("shape")) != node.shape:
        return "shape differs from its attribute"

    def split(shape):
        return (sorted(d.name for d in shape if isinstance(d, Dim)),
                int(np.prod([d for d in shape if isinstance(d, int)], dtype=np.int64)))
    return None if split(x.shape) == split(node.shape) else "element count changes"


def _transpose_problem(node):
    perm, x = node.attr("perm"), node.inputs[0]
    if sorted(perm) != list(range(x.ndim)):
        return f"{perm} is not a permutation"
    return None if tuple(x.shape[p] for p in perm) == node.shape else "permuted shape differs"


def _broadcast_to_problem(node):
    x = node.inputs[0]
    try:
        ok = broadcast_shapes(x.shape, node.shape) == node.shape == tuple(node.attr("shape"))
    except GraphdlError:
        ok = False
    return None if ok else f"cannot broadcast {x.shape} to {node.shape}"


def _reduce_problem(node):
    x, axes = node.inputs[0], node.attr("axes")
    keep = node.attr("keepdims")
    want = tuple((1 if keep else None) if i in axes else d for i, d in enumerate(x.shape))
    want = tuple(d for d in want if d is not None)
    return None if want == node.shape else f"reducing {x.shape} over {axes} gives {want}"


def _matmul_problem(node):
    a, b = node.inputs
    if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
        return f"matmul of {a.shape} and {b.shape}"
    return None if node.shape[-2:] == (a.shape[-2], b.shape[-1]) else "matmul shape differs"


def _tensordot_problem(node):
    a, b = node.inputs
    k = node.attr("axes")
    if a.shape[a.ndim - k:] != b.shape[:k]:
        return f"tensordot of {a.shape} and {b.shape} over {k} axes"
    return None if node.shape == a.shape[:a.ndim - k] + b.shape[k:] else "tensordot shape differs"


_STRUCTURED_CHECKS = {
    "reshape": _reshape_problem,
    "transpose": _transpose_problem,
    "broadcast_to": _broadcast_to_problem,
    "sum": _reduce_problem,
    "max": _reduce_problem,
    "matmul": _matmul_problem,
    "tensordot": _tensordot_problem,
    "stop_gradient": _same_as_input,
}


def pass_names() -> tuple:
    """The names of the passes, in pipeline order (what `skip` accepts)."""
    return PASS_NAMES
