"""Dead-code elimination: drop no-op nodes and report what is no longer reachable.

Graphs are immutable and a pass returns new outputs, so whatever the earlier passes replaced
is already unreachable: the graph *is* what the outputs reach. This pass removes the nodes
that are identities at run time and reports the nodes of the graph it was given that the
result no longer contains.

- stop_gradient(x) -> x: stop_gradient only matters to gd.grad. Post-condition: the result
  is for execution; do not differentiate it again (take gradients before optimizing);
- fused(i0) -> x, a fused expression that only passes its input on (same dtype and shape).

Pre-condition: none. Post-condition: no rule in NOOP_RULES matches anywhere.
"""

from __future__ import annotations

import collections

from graphdl.graph import toposort
from graphdl.ops.registry import I, node_expr
from graphdl.passes.rewrite import P, RuleTable, rewrite_to_fixed_point, rule, var


def _passes_input_on(node) -> bool:
    x = node.inputs[0] if node.inputs else None
    return (x is not None and node_expr(node) == I[0] and x.dtype == node.dtype
            and x.shape == node.shape)


NOOP_RULES = RuleTable([
    rule("stop_gradient(x) -> x", P("stop_gradient")(var("x")), lambda x: x),
    rule("fused(i0) -> x", P("fused").any().where(_passes_input_on),
         lambda node: node.inputs[0]),
])


def dce(outputs, details: dict | None = None) -> list:
    """Remove run-time no-ops; report the nodes that are no longer reachable.

    Example:
        >>> (y,) = dce([gd.stop_gradient(x) * 2.0])   # mul(x, 2.0)
    """
    before = toposort(outputs)
    stats: dict = {}
    outputs = rewrite_to_fixed_point(outputs, NOOP_RULES, stats=stats)
    if details is not None:
        # Nodes downstream of a removed one are rebuilt (new objects for the same
        # computation), so what was dropped is the difference of the op counts.
        dropped = collections.Counter(n.op for n in before)
        dropped.subtract(n.op for n in toposort(outputs))
        details["dropped_ops"] = {op: n for op, n in dropped.items() if n > 0}
        details["dropped"] = sum(details["dropped_ops"].values())
        details["noops_removed"] = stats.get("fired", {})
    return outputs
