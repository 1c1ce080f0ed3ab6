"""fuse_elementwise: which nodes join a group, and the fused values equal the original's."""

import numpy as np
import pytest
import sympy as sp

import graphdl as gd
from graphdl.graph import toposort
from graphdl.ops.registry import OUT, I, is_elementwise
from graphdl.passes import fuse
from graphdl.passes.canonicalize import canonicalize
from graphdl.passes.fuse import fuse_elementwise
from graphdl.passes.simplify import simplify


def _inputs(dtype, *names, shape=(None, 3)):
    return [gd.input(n, shape, dtype) for n in names]


def _fused(outputs):
    return [n for n in toposort(outputs) if n.op == "fused"]


def test_an_equal_shape_chain_becomes_one_fused_node(dtype, check):
    x, w, b = _inputs(dtype, "x", "w", "b")
    before = [gd.tanh(x * w + b)]
    details = {}
    after = fuse_elementwise(before, details=details)
    (node,) = _fused(after)
    assert node is after[0] and set(node.inputs) == {x, w, b}
    assert node.attr("expr").count(sp.tanh) == 1 and node.dtype == dtype
    assert details == {"fused_nodes": 1, "ops_fused": 3, "input_cap_hits": 0}
    assert check.ops(after) == {"input": 3, "fused": 1}
    check.same(before, after, exact=True, special=True)


def test_a_value_with_two_users_stays_materialized(dtype, check):
    x, = _inputs(dtype, "x")
    h = gd.exp(x)
    before = [h * 2.0 + h]
    after = fuse_elementwise(before)
    assert check.ops(after)["exp"] == 1 and after[0].op == "fused"
    assert h in after[0].inputs
    check.same(before, after, exact=True, special=True)


def test_graph_outputs_are_not_absorbed(check):
    x, = _inputs("float64", "x")
    h = gd.exp(x)
    before = [h, gd.tanh(h * 2.0)]
    after = fuse_elementwise(before)
    assert after[0] is h and after[1].op == "fused" and after[1].inputs[0] is h
    check.same(before, after, exact=True, special=True)


def test_a_smaller_producer_is_not_recomputed_per_element(dtype, check):
    x, = _inputs(dtype, "x")
    b, = _inputs(dtype, "b", shape=(3,))
    bias = gd.exp(b) * 0.5                      # bias-sized: computed once, broadcast after
    before = [gd.tanh(x + bias)]
    after = fuse_elementwise(before)
    big, small = sorted(_fused(after), key=lambda n: len(n.shape), reverse=True)
    assert small.shape == (3,) and small in big.inputs and x in big.inputs
    check.same(before, after, exact=True, special=True)


def test_cheap_scalars_join_and_expensive_ones_do_not(check):
    x, = _inputs("float64", "x")
    a, n = _inputs("float64", "a", "n", shape=())
    cheap = [x * (a / n) + 1.0]
    after = fuse_elementwise(cheap)
    assert len(_fused(after)) == 1 and set(after[0].inputs) >= {x, a, n}
    check.same(cheap, after, exact=True, special=True)

    s = a
    for _ in range(fuse.SCALAR_OP_BUDGET + 2):
        s = gd.exp(s)                         # a chain of scalar ops over the budget
    expensive = [x * s + 1.0]
    after = fuse_elementwise(expensive)
    root = after[0]
    assert root.op == "fused" and a not in root.inputs
    assert any(t.shape == () and t.op in ("exp", "fused") for t in root.inputs)
    check.same(expensive, after, exact=True)


def test_fusion_stops_at_structured_ops(dtype, check):
    x, = _inputs(dtype, "x")
    W = gd.param("W", np.ones((3, 4), dtype=dtype) * 0.1)
    h = gd.exp(x * 2.0)
    before = [gd.sigmoid(h @ W) - 1.0]
    after = fuse_elementwise(before)
    assert check.ops(after) == {"input": 1, "param": 1, "matmul": 1, "fused": 2,
                                "constant": 2}
    check.same(before, after, exact=True, special=True)


