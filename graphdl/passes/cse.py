"""Common-subexpression elimination for what hash-consing cannot merge.

Building a node equal to an existing one (same op, same input objects, same attributes)
already returns the existing node (graphdl.graph interns them), and rebuilding bottom-up
with merged inputs keeps that true. This pass merges the rest:

- constants with equal dtype, shape and bytes but different uids (large constants are not
  interned; bytes are compared, so -0 and +0, or two NaN payloads, stay apart);
- commutative ops with their operands in the other order: add(a, b) and add(b, a) (and
  mul, maximum, minimum; for maximum/minimum of +0 and -0 numpy returns the second operand,
  so the merged node may return the other zero there, as canonicalize documents);
- fused nodes whose expressions are equal up to the order of their inputs (inputs are put
  in one order, duplicates merged, and the commutative arguments of Add and Mul sorted).
  Expressions are compared unevaluated: sympy's automatic simplification could otherwise
  equate x - y + y with x, which is not an identity of floats.

Pre-condition: none. Post-condition: no two nodes of the graph compute the same thing
by any of the rules above. Params, state and inputs are never merged.
"""

from __future__ import annotations

import collections
import hashlib

from graphdl.ops.registry import I
from graphdl.passes.rewrite import canonical_expr, rebuild_all, rename_symbols

COMMUTATIVE = frozenset({"add", "mul", "maximum", "minimum"})


def _constant_key(node):
    array = node.value
    digest = hashlib.blake2b(array.tobytes(), digest_size=16).digest()
    return ("constant", node.dtype, node.shape, digest)


def _fused_key(node):
    order = sorted(set(node.inputs), key=id)
    position = {id(t): k for k, t in enumerate(order)}
    expr = rename_symbols(node.attr("expr"),
                          {I[k]: I[position[id(t)]] for k, t in enumerate(node.inputs)})
    return ("fused", tuple(id(t) for t in order), canonical_expr(expr), node.dtype,
            node.shape)


def _key(node):
    if node.op == "constant":
        return _constant_key(node)
    if node.op in COMMUTATIVE and len(node.inputs) == 2:
        a, b = node.inputs
        return (node.op, frozenset((id(a), id(b))), node.attrs, node.dtype, node.shape)
    if node.op == "fused":
        return _fused_key(node)
    return None


def cse(outputs, details: dict | None = None) -> list:
    """Merge nodes that compute the same values (see the module docstring).

    Example:
        >>> a, b = cse([x + y, y + x])       # a is b
    """
    table: dict = {}
    produced: dict = {}
    merged: collections.Counter = collections.Counter()

    def replace(node, original):
        key = _key(node)
        if key is not None:
            found = table.setdefault(key, node)
            if found is not node:
                if found.op == "constant" and found.value.tobytes() != node.value.tobytes():
                    return node                      # a digest collision: keep both
                merged[node.op] += 1
                return found
        if id(node) in produced and produced[id(node)] is not original:
            merged[node.op] += 1                     # rebuilt into an existing node
        produced[id(node)] = original
        return node

    outputs = rebuild_all(outputs, replace)
    if details is not None:
        details["merged"] = dict(merged)
    return outputs
