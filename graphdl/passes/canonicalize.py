"""Canonical forms, so that later rules and CSE see one spelling of each computation.

Every rule here is exact in IEEE arithmetic (NaN, inf and signed zeros included) except
where a rule's comment says otherwise:

- constants go to the right of commutative ops (add, mul, maximum, minimum). numpy's
  maximum/minimum return their second operand when comparing +0 with -0 (IEEE 754-2008
  leaves that case open), so for them the swap may change which zero comes out; NaN
  propagates from either side as before;
- `x - c` becomes `x + (-c)` and `x / c` becomes `x * (1/c)` when 1/c is exact (c a power
  of two), so constant chains meet in one op; an inexact reciprocal would move results by
  an ulp (LLVM allows that only under the `arcp` fast-math flag) and is not done. `a - b`
  for a non-constant b stays a sub: add(a, neg(b)) costs a node and no rule needs it;
- no-op and chained movement ops collapse (cast to the same dtype, a lossless cast and back,
  reshape of reshape, transpose of transpose, broadcast_to of broadcast_to or to the same
  shape), and -(-x) -> x;
- a fused node whose expression is exactly one registered op's formula becomes that op
  (autodiff writes `-gy` as fused(-i0)), so the simplifier's rules see it.

Pre-condition: none. Post-condition: no rule in CANONICAL_RULES matches anywhere.
"""

from __future__ import annotations

import functools
import itertools
from fractions import Fraction

import numpy as np
import sympy as sp

from graphdl.errors import GraphdlError
from graphdl.graph import Tensor, constant
from graphdl.ops import registry
from graphdl.ops.elementwise import apply
from graphdl.ops.registry import I, node_expr
from graphdl.ops.structured import broadcast_to, reshape, transpose
from graphdl.passes.rewrite import (
    P,
    Pattern,
    RuleTable,
    canonical_expr,
    const,
    constant_value,
    is_constant,
    rename_symbols,
    rewrite_to_fixed_point,
    rule,
    var,
)
from graphdl.shapes import FLOAT_DTYPES

COMMUTATIVE = frozenset({"add", "mul", "maximum", "minimum"})

sub, div, neg = P("sub"), P("div"), P("neg")
x_ = var("x")


# -- constants to the right ----------------------------------------------------------------
def _constant_left(node) -> bool:
    return is_constant(node.inputs[0]) and not is_constant(node.inputs[1])


def _swap(node):
    return Tensor.make(node.op, node.inputs[::-1], dict(node.attrs), node.shape, node.dtype)


def _constant_right(op: str):
    pattern = Pattern(op, (var("a"), var("b"))).where(_constant_left)
    return rule(f"{op}(c, x) -> {op}(x, c)", pattern, lambda node: _swap(node))


# -- constants into their inverse ----------------------------------------------------------
def _numeric(value) -> bool:
    return value.dtype.kind in "iuf"


def _sub_constant(x, c):
    value = constant_value(c)
    if not _numeric(value):
        return None
    with np.errstate(over="ignore"):
        negated = constant(np.negative(value), c.dtype)
    return apply("add", x, negated)


def _exact_reciprocal(value):
    """1/value when it is exact for every element (a power of two, no overflow), else None."""
    if value.dtype.kind != "f" or value.size == 0 or value.size > 4096:
        return None
    with np.errstate(all="ignore"):
        recip = (1 / value).astype(value.dtype)
    for a, r in zip(value.reshape(-1), recip.reshape(-1)):
        if not (np.isfinite(a) and np.isfinite(r) and a != 0):
            return None
        if Fraction(float(a)) * Fraction(float(r)) != 1:
            return None
    return recip


def _div_constant(node, x, c):
    if c.dtype not in FLOAT_DTYPES or node.dtype != c.dtype:
        return None
    recip = _exact_reciprocal(constant_value(c))
    if recip is None:
        return None
    return apply("mul", x, constant(recip, c.dtype))


