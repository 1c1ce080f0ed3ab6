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
- **a loss and `wrt=[...]`**: the loss formula and d loss / d w for each w, from `gd.grad`;
  for a layered model (matmul(+bias)->activation chains) first backpropagation as the course
  writes it (section 6.2): per element, at index symbols whose ranges are the shapes
  (i in [0, N), c in [0, 10)), the pre-activations net_o, net_h, the local derivatives in
  the ops' output-reuse forms, the deltas delta_o = dL/dnet_o and delta_h, and dL/dW = a^T
  delta, every right-hand side read off the gradient graph (a `BackpropExplanation`, whose
  `layers` hold the sympy objects).

`sympy.simplify` runs here and only here (STYLE.md section 3): the codegen path never sees
what this module computes. Large formulas stay printable through a size cap (`CAP` sympy
tree nodes): past it, every non-trivial node with several users (a hidden activation, the
saved output a gradient reuses) is named t1, t2, ..., and any operand still too large is named
too; the definitions are listed under "where", and `Explanation.full()` substitutes them back.

Explanations print as unicode text, LaTeX (`latex()`, `_repr_latex_`) and MathML
(`mathml()`, `_repr_html_`); `tensor_repr_latex`/`tensor_repr_html` are what a Tensor shows in
a notebook. `to_dot` (Graphviz DOT text of a graph) lives in graphdl/dot.py and is
re-exported here.
"""

from __future__ import annotations

import copy
import functools
import html
import itertools
from fractions import Fraction

import numpy as np
import sympy as sp
from sympy.codegen.cfunctions import expm1
from sympy.printing.mathml import MathMLPresentationPrinter
from sympy.printing.pretty.pretty import PrettyPrinter
from sympy.printing.pretty.stringpict import prettyForm, stringPict

from graphdl.dot import to_dot
from graphdl.graph import Graph, Tensor, constant, toposort
from graphdl.ops import registry
from graphdl.ops.registry import ALPHA, OUT, I, OpDef, X, Y
from graphdl.ops.stable import Sigmoid, Softplus, StrongMul
from graphdl.shapes import format_shape

CAP = 100  # largest formula (sympy tree nodes) printed inline; past it, shared parts are named


class Explanation:
    """Formulas of an op, a tensor or a gradient, printable as text, LaTeX and HTML.

    `rows` are (heading, lhs, rhs) triples: each prints as "lhs = rhs" under its heading;
    a `Chain` rhs prints its successive forms, "lhs = a = b". The sympy objects are
    attributes: `sympy` (the main expression), `formula`, `derivative`, `derivative_reuse`,
    `derivative_as`, `definitions`, `symbols`, ...

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
        self.display_names: dict = {}   # symbol name -> how text and MathML print it
        self.latex_names: dict = {}     # symbol name -> how LaTeX prints it
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
        parts = [" = ".join(sp.sstr(self._shown(e)) for e in (lhs, *_forms(rhs)))
                 for _, lhs, rhs in self.rows]
        return f"{self.title}: " + "; ".join(parts)

    def latex(self) -> str:
        """The rows as one LaTeX `aligned` block (math only, no surrounding $$)."""
        names = self.latex_names
        lines = []
        for heading, lhs, rhs in self.rows:
            note = rf" && \text{{{_latex_text(heading)}}}" if heading else ""
            forms = " = ".join(_latex(e, names) for e in _forms(rhs))
            lines.append(f"{_latex(lhs, names)} &= {forms}{note}")
        return r"\begin{aligned}" + r" \\ ".join(lines) + r"\end{aligned}"

    def mathml(self) -> str:
        """The rows as one MathML <math> table (rendered natively by browsers)."""
        lines = []
        for heading, lhs, rhs in self.rows:
            forms = "<mo>=</mo>".join(self._mathml(e) for e in _forms(rhs))
            note = f"<mtd><mtext>{html.escape(heading)}</mtext></mtd>" if heading else ""
            lines.append(f"<mtr><mtd>{self._mathml(lhs)}</mtd><mtd><mo>=</mo>{forms}</mtd>"
                         f"{note}</mtr>")
        return ('<math xmlns="http://www.w3.org/1998/Math/MathML" display="block">'
                f'<mtable columnalign="right left left">{"".join(lines)}</mtable></math>')

    def _shown(self, expr):
        return display(expr, self.display_names)

    def _mathml(self, expr) -> str:
        return mathml(expr, self.display_names)

    def __str__(self) -> str:
        out = [self.title]
        heading_before = None
        for heading, lhs, rhs in self.rows:
            if heading and heading != heading_before:
                out.append(f"{heading}:")
            heading_before = heading
            pretty = _pretty_equation([self._shown(e) for e in (lhs, *_forms(rhs))])
            out.extend("    " + line.rstrip() for line in pretty.splitlines())
        out.extend(self.notes)
        return "\n".join(out)

    __repr__ = __str__

    def _repr_latex_(self) -> str:
        return f"$${self.latex()}$$"

    def _repr_html_(self) -> str:
        notes = "\n".join(self.notes)
        notes_html = f'<pre class="graphdl-notes">{html.escape(notes)}</pre>' if notes else ""
        return (f'<pre class="graphdl-explain">{html.escape(self.title)}</pre>'
                f"{self.mathml()}{notes_html}")


