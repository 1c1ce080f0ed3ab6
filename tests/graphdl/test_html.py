"""gd.to_html: the graph explorer page, checked as a file and in a real browser.

The browser tests drive headless Chromium from the system packages (`--dump-dom` after the
page's own test mode clicked a node: `#click=n5`), and take a screenshot. They are skipped
when /usr/bin/chromium is absent (CI installs it: `apt-get install chromium`).
"""

from __future__ import annotations

import itertools
import os
import re
import struct
import subprocess
import zlib

import numpy as np
import pytest

import graphdl as gd
from graphdl.dot import graph_roots
from graphdl.html import _after_view, classify, layout, to_html
from graphdl.passes import optimize

CHROMIUM = "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                    reason="headless Chromium is not installed")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _line_of(marker: str) -> int:
    """The line of this file holding `marker` (what the page must show as the source)."""
    with open(__file__, encoding="utf-8") as f:
        for k, line in enumerate(f, 1):
            if marker in line and "_line_of" not in line:
                return k
    raise AssertionError(marker)


def training_step(backend="reference"):
    x = gd.input("x", (None, 6))
    y = gd.input("y", (None, 3))
    W1 = gd.param("W1", (6, 5), init=gd.init.xavier_uniform())
    b1 = gd.param("b1", (5,))
    W2 = gd.param("W2", (5, 3), init=gd.init.xavier_uniform())
    b2 = gd.param("b2", (3,))
    h = gd.sigmoid(x @ W1 + b1)                      # <- the hidden layer
    yhat = gd.sigmoid(h @ W2 + b2)
    loss = 0.5 * gd.sum((yhat - y) ** 2)
    params = [W1, b1, W2, b2]
    step = gd.function([x, y], [loss], updates=gd.optim.SGD(lr=0.1).updates(loss, params),
                       backend=backend)
    return step, h, loss


def node_id(step, tensor) -> str:
    nodes = gd.Graph([t for _, t in graph_roots(step)]).nodes
    return f"n{nodes.index(tensor)}"


def chromium(tmp_path, *args, url):
    profile = tmp_path / f"profile{len(os.listdir(tmp_path))}"
    run = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, url],
                         capture_output=True, text=True, timeout=90, check=False)
    return run.stdout


def element(dom: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</(?:h2|div)>', dom, re.DOTALL)
    assert match, f"#{element_id} missing"
    return match.group(1)


# -- the file ------------------------------------------------------------------------------
def test_page_is_one_self_contained_file(tmp_path):
    step, _, _ = training_step()
    path = to_html(step, tmp_path / "step.html")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert text.startswith("<!DOCTYPE html>") and "<svg" in text and "<script>" in text
    assert not re.search(r"<link|@import|\bsrc=|<iframe", text)
    urls = set(re.findall(r"https?://[^\s\"'<>\\]+", text))
    assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1998/Math/MathML"}
    assert 'data-show="before"' in text and 'data-show="after"' in text


def test_roles_forward_gradient_update():
    step, h, loss = training_step()
    kinds = classify(graph_roots(step), [loss], [v for v, _ in step.updates
                                                 if v.op == "param"])
    assert kinds[h] == "forward" and kinds[loss] == "forward"
    for var, value in step.updates:
        assert kinds[value] == "update", var.name
    gW1 = gd.grad(loss, [v for v, _ in step.updates][:4])[0]      # the optimizer's own node
    assert kinds[gW1] == "gradient"
    assert {"forward", "gradient", "update", "param", "input"} <= set(kinds.values())


def test_after_view_is_what_optimize_returns_with_fused_groups():
    step, _, loss = training_step()
    roots = graph_roots(step)
    view = _after_view(roots, [loss], frozenset())
    optimized = optimize([t for _, t in roots])
    assert view.nodes == gd.Graph(optimized).nodes
    fused = [n for n in view.nodes if n.op == "fused" and n in view.members]
    assert fused and all(len(view.members[n]) >= 2 for n in fused)
    assert any("sigmoid" in [m.op for m in view.members[n]] for n in fused)


def test_layout_keeps_layers_apart_and_edges_downward():
    step, _, _ = training_step()
    nodes = gd.Graph([t for _, t in graph_roots(step)]).nodes
    sizes = {n: (80.0, 30.0) for n in nodes}
    pos, _, width, height = layout(nodes, sizes)
    for n in nodes:
        for p in n.inputs:
            assert pos[p][1] < pos[n][1]
    by_row: dict = {}
    for n, (x, y) in pos.items():
        by_row.setdefault(y, []).append(x)
    for xs in by_row.values():
        xs.sort()
        assert all(b - a >= 80.0 for a, b in itertools.pairwise(xs))
    assert all(0 <= x <= width and 0 <= y <= height for x, y in pos.values())


# -- in the browser -------------------------------------------------------------------------
@needs_chromium
def test_clicking_a_node_shows_its_formula_shape_and_line(tmp_path):
    step, h, _ = training_step()
    path = to_html(step, tmp_path / "step.html")
    nid = node_id(step, h)
    dom = chromium(tmp_path, "--dump-dom", url=f"file://{path}#click={nid}")
    assert f'data-selected="before:{nid}"' in dom
    assert element(dom, "panel-title").startswith(f"{nid}: sigmoid")
    formula = element(dom, "panel-formula")
    assert "<math" in formula and "<mfrac>" in formula and f"<mi>{nid}</mi>" in formula
    info = element(dom, "panel-info")
    assert f"test_html.py:{_line_of('# <- the hidden layer')}" in info
    assert "(None, 5)" in info and "float32" in info and "forward" in info


@needs_chromium
def test_after_passes_view_lists_what_was_fused(tmp_path):
    step, _, loss = training_step()
    path = to_html(step, tmp_path / "step.html")
    view = _after_view(graph_roots(step), [loss], frozenset())
    group = next(n for n in view.nodes if n in view.members
                 and "sigmoid" in [m.op for m in view.members[n]])
    oid = view.ids[group]
    dom = chromium(tmp_path, "--dump-dom", url=f"file://{path}#view=after&click={oid}")
    assert f'data-selected="after:{oid}"' in dom
    info = element(dom, "panel-info")
    assert "fuses" in info and "sigmoid" in info and "test_html.py:" in info
    assert "<math" in element(dom, "panel-formula")


def _png_pixels(path):
    """(width, height, distinct byte values of the decoded scanlines) of a PNG file."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    chunks, k = [], 8
    while k < len(data):
        length, kind = struct.unpack(">I4s", data[k:k + 8])
        if kind == b"IDAT":
            chunks.append(data[k + 8:k + 8 + length])
        k += 12 + length
    raw = np.frombuffer(zlib.decompress(b"".join(chunks)), dtype=np.uint8)
    return width, height, len(np.unique(raw))


@needs_chromium
def test_screenshot_renders_the_graph(tmp_path):
    step, h, _ = training_step()
    path = to_html(step, tmp_path / "step.html")
    shot = tmp_path / "step.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,900",
             url=f"file://{path}#click={node_id(step, h)}")
    width, height, distinct = _png_pixels(shot)
    assert (width, height) == (1400, 900)
    assert os.path.getsize(shot) > 20_000 and distinct > 50     # drawn, not a blank page
