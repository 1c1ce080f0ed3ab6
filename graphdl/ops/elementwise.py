"""Elementwise arithmetic, comparisons and math functions: each op is one sympy formula.

`apply` builds the node of any registered elementwise op (broadcasting, dtype rule);
`fused` builds the node of one explicit expression over its inputs (what autodiff emits for
a derivative and what fusion emits for a chain). The public functions (`gd.exp`, ...) are
generated from the registry by `make_public`, with the formula in their docstring.
"""

from __future__ import annotations

import sympy as sp

from graphdl.errors import dtype_error
from graphdl.graph import Tensor, as_tensor
from graphdl.ops.registry import A, B, COND, I, X, elementwise, get, node_expr
from graphdl.shapes import FLOAT_DTYPES, as_dtype, broadcast_shapes, promote


def _to_tensors(args):
    # Python scalars take the dtype of the first float tensor (weak typing), else the first
    # tensor's: in where(x > 0, x, 0.0) the 0.0 follows x, not the bool condition.
    tensors = [a for a in args if isinstance(a, Tensor)]
    like = next((t for t in tensors if t.dtype in FLOAT_DTYPES), tensors[0] if tensors else None)
    return tuple(as_tensor(a, like) for a in args)


def apply(name: str, *args, **params) -> Tensor:
    """Build the node of a registered elementwise op, with broadcasting and dtype rules."""
    op = get(name)
    if len(args) != op.arity:
        raise TypeError(f"{name} takes {op.arity} tensor argument(s), got {len(args)}")
    inputs = _to_tensors(args)
    for p in op.params:
        if p not in params:
            raise TypeError(f"{name} needs the parameter {p!r}")
    extra = set(params) - set(op.params)
    if extra:
        raise TypeError(f"{name} got unexpected parameter(s) {sorted(extra)}")
    shape = broadcast_shapes(*(t.shape for t in inputs), what=f"the inputs of {name}")
    dtype = result_dtype(op, inputs)
    attrs = {p: float(v) for p, v in params.items()}
    return Tensor.make(name, inputs, attrs, shape, dtype)


def result_dtype(op, inputs) -> str:
    """The output dtype of an elementwise op on these inputs (raises DTypeError)."""
    if op.name == "where":
        if inputs[0].dtype != "bool":
            raise dtype_error(f"where: the condition must be bool, got {inputs[0].dtype} "
                              "(compare with <, >, gd.equal ... to make one)")
        return promote(inputs[1].dtype, inputs[2].dtype)
    dtype = promote(*(t.dtype for t in inputs))
    if op.result == "bool":
        return "bool"
    if op.result == "float" and dtype not in FLOAT_DTYPES:
        return "float32"
    return dtype


def fused(inputs, expr: sp.Expr, dtype: str) -> Tensor:
    """A node computing one sympy expression over positional symbols I[0..n-1] of inputs."""
    inputs = tuple(inputs)
    shape = broadcast_shapes(*(t.shape for t in inputs), what="the inputs of a fused node")
    return Tensor.make("fused", inputs, {"expr": expr, "dtype": dtype}, shape, dtype)


def fused_from_nodes(expr: sp.Expr, symbol_nodes: dict, dtype: str) -> Tensor | None:
    """Fused node of an expression over arbitrary symbols mapped to tensors; None if zero.

    Symbols the expression does not use are dropped; a bare symbol returns its tensor.
    """
    if expr == 0:
        return None
    used = [s for s in symbol_nodes if s in expr.free_symbols]
    if expr in symbol_nodes and symbol_nodes[expr].dtype == dtype:
        return symbol_nodes[expr]
    remap = {s: I[k] for k, s in enumerate(used)}
    return fused([symbol_nodes[s] for s in used], expr.xreplace(remap), dtype)