class Chain(tuple):
    """Successive equal forms of one right-hand side: a row (heading, lhs, Chain((a, b)))
    prints as lhs = a = b (the course's delta_o = dL/dnet = dL/dy dy/dnet = ...)."""


def _forms(rhs) -> tuple:
    return tuple(rhs) if isinstance(rhs, Chain) else (rhs,)


def _latex(expr, names: dict) -> str:
    """LaTeX of expr; `names` ({name: LaTeX}) renames symbols, IndexedBase labels and
    matrix symbols."""
    if not names or not isinstance(expr, sp.Basic):
        return sp.latex(expr)
    symbol_names = {s: names[s.name] for s in expr.atoms(sp.Symbol, sp.MatrixSymbol)
                    if s.name in names}
    return sp.latex(expr, symbol_names=symbol_names)


def _pretty_equation(parts) -> str:
    """lhs = rhs (= rhs2 ...) as sympy's 2-D unicode text, parts side by side."""
    if len(parts) == 2:
        return sp.pretty(sp.Eq(parts[0], parts[1], evaluate=False), use_unicode=True,
                         wrap_line=False)
    printer = PrettyPrinter({"use_unicode": True, "wrap_line": False})
    pictures = []
    for k, part in enumerate(parts):
        if k:
            pictures.append(prettyForm(" = "))
        pictures.append(printer._print(part))
    return str(prettyForm(*stringPict.next(*pictures)))


def display(expr, names: dict):
    """`expr` with symbols (and IndexedBase labels) renamed for display: yhat -> ŷ."""
    if not names or not isinstance(expr, sp.Basic):
        return expr
    subs = {s: sp.Symbol(names[s.name], **s.assumptions0)
            for s in expr.atoms(sp.Symbol) if s.name in names}
    subs.update({m: sp.MatrixSymbol(names[m.name], *m.shape)
                 for m in expr.atoms(sp.MatrixSymbol) if m.name in names})
    return expr.xreplace(subs) if subs else expr


class _MathMLPrinter(MathMLPresentationPrinter):
    """sympy's presentation MathML, with indices written x_{i,c} (no parentheses) and the
    symbols named in `verbatim` written as they are (a node id n12, not n with 12 below)."""

    def __init__(self, verbatim=()):
        super().__init__()
        self.verbatim = frozenset(verbatim)

    def _print_Symbol(self, sym, style="plain"):
        if sym.name not in self.verbatim:
            return super()._print_Symbol(sym, style=style)
        mi = self.dom.createElement("mi")
        mi.appendChild(self.dom.createTextNode(sym.name))
        return mi

    def _print_Indexed(self, e):
        x = self.dom.createElement("msub")
        x.appendChild(self._print(e.base))
        row = self.dom.createElement("mrow")
        for k, index in enumerate(e.indices):
            if k:
                comma = self.dom.createElement("mo")
                comma.appendChild(self.dom.createTextNode(","))
                row.appendChild(comma)
            row.appendChild(self._print(index))
        x.appendChild(row)
        return x


def mathml(expr, names: dict | None = None, verbatim=()) -> str:
    """Presentation MathML of one sympy expression (no <math> wrapper); `names` renames
    symbols for display; symbols named in `verbatim` print as one identifier."""
    printer = _MathMLPrinter(verbatim)
    return printer.doprint(display(sp.sympify(expr), names or {}))


def explain(obj, wrt=None, *, cap: int = CAP, simplify: bool = False) -> Explanation:
    """Explain an op (its formula and derived derivative) or a tensor (its full formula).

    `obj` is a public op function (`gd.sigmoid`), an `OpDef`, an op name, or a Tensor. With
    `wrt=[W1, ...]` (tensors), the tensor is a loss and each d loss / d w is explained too,
    built with `gd.grad`; a layered model gets backpropagation layer by layer first, in the
    course's notation (delta_o = (yhat - y) yhat (1 - yhat), delta_h = (sum_c delta_o w)
    h (1 - h), dW = a^T delta), with `.layers` holding each layer's sympy expressions. `cap` bounds the printed size of a formula (sub-expressions past it
    become t1, t2, ... with their definitions listed); `simplify=True` runs sympy.simplify on
    tensor formulas small enough for it.

    Example:
        >>> print(gd.explain(gd.sigmoid))      # d/dx sigmoid(x) = y (1 - y)
        >>> gd.explain(loss, wrt=[W1, b1]).latex()
    """
    if isinstance(obj, Tensor):
        if wrt is not None:
            return _explain_backprop(obj, wrt, cap, simplify)
        return _explain_tensor(obj, cap, simplify)
    if wrt is not None:
        raise TypeError("gd.explain: wrt= is for a tensor (a loss), not an op")
    return explain_op(_as_opdef(obj))


def tensor_repr_latex(t: Tensor) -> str:
    """A Tensor's `_repr_latex_` (notebooks): its formula, as `gd.explain(t)` writes it."""
    return explain(t)._repr_latex_()


