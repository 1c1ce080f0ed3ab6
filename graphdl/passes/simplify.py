"""Algebraic identities, as one rule table.

A rule is kept only if it is exact in IEEE arithmetic, or if the only values it changes are
ones the original got wrong (an inf or a 0 from an intermediate overflow or underflow,
replaced by the correctly rounded value) or the last bits of a rounding. The exceptions are
marked on the rule ([rounding], [overflow]). Rules NOT here, on purpose:

- x * 0 -> 0 (NaN and inf times 0 are NaN; fold_constants folds it when x is a constant),
  x - x -> 0 and x / x -> 1 (NaN, inf, 0), exp(log(x)) -> x (log of a negative is NaN);
- x + 0 -> x for an x that may be -0: -0 + 0 is +0 and 1/x would change sign. x + (-0) is
  always x, and x + 0 is x when x cannot be -0 (integers, exp, abs, relu, ... below);
- sum over a size-1 axis -> reshape: numpy's sum of one -0 is +0;
- an inexact reciprocal for x / c (see canonicalize).

Commutativity of add, mul, maximum and minimum is declared on the table. Post-condition: no
rule in SIMPLIFY_RULES matches anywhere in the graph.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from graphdl.graph import Tensor, constant
from graphdl.ops.elementwise import apply
from graphdl.ops.registry import is_elementwise
from graphdl.ops.structured import broadcast_to, reshape
from graphdl.ops.structured import sum as sum_
from graphdl.passes.rewrite import (
    P,
    RuleTable,
    const,
    constant_value,
    rewrite_to_fixed_point,
    rule,
    var,
)
from graphdl.shapes import FLOAT_DTYPES, Dim, broadcast_shapes

COMMUTATIVE = frozenset({"add", "mul", "maximum", "minimum"})
_MAX_EXACT_CHECK = 4096          # elements checked one by one with exact fractions

add, sub, mul, div, neg = P("add"), P("sub"), P("mul"), P("div"), P("neg")
log, exp, abs_ = P("log"), P("exp"), P("abs")
x_, y_, c_ = var("x"), var("y"), var("c")


# -- constant predicates -------------------------------------------------------------------
def _is(v, value) -> bool:
    return v.size > 0 and v.dtype != bool and bool(np.all(v == value))


def _ones(v) -> bool:
    return _is(v, 1)


def _minus_ones(v) -> bool:
    return _is(v, -1)


def _plus_zeros(v) -> bool:
    return _is(v, 0) and not np.any(np.signbit(v))


def _minus_zeros(v) -> bool:
    return _is(v, 0) and bool(np.all(np.signbit(v)))


def _numeric(t: Tensor) -> bool:
    return t.dtype != "bool"


def _float(t: Tensor) -> bool:
    return t.dtype in FLOAT_DTYPES


# -- signed zeros --------------------------------------------------------------------------
_NEVER_MINUS_ZERO_OPS = frozenset({"exp", "abs", "relu", "sigmoid", "one_hot", "dim_size"})


def _never_minus_zero(x: Tensor) -> bool:
    """True when no element of x can be -0 (so x + 0 == x exactly)."""
    if x.dtype not in FLOAT_DTYPES or x.op in _NEVER_MINUS_ZERO_OPS:
        return True
    if x.op == "cast":
        return x.inputs[0].dtype not in FLOAT_DTYPES
    if x.op == "add":       # a + b is -0 only when both are -0
        return any(_never_minus_zero(t) for t in x.inputs)
    value = constant_value(x)
    return value is not None and not np.any((value == 0) & np.signbit(value))


def _add_zero(x):
    return x if _never_minus_zero(x) else None


# -- constant chains -----------------------------------------------------------------------
def _exactly(op, a, b, dtype):
    """op(a, b) in `dtype` when it is exact for every element (finite in, finite out)."""
    with np.errstate(all="ignore"):
        out = op(a.astype(dtype), b.astype(dtype)).astype(dtype)
    if np.dtype(dtype).kind in "iu":
        return out                             # modular arithmetic is associative
    if out.size > _MAX_EXACT_CHECK:
        return None
    real = {np.multiply: lambda p, q: p * q, np.add: lambda p, q: p + q}[op]
    flat = [np.ravel(t) for t in np.broadcast_arrays(a, b, out)]
    for p, q, r in zip(*flat):
        if not (np.isfinite(p) and np.isfinite(q) and np.isfinite(r)):
            return None
        if real(Fraction(float(p)), Fraction(float(q))) != Fraction(float(r)):
            return None
    return out


def _chain(op_name, ufunc):
    def replace(node, inner, x, c1, c2):
        if not (x.dtype == c1.dtype == c2.dtype == inner.dtype == node.dtype
                and _numeric(node)):
            return None
        combined = _exactly(ufunc, constant_value(c1), constant_value(c2), node.dtype)
        if combined is None:
            return None
        return apply(op_name, x, constant(combined, node.dtype))
    return replace


# -- broadcasts ----------------------------------------------------------------------------
def _elementwise_with_broadcast(node: Tensor) -> bool:
    return is_elementwise(node) and any(t.op == "broadcast_to" for t in node.inputs)


def _strip_broadcasts(node):
    """f(broadcast_to(x), y) -> f(x, y), broadcast to the old shape afterwards if needed."""
    inputs = tuple(t.inputs[0] if t.op == "broadcast_to" else t for t in node.inputs)
    shape = broadcast_shapes(*(t.shape for t in inputs))
    return Tensor.make(node.op, inputs, dict(node.attrs), shape, node.dtype)


def _broadcast(x: Tensor, shape) -> Tensor:
    """broadcast_to that never stacks one broadcast on another."""
    if x.op == "broadcast_to":
        x = x.inputs[0]
    return broadcast_to(x, shape)


def _strip_units(shape) -> tuple:
    return tuple(d for d in shape if d != 1)


def _reshape_of_broadcast(node, x):
    """reshape(broadcast_to(x, s), t) when t only adds or drops unit axes of s."""
    b = node.inputs[0]
    s, t = b.shape, node.shape
    if _strip_units(s) != _strip_units(t):
        return None
    padded = (1,) * (len(s) - x.ndim) + tuple(x.shape)
    kept = iter(padded[a] for a in range(len(s)) if s[a] != 1)
    inner = tuple(1 if d == 1 else next(kept) for d in t)
    return _broadcast(reshape(x, inner), t)


def _sum_of_broadcast(node, x):
    """sum(broadcast_to(x, s)) -> n * sum(x) over the axes x was broadcast along."""
    b = node.inputs[0]
    s, axes = b.shape, node.attr("axes")
    padded = (1,) * (len(s) - x.ndim) + tuple(x.shape)
    spread = [a for a in axes if padded[a] == 1 and s[a] != 1]
    if not spread or x.dtype != node.dtype or not _numeric(x):
        return None
    dims = [s[a] for a in spread]
    if any(isinstance(d, Dim) or d <= 0 for d in dims):
        return None        # a symbolic dim may be 0 at run time: inf * 0 would be NaN
    n = int(np.prod(dims))
    if float(np.asarray(n, dtype=node.dtype)) != n:
        return None
    real_axes = [a for a in axes if padded[a] != 1]
    if real_axes or not _never_minus_zero(x):
        # numpy's sum turns -0 into +0; summing the (size-1) broadcast axes too keeps that.
        x = sum_(reshape(x, padded), axes, keepdims=True)
    scaled = apply("mul", x, constant(n, node.dtype))
    full = tuple(1 if a in axes else s[a] for a in range(len(s)))
    out = _broadcast(scaled, full)
    return out if node.attr("keepdims") else reshape(out, node.shape)


SIMPLIFY_RULES = RuleTable([
    rule("x * 1 -> x", mul(x_, const("c", _ones)), lambda x: x),
    rule("x * -1 -> -x", mul(x_.where(_numeric), const("c", _minus_ones)),
         lambda x: apply("neg", x)),
    rule("x + (-0) -> x", add(x_, const("c", _minus_zeros)), lambda x: x),
    rule("x + 0 -> x when x cannot be -0", add(x_, const("c", _plus_zeros)), _add_zero),
    rule("x - 0 -> x", sub(x_, const("c", _plus_zeros)), lambda x: x),
    rule("x / 1 -> x", div(x_.where(_float), const("c", _ones)), lambda x: x),
    rule("x / -1 -> -x", div(x_.where(_float), const("c", _minus_ones)),
         lambda x: apply("neg", x)),
    rule("x ** 1 -> x", P("pow")(x_.where(_float), const("c", _ones)), lambda x: x),
    rule("-(-x) -> x", neg(neg(x_)), lambda x: x),
    rule("x + (-y) -> x - y", add(x_, neg(y_)), lambda x, y: apply("sub", x, y)),
    rule("x - (-y) -> x + y", sub(x_, neg(y_)), lambda x, y: apply("add", x, y)),
    rule("(-x) * (-y) -> x * y", mul(neg(x_), neg(y_)), lambda x, y: apply("mul", x, y)),
    rule("(-x) * c -> x * (-c)", mul(neg(x_), const("c", lambda v: v.dtype != bool)),
         lambda x, c: apply("mul", x, constant(-constant_value(c), c.dtype))),
    # [overflow] exp(x) is inf above ~709 (float64) / ~88 (float32) and 0 below ~-745:
    # the original gives inf / -inf there, the rewrite the correct x. NaN and +-inf agree.
    rule("log(exp(x)) -> x", log(exp(x_)), lambda x: x),
    rule("abs(abs(x)) -> abs(x)", abs_(abs_(x_)), lambda x: apply("abs", x)),
    rule("abs(-x) -> abs(x)", abs_(neg(x_)), lambda x: apply("abs", x)),
    # [rounding] only when c1 * c2 is exact: x * (c1 c2) is then the correctly rounded
    # product, the original rounds twice (an ulp apart at most, or an intermediate inf / 0).
    rule("x * c1 * c2 -> x * (c1 * c2)", mul(mul(x_, const("c1"), name="inner"), const("c2")),
         _chain("mul", np.multiply)),
    # [rounding] only when c1 + c2 is exact, which makes x + (c1 + c2) correctly rounded.
    rule("(x + c1) + c2 -> x + (c1 + c2)", add(add(x_, const("c1"), name="inner"), const("c2")),
         _chain("add", np.add)),
    rule("maximum(x, x) -> x", P("maximum")(x_, x_), lambda x: x),
    rule("minimum(x, x) -> x", P("minimum")(x_, x_), lambda x: x),
    rule("where(c, x, x) -> x", P("where")(c_, x_, x_), lambda x: x),
    rule("where(not c, x, y) -> where(c, y, x)", P("where")(P("logical_not")(c_), x_, y_),
         lambda c, x, y: apply("where", c, y, x)),
    rule("f(broadcast_to(x), y) -> broadcast_to(f(x, y)) for elementwise f",
         var("f").where(_elementwise_with_broadcast), lambda node: _strip_broadcasts(node)),
    rule("reshape(broadcast_to(x, s), t) -> broadcast_to(reshape(x, t'), t) when t only "
         "adds or drops unit axes", P("reshape")(P("broadcast_to")(x_)),
         _reshape_of_broadcast),
    # [rounding] numpy sums the n copies pairwise; n * sum(x) is rounded once.
    rule("sum(broadcast_to(x)) -> n * sum(x) over the broadcast axes",
         P("sum")(P("broadcast_to")(x_)), _sum_of_broadcast),
], commutative=COMMUTATIVE)


def simplify(outputs, details: dict | None = None) -> list:
    """Apply the algebraic identities of SIMPLIFY_RULES until none matches.

    Example:
        >>> (y,) = simplify([gd.log(gd.exp(x)) * 1.0])     # y is x
    """
    stats: dict = {}
    outputs = rewrite_to_fixed_point(outputs, SIMPLIFY_RULES, stats=stats)
    if details is not None:
        details.update(stats)
    return outputs
