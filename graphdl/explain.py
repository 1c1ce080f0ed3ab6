"""gd.explain: derived formulas for ops, tensors and gradients, as text and LaTeX.

Three things can be explained, each into one `Explanation` (pretty text, one-line text,
LaTeX, and the sympy objects themselves):

- **an op** (`gd.sigmoid`, its `OpDef`, or the name "sigmoid"): the formula y = f(x), the
  derivative that sympy derives from it, the output-reuse form the op declares (`d_out`,
  sigma' = y (1 - y), course eq. 27), and, where the derivative is the formula of another
  registered op, that op's name (softplus' = sigmoid, eq. 35);
- **a tensor**: its whole formula as one sympy expression, substituted from the leaves
  (inputs, params and state become symbols named after them; scalar constants become
  numbers; elementwise and fused nodes substitute their expression; structured ops become
  undefined functions such as matmul(x, W1) or sum_axis1(...));
- **a loss and `wrt=[...]`**: the loss formula and d loss / d w for each w, from `gd.grad`.

`sympy.simplify` runs here and only here (STYLE.md section 3): the codegen path never sees
what this module computes. Large formulas stay printable through a size cap (`CAP` sympy
tree nodes): past it, every non-trivial node with several users (a hidden activation, the
saved output a gradient reuses) is named t1, t2, ..., and any operand still too large is named
too; the definitions are listed under "where", and `Explanation.full()` substitutes them back.

`to_dot` (Graphviz DOT text of a graph) lives in graphdl/dot.py and is re-exported here.
"""

from __future__ import annotations

import copy
import functools
import html
from fractions import Fraction

import numpy as np
import sympy as sp
from sympy.codegen.cfunctions import expm1
from sympy.printing.pretty.stringpict import prettyForm, stringPict

from graphdl.dot import to_dot
from graphdl.graph import Graph, Tensor, toposort
from graphdl.ops import registry
from graphdl.ops.registry import ALPHA, OUT, I, OpDef, X, Y
from graphdl.ops.stable import Sigmoid, Softplus
from graphdl.shapes import format_shape

CAP = 100  # largest formula (sympy tree nodes) printed inline; past it, shared parts are named


class Explanation:
    """Formulas of an op, a tensor or a gradient, printable as text, LaTeX and HTML.

    `rows` are (heading, lhs, rhs) triples: each prints as "lhs = rhs" under its heading.
    The sympy objects are attributes: `sympy` (the main expression), `formula`,
    `derivative`, `derivative_reuse`, `derivative_as`, `definitions`, `symbols`, ...

    Example:
        >>> e = gd.explain(gd.sigmoid)
        >>> e.derivative_reuse          # y*(1 - y)
        >>> print(e); e.latex()
    """

    def __init__(self, title: str, rows, notes=(), **attributes):
        self.title = title
        self.rows = list(rows)
        self.notes = list(notes)
        self.sympy = None
        self.formula = None
        self.derivative = None
        self.derivative_reuse = None
        self.derivative_as = None
        self.gradients = None
        self.definitions: dict = {}
        self.symbols: dict = {}
        self.shapes: dict = {}
        for key, value in attributes.items():
            setattr(self, key, value)

    # -- views ------------------------------------------------------------------------
    def full(self, expr=None):
        """`expr` (default: `sympy`) with the named sub-expressions t1, t2, ... substituted
        back: one expression over the leaves only."""
        return expand_definitions(self.sympy if expr is None else expr, self.definitions)

    @property
    def text(self) -> str:
        """One plain line: every row as `lhs = rhs`, separated by semicolons."""
        parts = [f"{sp.sstr(lhs)} = {sp.sstr(rhs)}" for _, lhs, rhs in self.rows]
        return f"{self.title}: " + "; ".join(parts)

    def latex(self) -> str:
        """The rows as one LaTeX `aligned` block (math only, no surrounding $$)."""
        lines = []
        for heading, lhs, rhs in self.rows:
            note = rf" && \text{{{_latex_text(heading)}}}" if heading else ""
            lines.append(f"{sp.latex(lhs)} &= {sp.latex(rhs)}{note}")
        return r"\begin{aligned}" + r" \\ ".join(lines) + r"\end{aligned}"

    def __str__(self) -> str:
        out = [self.title]
        heading_before = None
        for heading, lhs, rhs in self.rows:
            if heading and heading != heading_before:
                out.append(f"{heading}:")
            heading_before = heading
            pretty = sp.pretty(sp.Eq(lhs, rhs, evaluate=False), use_unicode=True)
            out.extend("    " + line for line in pretty.splitlines())
        out.extend(self.notes)
        return "\n".join(out)

    __repr__ = __str__

    def _repr_latex_(self) -> str:
        return f"$${self.latex()}$$"

    def _repr_html_(self) -> str:
        return f'<pre class="graphdl-explain">{html.escape(str(self))}</pre>'