def tensor_repr_html(t: Tensor) -> str:
    """A Tensor's `_repr_html_` (notebooks): its formula in MathML, title and symbols."""
    return explain(t)._repr_html_()


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
        if expr.has(Sigmoid, Softplus, expm1, StrongMul):
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
    """Sigmoid/Softplus/expm1 of the stable rewrites back to the exp/log form they mean, and
    autodiff's strong-zero products back to plain products."""
    expr = expr.replace(lambda e: isinstance(e, StrongMul), lambda e: e.args[0] * e.args[1])
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


# -- backpropagation, layer by layer (course section 6.2) -------------------------------
#
# `gd.explain(loss, wrt=[...])` on a layered model writes the gradients the way the course
# does: per element, at symbolic indices (h_ij = sigma(net^h_ij), i over the batch), with
# the deltas delta = dL/dnet named and reused by the layer below. Every right-hand side is
# read off the gradient graph that gd.grad builds (its nodes are hash-consed, so these are
# the very nodes that run); only the chain-rule middle steps (dL/dy dy/dnet) are the
# template they stand for, and each is shown only where the graph has that structure.

_LETTERS_HIDDEN = "jklmnpqrstuvab"   # hidden layers from the top, then the input features
BATCH_SIZE = sp.Symbol("N", integer=True, positive=True)  # the batch dimension's size


class Partial(sp.Expr):
    """d num / d den, printed with the partial sign (a display form: never evaluated)."""

    is_commutative = True

    def __new__(cls, num, den):
        return sp.Expr.__new__(cls, sp.sympify(num), sp.sympify(den))

    def _latex(self, printer):
        num, den = (printer._print(a) for a in self.args)
        return rf"\frac{{\partial {num}}}{{\partial {den}}}"

    def _pretty(self, printer):
        num, den = (prettyForm(*stringPict.next(prettyForm("∂"), printer._print(a)))
                    for a in self.args)
        return num / den

    def _sympystr(self, printer):
        num, den = (printer._print(a) for a in self.args)
        return f"d{num}/d{den}"

    def _mathml_presentation(self, printer):
        frac = printer.dom.createElement("mfrac")
        for a in self.args:
            row = printer.dom.createElement("mrow")
            mo = printer.dom.createElement("mo")
            mo.appendChild(printer.dom.createTextNode("∂"))
            row.appendChild(mo)
            row.appendChild(printer._print(a))
            frac.appendChild(row)
        return frac


class MaxOver(sp.Function):
    """max over the index `args[1]` of `args[0]` (a reduction, printed max_c(...))."""

    nargs = 2

    def _latex(self, printer):
        return rf"\max_{{{printer._print(self.args[1])}}} {printer._print(self.args[0])}"

    def _pretty(self, printer):
        head = prettyForm(f"max_{self.args[1]}")
        body = prettyForm(*printer._print(self.args[0]).parens())
        return prettyForm(*stringPict.next(head, body))

    def _sympystr(self, printer):
        return f"max_{self.args[1]}({printer._print(self.args[0])})"


class Indicator(sp.Function):
    """1 where args[0] == args[1], else 0 (a one-hot row; the course's 1(.) of eq. 5)."""

    nargs = 2

    def _latex(self, printer):
        a, b = (printer._print(x) for x in self.args)
        return rf"\mathbb{{1}}\left[{a} = {b}\right]"

    def _pretty(self, printer):
        return prettyForm(f"𝟙[{sp.pretty(self.args[0])} = {sp.pretty(self.args[1])}]")

    def _sympystr(self, printer):
        return f"1[{printer._print(self.args[0])} == {printer._print(self.args[1])}]"


