"""gd.print_graph (the terminal form of a graph) and the notebook forms of tensors and
explanations (_repr_latex_, _repr_html_)."""

from __future__ import annotations

import io
import re

import numpy as np

import graphdl as gd
from graphdl.dot import print_graph


def _line_of(marker: str) -> int:
    with open(__file__, encoding="utf-8") as f:
        for k, line in enumerate(f, 1):
            if marker in line and "_line_of" not in line:
                return k
    raise AssertionError(marker)


def small_model():
    x = gd.input("x", (None, 4))                            # <- input x
    W = gd.param("W", (4, 3))                               # <- param W
    h = gd.tanh(x @ W)                                      # <- hidden
    loss = gd.sum(h * h)                                    # <- loss
    return x, W, h, loss


def test_every_node_has_its_op_shape_dtype_and_file_line(capsys):
    _, _, _, loss = small_model()
    text = print_graph(loss)
    assert capsys.readouterr().out.strip() == text.strip()       # printed and returned
    rows = {"input x": "# <- input x", "param W": "# <- param W", "tanh": "# <- hidden",
            "matmul": "# <- hidden", "mul": "# <- loss", "sum": "# <- loss"}
    for label, marker in rows.items():
        line = next(r for r in text.splitlines() if f" {label}" in r)
        assert line.rstrip().endswith(f"test_print_graph.py:{_line_of(marker)}"), line
    assert "(None, 4) float32" in text and "(4, 3) float32" in text and "() float32" in text
    ids = re.findall(r"\bn(\d+) ", text)
    assert sorted(set(map(int, ids))) == list(range(len(gd.Graph([loss]).nodes)))


def test_a_shared_node_is_written_once_then_referenced():
    _, _, h, loss = small_model()
    text = print_graph(loss, file=io.StringIO())
    n_h = f"n{gd.Graph([loss]).nodes.index(h)}"
    assert len(re.findall(rf"{n_h} tanh", text)) == 2               # h * h: h, then ^ h
    assert f"^ {n_h} tanh" in text


def test_fused_nodes_show_their_formula_and_updates_are_listed():
    x, W, _, loss = small_model()
    step = gd.function([x], [loss], updates=gd.optim.SGD(lr=0.1).updates(loss, [W]),
                       backend="reference")
    text = print_graph(step, file=io.StringIO())
    assert "output 0:" in text and "update W:" in text
    fused = [r for r in text.splitlines() if " fused " in r and "^ " not in r]
    assert fused and all(re.search(r"fused \S*n\d+", r) for r in fused)   # over input ids


def test_deep_graphs_print_without_recursion():
    x = gd.input("x", (2,))
    y = x
    for _ in range(3000):
        y = gd.tanh(y)
    text = print_graph(y, file=io.StringIO())
    assert text.count("tanh") == 3000


def test_full_paths_on_request():
    _, _, _, loss = small_model()
    text = print_graph(loss, file=io.StringIO(), full_paths=True)
    assert __file__ in text


def test_public_name():
    assert gd.print_graph is print_graph


# -- notebook forms ------------------------------------------------------------------------
def test_tensors_show_their_formula_in_notebooks():
    _, _, h, loss = small_model()
    latex = loss._repr_latex_()
    assert latex.startswith("$$") and latex.endswith("$$") and r"\tanh" in latex
    page = h._repr_html_()
    assert "<math" in page and "tanh" in page


def test_explanations_render_as_latex_and_mathml():
    e = gd.explain(gd.sigmoid)
    assert e._repr_latex_().startswith("$$\\begin{aligned}")
    page = e._repr_html_()
    assert page.startswith('<pre class="graphdl-explain">') and "<math" in page
    assert "<mfrac>" in page                                  # 1 / (1 + e^-x), rendered
    w = gd.param("w", np.ones(3, np.float32))
    assert "<math" in gd.explain(gd.sum(gd.sigmoid(w)), wrt=[w])._repr_html_()