def explain(obj, wrt=None, *, cap: int = CAP, simplify: bool = False) -> Explanation:
    """Explain an op (its formula and derived derivative) or a tensor (its full formula).

    `obj` is a public op function (`gd.sigmoid`), an `OpDef`, an op name, or a Tensor. With
    `wrt=[W1, ...]` (tensors), the tensor is a loss and each d loss / d w is explained too,
    built with `gd.grad`. `cap` bounds the printed size of a formula (sub-expressions past it
    become t1, t2, ... with their definitions listed); `simplify=True` runs sympy.simplify on
    tensor formulas small enough for it.

    Example:
        >>> print(gd.explain(gd.sigmoid))      # d/dx sigmoid(x) = y (1 - y)
        >>> gd.explain(loss, wrt=[W1, b1]).latex()
    """
    if isinstance(obj, Tensor):
        if wrt is not None:
            return _explain_gradients(obj, wrt, cap, simplify)
        return _explain_tensor(obj, cap, simplify)
    if wrt is not None:
        raise TypeError("gd.explain: wrt= is for a tensor (a loss), not an op")
    return explain_op(_as_opdef(obj))


def _as_opdef(obj) -> OpDef:
    if isinstance(obj, OpDef):
        return obj
    if isinstance(obj, str):
        return registry.get(obj)
    opdef = getattr(obj, "opdef", None)
    if isinstance(opdef, OpDef):
        return opdef
    name = getattr(obj, "__name__", type(obj).__name__)
    raise TypeError(f"gd.explain cannot explain {name!r}: give a Tensor, an op function such "
                    "as gd.sigmoid, an OpDef or an op name (composites such as softmax have "
                    "no formula of their own: explain a tensor built with them)")


# -- ops --------------------------------------------------------------------------------
def explain_op(op: OpDef) -> Explanation:
    """The explanation of one registered op: formula, derivatives, output-reuse form."""
    cached = _explain_op(op)
    fresh = copy.copy(cached)
    fresh.rows, fresh.notes = list(cached.rows), list(cached.notes)
    for key, value in vars(cached).items():
        if isinstance(value, dict):
            setattr(fresh, key, dict(value))
    return fresh


