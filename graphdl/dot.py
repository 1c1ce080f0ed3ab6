"""Graphs as text: gd.to_dot (Graphviz DOT; graphviz itself is not a dependency) and
gd.print_graph (a compact tree for the terminal).

One DOT node per graph node, with deterministic ids n0, n1, ... in topological order (inputs
before users), labelled with the op, shape and dtype. Leaves are drawn apart: inputs are
boxes, params filled ellipses, state dashed filled ellipses, constants plain text showing
their value; fused nodes show their formula. Edges run from an input to its user and carry
the input's position when a node has several inputs (a - b is not b - a). The outputs have a
double border. Render with `dot -Tsvg graph.dot -o graph.svg`.

`print_graph` writes the same nodes, with the same ids, as an indented tree from each output
down to the leaves: one line per node with its op, shape, dtype and the user's file:line that
built it. A node used twice is written once; later uses point back to it ("^ n5").
`graph_roots` is the shared reading of "what to draw": a tensor, a list of them, a Graph, or
a compiled function (its outputs, then the new value of each updated variable).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import sympy as sp

from graphdl.graph import Graph, Tensor
from graphdl.ops.registry import I
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
        return f"constant {array.flat[0]!s}"  # NumPy's shortest: 0.1, not 0.10000000149011612
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



# -- print_graph ----------------------------------------------------------------------------
def graph_roots(obj) -> list:
    """(label, tensor) pairs to draw for a tensor, a list of tensors, a Graph or a compiled
    function (gd.function's Executable: its outputs, then each update as "W1 <- ...")."""
    if isinstance(obj, Tensor):
        return [("output", obj)]
    if isinstance(obj, Graph):
        return [(f"output {k}", t) for k, t in enumerate(obj.outputs)]
    outputs = getattr(obj, "outputs", None)
    if outputs is not None and hasattr(obj, "updates"):
        roots = [(f"output {k}", t) for k, t in enumerate(outputs)]
        return roots + [(f"update {var.name}", value) for var, value in obj.updates]
    items = list(obj)
    if not all(isinstance(t, Tensor) for t in items):
        raise TypeError("expected a Tensor, a list of tensors, a Graph or a compiled function")
    return [(f"output {k}", t) for k, t in enumerate(items)]


def print_graph(obj, file=None, *, full_paths: bool = False) -> str:
    """Print a compact text tree of a graph and return it: one line per node with its id,
    op, shape, dtype and the file:line of the user's code that built it.

    `obj` is a tensor, a list of tensors, a Graph or a compiled function (its outputs and
    updates). Ids (n0, n1, ...) are those of gd.to_dot and gd.to_html. `file` defaults to
    sys.stdout; `full_paths=True` prints whole paths instead of file names.

    Example:
        >>> text = gd.print_graph(loss)
        >>> "mlp.py:12" in text
    """
    roots = graph_roots(obj)
    graph = Graph([t for _, t in roots])
    ids = {node: f"n{k}" for k, node in enumerate(graph.nodes)}
    rows: list = []
    shown: set = set()
    for name, root in roots:
        rows.append((f"{name}:", "", "", ""))
        _tree_rows(root, ids, shown, rows, full_paths)
    width = max(len(r[0]) for r in rows)
    kind_width = max(len(r[1]) for r in rows)
    lines = [f"{tree:<{width}}  {kind:<{kind_width}}  {site}".rstrip() if kind else tree
             for tree, kind, site, _ in rows]
    text = "\n".join(lines)
    print(text, file=sys.stdout if file is None else file)
    return text


def _tree_rows(root, ids, shown, rows, full_paths) -> None:
    """Depth-first, iteratively (deep graphs have no recursion limit here)."""
    stack = [(root, "", "")]
    while stack:
        node, branch, indent = stack.pop()
        kind = f"{format_shape(node.shape)} {node.dtype}"
        if node in shown and node.inputs:
            rows.append((f"{branch}^ {ids[node]} {node.op}", kind, "", node))
            continue
        shown.add(node)
        site = node.site if full_paths else _short_site(node.site)
        rows.append((f"{branch}{ids[node]} {tree_label(node, ids)}", kind, site, node))
        children = list(node.inputs)
        for k in reversed(range(len(children))):
            last = k == len(children) - 1
            stack.append((children[k], indent + ("└─ " if last else "├─ "),
                          indent + ("   " if last else "│  ")))


def _short_site(site: str) -> str:
    path, _, line = site.rpartition(":")
    return f"{os.path.basename(path)}:{line}" if path else site


def tree_label(node: Tensor, ids: dict | None = None) -> str:
    """One-line text of a node: leaves by name or value; a fused node by its formula over
    its inputs' ids (never an opaque "fused"); other ops with their attributes."""
    if node.op in ("input", "param", "state"):
        return f"{node.op} {node.name}"
    if node.op == "constant":
        return _constant_text(node)
    if node.op == "fused":
        names = {I[k]: sp.Symbol(ids[p] if ids else f"x{k}") for k, p in enumerate(node.inputs)}
        return f"fused {_shorten(sp.sstr(node.attr('expr').xreplace(names)))}"
    shown = [f"{k}={_attr_text(v)}" for k, v in node.attrs if k not in _HIDDEN_ATTRS]
    return _shorten(node.op + (" " + ", ".join(shown) if shown else ""))


__all__ = ["graph_roots", "label", "print_graph", "quote", "to_dot", "tree_label"]