def test_groups_are_convex(check):
    # e feeds both a reduction and an elementwise user: fusing e into the user would put a
    # path (e -> sum -> user) that leaves the group and comes back. e must stay.
    x, = _inputs("float64", "x")
    e = gd.exp(x - 1.0)
    before = [(e / e.sum(1, keepdims=True)) * 3.0]
    after = fuse_elementwise(before)
    (root,) = after
    (kept,) = [t for t in root.inputs if t.op == "fused"]   # exp(x - 1), fused on its own
    assert kept.attr("expr").has(sp.exp) and not root.attr("expr").has(sp.exp)
    assert any(t.op == "sum" and t.inputs[0] is kept for t in root.inputs)
    _assert_fused_as_far_as_allowed(after)
    check.same(before, after, exact=True, special=True)


def _assert_fused_as_far_as_allowed(outputs):
    """Post-condition: an unfused elementwise producer has a reason to stand alone."""
    nodes = toposort(outputs)
    users = {id(n): [] for n in nodes}
    for n in nodes:
        for p in dict.fromkeys(n.inputs):
            users[id(p)].append(n)
    for n in nodes:
        if n.is_leaf or not is_elementwise(n) or any(n is o for o in outputs):
            continue
        (user,) = users[id(n)] if len(users[id(n)]) == 1 else (None,)
        if user is None or not is_elementwise(user):
            continue
        assert n.shape != user.shape or fuse.MAX_INPUTS <= len(user.inputs) + len(n.inputs), \
            f"{n!r} could have been fused into {user!r}"


def test_the_input_cap_splits_wide_groups(check):
    xs = _inputs("float64", *(f"x{k}" for k in range(40)))
    acc = xs[0]
    for t in xs[1:]:
        acc = acc + t
    before = [acc]
    details = {}
    after = fuse_elementwise(before, details=details)
    fused_nodes = _fused(after)
    assert len(fused_nodes) >= 2
    assert max(len(n.inputs) for n in fused_nodes) == fuse.MAX_INPUTS
    assert details["input_cap_hits"] >= 1
    check.same(before, after, exact=True, special=True)


def test_where_with_a_comparison_inside(dtype, check):
    x, y = _inputs(dtype, "x", "y")
    before = [gd.where(x > 0, x * y, 0.1 * x) + 1.0]
    after = fuse_elementwise(before)
    (node,) = _fused(after)
    assert node is after[0] and set(node.inputs) >= {x, y}
    check.same(before, after, exact=True, special=True)


def test_a_converting_cast_ends_a_group_as_its_root(check):
    x, = _inputs("float64", "x")
    truncated = gd.cast(x * 3.7, "int64") + 1                  # truncation must survive
    counted = gd.cast(x > 0, "float64") + gd.cast(x < 1, "float64")  # 2.0, not bool "or"
    before = [truncated, counted]
    after = fuse_elementwise(before)
    # cast(x * 3.7) is one int64 fused node; the add stays an int64 node of its own
    assert after[0].op == "add" and after[0].inputs[0].op == "fused"
    assert after[0].inputs[0].dtype == "int64"
    # each cast(comparison) is a float64 fused node; the comparison's bool stays inside it
    assert after[1].op == "add"
    assert all(t.op == "fused" and t.dtype == "float64" and t.attr("expr").is_Relational
               for t in after[1].inputs)
    got = check.same(before, after, exact=True,
                     feeds={x: np.linspace(-3, 3, 12).reshape(4, 3)})
    assert got[1].max() == 2.0


def test_a_narrowing_cast_is_not_dropped(check):
    x, = _inputs("float64", "x")
    y, = _inputs("float32", "y")
    before = [gd.cast(gd.exp(x), "float32") * y]
    after = fuse_elementwise(before)
    narrowed = after[0].inputs[0]
    assert after[0].op == "mul" and after[0].inputs[1] is y
    assert narrowed.op == "fused" and narrowed.dtype == "float32"
    check.same(before, after, exact=True, special=True)