@functools.lru_cache(maxsize=256)
def _explain_op(op: OpDef) -> Explanation:
    """explain_op, computed once per op (ops are immutable; simplify is slow)."""
    if op.kind != "elementwise":
        note = ("its gradient is a vector-Jacobian rule that builds other graph ops"
                if op.differentiable else f"not differentiable: {op.why_not}")
        return Explanation(f"{op.name}: {op.doc} (structured op)", [],
                           notes=[f"{op.name} is a structured op; {note}"])
    call = op_function(op.name)(*op.symbols)
    rows = [("formula", call, op.formula)]
    if op.formula.has(sp.functions.elementary.hyperbolic.HyperbolicFunction):
        rows.append(("in exponentials", call, op.formula.rewrite(sp.exp)))  # tanh: eq. 28
    params = ", ".join(op.params)
    title = f"{op.name}: {op.doc}" + (f" (parameters: {params})" if params else "")
    attrs = {"formula": op.formula, "sympy": op.formula,
             "symbols": {str(s): s for s in op.symbols + _param_symbols(op)}}
    if not op.differentiable:
        return Explanation(title, rows, notes=[f"not differentiable: {op.why_not}"], **attrs)
    derivatives = {str(s): _readable(d) for s, d in zip(op.symbols, op.derivatives)}
    for s in op.symbols:
        rows.append(("derivative (sympy)", sp.Derivative(call, s), derivatives[str(s)]))
    if op.arity != 1:
        return Explanation(title, rows, derivative=derivatives,
                           **{**attrs, "sympy": sp.Tuple(*derivatives.values())})
    derivative = derivatives[str(op.symbols[0])]
    same_as = derivative_as(op)
    reuse = op.d_out if op.d_out is not None else (Y if same_as == op.name else None)
    lhs = sp.Derivative(call, op.symbols[0])
    if reuse is not None:
        rows.append((f"with the output y = {op.name}(x)", lhs, reuse))
        rows.append(("output reuse", lhs, reuse.xreplace({Y: call})))
    if same_as is not None:
        rows.append((f"the formula of gd.{same_as}", lhs, op_function(same_as)(*op.symbols)))
    return Explanation(title, rows, derivative=derivative, derivative_reuse=reuse,
                       derivative_as=same_as, **{**attrs, "sympy": derivative})


def _param_symbols(op: OpDef) -> tuple:
    return tuple(sp.Symbol(p, real=True) for p in op.params)


def _function_classes(expr) -> set:
    return {type(f) for f in expr.atoms(sp.Function)}


def _readable(expr):
    """sympy.simplify(expr), unless that brings in new functions (sigmoid' is not shown as
    1/(4 cosh(x/2)^2)) or is no shorter."""
    simpler = sp.simplify(expr)
    if _function_classes(simpler) - _function_classes(expr):
        return expr
    return simpler if sp.count_ops(simpler) <= sp.count_ops(expr) else expr


_PROBES = (-1.7, -0.3, 0.4, 1.3, 2.1)  # points off every kink where candidates are compared


def derivative_as(op: OpDef) -> str | None:
    """The name of a registered unary op whose formula equals op's derivative, or None.

    Checked numerically at a few points first (cheap), then proved with sympy.simplify.
    """
    if op.kind != "elementwise" or op.arity != 1 or not op.differentiable:
        return None
    d = op.derivatives[0]
    for other in registry.all_ops():
        if other.kind != "elementwise" or other.arity != 1 or other.name == "cast" \
                or other.result == "bool" or other.symbols != op.symbols:
            continue
        if _agree_numerically(d, other.formula) and sp.simplify(d - other.formula) == 0:
            return other.name
    return None


def _agree_numerically(a, b) -> bool:
    """False when a and b differ at one of the probe points (alpha, if any, set to 0.37)."""
    for point in _PROBES:
        subs = {X: sp.Float(point), ALPHA: sp.Float(0.37)}
        va, vb = sp.N(a.xreplace(subs)), sp.N(b.xreplace(subs))
        if not (va.is_real and vb.is_real):
            return True  # undecided numerically: let simplify decide
        if abs(float(va) - float(vb)) > 1e-9 * (1 + abs(float(va))):
            return False
    return True


# -- tensors ----------------------------------------------------------------------------
def _explain_tensor(t: Tensor, cap: int, simplify: bool) -> Explanation:
    formulas, (expr,) = _build_formulas([t], cap)
    if simplify:
        expr = _simplify_small(expr, cap)
    lhs = formulas.lhs(t, "y")
    rows = [("formula", lhs, expr)] + formulas.definition_rows()
    title = f"{lhs}: a {t.op} node, shape {format_shape(t.shape)}, {t.dtype}"
    return Explanation(title, rows, notes=formulas.leaf_notes(), sympy=expr, formula=expr,
                       **formulas.attributes())


