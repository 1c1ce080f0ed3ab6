"""gd.to_html: the graph explorer, one self-contained HTML file (no network, no CDN).

The page draws a graph as SVG, laid out here in Python (layers by longest path, crossings
reduced by barycenter sweeps over dummy nodes on long edges), with two views and a toggle:

- **as built**: the nodes the user's code and gd.grad built, coloured by role;
- **after passes**: the graph the llvm backend compiles (graphdl.passes.optimize with the
  function's skipped passes); each fused node is drawn as an outlined group listing the ops
  it absorbed, each with its file:line.

Clicking a node shows in the side panel its formula (MathML from sympy's printer, which
browsers render natively), element by element in index notation (n5[i, j] = sum_k
x[i, k] W1[k, j]), its op, shape, dtype, source line, inputs and users. For tests and links
the page reads its URL fragment: `#view=after&click=o3` switches the view and clicks o3.

Node roles (colours). Given the losses (the scalar float outputs, or `loss=`) and the
parameters (the updated params of a compiled function, else every param in the graph):

- forward: every node the losses depend on, and any other node that is neither of the below;
- gradient: the nodes gd.grad(loss, params) builds that the losses do not depend on. gd.grad
  is called again here: nodes are hash-consed, so it returns the very nodes the optimizer's
  own call built, without changing the graph;
- update: what the update values need beyond forward and gradient (optimizer arithmetic).

After the passes, nodes the optimized losses depend on are forward, other ops backward.
Node ids n0, n1, ... are those of gd.to_dot and gd.print_graph (topological order).
"""

from __future__ import annotations

import html
import itertools
import json
import os
import re
import statistics

import sympy as sp

from graphdl.dot import graph_roots, tree_label
from graphdl.errors import NotDifferentiableError
from graphdl.explain import _Elements, mathml, op_function
from graphdl.graph import Graph, toposort
from graphdl.ops import registry
from graphdl.shapes import format_shape

CHAR_W, LINE_H, PAD, GAP_X, GAP_Y = 7.0, 15, 8, 26, 46     # layout metrics (px)
MAX_MEMBERS = 8                   # member ops listed inside a fused group's outline
_LEAF_KINDS = ("input", "param", "state", "constant")


def to_html(obj, path=None, *, loss=None, title: str | None = None) -> str:
    """Write the graph explorer page of a tensor, a list of tensors or a compiled function.

    One self-contained HTML file: an SVG drawing of the graph (forward, gradient and update
    nodes coloured apart; a toggle between the graph as built and after optimization, fused
    groups outlined with their ops) and a side panel showing, for the clicked node, its
    formula (MathML), shape, dtype and source line. `loss` names the loss tensor(s) when
    they are not the scalar outputs. Returns the path written (or the HTML when `path` is
    None).

    Example:
        >>> gd.to_html(step, "step.html")      # step = gd.function(..., updates=...)
    """
    roots = graph_roots(obj)
    losses = _losses(roots, loss)
    skip = frozenset(getattr(getattr(obj, "program", None), "skip_passes", ()) or ())
    before = _before_view(roots, losses, obj)
    after = _after_view(roots, losses, skip)
    page = _page(title or _title(obj, roots), [before, after])
    if path is None:
        return page
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return os.fspath(path)


def _title(obj, roots) -> str:
    if hasattr(obj, "updates"):
        return f"{obj!r}"
    return "graph of " + ", ".join(f"{name} ({t.op}, {format_shape(t.shape)})"
                                   for name, t in roots[:3])


def _losses(roots, loss) -> list:
    if loss is not None:
        return [loss] if not isinstance(loss, (list, tuple)) else list(loss)
    return [t for name, t in roots if name.startswith("output") and t.shape == ()
            and t.dtype in ("float32", "float64")]


