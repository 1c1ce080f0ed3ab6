"""Rule tables and the driver that rewrites a graph with them until nothing fires.

A rule is `rule(name, pattern, replacement)`. The name is the algebra it implements
("x * 1 -> x"); it is the rule's documentation and the text that the stats and the
`RewriteLoop` error print. A pattern is built from op builders (`P("mul")(x_, one)`),
`var(name)` (any node) and `const(name, test)` (a constant, or a broadcast of one, whose
value passes `test`). A replacement is a function of the bound names (plus `node`, the
matched root, when it asks for it) returning the new tensor, or None for "no match after
all".

Commutativity is declared per table (`commutative={"add", "mul", ...}`), never implied: a
binary pattern of a declared op also matches with its operands swapped.

The driver (`rewrite_to_fixed_point`) rebuilds the graph bottom-up, tries the rules indexed
by each node's op, and repeats until a round fires nothing. A replacement must compute the
same values as the node it replaces; the driver restores the node's shape (broadcast_to) and
dtype (a widening cast) when a rule returns a smaller or narrower tensor, as "x * 1 -> x"
does when x was broadcast by the 1. Pre-condition: none. Post-condition: no rule of the
table matches anywhere in the graph; leaves are the same objects.
"""

from __future__ import annotations

import collections
import inspect
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import sympy as sp

from graphdl.errors import GraphdlError, user_site
from graphdl.graph import Tensor, toposort
from graphdl.ops.elementwise import cast
from graphdl.ops.structured import broadcast_to
from graphdl.shapes import broadcast_shapes, promote


class RewriteLoop(GraphdlError, RuntimeError):
    """A rule table did not reach a fixed point within the round cap (rules that fight)."""

    def __init__(self, message: str, rules=()):
        super().__init__(message)
        self.rules = tuple(rules)


class RuleError(GraphdlError, RuntimeError):
    """A rule returned a tensor that cannot stand in for the node it matched (a rule bug)."""


# -- patterns ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pattern:
    """A tree to match against a node: an op (None: any node), operands, a bound name."""

    op: str | None = None
    args: tuple | None = ()            # None: any operands (not matched further)
    name: str | None = None
    test: Callable | None = None       # extra predicate on the matched node
    constant: bool = False             # match constants (and broadcasts of one) only

    def where(self, test: Callable) -> Pattern:
        """The same pattern, matching only nodes for which `test(node)` holds."""
        return Pattern(self.op, self.args, self.name, test, self.constant)


class P:
    """An op builder for patterns: `P("mul")(x_, one)` matches mul nodes."""

    def __init__(self, op: str):
        self.op = op

    def __call__(self, *args: Pattern, name: str | None = None) -> Pattern:
        return Pattern(self.op, tuple(args), name)

    def any(self, name: str | None = None) -> Pattern:
        """Nodes of this op with any operands."""
        return Pattern(self.op, None, name)


def var(name: str) -> Pattern:
    """Any node, bound as `name`."""
    return Pattern(None, (), name)


def const(name: str | None = None, test: Callable | None = None) -> Pattern:
    """A constant (or broadcast_to of a constant) whose value passes `test(array)`."""
    return Pattern(None, (), name, test, constant=True)


def constant_value(node: Tensor):
    """The array of a constant, or of the constant under a broadcast_to, else None.

    The array broadcasts to `node.shape` (it may be smaller: a splat).
    """
    if node.op == "broadcast_to" and node.inputs[0].op == "constant":
        node = node.inputs[0]
    if node.op == "constant":
        return node.value
    return None


def is_constant(node: Tensor) -> bool:
    """True for constants and broadcasts of constants."""
    return constant_value(node) is not None


def _match(pattern: Pattern, node: Tensor, bound: dict, commutative) -> Iterator[dict]:
    """Every way `pattern` matches `node`, extending the bindings `bound`."""
    if pattern.constant:
        value = constant_value(node)
        if value is None or (pattern.test is not None and not pattern.test(value)):
            return
    else:
        if pattern.op is not None and node.op != pattern.op:
            return
        if pattern.args is not None and pattern.op is not None \
                and len(node.inputs) != len(pattern.args):
            return
        if pattern.test is not None and not pattern.test(node):
            return
    if pattern.name is not None:
        if pattern.name in bound:
            if bound[pattern.name] is not node:
                return
        else:
            bound = {**bound, pattern.name: node}
    if pattern.op is None or not pattern.args:
        yield bound
        return
    orders = [node.inputs]
    if pattern.op in commutative and len(node.inputs) == 2:
        orders.append(node.inputs[::-1])
    for operands in orders:
        yield from _match_all(pattern.args, operands, bound, commutative)