def _explain_gradients(loss: Tensor, wrt, cap: int, simplify: bool) -> Explanation:
    from graphdl.autodiff import grad  # explain sits above autodiff; imported when used

    single = isinstance(wrt, Tensor)
    targets = [wrt] if single else list(wrt)
    grads = grad(loss, targets)
    formulas, (loss_expr, *grad_exprs) = _build_formulas([loss, *grads], cap)
    lhs = formulas.lhs(loss, "loss")
    rows = [("formula", lhs, loss_expr)]
    gradients = {}
    for k, (w, expr) in enumerate(zip(targets, grad_exprs)):
        if simplify:
            expr = _simplify_small(expr, cap)
        name = formulas.lhs(w, f"wrt{k + 1}")
        gradients[str(name)] = expr
        rows.append(("gradient", sp.Derivative(lhs, name), expr))
    rows += formulas.definition_rows()
    names = ", ".join(gradients)
    title = f"d {lhs} / d ({names}): loss shape {format_shape(loss.shape)}, {loss.dtype}"
    main = next(iter(gradients.values())) if single else sp.Tuple(*gradients.values())
    return Explanation(title, rows, notes=formulas.leaf_notes(), sympy=main, formula=loss_expr,
                       gradients=gradients, derivative=gradients, **formulas.attributes())


def _build_formulas(targets, cap: int):
    """The expressions of `targets`, inline when each fits `cap`; otherwise rebuilt with
    every non-trivial node that has several users named t1, t2, ... (a hidden activation
    is then written once, not at each of its uses)."""
    formulas = _Formulas(cap)
    exprs = [formulas.of(t) for t in targets]
    if not formulas.definitions and all(_tree_size(e, formulas.sizes) <= cap for e in exprs):
        return formulas, exprs
    users = Graph(targets).users()
    shared = {n for n, used_by in users.items() if len(used_by) > 1 and not n.is_leaf}
    formulas = _Formulas(cap, shared - set(targets))
    return formulas, [formulas.of(t) for t in targets]


def _simplify_small(expr, cap):
    """sympy.simplify for a formula that fits the cap; best effort, the input if it fails
    (sympy 1.14's simplify recurses without end on some Piecewise of undefined functions)."""
    if _tree_size(expr, {}) > cap:
        return expr
    try:
        return sp.simplify(expr)
    except (RecursionError, TypeError, ValueError, AttributeError):
        return expr


def expand_definitions(expr, definitions: dict):
    """Substitute named sub-expressions back, latest first (a definition only refers to
    names defined before it)."""
    if expr is None:
        return None
    for name, value in reversed(list(definitions.items())):
        expr = expr.xreplace({name: value})
    return expr


def _tree_size(expr, memo: dict) -> int:
    """Number of nodes of the expression tree (shared sub-trees counted at each use)."""
    found = memo.get(expr)
    if found is None:
        found = 1 + sum(_tree_size(a, memo) for a in expr.args) if expr.args else 1
        memo[expr] = found
    return found


SHARED_MIN_SIZE = 4  # a shared node smaller than this (x + b, -t) is clearer written inline