# -- roles ------------------------------------------------------------------------------------
def classify(roots, losses, params) -> dict:
    """{node: "forward" | "gradient" | "update" | leaf op} (see the module docstring)."""
    from graphdl.autodiff import grad  # html sits above autodiff
    forward = set(toposort(losses))
    grads = []
    for loss in losses:
        try:
            grads += grad(loss, list(params)) if params else []
        except (NotDifferentiableError, TypeError, ValueError):
            continue
    gradient = set(toposort(grads)) - forward
    update_values = [t for name, t in roots if name.startswith("update")]
    update = set(toposort(update_values)) - forward - gradient
    kinds = {}
    for node in toposort([t for _, t in roots]):
        if node.is_leaf:
            kinds[node] = node.op
        else:
            kinds[node] = "gradient" if node in gradient else \
                "update" if node in update else "forward"
    return kinds


def _params(roots, obj) -> list:
    updates = getattr(obj, "updates", None)
    if updates:
        return [var for var, _ in updates if var.op == "param"]
    return [n for n in toposort([t for _, t in roots]) if n.op == "param"
            and n.dtype in ("float32", "float64")]


# -- views --------------------------------------------------------------------------------------
class _View:
    """One drawing: nodes with ids, roles, boxes, panel contents and fused members."""

    def __init__(self, key, label, roots, prefix, kinds, members=None, note=""):
        self.key, self.label, self.note = key, label, note
        self.roots = roots
        self.nodes = Graph([t for _, t in roots]).nodes
        self.ids = {n: f"{prefix}{k}" for k, n in enumerate(self.nodes)}
        self.kinds = kinds
        self.members = members or {}
        self.outputs = {t: name for name, t in roots}


def _before_view(roots, losses, obj) -> _View:
    kinds = classify(roots, losses, _params(roots, obj))
    return _View("before", "as built", roots, "n", kinds,
                 note="the graph as your code and gd.grad built it")


def _after_view(roots, losses, skip) -> _View:
    from graphdl.passes import optimize
    tensors = [t for _, t in roots]
    optimized = optimize(tensors, skip=skip)
    members = {} if "fuse_elementwise" in skip else _fusion_members(tensors, skip)
    new_roots = [(name, t) for (name, _), t in zip(roots, optimized)]
    loss_positions = [k for k, (_, t) in enumerate(roots) if any(t is x for x in losses)]
    forward = set(toposort([optimized[k] for k in loss_positions]))
    kinds = {}
    for node in toposort(optimized):
        kinds[node] = node.op if node.is_leaf else \
            "forward" if node in forward else "backward"
    return _View("after", "after passes", new_roots, "o", kinds, members,
                 note="what the llvm backend compiles: graphdl.passes.optimize, fused "
                      "groups outlined")


def _fusion_members(tensors, skip) -> dict:
    """{fused node: the ops it absorbed}: fuse_elementwise's own grouping (passes/fuse.py),
    replayed on the graph before fusion. Nodes are hash-consed, so the fused nodes built
    here are the very nodes optimize returned."""
    from graphdl.passes import fuse, optimize
    from graphdl.passes.rewrite import rebuild
    outputs = optimize(tensors, skip=skip | {"fuse_elementwise"})
    nodes = toposort(outputs)
    consumers: dict = {id(n): {} for n in nodes}
    for n in nodes:
        for p in n.inputs:
            consumers[id(p)][id(n)] = n
    output_ids = {id(o) for o in outputs}
    stats: dict = {"input_cap_hits": 0}
    taken: dict = {}
    for node in reversed(nodes):
        if id(node) in taken or not fuse._elementwise(node):
            continue
        group = fuse._grow(node, consumers, output_ids, taken, stats)
        for m in group.members:
            taken[id(m)] = group
    memo, members = {}, {}
    for node in nodes:
        group = taken.get(id(node))
        if group is not None and group.root is not node:
            continue
        if group is not None and len(group.members) > 1:
            memo[node] = fuse._fused_node(group, memo)
            members[memo[node]] = list(reversed(group.members))
        else:
            memo[node] = rebuild(node, [memo[p] for p in node.inputs]) if node.inputs \
                else node
    return members