def _match_all(patterns, nodes, bound, commutative):
    if not patterns:
        yield bound
        return
    for b in _match(patterns[0], nodes[0], bound, commutative):
        yield from _match_all(patterns[1:], nodes[1:], b, commutative)


# -- rules and tables ----------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """One named rewrite: where `pattern` matches, the node becomes `replacement(...)`."""

    name: str
    pattern: Pattern
    replacement: Callable
    wants: tuple = field(default=(), compare=False)

    def apply(self, node: Tensor, commutative) -> Tensor | None:
        """The replacement of `node` by this rule, or None when it does not apply."""
        for bound in _match(self.pattern, node, {}, commutative):
            args = {k: v for k, v in bound.items() if k in self.wants}
            if "node" in self.wants:
                args["node"] = node
            new = self.replacement(**args)
            if new is not None and new is not node:
                return new
        return None


def rule(name: str, pattern: Pattern, replacement: Callable) -> Rule:
    """A rule named by its algebra ("x * 1 -> x").

    The root of `pattern` names an op, or is `var(...).where(test)`: such a rule is tried
    at every node that passes `test` (for rules over a family of ops, like elementwise).
    """
    if pattern.op is None and (pattern.test is None or pattern.constant):
        raise ValueError(f"rule {name!r}: the root of a pattern must name an op or test")
    wants = tuple(inspect.signature(replacement).parameters)
    return Rule(name, pattern, replacement, wants)


class RuleTable:
    """Rules indexed by the op at their root, with the commutative ops declared.

    `fired` counts, over the life of the table, how often each rule fired (tests use it to
    fail on rules that nothing exercises).
    """

    def __init__(self, rules, commutative=frozenset()):
        self.rules = tuple(rules)
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate rule names in {names}")
        self.commutative = frozenset(commutative)
        self.by_op: dict[str, list[Rule]] = collections.defaultdict(list)
        for r in self.rules:
            self.by_op[r.pattern.op].append(r)
        self.fired: collections.Counter = collections.Counter()

    @property
    def names(self) -> list[str]:
        """The rule names, in table order."""
        return [r.name for r in self.rules]

    def rewrite_once(self, node: Tensor):
        """(rule, replacement) of the first rule that applies at `node`, else None.

        The replacement already has `node`'s shape and dtype (see `conform`); a rule whose
        replacement turns out to be `node` itself does not apply.
        """
        for r in itertools.chain(self.by_op.get(node.op, ()), self.by_op.get(None, ())):
            new = r.apply(node, self.commutative)
            if new is not None:
                new = conform(new, node, f"rule {r.name!r}")
                if new is not node:
                    return r, new
        return None

    def __len__(self) -> int:
        return len(self.rules)


# -- expressions ---------------------------------------------------------------------------
def canonical_expr(expr: sp.Expr) -> sp.Expr:
    """`expr` with the arguments of every Add and Mul in one order, left unevaluated.

    Two expressions with equal canonical forms compute the same floats: a sum or product is
    printed (and so evaluated) in sympy's own order of its arguments, whatever order they
    were given in. Evaluating would be wrong here: sympy simplifies x - y + y to x and
    exp(log(x)) to x, which are not identities of floats.
    """
    if expr.is_Atom:
        return expr
    args = [canonical_expr(a) for a in expr.args]
    if isinstance(expr, (sp.Add, sp.Mul)):
        args.sort(key=sp.default_sort_key)
    with sp.evaluate(False):
        return expr.func(*args)


def rename_symbols(expr: sp.Expr, mapping: dict) -> sp.Expr:
    """`expr` with symbols replaced, left unevaluated (see canonical_expr)."""
    with sp.evaluate(False):
        return expr.xreplace(mapping)


