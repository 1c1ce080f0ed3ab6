"""The op registry: one `OpDef` per op, declared once.

Two kinds of ops exist (DESIGN.md, "One op, one place"):

- **elementwise** ops carry a sympy `formula` over their input symbols. Their derivative with
  respect to each input is `sympy.diff` of that formula, computed once here at registration
  (never simplified on the codegen path). An optional `d_out` claims a form of dy/dx written
  with the op's output `Y` (sigma' = Y (1 - Y)); the backward pass then reuses the saved
  output, and a test proves the claim with sympy.
- **structured** ops carry a shape rule and a vector-Jacobian rule (`vjp`) that builds the
  gradient out of other graph ops, so gradients are graphs and can be differentiated again.

Every elementwise node, registered or fused, is one sympy expression over positional input
symbols `I[0], I[1], ...` (`node_expr`); autodiff, the reference backend and every later
backend work from that expression.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable

import sympy as sp

X = sp.Symbol("x", real=True)          # the input of a unary op
Y = sp.Symbol("y", real=True)          # the output of an op, for output-reuse derivatives
A = sp.Symbol("a", real=True)          # the inputs of binary ops
B = sp.Symbol("b", real=True)
COND = sp.Symbol("c")                  # a boolean condition (where)
ALPHA = sp.Symbol("alpha", real=True)  # the learnable slope of prelu, a tensor input
I = tuple(sp.Symbol(f"i{k}", real=True) for k in range(64))  # positional input symbols
OUT = sp.Symbol("out", real=True)      # positional symbol of a node's own output
GY = sp.Symbol("gy", real=True)        # the cotangent of a node's output


@dataclass(frozen=True)
class OpDef:
    """One op: its name, kind, and meaning (a formula or a VJP rule)."""

    name: str
    kind: str                                  # "elementwise" | "structured"
    doc: str = ""
    symbols: tuple = ()                        # elementwise: the formula's input symbols
    formula: sp.Expr | None = None             # elementwise: y = formula(symbols, params)
    params: tuple = ()                         # elementwise: attribute names used as symbols
    d_out: sp.Expr | None = None               # elementwise, unary: dy/dx in terms of Y (, X)
    result: str = "promote"                    # elementwise dtype rule: promote|float|bool
    vjp: Callable | None = None                # structured: (gy, inputs, y, node) -> grads
    shape: Callable | None = None              # structured: shape/dtype rule
    differentiable: bool = True
    why_not: str = ""                          # message when gd.grad meets a non-diff op
    derivatives: tuple = field(default=(), compare=False)

    @property
    def arity(self) -> int:
        """Number of tensor inputs (elementwise ops only)."""
        return len(self.symbols)


_REGISTRY: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    """Add an op to the registry; an op with neither formula nor VJP is an error at import."""
    if op.name in _REGISTRY:
        raise ValueError(f"op {op.name!r} is declared twice")
    if op.kind == "elementwise" and op.formula is None:
        raise ValueError(f"elementwise op {op.name!r} needs a formula")
    if op.kind == "structured" and op.differentiable and op.vjp is None:
        raise ValueError(f"structured op {op.name!r} needs a vjp or differentiable=False")
    _REGISTRY[op.name] = op
    return op


def elementwise(name: str, formula, *, symbols=(X,), params=(), d_out=None,
                result="promote", differentiable=True, why_not="", doc="",
                tidy=None) -> OpDef:
    """Declare an elementwise op by its sympy formula; derivatives come from sympy.diff.

    `tidy`, when given, is a sympy rewrite applied to each derivative (still derived, only
    regrouped): pow uses sympy.powsimp, because diff(a**b, a) comes out as a**b*b/a, which
    is 0*inf/0 = NaN at a = 0 where b*a**(b-1) is the right 0.
    """
    derivatives = tuple(sp.diff(formula, s) for s in symbols) if differentiable else ()
    if tidy is not None:
        derivatives = tuple(tidy(d) for d in derivatives)
    return register(OpDef(name=name, kind="elementwise", doc=doc, symbols=tuple(symbols),
                          formula=formula, params=tuple(params), d_out=d_out, result=result,
                          differentiable=differentiable, why_not=why_not,
                          derivatives=derivatives))


def structured(name: str, *, shape=None, vjp=None, differentiable=True, why_not="",
               doc="") -> OpDef:
    """Declare a structured op by its shape rule and vector-Jacobian rule."""
    return register(OpDef(name=name, kind="structured", doc=doc, shape=shape, vjp=vjp,
                          differentiable=differentiable, why_not=why_not))


def get(name: str) -> OpDef:
    """The OpDef of an op name ("fused" is the elementwise op of one explicit expression)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no op named {name!r}; known ops: {', '.join(sorted(_REGISTRY))}")


def all_ops() -> list[OpDef]:
    """Every registered op, in declaration order."""
    return list(_REGISTRY.values())


def is_elementwise(node) -> bool:
    """True for nodes of a registered elementwise op and for fused expression nodes."""
    return node.op == "fused" or (node.op in _REGISTRY
                                  and _REGISTRY[node.op].kind == "elementwise")


def _param_subs(op: OpDef, node) -> dict:
    return {sp.Symbol(p, real=True): sp.sympify(node.attr(p)) for p in op.params}


def node_expr(node) -> sp.Expr:
    """The sympy expression a (fused or registered) elementwise node computes, over I[k]."""
    if node.op == "fused":
        return node.attr("expr")
    op = _REGISTRY[node.op]
    return _positional(op, op.formula, node)


def _positional(op: OpDef, expr, node) -> sp.Expr:
    subs = {s: I[k] for k, s in enumerate(op.symbols)}
    subs.update(_param_subs(op, node))
    subs[Y] = OUT
    return expr.xreplace(subs)


def node_derivative(node, k: int) -> sp.Expr:
    """d(node)/d(input k) as an expression over I[*] and OUT (the node's own output)."""
    if node.op == "fused":
        return _diff_cached(node.attr("expr"), I[k])
    op = _REGISTRY[node.op]
    if op.d_out is not None and op.arity == 1:
        return _positional(op, op.d_out, node)
    return _positional(op, op.derivatives[k], node)


@functools.lru_cache(maxsize=8192)
def _diff_cached(expr, symbol):
    return sp.diff(expr, symbol)