# -- layout ---------------------------------------------------------------------------------------
def layout(nodes, sizes: dict) -> tuple:
    """Layered layout: ({node: (x, y)} centres, {(parent, child): [points]}, width, height).

    Only edges between the given nodes are drawn (inputs left out are not laid out).

    Layers by longest path from the sources, then each node moved down to just above its
    first user (an optimizer's state chain sits next to the gradient it meets),
    dummy vertices on edges that skip layers, barycenter ordering sweeps, then x positions
    pulled towards the neighbours' mean without overlaps.
    """
    drawn = set(nodes)
    inputs = {n: [p for p in dict.fromkeys(n.inputs) if p in drawn] for n in nodes}
    users = {n: [] for n in nodes}
    for n in nodes:
        for p in inputs[n]:
            users[p].append(n)
    layer = {}
    for n in nodes:
        layer[n] = 1 + max((layer[p] for p in inputs[n]), default=-1)
    for n in reversed(nodes):          # pull each node down to just above its first user
        if users[n]:
            layer[n] = max(layer[n], min(layer[u] for u in users[n]) - 1)
    up, down, chains = {}, {}, {}
    vertices = list(nodes)
    for n in nodes:
        for p in inputs[n]:
            chain = [p]
            for level in range(layer[p] + 1, layer[n]):
                d = ("dummy", id(p), id(n), level)
                layer[d] = level
                vertices.append(d)
                chain.append(d)
            chain.append(n)
            chains[(p, n)] = chain
            for a, b in itertools.pairwise(chain):
                down.setdefault(a, []).append(b)
                up.setdefault(b, []).append(a)
    rows = [[] for _ in range(max(layer.values(), default=0) + 1)]
    for v in vertices:
        rows[layer[v]].append(v)
    _order(rows, up, down)
    width_of = {v: sizes[v][0] if v in sizes else 8 for v in vertices}
    x = _place_x(rows, up, down, width_of)
    y, top = {}, PAD + 10
    for row in rows:
        h = max((sizes[v][1] for v in row if v in sizes), default=10)
        for v in row:
            y[v] = top + h / 2
        top += h + GAP_Y
    left = min(x[v] - width_of[v] / 2 for v in vertices) - PAD if vertices else 0
    pos = {v: (x[v] - left, y[v]) for v in vertices}
    width = max((pos[v][0] + width_of[v] / 2 for v in vertices), default=0) + PAD
    paths = {e: [pos[v] for v in chain] for e, chain in chains.items()}
    return {n: pos[n] for n in nodes}, paths, width, top


def _order(rows, up, down, sweeps: int = 8) -> None:
    """Reorder each layer by the mean position of its neighbours, down then up."""
    for sweep in range(sweeps):
        sequence = range(1, len(rows)) if sweep % 2 == 0 else range(len(rows) - 2, -1, -1)
        links = up if sweep % 2 == 0 else down
        for k in sequence:
            near = rows[k - 1] if sweep % 2 == 0 else rows[k + 1]
            place = {v: i for i, v in enumerate(near)}
            current = {v: i for i, v in enumerate(rows[k])}
            rows[k].sort(key=lambda v, place=place, current=current, links=links:
                         _barycenter(v, place, current, links))


def _barycenter(v, place, current, links) -> tuple:
    linked = [place[u] for u in links.get(v, ()) if u in place]
    return (statistics.fmean(linked) if linked else current[v], current[v])


def _place_x(rows, up, down, width_of) -> dict:
    """x centres: each layer packed in order, then pulled towards its neighbours' mean."""
    x = {}
    for row in rows:
        at = 0.0
        for v in row:
            x[v] = at + width_of[v] / 2
            at += width_of[v] + GAP_X
    for sweep in range(6):
        links = up if sweep % 2 == 0 else down
        for row in (rows if sweep % 2 == 0 else reversed(rows)):
            want = {v: statistics.fmean(x[u] for u in links[v]) if links.get(v) else x[v]
                    for v in row}
            _fit(row, want, width_of, x)
    return x


def _fit(row, want, width_of, x) -> None:
    """Positions as close to `want` as the order and spacing allow (mean of a left-to-right
    and a right-to-left packing)."""
    right, at = {}, -1e18
    for v in row:
        at = max(want[v], at + width_of[v] / 2)
        right[v] = at
        at += width_of[v] / 2 + GAP_X
    left, at = {}, 1e18
    for v in reversed(row):
        at = min(want[v], at - width_of[v] / 2)
        left[v] = at
        at -= width_of[v] / 2 + GAP_X
    previous = -1e18
    for v in row:
        x[v] = max((right[v] + left[v]) / 2, previous + width_of[v] / 2)
        previous = x[v] + width_of[v] / 2 + GAP_X


