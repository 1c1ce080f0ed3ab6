"""Elementwise fusion: chains of elementwise nodes become one "fused" node each.

A group grows from a root (an elementwise node, taken from the outputs backwards) by
absorbing producers, one at a time. A producer p joins when:

- p is elementwise (a registered elementwise op or a fused node) and not a graph output;
- p has exactly ONE consumer, and it is in the group. A value used by several nodes stays
  materialized: fusing it into each user would recompute it once per user (PyTensor's
  FusionOptimizer makes the same choice). A group grown this way is an in-tree, hence
  convex: every path out of a member goes through the root, so none leaves and comes back;
- p has the root's shape, or is a cheap scalar (a few operations, SCALAR_OP_BUDGET for the
  whole group, recomputed per element). A smaller producer (a bias-sized computation
  broadcast into a batch-sized consumer) stays a node of its own: fused, it would be
  recomputed for every element of the batch;
- its dtype is the one numpy gives its expression: the fused expression is evaluated in one
  go with numpy's promotion, so a member whose node rounds or converts its result (a cast
  to int or bool, a narrowing cast) would lose that step. Such nodes end a group as its
  root, where the fused node's own dtype does the conversion. That includes ops numpy
  evaluates in a wider float than graphdl's rule (int64 + float32 is float64 in numpy,
  float32 in graphdl): kept unrounded, a comparison downstream could flip;
- the group keeps at most MAX_INPUTS external inputs, and its expression (written out as a
  tree, a member used twice written twice) at most MAX_EXPR_OPS operations.

The fused node computes ONE sympy expression over the group's external inputs: each
member's node_expr with its input symbols replaced by the expressions of its inputs, built
unevaluated (sympy.evaluate(False)) so that the structure is the graph's, not sympy's
simplification of it (sympy would turn x - y + y into x and exp(log(x)) into x, which are
not identities of floats). Its dtype is the root's. Groups of one node are left as they are.

Pre-condition: no node's expression uses the OUT symbol (autodiff replaces it by the
forward node, an input of the derivative node). Post-condition: no single-consumer
elementwise producer of equal shape remains outside its consumer's group, except where the
input cap or the dtype rule stopped it.
"""

from __future__ import annotations

import collections
import functools

import numpy as np
import sympy as sp

from graphdl.codegen.reference.interpreter import elementwise_function
from graphdl.graph import toposort
from graphdl.ops.elementwise import fused
from graphdl.ops.registry import OUT, I, is_elementwise, node_expr
from graphdl.ops.structured import broadcast_to
from graphdl.passes.rewrite import keep_site, rebuild, rename_symbols

# Operand cap per fused node: every input is a pointer argument of the generated kernel and
# a live base register in its loop, and wide kernels spill. PyTensor caps fusion the same way
# (pytensor/tensor/rewriting/elemwise.py, elemwise_max_operands_fct: 32 operands on its
# NumPy path, NumPy's ufunc operand limit; 1024 with its C backend). 32 also stays well
# below the 64 positional symbols of registry.I.
MAX_INPUTS = 32
# Scalar producers fused into a larger group are recomputed per element: allow only a few
# operations' worth (e.g. the 1/n of a mean), never a whole scalar computation.
SCALAR_OP_BUDGET = 4
# A member used twice by its consumer (d * d), or whose symbol appears twice in the
# consumer's formula (swish, sigma'), is written twice in the expression tree: a chain of
# them doubles at each level. Backends CSE each fused expression, but printing and compiling
# the tree grows with it, so a group's expression is capped at this many operations.
MAX_EXPR_OPS = 256


@functools.lru_cache(maxsize=4096)
def _numpy_dtype(expr, dtypes: tuple) -> str:
    """The dtype numpy gives `expr` evaluated on arrays of `dtypes`."""
    samples = [np.ones(1, dtype=d) for d in dtypes]
    with np.errstate(all="ignore"):
        out = elementwise_function(expr, len(dtypes))(*samples)
    return np.asarray(out).dtype.name


def _keeps_its_dtype(node) -> bool:
    """True when evaluating node's expression inline gives exactly its dtype."""
    return _numpy_dtype(node_expr(node), tuple(t.dtype for t in node.inputs)) == node.dtype


def _op_count(node) -> int:
    return max(int(sp.count_ops(node_expr(node))), 1)


def _elementwise(node) -> bool:
    if node.is_leaf or not is_elementwise(node):
        return False
    assert OUT not in node_expr(node).free_symbols, f"{node!r} refers to its own output"
    return True