def test_mixed_float32_and_float64_members(check):
    x, = _inputs("float32", "x")
    y, = _inputs("float64", "y")
    before = [gd.exp(x) * y + 1.0]
    after = fuse_elementwise(before)
    (node,) = _fused(after)
    assert node.dtype == "float64" and set(node.inputs) >= {x, y}
    check.same(before, after, exact=True, special=True)


def test_the_expression_is_not_simplified_by_sympy(check):
    x, y = _inputs("float64", "x", "y")
    before = [(x - y) + y, gd.exp(gd.log(x)) * 1.5, (x / y) * y]
    after = fuse_elementwise(before)
    assert len(_fused(after)) == 3
    special = {x: np.array([[np.inf, -1.0, 2.0]] * 4), y: np.array([[np.inf, 0.0, 3.0]] * 4)}
    got = check.same(before, after, exact=True, feeds=special)
    assert np.isnan(got[0][0, 0]) and np.isnan(got[1][0, 1]) and np.isnan(got[2][0, 1])


def test_a_node_using_its_own_output_symbol_is_refused():
    x, = _inputs("float64", "x")
    bad = gd.fused([x], I[0] * OUT, "float64")
    with pytest.raises(AssertionError, match="own output"):
        fuse_elementwise([bad * 2.0])


def test_stabilized_fused_expressions_keep_their_structure(check):
    x, y = _inputs("float64", "x", "y")
    before = [(gd.softplus(x) + y) - y]
    after = fuse_elementwise(before)
    check.same(before, after, exact=True, feeds={x: np.ones((4, 3)), y: np.full((4, 3), np.inf)})


def test_single_nodes_are_left_as_they_are():
    x, = _inputs("float64", "x")
    y = gd.exp(x)
    details = {}
    assert fuse_elementwise([y], details=details) == [y]
    assert details["fused_nodes"] == 0


def test_the_fused_node_keeps_the_roots_site():
    x, = _inputs("float64", "x")
    y = gd.tanh(x * 2.0)
    (z,) = fuse_elementwise([y])
    assert z.site == y.site


def test_sigmoid_mlp_forward_and_backward_chains_fuse(dtype, check):
    x = gd.input("x", (None, 4), dtype)
    t = gd.input("t", (None, 2), dtype)
    rng = np.random.default_rng(0)
    W1 = gd.param("W1", rng.standard_normal((4, 5)).astype(dtype))
    b1 = gd.param("b1", np.zeros(5, dtype))
    W2 = gd.param("W2", rng.standard_normal((5, 2)).astype(dtype))
    h = gd.sigmoid(x @ W1 + b1)
    loss = gd.losses.mse(gd.sigmoid(h @ W2), t)
    before = [loss, *gd.grad(loss, [W1, b1, W2])]
    prepared = simplify(canonicalize(before))
    elementwise_before = sum(is_elementwise(n) for n in toposort(prepared))
    details = {}
    after = fuse_elementwise(prepared, details=details)
    nodes = toposort(after)
    # Two chains fuse: sigmoid(x W1 + b1) (2 ops), and the output layer's backward chain,
    # 2 (sigma(z) - t) * (1/n) * sigma'(z) (3 ops). sigma(h W2) and sigma(h W2) - t have
    # several users and stay; the derivative through the first sigmoid is already one fused
    # node (autodiff's), its only user is a matmul.
    assert details["fused_nodes"] == 2 and details["ops_fused"] == 5
    assert sum(n.op == "fused" for n in nodes) == 3
    assert sum(is_elementwise(n) for n in nodes) == elementwise_before - 3
    _assert_fused_as_far_as_allowed(after)
    check.same(before, after)


def test_repeated_uses_cannot_blow_the_expression_up(check):
    x, = _inputs("float64", "x")
    y = x
    for _ in range(30):
        y = gd.tanh(y * y)                  # written out, the tree would double each level
    after = fuse_elementwise([y])
    for n in _fused(after):
        assert sp.count_ops(n.attr("expr")) <= fuse.MAX_EXPR_OPS
    check.same([y], after, exact=True, special=True)