# -- node contents ---------------------------------------------------------------------------------
def _inline(node) -> bool:
    """Scalar constants are not drawn as nodes: their value is written in their users'
    boxes (a 0.9 used by every Adam update would otherwise draw edges across the page)."""
    return node.op == "constant" and node.storage.array.size == 1


def _lines(view: _View, node) -> list:
    """The text lines inside a node's box."""
    constants = [tree_label(p).removeprefix("constant ") for p in node.inputs if _inline(p)]
    names = {**view.ids, **{p: tree_label(p).removeprefix("constant ")
                            for p in node.inputs if _inline(p)}}
    head = tree_label(node, names)
    if constants and node.op != "fused":
        head += " (" + ", ".join(constants) + ")"
    if node.op == "fused":
        head = "fused" if node in view.members else head
    if node in view.outputs:
        head = f"{view.outputs[node]}: {head}"
    lines = [f"{view.ids[node]} {head}", f"{format_shape(node.shape)} {node.dtype}"]
    for m in view.members.get(node, [])[:MAX_MEMBERS]:
        lines.append(f"· {tree_label(m) if m.op != 'fused' else 'fused'} "
                     f"{_short_site(m.site)}")
    extra = len(view.members.get(node, [])) - MAX_MEMBERS
    if extra > 0:
        lines.append(f"· ... {extra} more")
    return [line if len(line) <= 48 else line[:45] + "..." for line in lines]


def _short_site(site: str) -> str:
    path, _, line = site.rpartition(":")
    return f"{os.path.basename(path)}:{line}" if path else site


def _formulas(view: _View) -> dict:
    """{node: MathML of `id[indices] = element formula`} for every node of a view."""
    batch = {(n, k): "i" for n in view.nodes for k, d in enumerate(n.shape)
             if not isinstance(d, int)}
    el = _Elements(view.nodes, batch, spare="jklmnpqrstuvwabdefgh")
    for node in view.nodes:
        if node.op != "constant":
            el.name(node, node.name if node.is_leaf else view.ids[node])
    out, ids = {}, set(view.ids.values())
    for node in view.nodes:
        if node.is_leaf:
            continue
        try:
            lhs = el.of(node)
            known = registry.is_elementwise(node) or hasattr(el, "_rule_" + node.op)
            rhs = el.expand(node) if known else op_function(node.op)(
                *(sp.Symbol(view.ids[p] if not p.name else p.name) for p in node.inputs))
            out[node] = mathml(sp.Eq(lhs, rhs, evaluate=False), verbatim=ids)
        except (TypeError, ValueError, AttributeError, KeyError, NotImplementedError) as error:
            # a formula the printer cannot write: say so in the panel, keep going
            out[node] = f"<mtext>{html.escape(f'no formula: {error}')}</mtext>"
    return out


def _panel(view: _View, formulas: dict) -> dict:
    """Side-panel contents per node id: title, formula (MathML) and an info table (HTML)."""
    users = Graph([t for _, t in view.roots]).users()
    out = {}
    for node in view.nodes:
        rows = [("op", node.op), ("shape", format_shape(node.shape)), ("dtype", node.dtype),
                ("source", node.site), ("role", view.kinds.get(node, ""))]
        if node in view.outputs:
            rows.append(("graph output", view.outputs[node]))
        shown = [f"{k}={v}" for k, v in node.attrs if k not in ("uid", "name", "expr", "dtype")]
        if shown:
            rows.append(("attributes", ", ".join(shown)))
        if node.storage is not None:
            rows.append(("value", _value_text(node.storage.array)))
        cells = [(k, html.escape(str(v))) for k, v in rows]
        cells.append(("inputs", _links(view, node.inputs)))
        cells.append(("users", _links(view, users.get(node, []))))
        members = view.members.get(node)
        if members:
            cells.append(("fuses", "<br>".join(
                f"{html.escape(tree_label(m))} <code>{html.escape(m.site)}</code>"
                for m in members)))
        table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in cells)
        name = f" {node.name}" if node.name else ""
        formula = formulas.get(node)
        out[view.ids[node]] = {
            "title": f"{view.ids[node]}: {node.op}{name}",
            "formula": (f'<math xmlns="http://www.w3.org/1998/Math/MathML" display="block">'
                        f"{formula}</math>") if formula else "",
            "info": f"<table>{table}</table>"}
    return out


