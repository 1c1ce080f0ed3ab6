"""gd.to_dot: Graphviz DOT text that parses, with one node per graph node."""

from __future__ import annotations

import re

import graphdl as gd

NODE = re.compile(r"^\s*(n\d+) \[label=")
EDGE = re.compile(r"^\s*(n\d+) -> (n\d+)\b")


def check_dot(text: str):
    """Parse the DOT text enough to trust it: quoted strings close, braces balance outside
    strings, and every edge endpoint is a declared node. Returns (nodes, edges)."""
    depth, in_string, k = 0, False, 0
    while k < len(text):
        ch = text[k]
        if in_string:
            if ch == "\\":
                k += 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{}":
            depth += 1 if ch == "{" else -1
            assert depth >= 0
        k += 1
    assert not in_string and depth == 0
    assert text.startswith("digraph ")
    nodes = [m.group(1) for line in text.splitlines() if (m := NODE.match(line))]
    edges = [m.groups() for line in text.splitlines() if (m := EDGE.match(line))]
    assert len(set(nodes)) == len(nodes)
    assert all(a in nodes and b in nodes for a, b in edges)
    return nodes, edges


def _mlp():
    x, y = gd.input("x", (None, 4)), gd.input("y", (None, 2))
    W1, b1 = gd.param("W1", (4, 3)), gd.param("b1", (3,))
    W2, b2 = gd.param("W2", (3, 2)), gd.param("b2", (2,))
    out = gd.sigmoid(gd.tanh(x @ W1 + b1) @ W2 + b2)
    return [W1, b1, W2, b2], ((out - y) ** 2).mean()


def test_one_dot_node_per_graph_node_and_edges_per_input():
    params, loss = _mlp()
    text = gd.to_dot(loss)
    nodes, edges = check_dot(text)
    graph = gd.Graph([loss])
    assert len(nodes) == len(graph.nodes)
    assert len(edges) == sum(len(n.inputs) for n in graph.nodes)
    for p in params:
        assert f'label="{p.name}\\nparam' in text
    assert "shape=box" in text and "style=filled" in text
    assert "constant 2.0" in text


def test_gradient_graph_with_fused_nodes():
    params, loss = _mlp()
    grads = gd.grad(loss, params)
    text = gd.to_dot([loss, *grads], name="mlp")
    nodes, _ = check_dot(text)
    assert len(nodes) == len(gd.Graph([loss, *grads]).nodes)
    fused = [line for line in text.splitlines() if 'label="fused: ' in line]
    assert fused
    assert all(len(line.split("\\n")[0]) < 100 for line in fused)   # formula truncated
    assert text.count("peripheries=2") == 1 + len(grads)


def test_output_is_deterministic():
    _, loss = _mlp()
    assert gd.to_dot(loss) == gd.to_dot(loss)
    assert gd.to_dot(loss) == gd.to_dot(gd.Graph([loss]))


def test_quotes_and_backslashes_are_escaped():
    a = gd.input('a "quoted" \\ name', (2,))
    text = gd.to_dot(gd.exp(a) * 3, name='my "graph"')
    nodes, edges = check_dot(text)
    assert len(nodes) == 4 and len(edges) == 3
    assert r'a \"quoted\" \\ name' in text
    assert text.startswith(r'digraph "my \"graph\"" {')