class _Formulas:
    """Builds the sympy expression of every node on the way to the explained tensors."""

    def __init__(self, cap: int, shared=frozenset()):
        self.cap = cap
        self.shared = shared          # nodes to name as soon as they are built
        self.exprs: dict = {}         # node -> expression (or its t-symbol once named)
        self.symbols: dict = {}       # leaf name -> Symbol
        self.shapes: dict = {}        # leaf name -> "input, shape (None, 4), float32"
        self.definitions: dict = {}   # t-symbol -> expression, in order of naming
        self.sizes: dict = {}         # memo of _tree_size
        self._names: set = set()
        self._constants = 0

    def of(self, tensor: Tensor):
        """The expression of `tensor` (nodes already built are reused)."""
        for node in toposort([tensor]):
            if node not in self.exprs:
                expr = self._build(node)
                if node in self.shared and _tree_size(expr, self.sizes) >= SHARED_MIN_SIZE:
                    expr = self._define(expr)
                self.exprs[node] = expr
        return self.exprs[tensor]

    def lhs(self, tensor: Tensor, default: str):
        """The symbol naming a tensor on the left of '=': its leaf symbol or `default`."""
        expr = self.exprs.get(tensor)
        if isinstance(expr, sp.Symbol) and tensor.is_leaf:
            return expr
        return sp.Symbol(self._unique(tensor.name or default))

    def attributes(self) -> dict:
        return {"definitions": dict(self.definitions), "symbols": dict(self.symbols),
                "shapes": dict(self.shapes)}

    def definition_rows(self) -> list:
        return [("where", name, value) for name, value in self.definitions.items()]

    def leaf_notes(self) -> list:
        if not self.shapes:
            return []
        return ["symbols:"] + [f"    {name}: {info}" for name, info in self.shapes.items()]

    # -- building --------------------------------------------------------------------
    def _unique(self, name: str) -> str:
        base, k = name, 1
        while name in self._names:
            k += 1
            name = f"{base}_{k}"
        self._names.add(name)
        return name

    def _build(self, node: Tensor):
        if node.is_leaf:
            return self._leaf(node)
        args = self._bounded_args(node)
        if registry.is_elementwise(node):
            return self._elementwise(node, args)
        return _structured(node, args)

    def _leaf(self, node: Tensor):
        if node.op == "constant":
            return self._constant(node)
        name = self._unique(node.name)
        symbol = sp.Symbol(name, real=True)
        self.symbols[name] = symbol
        self.shapes[name] = f"{node.op}, shape {format_shape(node.shape)}, {node.dtype}"
        return symbol

    def _constant(self, node: Tensor):
        array = np.asarray(node.value)
        if array.size and np.all(array == array.flat[0]):
            return _number(array.flat[0], node.dtype)
        self._constants += 1
        name = self._unique(f"c{self._constants}")
        values = f", values {array.tolist()}" if array.size <= 8 else ""
        self.shapes[name] = f"constant, shape {format_shape(node.shape)}, {node.dtype}{values}"
        symbol = sp.Symbol(name, real=True)
        self.symbols[name] = symbol
        return symbol

    def _elementwise(self, node: Tensor, args):
        expr = registry.node_expr(node)
        if expr.has(Sigmoid, Softplus, expm1):
            expr = _unstabilize(expr)
        if expr.has(sp.Float):  # parameters such as alpha=0.2 arrive as Floats
            expr = expr.xreplace({f: _number(float(f), "float64") for f in expr.atoms(sp.Float)})
        subs = {I[k]: a for k, a in enumerate(args)}
        try:
            built = expr.xreplace(subs)
        except (TypeError, ValueError):  # e.g. a boolean where sympy wants a number
            return op_function(node.op)(*args)
        if OUT in built.free_symbols:  # a node's own output: only meaningful as the node
            built = built.xreplace({OUT: op_function(node.op)(*args)})
        return built

    def _bounded_args(self, node: Tensor) -> list:
        """The inputs' expressions, the largest named t1, t2... until they fit the cap."""
        args = [self.exprs[p] for p in node.inputs]
        sizes = [_tree_size(a, self.sizes) for a in args]
        while sum(sizes) > self.cap:
            k = max(range(len(args)), key=lambda j: sizes[j])
            if sizes[k] <= 1:
                break
            args[k] = self.exprs[node.inputs[k]] = self._define(args[k])
            sizes[k] = 1
        return args

    def _define(self, expr):
        """The next t-symbol, standing for `expr` (listed under "where")."""
        symbol = sp.Symbol(self._unique(f"t{len(self.definitions) + 1}"), real=True)
        self.definitions[symbol] = expr
        return symbol


class _OpApplied(sp.Function):
    """An op applied symbolically, printed with its exact name (leaky_relu, never sympy's
    "leaky" with subscript "relu")."""

    def _latex(self, printer, exp=None):
        escaped = type(self).__name__.replace("_", r"\_")
        name = rf"\operatorname{{{escaped}}}" + ("" if exp is None else f"^{{{exp}}}")
        args = ", ".join(printer._print(a) for a in self.args)
        return rf"{name}{{\left({args} \right)}}"

    def _pretty(self, printer):
        head = prettyForm(type(self).__name__)
        args = prettyForm(*printer._print_seq(self.args, delimiter=", ").parens())
        pform = prettyForm(*stringPict.next(head, args), binding=prettyForm.FUNC)
        pform.prettyFunc, pform.prettyArgs = head, args  # what sympy's power printing reads
        return pform