def _value_text(array) -> str:
    """A param's or constant's current value: the numbers when few, else a summary."""
    if array.size <= 8:
        return str(array.tolist())
    if array.dtype.kind not in "fiu":
        return f"{array.size} values"
    return (f"{array.size} values, mean {array.mean():.4g}, std {array.std():.4g}, "
            f"range [{array.min():.4g}, {array.max():.4g}]")


def _links(view: _View, nodes) -> str:
    parts = [html.escape(tree_label(n)) if _inline(n) else
             f'<a href="#" data-goto="{view.ids[n]}">{view.ids[n]}</a> '
             f"{html.escape(format_shape(n.shape))}" for n in dict.fromkeys(nodes)
             if n in view.ids]
    return ", ".join(parts) or "-"


# -- drawing ------------------------------------------------------------------------------------------
def _svg(view: _View) -> tuple:
    """The SVG of one view and its panel data."""
    drawn = [n for n in view.nodes if not _inline(n)]
    lines = {n: _lines(view, n) for n in drawn}
    sizes = {n: (max(len(s) for s in lines[n]) * CHAR_W + 2 * PAD, len(lines[n]) * LINE_H + 10)
             for n in drawn}
    pos, paths, width, height = layout(drawn, sizes)
    parts = [(f'<svg class="graph" id="view-{view.key}" data-view="{view.key}" '
              f'xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
              f'viewBox="0 0 {width:.0f} {height:.0f}">'),
             (f'<defs><marker id="arrow-{view.key}" viewBox="0 0 10 10" refX="9" refY="5" '
              'markerWidth="6" markerHeight="6" orient="auto-start-reverse">'
              '<path d="M0,0 L10,5 L0,10 z" fill="#777"/></marker></defs>')]
    for (parent, child), points in paths.items():
        (x0, y0), (x1, y1) = points[0], points[-1]
        points = [(x0, y0 + sizes[parent][1] / 2)] + points[1:-1] + [(x1, y1 - sizes[child][1] / 2)]
        d = f"M{points[0][0]:.1f},{points[0][1]:.1f}"
        for (ax, ay), (bx, by) in itertools.pairwise(points):
            mid = (ay + by) / 2
            d += f" C{ax:.1f},{mid:.1f} {bx:.1f},{mid:.1f} {bx:.1f},{by:.1f}"
        kind = view.kinds.get(child, "")
        parts.append(f'<path class="edge edge-{kind}" d="{d}" '
                     f'marker-end="url(#arrow-{view.key})"/>')
    for node in drawn:
        (cx, cy), (w, h) = pos[node], sizes[node]
        classes = ["node", f"kind-{view.kinds.get(node, 'forward')}"]
        if node in view.members:
            classes.append("fused-group")
        if node in view.outputs:
            classes.append("graph-output")
        nid = view.ids[node]
        parts.append(f'<g class="{" ".join(classes)}" id="{view.key}-{nid}" data-node="{nid}">'
                     f"<title>{html.escape(node.site)}</title>"
                     f'<rect x="{cx - w / 2:.1f}" y="{cy - h / 2:.1f}" width="{w:.1f}" '
                     f'height="{h:.1f}" rx="6"/>')
        for k, text in enumerate(lines[node]):
            cls = "head" if k == 0 else "member" if k > 1 else "sub"
            parts.append(f'<text class="{cls}" x="{cx - w / 2 + PAD:.1f}" '
                         f'y="{cy - h / 2 + 5 + (k + 0.8) * LINE_H:.1f}">'
                         f"{html.escape(text)}</text>")
        parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts), _panel(view, _formulas(view))