def cast(x, dtype) -> Tensor:
    """Convert to another dtype: y = x, stored as `dtype`.

    Example:
        >>> gd.cast(labels, "float32")
    """
    x = as_tensor(x)
    dtype = as_dtype(dtype)
    if x.dtype == dtype:
        return x
    return Tensor.make("cast", (x,), {"to": dtype}, x.shape, dtype)


def expression(node) -> sp.Expr:
    """The expression of an elementwise node over its input symbols (for explain/backends)."""
    return node_expr(node)


# -- the catalog ---------------------------------------------------------------------------
ADD = elementwise("add", A + B, symbols=(A, B), doc="Elementwise sum")
SUB = elementwise("sub", A - B, symbols=(A, B), doc="Elementwise difference")
MUL = elementwise("mul", A * B, symbols=(A, B), doc="Elementwise product")
DIV = elementwise("div", A / B, symbols=(A, B), result="float", doc="Elementwise quotient")
NEG = elementwise("neg", -X, doc="Negation")
POW = elementwise("pow", A ** B, symbols=(A, B), result="float", doc="Elementwise power",
                  tidy=sp.powsimp)
EXP = elementwise("exp", sp.exp(X), result="float", doc="Exponential")
LOG = elementwise("log", sp.log(X), result="float", doc="Natural logarithm")
SQRT = elementwise("sqrt", sp.sqrt(X), result="float", doc="Square root")
ABS = elementwise("abs", sp.Abs(X), doc="Absolute value; d/dx |x| = sign(x), 0 at 0")
MAXIMUM = elementwise("maximum", sp.Max(A, B), symbols=(A, B),
                      doc="Elementwise maximum; at a tie each input gets half the gradient")
MINIMUM = elementwise("minimum", sp.Min(A, B), symbols=(A, B),
                      doc="Elementwise minimum; at a tie each input gets half the gradient")
WHERE = elementwise("where", sp.Piecewise((A, COND), (B, True)), symbols=(COND, A, B),
                    doc="Choose a where the condition holds, else b; the unused branch "
                        "gets a zero gradient (never NaN)")
CAST = elementwise("cast", X, doc="Convert to another dtype")

_NO_GRAD = "comparisons are piecewise constant: their derivative is zero almost everywhere"
GREATER = elementwise("greater", sp.StrictGreaterThan(A, B), symbols=(A, B), result="bool",
                      differentiable=False, why_not=_NO_GRAD, doc="a > b")
GREATER_EQUAL = elementwise("greater_equal", sp.GreaterThan(A, B), symbols=(A, B),
                            result="bool", differentiable=False, why_not=_NO_GRAD,
                            doc="a >= b")
LESS = elementwise("less", sp.StrictLessThan(A, B), symbols=(A, B), result="bool",
                   differentiable=False, why_not=_NO_GRAD, doc="a < b")
LESS_EQUAL = elementwise("less_equal", sp.LessThan(A, B), symbols=(A, B), result="bool",
                         differentiable=False, why_not=_NO_GRAD, doc="a <= b")
EQUAL = elementwise("equal", sp.Eq(A, B, evaluate=False), symbols=(A, B), result="bool",
                    differentiable=False, why_not=_NO_GRAD, doc="a == b")
NOT_EQUAL = elementwise("not_equal", sp.Ne(A, B, evaluate=False), symbols=(A, B),
                        result="bool", differentiable=False, why_not=_NO_GRAD, doc="a != b")
LOGICAL_NOT = elementwise("logical_not", sp.Not(COND), symbols=(COND,), result="bool",
                          differentiable=False, why_not=_NO_GRAD, doc="not c")
LOGICAL_AND = elementwise("logical_and", sp.And(COND, sp.Symbol("d")),
                          symbols=(COND, sp.Symbol("d")), result="bool", differentiable=False,
                          why_not=_NO_GRAD, doc="c and d")
LOGICAL_OR = elementwise("logical_or", sp.Or(COND, sp.Symbol("d")),
                         symbols=(COND, sp.Symbol("d")), result="bool", differentiable=False,
                         why_not=_NO_GRAD, doc="c or d")