# -- casts and movement --------------------------------------------------------------------
_LOSSLESS = {("bool", "int64"), ("bool", "float32"), ("bool", "float64"),
             ("float32", "float64")}


def _cast_roundtrip(node, x):
    middle = node.inputs[0]
    if node.dtype == x.dtype and (x.dtype, middle.dtype) in _LOSSLESS:
        return x
    return None


def _reshape_reshape(node, x):
    return reshape(x, node.attr("shape"))


def _transpose_transpose(node, x):
    inner, outer = node.inputs[0].attr("perm"), node.attr("perm")
    return transpose(x, tuple(inner[p] for p in outer))


def _broadcast_broadcast(node, x):
    return broadcast_to(x, node.attr("shape"))


# -- fused nodes of one registered op -------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _formula_index() -> dict:
    """Positional formula (over I[0..n-1]) -> op name, for ops without parameters."""
    index = {}
    for op in registry.all_ops():
        if op.kind != "elementwise" or op.params or op.name == "cast":
            continue
        subs = {s: I[k] for k, s in enumerate(op.symbols)}
        index.setdefault(canonical_expr(op.formula.xreplace(subs)), op.name)
    return index


@functools.lru_cache(maxsize=4096)
def _formulas_of(expr, n: int) -> tuple:
    """(op name, input permutation) pairs under which `expr` is exactly one op's formula."""
    index = _formula_index()
    if n > 3 or sp.count_ops(expr) > max(sp.count_ops(f) for f in index):
        return ()
    found = []
    for perm in itertools.permutations(range(n)):
        renamed = rename_symbols(expr, {I[perm[j]]: I[j] for j in range(n)})
        name = index.get(canonical_expr(renamed))
        if name is not None:
            found.append((name, perm))
    return tuple(found)


def _fused_as_op(node):
    for name, perm in _formulas_of(node_expr(node), len(node.inputs)):
        try:
            candidate = apply(name, *(node.inputs[p] for p in perm))
        except GraphdlError:       # a dtype the op refuses: not this op after all
            continue
        if candidate.dtype == node.dtype and candidate.shape == node.shape:
            return candidate
    return None


CANONICAL_RULES = RuleTable([
    *(_constant_right(op) for op in sorted(COMMUTATIVE)),
    rule("x - c -> x + (-c)", sub(x_, const("c")), _sub_constant),
    rule("x / c -> x * (1/c) when 1/c is exact", div(x_, const("c")),
         _div_constant),
    rule("-(-x) -> x", neg(neg(x_)), lambda x: x),
    rule("cast(x, dtype(x)) -> x",
         P("cast")(x_).where(lambda n: n.dtype == n.inputs[0].dtype), lambda x: x),
    rule("cast(cast(x, wider), dtype(x)) -> x", P("cast")(P("cast")(x_)), _cast_roundtrip),
    rule("reshape(reshape(x, s1), s2) -> reshape(x, s2)", P("reshape")(P("reshape")(x_)),
         _reshape_reshape),
    rule("transpose(transpose(x, p), q) -> transpose(x, p[q])",
         P("transpose")(P("transpose")(x_)), _transpose_transpose),
    rule("broadcast_to(x, shape(x)) -> x",
         P("broadcast_to")(x_).where(lambda n: n.shape == n.inputs[0].shape), lambda x: x),
    rule("broadcast_to(broadcast_to(x, s1), s2) -> broadcast_to(x, s2)",
         P("broadcast_to")(P("broadcast_to")(x_)), _broadcast_broadcast),
    rule("fused(formula of op f) -> f", P("fused").any(),
         lambda node: _fused_as_op(node)),
], commutative=COMMUTATIVE)


def canonicalize(outputs, details: dict | None = None) -> list:
    """Rewrite the graph into canonical form (see the module docstring for the rules).

    Example:
        >>> (y,) = canonicalize([2.0 * x])     # mul(x, 2.0)
    """
    stats: dict = {}
    outputs = rewrite_to_fixed_point(outputs, CANONICAL_RULES, stats=stats)
    if details is not None:
        details.update(stats)
    return outputs