def _page(title: str, views) -> str:
    drawings, panels, buttons = [], {}, []
    for k, view in enumerate(views):
        svg, panel = _svg(view)
        hidden = "" if k == 0 else " hidden"
        drawings.append(f'<div class="view" data-view="{view.key}"{hidden}>'
                        f'<p class="note">{html.escape(view.note)} ({len(view.nodes)} '
                        f"nodes)</p>{svg}</div>")
        panels[view.key] = panel
        pressed = "true" if k == 0 else "false"
        buttons.append(f'<button data-show="{view.key}" aria-pressed="{pressed}">'
                       f"{html.escape(view.label)}</button>")
    data = json.dumps(panels).replace("</", "<\\/")
    values = {"title": html.escape(title), "css": _CSS, "buttons": "".join(buttons),
              "views": "\n".join(drawings), "data": data, "script": _SCRIPT}
    # one pass over the template: nothing inserted is scanned again
    return re.sub(r"\{(title|css|buttons|views|data|script)\}",
                  lambda m: values[m.group(1)], _TEMPLATE)


_CSS = """
body { margin: 0; font: 13px/1.4 system-ui, sans-serif; color: #1f2328; }
header { padding: 8px 14px; border-bottom: 1px solid #d0d7de; background: #f6f8fa; }
header h1 { font-size: 15px; margin: 0 0 6px 0; }
button { font: inherit; padding: 3px 10px; margin-right: 4px; border: 1px solid #8c959f;
         border-radius: 4px; background: #fff; cursor: pointer; }
button[aria-pressed="true"] { background: #0969da; color: #fff; border-color: #0969da; }
.legend span { display: inline-block; margin-left: 10px; }
.legend i { display: inline-block; width: 12px; height: 12px; border: 1px solid #555;
            vertical-align: -2px; margin-right: 3px; }
main { display: flex; height: calc(100vh - 70px); }
#canvas { flex: 1; overflow: auto; }
.note { margin: 6px 12px; color: #57606a; }
aside { width: 420px; border-left: 1px solid #d0d7de; padding: 10px 14px; overflow: auto; }
aside h2 { font-size: 15px; margin: 4px 0 8px 0; }
#panel-formula { overflow-x: auto; margin-bottom: 10px; font-size: 16px; }
aside table { border-collapse: collapse; width: 100%; }
aside th { text-align: left; vertical-align: top; padding: 2px 8px 2px 0; color: #57606a;
           white-space: nowrap; }
aside td { padding: 2px 0; word-break: break-all; }
svg.graph { display: block; }
.node { cursor: pointer; }
.node rect { fill: #fff; stroke: #57606a; stroke-width: 1; }
.node text { font: 11px ui-monospace, monospace; fill: #1f2328; pointer-events: none; }
.node text.head { font-weight: 600; }
.node text.member { fill: #1a7f37; }
.kind-forward rect { fill: #ddf4ff; stroke: #0969da; }
.kind-gradient rect, .kind-backward rect { fill: #fff1e5; stroke: #bc4c00; }
.kind-update rect { fill: #fbefff; stroke: #8250df; }
.kind-input rect { fill: #fff8c5; stroke: #9a6700; }
.kind-param rect { fill: #dafbe1; stroke: #1a7f37; }
.kind-state rect { fill: #eaeef2; stroke: #57606a; stroke-dasharray: 4 2; }
.kind-constant rect { fill: #fff; stroke: #afb8c1; }
.fused-group rect { stroke: #1a7f37; stroke-width: 2.5; stroke-dasharray: 7 3; }
.graph-output rect { stroke-width: 3; }
.node.selected rect { stroke: #cf222e; stroke-width: 3; }
.edge { fill: none; stroke: #8c959f; stroke-width: 1.2; }
.edge-gradient, .edge-backward { stroke: #e0823d; }
.edge-update { stroke: #a475f9; }
"""