@functools.cache
def op_function(name: str):
    """The sympy function class standing for op `name` (one class per name, so equal)."""
    return type(name, (_OpApplied,), {"__module__": __name__})


def _unstabilize(expr):
    """Sigmoid/Softplus/expm1 of the stable rewrites back to the exp/log form they mean."""
    return expr.replace(lambda e: isinstance(e, (Sigmoid, Softplus, expm1)),
                        lambda e: e.rewrite(sp.exp))


def _number(value, dtype: str):
    """A scalar as sympy: exact Integer/Rational where the value is one, else a Float."""
    if dtype == "bool":
        return sp.true if bool(value) else sp.false
    if dtype == "int64":
        return sp.Integer(int(value))
    v = float(value)
    if np.isnan(v):
        return sp.nan
    if np.isinf(v):
        return sp.oo if v > 0 else -sp.oo
    if v.is_integer() and abs(v) < 2 ** 53:
        return sp.Integer(int(v))
    tolerance = 2e-7 if dtype == "float32" else 1e-14  # about the dtype's relative epsilon
    fraction = Fraction(v).limit_denominator(1000)
    if abs(float(fraction) - v) <= tolerance * abs(v):
        return sp.Rational(fraction.numerator, fraction.denominator)
    return sp.Float(str(value))  # NumPy's shortest repr: 1e-08, not 9.99999993922529e-09


def _dim(d):
    return sp.Integer(d) if isinstance(d, int) else sp.Symbol(d.name, positive=True,
                                                              integer=True)


def _shape_tuple(shape) -> sp.Tuple:
    return sp.Tuple(*(_dim(d) for d in shape))


def _axes_suffix(node: Tensor, ndim: int) -> str:
    axes = node.attr("axes")
    if axes is None:
        axis = node.attr("axis")
        axes = () if axis is None else (axis,)
    full = len(axes) == ndim and node.op in ("sum", "max")
    suffix = "" if full or not axes else "_axis" + "_".join(str(a) for a in axes)
    return suffix + ("_keepdims" if node.attr("keepdims") else "")


def _structured(node: Tensor, args):
    """A structured op as an undefined function named after it (attributes readable)."""
    op = node.op
    if op == "dim_size":
        x = node.inputs[0]
        return sp.Mul(*(_dim(x.shape[a]) for a in node.attr("axes")))
    if op == "transpose":
        perm = node.attr("perm")
        extra = () if tuple(perm) == tuple(reversed(range(len(perm)))) else (sp.Tuple(*perm),)
        return op_function("transpose")(*args, *extra)
    if op in ("reshape", "broadcast_to"):
        return op_function(op)(*args, _shape_tuple(node.shape))
    if op in ("slice", "unslice"):
        whole = node.inputs[0].shape if op == "slice" else node.shape
        return op_function(op)(*args, sp.Symbol(_index_text(node.attr("spec"), whole)))
    if op == "one_hot":
        return op_function(op)(*args, sp.Integer(node.attr("num_classes")))
    ndim = node.inputs[0].ndim if node.inputs else 0
    return op_function(op + _axes_suffix(node, ndim))(*args)


def _index_text(spec, shape) -> str:
    """A slice spec ((start, stop, step) per axis) as NumPy writes it: [:, 1:3]."""
    parts = []
    for (start, stop, step), d in zip(spec, shape):
        if start == 0 and step == 1 and stop in (None, d):
            parts.append(":")
            continue
        text = f"{start or ''}:{'' if stop in (None, d) else stop}"
        parts.append(text + (f":{step}" if step != 1 else ""))
    return "[" + ", ".join(parts) + "]"


def _latex_text(text: str) -> str:
    """Plain text made safe inside LaTeX \\text{...}."""
    out = []
    for ch in text:
        if ch in "{}$&#%_":
            out.append("\\" + ch)
        elif ch in "\\^~":
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


__all__ = [
    "CAP",
    "Explanation",
    "derivative_as",
    "expand_definitions",
    "explain",
    "explain_op",
    "op_function",
    "to_dot",
]