# -- rebuilding ----------------------------------------------------------------------------
def rebuild(node: Tensor, inputs) -> Tensor:
    """`node` with its inputs replaced (the same op, attributes, shape and dtype).

    The new node keeps the site (the user's file:line) of the node it stands for.
    """
    inputs = tuple(inputs)
    if all(a is b for a, b in zip(inputs, node.inputs)):
        return node
    new = Tensor.make(node.op, inputs, dict(node.attrs), node.shape, node.dtype)
    keep_site(new, node.site)
    return new


def keep_site(new: Tensor, site: str, here: str | None = None) -> None:
    """Give the nodes a pass just built (their site is the pass's caller) the old `site`."""
    here = here or user_site()
    stack = [new]
    while stack:
        t = stack.pop()
        if t.site == here and t.site != site and not t.is_leaf:
            t.site = site
            stack.extend(t.inputs)


def conform(new: Tensor, old: Tensor, why: str) -> Tensor:
    """`new` broadcast and widened to `old`'s shape and dtype (what a replacement must keep)."""
    if new.dtype != old.dtype:
        if promote(new.dtype, old.dtype) != old.dtype:
            raise RuleError(f"{why}: returns {new.dtype} for a {old.dtype} node")
        new = cast(new, old.dtype)
    if new.shape != old.shape:
        try:
            fits = broadcast_shapes(new.shape, old.shape) == old.shape
        except GraphdlError:
            fits = False
        if not fits:
            raise RuleError(f"{why}: returns shape {new.shape} for a node of shape "
                            f"{old.shape}")
        if new.op == "broadcast_to":
            new = new.inputs[0]
        new = broadcast_to(new, old.shape)
    return new


def rebuild_all(outputs, replace: Callable) -> list:
    """Rebuild the graph bottom-up; `replace(rebuilt_node, original)` may substitute a node.

    Leaves are kept (the same objects) unless `replace` returns something else for them.
    """
    outputs = list(outputs)
    memo: dict = {}
    for node in toposort(outputs):
        current = rebuild(node, [memo[p] for p in node.inputs]) if node.inputs else node
        memo[node] = replace(current, node)
    return [memo[o] for o in outputs]


# -- the driver ----------------------------------------------------------------------------
# Rules are retried on a replacement's root within a round (a chain collapses in one round);
# more than a few firings at one node means rules that fight, which the round cap reports.
MAX_FIRINGS_PER_NODE = 8


def rewrite_to_fixed_point(outputs, table: RuleTable, max_rounds: int = 50,
                           stats: dict | None = None) -> list:
    """Apply `table` bottom-up, round after round, until no rule fires.

    Raises RewriteLoop, naming the rules of the last round, when `max_rounds` is reached.
    `stats`, when a dict, receives "rounds" and "fired" (rule name -> count).

    Example:
        >>> outputs = rewrite_to_fixed_point([y], SIMPLIFY_RULES)
    """
    outputs = list(outputs)
    fired_total: collections.Counter = collections.Counter()
    here = user_site()
    for round_ in range(1, max_rounds + 1):
        fired: collections.Counter = collections.Counter()

        def replace(node, original, fired=fired):
            for _ in range(MAX_FIRINGS_PER_NODE):
                if node.is_leaf:
                    break
                hit = table.rewrite_once(node)
                if hit is None:
                    break
                r, new = hit
                fired[r.name] += 1
                keep_site(new, original.site, here)
                node = new
            return node

        outputs = rebuild_all(outputs, replace)
        fired_total.update(fired)
        table.fired.update(fired)
        if not fired:
            if stats is not None:
                stats["rounds"] = round_
                stats["fired"] = dict(fired_total)
            return outputs
    names = ", ".join(f"{name!r} x{n}" for name, n in sorted(fired.items()))
    raise RewriteLoop(f"rewriting did not reach a fixed point in {max_rounds} rounds; the "
                      f"last round fired: {names} (these rules fight: merge them into one "
                      "canonical form)", rules=sorted(fired))


__all__ = [
    "P",
    "Pattern",
    "RewriteLoop",
    "Rule",
    "RuleError",
    "RuleTable",
    "canonical_expr",
    "conform",
    "const",
    "constant_value",
    "is_constant",
    "keep_site",
    "rebuild",
    "rebuild_all",
    "rename_symbols",
    "rewrite_to_fixed_point",
    "rule",
    "var",
]