_SCRIPT = """
(function () {
  var data = JSON.parse(document.getElementById('graph-data').textContent);
  var current = 'before';
  function show(view) {
    current = view;
    document.querySelectorAll('.view').forEach(function (v) {
      v.hidden = v.dataset.view !== view; });
    document.querySelectorAll('button[data-show]').forEach(function (b) {
      b.setAttribute('aria-pressed', b.dataset.show === view ? 'true' : 'false'); });
  }
  function select(id) {
    var info = (data[current] || {})[id];
    if (!info) return false;
    document.querySelectorAll('.node.selected').forEach(function (n) {
      n.classList.remove('selected'); });
    var g = document.getElementById(current + '-' + id);
    if (g) { g.classList.add('selected'); if (g.scrollIntoView) g.scrollIntoView(
      {block: 'center', inline: 'center'}); }
    document.getElementById('panel-title').textContent = info.title;
    document.getElementById('panel-formula').innerHTML = info.formula;
    document.getElementById('panel-info').innerHTML = info.info;
    document.body.dataset.selected = current + ':' + id;
    return true;
  }
  var scale = 1;
  function zoom(how) {
    var canvas = document.getElementById('canvas');
    document.querySelectorAll('svg.graph').forEach(function (svg) {
      var box = svg.viewBox.baseVal;
      if (how === 'fit' && svg.closest('.view').dataset.view === current)
        scale = Math.max(0.3, Math.min(1, (canvas.clientWidth - 20) / box.width));
      else if (how !== 'fit' && svg.closest('.view').dataset.view === current)
        scale = Math.max(0.1, Math.min(4, scale * how));
    });
    document.querySelectorAll('svg.graph').forEach(function (svg) {
      var box = svg.viewBox.baseVal;
      svg.setAttribute('width', box.width * scale);
      svg.setAttribute('height', box.height * scale);
    });
  }
  document.querySelectorAll('button[data-zoom]').forEach(function (b) {
    b.addEventListener('click', function () {
      zoom(b.dataset.zoom === 'fit' ? 'fit' : parseFloat(b.dataset.zoom)); }); });
  document.querySelectorAll('.node').forEach(function (g) {
    g.addEventListener('click', function () { select(g.dataset.node); }); });
  document.querySelectorAll('button[data-show]').forEach(function (b) {
    b.addEventListener('click', function () { show(b.dataset.show); zoom('fit'); }); });
  document.getElementById('panel').addEventListener('click', function (e) {
    var a = e.target.closest('[data-goto]');
    if (a) { e.preventDefault(); select(a.dataset.goto); } });
  // Test mode and links: #view=after&click=o3 shows a view and clicks a node on load.
  var params = {};
  location.hash.replace(/^#/, '').split('&').forEach(function (kv) {
    var p = kv.split('='); if (p[0]) params[p[0]] = decodeURIComponent(p[1] || ''); });
  if (params.view) show(params.view);
  zoom('fit');
  if (params.click) {
    var target = document.getElementById(current + '-' + params.click);
    if (target) target.dispatchEvent(new MouseEvent('click', {bubbles: true}));
  }
})();
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="generator" content="graphdl.to_html">
<title>{title}</title><style>{css}</style></head>
<body>
<header><h1>{title}</h1>
<span class="toggle">{buttons}</span>
<span class="zoom"><button data-zoom="0.8" title="zoom out">&minus;</button><button
 data-zoom="fit" title="fit the width">fit</button><button data-zoom="1.25"
 title="zoom in">+</button></span>
<span class="legend"><span><i style="background:#ddf4ff"></i>forward</span>
<span><i style="background:#fff1e5"></i>gradient / backward</span>
<span><i style="background:#fbefff"></i>update</span>
<span><i style="background:#fff8c5"></i>input</span>
<span><i style="background:#dafbe1"></i>param</span>
<span><i style="background:#fff;border:2px dashed #1a7f37"></i>fused group</span></span>
</header>
<main><div id="canvas">{views}</div>
<aside id="panel"><h2 id="panel-title">Click a node</h2>
<div id="panel-formula"></div><div id="panel-info"></div></aside></main>
<script type="application/json" id="graph-data">{data}</script>
<script>{script}</script>
</body></html>
"""


__all__ = ["classify", "layout", "to_html"]
