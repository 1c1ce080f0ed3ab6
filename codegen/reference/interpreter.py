"""The reference interpreter: walks the graph in topological order with NumPy.

Elementwise nodes (registered and fused) evaluate their sympy expression, stabilized by
`graphdl.ops.stable`, through `sympy.lambdify(..., "numpy")`; structured ops use the table in
`structured.py`. Every result is cast to the node's dtype and shape, so this backend defines
the semantics the others are tested against.
"""

from __future__ import annotations

import functools

import numpy as np
import sympy as sp

from graphdl.graph import toposort
from graphdl.ops.registry import I, is_elementwise, node_expr
from graphdl.ops.stable import stabilize
from graphdl.shapes import bind_dims
from graphdl.codegen.reference.structured import STRUCTURED
from graphdl.codegen.reference.scan import SCAN_OPS


def _sigmoid(u):
    # e = exp(-|u|) never overflows; 1/(1+e) and e/(1+e) keep full relative accuracy in
    # both tails (0.5 + 0.5 tanh(u/2) would round sigma(-30) to 0 in float32).
    e = np.exp(-np.abs(u))
    return np.where(u >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(u):
    return np.logaddexp(0, u)


def _strong_mul(gy, d):
    return np.where(gy == 0, np.zeros_like(gy * d), gy * d)


_MODULES = [{"Sigmoid": _sigmoid, "Softplus": _softplus, "StrongMul": _strong_mul,
             "expm1": np.expm1, "log1p": np.log1p}, "numpy"]


@functools.lru_cache(maxsize=4096)
def elementwise_function(expr: sp.Expr, arity: int):
    """A NumPy function of `arity` arrays computing the (stabilized) expression."""
    return sp.lambdify(I[:arity], stabilize(expr), modules=_MODULES)


def evaluate_elementwise(node, arrays, sizes):
    """Evaluate one elementwise node on NumPy arrays."""
    fn = elementwise_function(node_expr(node), len(arrays))
    with np.errstate(all="ignore"):
        out = fn(*arrays)
    out = np.asarray(out, dtype=node.dtype)
    shape = bind_dims(node.shape, sizes)
    return out if out.shape == shape else np.broadcast_to(out, shape)


def evaluate(node, arrays, sizes):
    """Evaluate one non-leaf node."""
    if is_elementwise(node):
        return evaluate_elementwise(node, arrays, sizes)
    if node.op in SCAN_OPS:     # multi-output scan and its projections (scan.py)
        return SCAN_OPS[node.op](node, arrays, sizes)
    out = STRUCTURED[node.op](node, sizes, *arrays)
    return np.asarray(out, dtype=node.dtype)


class Program:
    """A compiled (here: ordered) graph: outputs and update values from inputs and state."""

    applies_updates = False   # the Executable writes the update values back

    def __init__(self, inputs, outputs, update_values):
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.update_values = tuple(update_values)
        self.nodes = toposort(list(self.outputs) + list(self.update_values))
        self._last_use = self._liveness()

    def _liveness(self):
        last = {}
        for i, node in enumerate(self.nodes):
            for p in node.inputs:
                last[p] = i
        keep = set(self.outputs) | set(self.update_values)
        return {n: i for n, i in last.items() if n not in keep}

    def run(self, arrays, sizes, observe=None):
        """Values of the outputs and the update values, given the input arrays.

        `observe(node, value)` is called after each node when given (for inspection tools).
        """
        values = dict(zip(self.inputs, arrays))
        for i, node in enumerate(self.nodes):
            if node in values:
                continue
            if node.storage is not None:
                values[node] = node.storage.array
                continue
            if node.op == "input":
                raise KeyError(f"input {node.name!r} was not given")
            out = evaluate(node, [values[p] for p in node.inputs], sizes)
            values[node] = out
            if observe is not None:
                observe(node, out)
            for p in node.inputs:
                if self._last_use.get(p) == i and p.storage is None and p not in self.inputs:
                    values.pop(p, None)
        return ([values[o] for o in self.outputs], [values[u] for u in self.update_values])


def compile_program(inputs, outputs, updates) -> Program:
    """The reference backend's compile step: order the graph once.

    `updates` are (variable, new value) pairs; the Executable writes them back.
    """
    return Program(inputs, outputs, [value for _, value in updates])