class _Group:
    """Members of one fusion group (root first) and its external inputs, in order."""

    def __init__(self, root):
        self.root = root
        self.members = [root]
        self.member_ids = {id(root)}
        self.externals = list(dict.fromkeys(root.inputs))
        self.scalar_ops = 0
        self.copies = {id(root): 1}           # how often a member's expression is written
        self.ops = _op_count(root)

    def inputs_if_added(self, node) -> int:
        rest = [t for t in self.externals if t is not node]
        new = [t for t in dict.fromkeys(node.inputs)
               if t not in rest and id(t) not in self.member_ids]
        return len(rest) + len(new)

    def copies_of(self, node, consumer) -> int:
        formula = node_expr(consumer)
        uses = sum(formula.count(I[k]) for k, t in enumerate(consumer.inputs) if t is node)
        return self.copies[id(consumer)] * max(uses, 1)

    def add(self, node, consumer) -> None:
        self.copies[id(node)] = self.copies_of(node, consumer)
        self.ops += self.copies[id(node)] * _op_count(node)
        self.members.append(node)
        self.member_ids.add(id(node))
        self.externals = [t for t in self.externals if t is not node]
        self.externals += [t for t in dict.fromkeys(node.inputs)
                           if t not in self.externals and id(t) not in self.member_ids]


def _grow(root, consumers, outputs, taken, stats) -> _Group:
    group = _Group(root)
    queue = collections.deque(root.inputs)
    while queue:
        p = queue.popleft()
        if id(p) in group.member_ids or id(p) in taken or id(p) in outputs:
            continue
        if not _elementwise(p) or len(consumers[id(p)]) != 1:
            continue
        consumer = next(iter(consumers[id(p)].values()))
        if id(consumer) not in group.member_ids:
            continue
        cost = 0
        if p.shape != root.shape:
            cost = _op_count(p)
            if p.shape != () or group.scalar_ops + cost > SCALAR_OP_BUDGET:
                continue
        if not _keeps_its_dtype(p):
            continue
        if group.ops + group.copies_of(p, consumer) * _op_count(p) > MAX_EXPR_OPS:
            continue
        if group.inputs_if_added(p) > MAX_INPUTS:
            stats["input_cap_hits"] += 1
            continue
        group.add(p, consumer)
        group.scalar_ops += cost
        queue.extend(p.inputs)
    return group


def _expression(group: _Group, inputs: list):
    """The root's expression over the external inputs (whose symbols are I[k])."""
    index = {id(t): k for k, t in enumerate(inputs)}
    memo: dict = {}

    def expr_of(node):
        if id(node) not in group.member_ids:
            return I[index[id(node)]]
        if id(node) not in memo:
            subs = {I[k]: expr_of(t) for k, t in enumerate(node.inputs)}
            memo[id(node)] = rename_symbols(node_expr(node), subs)
        return memo[id(node)]

    return expr_of(group.root)


def fuse_elementwise(outputs, details: dict | None = None) -> list:
    """Fuse single-consumer chains of elementwise nodes into fused nodes.

    Example:
        >>> (y,) = fuse_elementwise([gd.tanh(x * w + b)])   # one fused node (x*w + b: same shape)
    """
    outputs = list(outputs)
    nodes = toposort(outputs)
    consumers: dict = {id(n): {} for n in nodes}
    for n in nodes:
        for p in n.inputs:
            consumers[id(p)][id(n)] = n
    output_ids = {id(o) for o in outputs}
    stats = collections.Counter()
    taken: dict = {}                      # id(member) -> its group
    for node in reversed(nodes):
        if id(node) in taken or not _elementwise(node):
            continue
        group = _grow(node, consumers, output_ids, taken, stats)
        for m in group.members:
            taken[id(m)] = group
    memo: dict = {}
    for node in nodes:
        group = taken.get(id(node))
        if group is not None and group.root is not node:
            continue                      # an interior member: only its group uses it
        if group is not None and len(group.members) > 1:
            memo[node] = _fused_node(group, memo)
            stats["fused_nodes"] += 1
            stats["ops_fused"] += len(group.members)
        else:
            memo[node] = rebuild(node, [memo[p] for p in node.inputs]) if node.inputs \
                else node
    if details is not None:
        details.update({"fused_nodes": stats["fused_nodes"], "ops_fused": stats["ops_fused"],
                        "input_cap_hits": stats["input_cap_hits"]})
    return [memo[o] for o in outputs]


def _fused_node(group: _Group, memo: dict):
    root = group.root
    expr = _expression(group, group.externals)
    new = fused([memo[t] for t in group.externals], expr, root.dtype)
    if new.shape != root.shape:
        new = broadcast_to(new, root.shape)
    keep_site(new, root.site)
    return new
