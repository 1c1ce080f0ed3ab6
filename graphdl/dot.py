"""gd.to_dot: a graph as Graphviz DOT text (graphviz itself is not a dependency).

One DOT node per graph node, with deterministic ids n0, n1, ... in topological order (inputs
before users), labelled with the op, shape and dtype. Leaves are drawn apart: inputs are
boxes, params filled ellipses, state dashed filled ellipses, constants plain text showing
their value; fused nodes show their formula. Edges run from an input to its user and carry
the input's position when a node has several inputs (a - b is not b - a). The outputs have a
double border. Render with `dot -Tsvg graph.dot -o graph.svg`.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from graphdl.graph import Graph, Tensor
from graphdl.shapes import format_shape

FORMULA_CHARS = 60  # longest fused formula shown in a label before it is cut with "..."

_LEAF_STYLE = {
    "input": 'shape=box, style="rounded,filled", fillcolor="#fff2cc"',
    "param": 'shape=ellipse, style=filled, fillcolor="#cfe2ff"',
    "state": 'shape=ellipse, style="filled,dashed", fillcolor="#e2e3e5"',
    "constant": 'shape=plaintext, fontcolor="#555555"',
}
_OP_STYLE = "shape=box"
_FUSED_STYLE = 'shape=box, style=filled, fillcolor="#d1e7dd"'
_HIDDEN_ATTRS = ("uid", "name", "dtype", "expr")


def to_dot(outputs, name: str = "graph") -> str:
    """Graphviz DOT text of the graph that computes `outputs` (a tensor, a list, or a Graph).

    Example:
        >>> text = gd.to_dot(loss)
        >>> open("loss.dot", "w").write(text)     # dot -Tsvg loss.dot -o loss.svg
    """
    graph = outputs if isinstance(outputs, Graph) else Graph(
        [outputs] if isinstance(outputs, Tensor) else list(outputs))
    ids = {node: f"n{k}" for k, node in enumerate(graph.nodes)}
    results = set(graph.outputs)
    lines = [f"digraph {quote(name)} {{",
             "  rankdir=TB;",
             '  node [fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=8];']
    for node in graph.nodes:
        style = _style(node) + (", peripheries=2" if node in results else "")
        lines.append(f"  {ids[node]} [label={quote(label(node))}, {style}];")
    for node in graph.nodes:
        several = len(node.inputs) > 1
        for k, parent in enumerate(node.inputs):
            extra = f" [label={quote(str(k))}]" if several else ""
            lines.append(f"  {ids[parent]} -> {ids[node]}{extra};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def quote(text: str) -> str:
    """A DOT double-quoted string: backslashes and quotes escaped, newlines as \\n."""
    escaped = str(text).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\r", "").replace("\n", "\\n") + '"'


def label(node: Tensor) -> str:
    """The text of one node: what it is, then its shape and dtype."""
    kind = f"{format_shape(node.shape)} {node.dtype}"
    if node.op in ("input", "param", "state"):
        return f"{node.name}\n{node.op} {kind}"
    if node.op == "constant":
        return f"{_constant_text(node)}\n{kind}"
    if node.op == "fused":
        return f"fused: {_shorten(sp.sstr(node.attr('expr')))}\n{kind}"
    shown = [f"{k}={_attr_text(v)}" for k, v in node.attrs if k not in _HIDDEN_ATTRS]
    head = node.op + (" " + ", ".join(shown) if shown else "")
    return f"{_shorten(head)}\n{kind}"


def _style(node: Tensor) -> str:
    if node.op in _LEAF_STYLE:
        return _LEAF_STYLE[node.op]
    return _FUSED_STYLE if node.op == "fused" else _OP_STYLE


def _constant_text(node: Tensor) -> str:
    array = np.asarray(node.value)
    if array.size and np.all(array == array.flat[0]):
        return f"constant {array.flat[0].item()!r}"
    return "constant"


def _attr_text(value) -> str:
    if isinstance(value, tuple):
        inner = ", ".join(_attr_text(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, sp.Basic):
        return sp.sstr(value)
    return repr(value) if not hasattr(value, "name") else str(value)


def _shorten(text: str) -> str:
    return text if len(text) <= FORMULA_CHARS else text[:FORMULA_CHARS - 3] + "..."


__all__ = ["label", "quote", "to_dot"]