# -- which axes share an index ----------------------------------------------------------
class _AxisClasses:
    """Union-find over (node, axis): axes that run over the same index are one class (the
    columns of W2, of net_o and of delta_o; the rows of x and of h), so each class is
    written with one letter wherever it appears, and a sum over it uses that letter."""

    def __init__(self, nodes):
        self.parent: dict = {}
        for node in nodes:
            for a, b in _axis_links(node):
                self.union(a, b)

    def find(self, key):
        root = key
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while key != root:
            key, self.parent[key] = self.parent.get(key, key), root
        return root

    def union(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb


def _aligned_links(p, node):
    """Axes of p that broadcast onto axes of node (NumPy's right alignment)."""
    lead = node.ndim - p.ndim
    for k in range(p.ndim):
        if p.shape[k] == node.shape[lead + k]:        # not a broadcast axis
            yield (p, k), (node, lead + k)


def _reshape_axis_map(old, new) -> dict | None:
    """{new axis: old axis} when a reshape only inserts or drops size-1 axes, else None."""
    big_old = [k for k, d in enumerate(old) if d != 1]
    big_new = [k for k, d in enumerate(new) if d != 1]
    if [old[k] for k in big_old] != [new[k] for k in big_new]:
        return None
    return dict(zip(big_new, big_old))


def _reduce_axis_map(node) -> dict:
    """{input axis: output axis} for the axes a reduction keeps."""
    x = node.inputs[0]
    axes = node.attr("axes") if node.attr("axes") is not None else (node.attr("axis"),)
    keep = bool(node.attr("keepdims"))
    out, k_out = {}, 0
    for k in range(x.ndim):
        if k in axes:
            k_out += 1 if keep else 0
            continue
        out[k] = k_out
        k_out += 1
    return out


def _axis_links(node):
    op = node.op
    if node.is_leaf:
        return
    if registry.is_elementwise(node) or op in ("broadcast_to", "stop_gradient"):
        for p in node.inputs:
            yield from _aligned_links(p, node)
    elif op == "tensordot":
        a, b = node.inputs
        k = node.attr("axes")
        free_a = a.ndim - k
        for i in range(k):
            yield (a, free_a + i), (b, i)
        for i in range(free_a):
            yield (a, i), (node, i)
        for j in range(k, b.ndim):
            yield (b, j), (node, free_a + j - k)
    elif op == "matmul":
        a, b = node.inputs
        r = node.ndim
        yield (a, a.ndim - 1), (b, b.ndim - 2)
        yield (a, a.ndim - 2), (node, r - 2)
        yield (b, b.ndim - 1), (node, r - 1)
        for p in (a, b):
            for k in range(p.ndim - 2):
                out = r - p.ndim + k
                if p.shape[k] == node.shape[out]:
                    yield (p, k), (node, out)
    elif op == "transpose":
        for k, source in enumerate(node.attr("perm")):
            yield (node.inputs[0], source), (node, k)
    elif op in ("sum", "max", "argmax"):
        for k_in, k_out in _reduce_axis_map(node).items():
            yield (node.inputs[0], k_in), (node, k_out)
    elif op == "reshape":
        for k_new, k_old in (_reshape_axis_map(node.inputs[0].shape, node.shape) or {}).items():
            yield (node.inputs[0], k_old), (node, k_new)
    elif op == "one_hot":
        for k in range(node.inputs[0].ndim):
            yield (node.inputs[0], k), (node, k)


# -- element formulas -------------------------------------------------------------------
def _index_letters():
    """j, k, l, ... then j2, k2, ...: index letters for hidden and input features."""
    yield from _LETTERS_HIDDEN
    for n in itertools.count(2):
        yield from (f"{c}{n}" for c in _LETTERS_HIDDEN)


def _size(d):
    if isinstance(d, int):
        return sp.Integer(d)
    return BATCH_SIZE if d.name == "batch" else sp.Symbol(d.name, integer=True, positive=True)


def _index_symbol(letter: str):
    return sp.Symbol(letter, integer=True)


def _broadcast_index(shape, out_shape, idx) -> tuple:
    """The index of an operand of `shape` read at `idx` of the broadcast result."""
    lead = len(out_shape) - len(shape)
    return tuple(sp.Integer(0) if d == 1 and out_shape[lead + k] != 1 else idx[lead + k]
                 for k, d in enumerate(shape))


class _Elements:
    """The sympy expression of one element of a node at symbolic indices, in the course's
    notation: x_ik, sums over the contracted index (net_ij = sum_k x_ik W_kj + b_j), named
    tensors (layer outputs, deltas) as IndexedBase symbols that stop the expansion."""

    def __init__(self, nodes, letters: dict, reserved=(), spare: str = "abdefgpqrstuvw"):
        self.classes = _AxisClasses(nodes)
        self.letters = {self.classes.find(k): v for k, v in letters.items()}
        self.names: dict = {}         # node -> IndexedBase (or Symbol for 0-d)
        self.opaque: dict = {}        # name -> the node it stands for (ops without rules)
        self._taken = set(reserved) | set(letters.values())
        self._labels: set = set()
        self._memo: dict = {}
        self._spare = iter(spare)

    # -- names and indices ---------------------------------------------------------
    def name(self, node, label: str):
        """Name `node` (its elements print as label[i, c]); returns the IndexedBase."""
        label = self._unique(label)
        base = sp.IndexedBase(label) if node.ndim else sp.Symbol(label, real=True)
        self.names[node] = base
        self._memo.clear()
        return base

    def unname(self, node) -> None:
        """Expand `node` again wherever it appears."""
        self.names.pop(node, None)
        self._memo.clear()

    def _unique(self, label: str) -> str:
        base, k = label, 1
        while label in self._labels:
            k += 1
            label = f"{base}{k}"
        self._labels.add(label)
        return label

    def letter(self, node, axis: int) -> str:
        root = self.classes.find((node, axis))
        if root not in self.letters:
            letter = next((c for c in self._spare if c not in self._taken), None)
            self.letters[root] = letter or f"a{len(self.letters)}"
        return self.letters[root]

    def indices(self, node) -> tuple:
        """One index symbol per axis of node (primed where two axes share a letter)."""
        out = []
        for k in range(node.ndim):
            symbol = _index_symbol(self.letter(node, k))
            while symbol in out:
                symbol = _index_symbol(symbol.name + "'")
            out.append(symbol)
        return tuple(out)

    def ranges(self, node) -> dict:
        """{index symbol: size} for the axes of node."""
        return {s: _size(d) for s, d in zip(self.indices(node), node.shape)}

    def _dummy(self, node, axis: int, scope: frozenset):
        symbol = _index_symbol(self.letter(node, axis))
        while symbol in scope:
            symbol = _index_symbol(symbol.name + "'")
        return symbol

    # -- expressions ---------------------------------------------------------------
    def of(self, node, idx=None, scope=frozenset()):
        """The element of `node` at `idx` (default: its own indices); a named node is its
        symbol."""
        idx = self.indices(node) if idx is None else tuple(idx)
        if node in self.names:
            base = self.names[node]
            return base[idx] if node.ndim else base
        return self.expand(node, idx, scope)

    def expand(self, node, idx=None, scope=frozenset()):
        """The element of `node` at `idx` by its op's rule, even if node is named."""
        idx = self.indices(node) if idx is None else tuple(idx)
        scope = frozenset(scope) | _free(idx)
        key = (node, idx, scope)
        if key not in self._memo:
            self._memo[key] = self._rule(node, idx, scope)
        return self._memo[key]

    def _rule(self, node, idx, scope):
        if node.is_leaf:
            return self._leaf(node, idx)
        if registry.is_elementwise(node):
            return self._elementwise(node, idx, scope)
        rule = getattr(self, "_rule_" + node.op, None)
        if rule is None:
            return self._opaque(node, idx)
        found = rule(node, idx, scope)
        return self._opaque(node, idx) if found is None else found

    def _leaf(self, node, idx):
        if node.op == "constant":
            array = np.asarray(node.value)
            if array.size and np.all(array == array.flat[0]):
                return _number(array.flat[0], node.dtype)
            return self._opaque(node, idx, "c")
        self.name(node, node.name)
        return self.of(node, idx)

    def _opaque(self, node, idx, label=None):
        """A node without an element rule: named after its op (op1[i, j]); if it already has
        a name, written as its op applied to its inputs' names (gather(n3, y))."""
        if node in self.names:
            args = [self.names.get(p, sp.Symbol(p.op)) for p in node.inputs]
            return op_function(node.op)(*args)
        label = label or node.op
        base = self.name(node, label)
        self.opaque[str(base)] = node
        return base[idx] if node.ndim else base

    def _elementwise(self, node, idx, scope):
        expr = registry.node_expr(node)
        if expr.has(Sigmoid, Softplus, expm1, StrongMul):
            expr = _unstabilize(expr)
        if expr.has(sp.Float):
            expr = expr.xreplace({f: _number(float(f), "float64") for f in expr.atoms(sp.Float)})
        args = [self.of(p, _broadcast_index(p.shape, node.shape, idx), scope)
                for p in node.inputs]
        if node.op == "cast" and node.inputs[0].dtype == "bool":
            return sp.Piecewise((1, args[0]), (0, True))
        try:
            return expr.xreplace({I[k]: a for k, a in enumerate(args)})
        except (TypeError, ValueError):
            return op_function(node.op)(*args)

    def _rule_matmul(self, node, idx, scope):
        a, b = node.inputs
        j = self._dummy(a, a.ndim - 1, scope)
        lead = idx[:-2]
        a_idx = _broadcast_index(a.shape[:-2], node.shape[:-2], lead) + (idx[-2], j)
        b_idx = _broadcast_index(b.shape[:-2], node.shape[:-2], lead) + (j, idx[-1])
        inner = scope | {j}
        body = self.of(a, a_idx, inner) * self.of(b, b_idx, inner)
        return sp.Sum(body, (j, 0, _size(a.shape[-1]) - 1))

    def _reduce(self, node, idx, scope):
        x = node.inputs[0]
        kept = _reduce_axis_map(node)
        x_idx, limits = [], []
        for k in range(x.ndim):
            if k in kept:
                x_idx.append(idx[kept[k]])
                continue
            d = self._dummy(x, k, scope)
            scope = scope | {d}
            x_idx.append(d)
            limits.append((d, 0, _size(x.shape[k]) - 1))
        return self.of(x, x_idx, scope), limits

    def _rule_sum(self, node, idx, scope):
        body, limits = self._reduce(node, idx, scope)
        for limit in limits:
            body = _sum_over(body, limit)
        return body

    def _rule_max(self, node, idx, scope):
        body, limits = self._reduce(node, idx, scope)
        for d, _, _ in limits:
            body = MaxOver(body, d)
        return body

    def _rule_transpose(self, node, idx, scope):
        x_idx = [None] * node.ndim
        for k, source in enumerate(node.attr("perm")):
            x_idx[source] = idx[k]
        return self.of(node.inputs[0], x_idx, scope)

    def _rule_broadcast_to(self, node, idx, scope):
        x = node.inputs[0]
        return self.of(x, _broadcast_index(x.shape, node.shape, idx), scope)

    def _rule_reshape(self, node, idx, scope):
        x = node.inputs[0]
        mapping = _reshape_axis_map(x.shape, node.shape)
        if mapping is None:
            return None
        back = {k_old: k_new for k_new, k_old in mapping.items()}
        x_idx = [idx[back[k]] if k in back else sp.Integer(0) for k in range(x.ndim)]
        return self.of(x, x_idx, scope)

    def _rule_stop_gradient(self, node, idx, scope):
        return self.of(node.inputs[0], idx, scope)

    def _rule_dim_size(self, node, idx, scope):
        x = node.inputs[0]
        return sp.Mul(*(_size(x.shape[a]) for a in node.attr("axes")))

    def _rule_one_hot(self, node, idx, scope):
        return Indicator(self.of(node.inputs[0], idx[:-1], scope), idx[-1])


def _sum_over(body, limit):
    """Sum(body, limit), with sum_c f(c) 1[y = c] = f(y) done (a one-hot picks one term;
    labels are checked to lie in range when the graph runs)."""
    d = limit[0]
    factors = sp.Mul.make_args(body)
    picks = [f for f in factors if isinstance(f, Indicator) and f.args[1] == d
             and d not in f.args[0].free_symbols]
    if len(picks) != 1:
        return sp.Sum(body, limit)
    rest = sp.Mul(*(f for f in factors if f is not picks[0]))
    return rest.xreplace({d: picks[0].args[0]})


def _free(idx) -> frozenset:
    return frozenset(s for e in idx for s in sp.sympify(e).free_symbols)


# -- layers -----------------------------------------------------------------------------
class Layer:
    """One matmul(+bias)->activation chain of a model: out = act(a @ W + b)."""

    def __init__(self, a, weight, bias, matmul, net, act):
        self.a = a                  # the layer's input tensor
        self.weight = weight        # W, a (in, out) param
        self.bias = bias            # b (a param) or None
        self.matmul = matmul
        self.net = net              # the pre-activation a @ W + b
        self.act = act              # the activation node, or None (a linear layer)
        self.out = act if act is not None else net
        self.name = ""


def detect_layers(loss: Tensor) -> list:
    """The matmul(+bias)->activation chains `loss` depends on, in forward order.

    A layer is a 2-D matmul of some tensor with a (in, out) param, optionally followed by
    the addition of a param bias (broadcast over the batch), optionally followed by a
    unary elementwise activation (sigmoid, tanh, relu, ...) that is its only user.
    """
    graph = Graph([loss])
    users = graph.users()
    layers = []
    for m in graph.nodes:
        if m.op != "matmul" or m.ndim != 2 or m.inputs[1].op != "param":
            continue
        net, bias = m, None
        if len(users[m]) == 1 and users[m][0].op == "add" and users[m][0].shape == m.shape:
            add = users[m][0]
            other = _behind_broadcast(add.inputs[1] if add.inputs[0] is m else add.inputs[0])
            if other.op in ("param", "constant") and other.ndim <= 2 \
                    and other.shape[-1:] in ((), (1,), m.shape[-1:]):
                net, bias = add, (other if other.op == "param" else None)
        act = users[net][0] if len(users[net]) == 1 and _is_activation(users[net][0]) \
            else None
        layers.append(Layer(m.inputs[0], m.inputs[1], bias, m, net, act))
    _name_layers(layers)
    return layers


def _behind_broadcast(t):
    while t.op in ("broadcast_to", "reshape"):
        t = t.inputs[0]
    return t


def _is_activation(node) -> bool:
    if node.op in ("fused", "cast", "neg") or not registry.is_elementwise(node):
        return False
    return registry.get(node.op).arity == 1 and node.dtype in ("float32", "float64")


def _name_layers(layers) -> None:
    """The last layer is "o" (output); the others "h", or "h1", "h2", ... from the input."""
    hidden = layers[:-1]
    for k, layer in enumerate(hidden):
        layer.name = "h" if len(hidden) == 1 else f"h{k + 1}"
    if layers:
        layers[-1].name = "o"


_SUPERSCRIPTS = str.maketrans("0123456789ho", "⁰¹²³⁴⁵⁶⁷⁸⁹ʰᵒ")


def _layer_labels(layer) -> dict:
    """Canonical (ASCII) names of a layer's tensors, and their display forms."""
    out = "yhat" if layer.name == "o" else layer.name
    sup = layer.name.translate(_SUPERSCRIPTS)
    canonical = {"net": f"net_{layer.name}", "out": out, "delta": f"delta_{layer.name}"}
    text = {f"net_{layer.name}": f"net{sup}", "yhat": "ŷ", f"delta_{layer.name}": f"δ{sup}"}
    latex = {f"net_{layer.name}": rf"net^{{{layer.name}}}", "yhat": r"\hat{y}",
             f"delta_{layer.name}": rf"\delta^{{{layer.name}}}"}
    return canonical, text, latex


class BackpropExplanation(Explanation):
    """Backpropagation of a layered model in the course's notation (section 6.2).

    `layers` (forward order, the output layer last) are dicts of sympy objects over
    IndexedBase symbols named after the tensors (x, W1, b1, h, yhat, net_h, net_o, delta_h,
    delta_o, the target's name) and integer index symbols (i over the batch, c over the
    outputs, j, k, ... over hidden and input features; see `ranges`):

    - "name" ("o" for the output layer, "h" or "h1", "h2", ... for hidden ones),
      "activation" (op name or None), "site" (the user's file:line of the activation);
    - "net" (the pre-activation element, sum_k a_ik W_kj + b_j), "output" (act(net));
    - "dL_doutput" (dL/d out), "local" (d out/d net, the op's output-reuse form),
      "delta" (dL/d net), "delta_symbol" (e.g. delta_o[i, c]);
    - "gradients" ({param name: dL/d param element}) with "gradient_indices" ({param name:
      its index symbols}), "indices" (of net and out), "ranges" ({index: size}).

    The other attributes (`gradients`, `formula`, `rows` of the whole-tensor formulas)
    are those of the plain gradient explanation, listed after the layered rows.
    """

    def layer(self, name: str) -> dict:
        """The layer dict named `name` ("o", "h", "h1", ...)."""
        for layer in self.layers:
            if layer["name"] == name:
                return layer
        raise KeyError(f"no layer {name!r}; layers: {[d['name'] for d in self.layers]}")


def _explain_backprop(loss, wrt, cap, simplify):
    """The layered explanation when `loss` has layers, else the plain gradient one."""
    plain = _explain_gradients(loss, wrt, cap, simplify)
    layers = detect_layers(loss)
    if not layers:
        return plain
    return _Backprop(loss, wrt, layers).explanation(plain)


class _Backprop:
    """Builds the rows and layer dicts of a BackpropExplanation."""

    def __init__(self, loss, wrt, layers):
        from graphdl.autodiff import backprop  # explain sits above autodiff
        self.loss = loss
        self.layers = layers
        self.wrt = [wrt] if isinstance(wrt, Tensor) else list(wrt)
        params = [t for layer in layers for t in (layer.weight, layer.bias) if t is not None]
        targets = list(dict.fromkeys(self.wrt + params))
        self.cot = backprop(loss, constant(1.0, loss.dtype), targets)
        nodes = toposort([loss, *self.cot.values()])
        self.users = Graph([loss]).users()
        leaf_names = {n.name for n in nodes if n.is_leaf and n.name}
        self.el = _Elements(nodes, self._letters(leaf_names), reserved=leaf_names)
        for n in nodes:
            if n.is_leaf and n.op != "constant":
                self.el.name(n, n.name)
        self.text_names: dict = {}
        self.latex_names: dict = {}
        self.L = sp.Symbol("L", real=True)
        self.rows: list = []
        self.dicts = [self._name_layer(layer) for layer in layers]

    def _letters(self, reserved) -> dict:
        """i over the batch, c over the outputs, then j, k, ... from the top layer down."""
        pool = (c for c in _index_letters() if c not in reserved)
        out = self.layers[-1]
        letters = {(out.net, 0): "i", (out.net, 1): "c"}
        for layer in reversed(self.layers[:-1]):
            letters[(layer.net, 1)] = next(pool)
        letters[(self.layers[0].a, self.layers[0].a.ndim - 1)] = next(pool)
        return letters

    def _name_layer(self, layer) -> dict:
        canonical, text, latex = _layer_labels(layer)
        net = self.el.name(layer.net, canonical["net"])
        out = self.el.name(layer.out, canonical["out"]) if layer.act is not None else net
        for base in (net, out):
            self._display(str(base), text, latex)
        self._display(canonical["delta"], text, latex)
        idx = self.el.indices(layer.net)
        return {"name": layer.name, "activation": layer.act.op if layer.act is not None else None,
                "site": layer.out.site, "indices": idx, "ranges": self.el.ranges(layer.net),
                "weight": layer.weight.name, "bias": layer.bias.name if layer.bias is not None else None,
                "symbols": {"net": net, "out": out}}

    def _display(self, label, text, latex) -> None:
        if label in text:
            self.text_names[label] = text[label]
            self.latex_names[label] = latex[label]

    # -- rows ------------------------------------------------------------------------
    def build(self) -> None:
        for layer, info in zip(self.layers, self.dicts):
            self._forward(layer, info)
        self.rows.append(("loss", self.L, self.el.expand(self.loss, ())))
        for k in reversed(range(len(self.layers))):
            self._backward(k)
        self._other_gradients()

    def _forward(self, layer, info) -> None:
        heading = f"forward, layer {layer.name} ({layer.out.site})"
        idx = info["indices"]
        net = self.el.of(layer.net, idx)
        info["net"] = self.el.expand(layer.net, idx)
        self.rows.append((heading, net, info["net"]))
        if layer.act is not None:
            info["output"] = self.el.expand(layer.act, idx)
            applied = op_function(layer.act.op)(net)
            rhs = info["output"] if str(applied) == str(info["output"]) \
                else Chain((applied, info["output"]))
            self.rows.append((heading, self.el.of(layer.out, idx), rhs))
        else:
            info["output"] = net

    def _backward(self, k: int) -> None:
        layer, info = self.layers[k], self.dicts[k]
        role = "output" if k == len(self.layers) - 1 else "hidden"
        heading = f"backward, layer {layer.name} ({role})"
        idx = info["indices"]
        g_net = self.cot.get(layer.net)
        if g_net is None:
            return
        net, out, L = self.el.of(layer.net, idx), self.el.of(layer.out, idx), self.L
        if layer.act is not None:
            info["dL_doutput"] = self.el.of(self.cot[layer.out], idx)
            middle = self._through_next_layer(k, idx)
            rhs = Chain((middle, info["dL_doutput"])) if middle is not None \
                else info["dL_doutput"]
            self.rows.append((heading, Partial(L, out), rhs))
            info["local"] = self._local(layer, idx)
            self.rows.append((heading, Partial(out, net), info["local"]))
            chain = (Partial(L, net), sp.Mul(Partial(L, out), Partial(out, net),
                                              evaluate=False))
        else:
            info["dL_doutput"], info["local"] = None, sp.Integer(1)
            chain = (Partial(L, net),)
        info["delta"] = self.el.of(g_net, idx)
        delta = self.el.name(g_net, f"delta_{layer.name}")
        info["symbols"]["delta"] = delta
        info["delta_symbol"] = delta[idx]
        self.rows.append((heading, delta[idx], Chain(chain + (info["delta"],))))
        info["gradients"], info["gradient_indices"] = {}, {}
        for p in (layer.weight, layer.bias):
            if p is not None and p in self.cot:
                self._param_rows(heading, layer, p, info)

    def _local(self, layer, idx):
        """d out / d net from the op: its output-reuse form (d_out) where it has one."""
        d = registry.node_derivative(layer.act, 0)
        if d.has(Sigmoid, Softplus, expm1, StrongMul):
            d = _unstabilize(d)
        return d.xreplace({I[0]: self.el.of(layer.net, idx), OUT: self.el.of(layer.out, idx)})

    def _through_next_layer(self, k: int, idx):
        """sum_c dL/dnet_ic dnet_ic/dh_ij when the layer above is the only user of h."""
        if k + 1 >= len(self.layers):
            return None
        layer, above = self.layers[k], self.layers[k + 1]
        if above.a is not layer.out or self.users[layer.out] != [above.matmul]:
            return None
        _, c = self.el.indices(above.net)
        net_above = self.el.of(above.net, (idx[0], c))
        term = Partial(self.L, net_above) * Partial(net_above, self.el.of(layer.out, idx))
        return sp.Sum(term, (c, 0, _size(above.net.shape[1]) - 1))

    def _param_rows(self, heading, layer, p, info) -> None:
        p_idx = self.el.indices(p)
        g = self.cot[p]
        expr = self.el.of(g, p_idx)
        info["gradients"][p.name] = expr
        info["gradient_indices"][p.name] = p_idx
        self.rows.append((heading, Partial(self.L, self.el.of(p, p_idx)), expr))
        a_name = self.el.names.get(layer.a)
        is_product = (p is layer.weight and g.op == "matmul" and a_name is not None
                      and g.inputs[0].op == "transpose" and g.inputs[0].inputs[0] is layer.a
                      and g.inputs[1] is self.cot[layer.net])
        if is_product:
            n, m = (_size(d) for d in layer.a.shape)
            a_matrix = sp.MatrixSymbol(str(a_name), n, m)
            delta = sp.MatrixSymbol(f"delta_{layer.name}", n, _size(layer.net.shape[1]))
            w_matrix = sp.MatrixSymbol(p.name, *(_size(d) for d in p.shape))
            self.rows.append((f"{heading}, as matrices", Partial(self.L, w_matrix),
                              a_matrix.T * delta))

    def _other_gradients(self) -> None:
        layer_params = {t for layer in self.layers for t in (layer.weight, layer.bias)}
        for w in self.wrt:
            if w in layer_params or w not in self.cot:
                continue
            idx = self.el.indices(w)
            self.rows.append(("other gradients", Partial(self.L, self.el.of(w, idx)),
                              self.el.of(self.cot[w], idx)))

    # -- the explanation ---------------------------------------------------------------
    def explanation(self, plain: Explanation) -> BackpropExplanation:
        self.build()
        names = ", ".join(layer.name for layer in self.layers)
        title = (f"Backpropagation through {len(self.layers)} layer(s) ({names}) of the loss "
                 f"L built at {self.loss.site}")
        ranges = dict(self.el.ranges(self.layers[0].a))
        for info in self.dicts:
            ranges.update(info["ranges"])
        for w in self.wrt:
            ranges.update(self.el.ranges(w))
        index_text = ", ".join(f"{s} ∈ [0, {n})" for s, n in ranges.items())
        notes = [f"indices: {index_text}",
                 ("weights are stored (in, out), used as a @ W: W[j, c] joins unit j of a "
                  "layer's input to unit c of its output (the course's w_cj), so dL/dW = "
                  "aᵀ δ (the course's δ xᵀ)")]
        if self.el.opaque:
            notes.append("ops written by name: " + ", ".join(
                f"{k} = {v.op} at {v.site}" for k, v in self.el.opaque.items()))
        attributes = {k: v for k, v in vars(plain).items()
                      if k not in ("title", "rows", "notes")}
        attributes.update(display_names=dict(self.text_names),
                          latex_names=dict(self.latex_names))
        whole = [(f"whole tensors, {heading}", lhs, rhs) for heading, lhs, rhs in plain.rows]
        return BackpropExplanation(title, self.rows + whole, notes + plain.notes,
                                   layers=self.dicts, ranges=ranges, **attributes)


__all__ = [
    "BATCH_SIZE",
    "CAP",
    "BackpropExplanation",
    "Chain",
    "Explanation",
    "Indicator",
    "Layer",
    "MaxOver",
    "Partial",
    "derivative_as",
    "detect_layers",
    "display",
    "expand_definitions",
    "explain",
    "explain_op",
    "mathml",
    "op_function",
    "tensor_repr_html",
    "tensor_repr_latex",
    "to_dot",
]
