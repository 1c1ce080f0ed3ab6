"""The whole pipeline on a 2-layer MLP training step; skip, report and verify."""

import itertools

import numpy as np
import pytest
import sympy as sp

import graphdl as gd
from graphdl.graph import Tensor, toposort
from graphdl.ops.registry import I
from graphdl.passes import PIPELINE, InvalidGraph, optimize, verify

PASS_NAMES = ["canonicalize", "simplify", "cse", "dce", "fold_constants", "fuse_elementwise"]


def _training_step(dtype):
    """loss and SGD updates of cross_entropy(tanh(x W1 + b1) W2 + b2, y)."""
    rng = np.random.default_rng(1)
    x = gd.input("x", (None, 5), dtype)
    y = gd.input("y", (None,), "int64")
    params = [gd.param("W1", rng.standard_normal((5, 7)).astype(dtype) * 0.5),
              gd.param("b1", rng.standard_normal(7).astype(dtype) * 0.1),
              gd.param("W2", rng.standard_normal((7, 3)).astype(dtype) * 0.5),
              gd.param("b2", np.zeros(3, dtype))]
    W1, b1, W2, b2 = params
    loss = gd.losses.cross_entropy(gd.tanh(x @ W1 + b1) @ W2 + b2, y)
    grads = gd.grad(loss, params)
    updates = [p - 0.1 * g for p, g in zip(params, grads)]
    return [loss, *grads, *updates], params


def test_pipeline_order_and_names():
    assert [p.__name__ for p in PIPELINE] == PASS_NAMES


def test_mlp_training_step_keeps_its_values_and_shrinks(dtype, check):
    before, params = _training_step(dtype)
    report = []
    after = optimize(before, check=True, report=report)
    check.same(before, after)
    assert check.size(after) < check.size(before)
    assert [r["pass"] for r in report] == PASS_NAMES
    for r in report:
        assert set(r) == {"pass", "nodes_before", "nodes_after", "seconds", "changed",
                          "details"}
        assert r["seconds"] >= 0 and isinstance(r["changed"], bool)
    assert report[0]["nodes_before"] == check.size(before)
    assert report[-1]["nodes_after"] == check.size(after)
    fusion = report[-1]["details"]
    assert fusion["fused_nodes"] >= 2 and fusion["ops_fused"] >= 2 * fusion["fused_nodes"]
    # leaves are the very same objects
    leaves = {id(n) for n in toposort(after) if n.op in ("param", "input")}
    assert {id(p) for p in params} <= leaves


def test_mlp_node_counts(check):
    before, _ = _training_step("float64")
    report = []
    after = optimize(before, report=report)
    counts = {r["pass"]: (r["nodes_before"], r["nodes_after"]) for r in report}
    for earlier, later in itertools.pairwise(report):
        assert earlier["nodes_after"] == later["nodes_before"]
    # When written: 58 nodes (loss, 4 gradients, 4 updates) -> 47, 7 fused nodes of 14 ops.
    assert counts["fuse_elementwise"][1] == check.size(after) <= check.size(before) - 8
    ops = check.ops(after)
    assert ops["stop_gradient"] == 0 and ops["fused"] >= 7
    assert report[-1]["details"]["fused_nodes"] >= 5


def test_a_second_run_changes_nothing():
    before, _ = _training_step("float64")
    once = optimize(before)
    report = []
    twice = optimize(once, report=report)
    assert all(a is b for a, b in zip(once, twice))
    assert not any(r["changed"] for r in report)


def test_skip_switches_passes_off_by_name(check):
    before, _ = _training_step("float64")
    report = []
    after = optimize(before, skip={"fuse_elementwise", "cse"}, report=report)
    assert [r["pass"] for r in report] == [n for n in PASS_NAMES
                                           if n not in ("fuse_elementwise", "cse")]
    assert check.ops(after)["fused"] <= check.ops(before)["fused"]
    check.same(before, after)


def test_unknown_pass_names_are_refused_with_the_valid_ones():
    x = gd.input("x", (3,), "float64")
    with pytest.raises(ValueError) as err:
        optimize([x * 1.0], skip={"fuse", "dce"})
    message = str(err.value)
    assert "'fuse'" in message and all(name in message for name in PASS_NAMES)


def test_every_pass_runs_alone(check):
    before, _ = _training_step("float32")
    for name in PASS_NAMES:
        after = optimize(before, skip=set(PASS_NAMES) - {name}, check=True)
        check.same(before, after)


def _broken_graphs():
    x = gd.input("x", (2, 3), "float64")
    yield "shape", Tensor.make("add", (x, x), {}, (3,), "float64")
    yield "dtype", Tensor.make("exp", (x,), {}, (2, 3), "float32")
    yield "dangling", Tensor.make("fused", (x,), {"expr": I[0] + I[3], "dtype": "float64"},
                                  (2, 3), "float64")
    yield "reshape", Tensor.make("reshape", (x,), {"shape": (4,)}, (4,), "float64")
    yield "broadcast", Tensor.make("broadcast_to", (x,), {"shape": (3, 3)}, (3, 3),
                                   "float64")
    yield "sum", Tensor.make("sum", (x,), {"axes": (0,), "keepdims": False}, (2,), "float64")
    yield "where", Tensor.make("where", (x, x, x), {}, (2, 3), "float64")


@pytest.mark.parametrize("what, node", list(_broken_graphs()), ids=lambda v: str(v)[:12])
def test_verify_rejects_broken_graphs(what, node):
    with pytest.raises(InvalidGraph):
        verify([node])


def test_verify_accepts_what_the_ops_build():
    before, _ = _training_step("float32")
    verify(before)
    x = gd.input("x", (None, 4), "float64")
    verify([gd.fused([x], sp.exp(I[0]), "float64"), gd.leaky_relu(x, 0.2),
            gd.cast(x, "int64"), gd.transpose(x).reshape(4, -1),
            gd.broadcast_to(x[:, :1], (None, 4)), x.sum(1, keepdims=True)])
