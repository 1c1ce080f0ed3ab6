"""dce: run-time no-ops go, and the report says what is no longer reachable."""

import graphdl as gd
from graphdl.ops.registry import I
from graphdl.passes.dce import NOOP_RULES, dce

CASES = {
    "stop_gradient(x) -> x": lambda x: gd.stop_gradient(x) * 2.0,
    "fused(i0) -> x": lambda x: gd.exp(gd.fused([x], I[0], x.dtype)),
}


def test_every_rule_has_a_case():
    assert sorted(CASES) == sorted(NOOP_RULES.names)


def test_rules(dtype, check):
    x = gd.input("x", (None, 3), dtype)
    before = [build(x) for build in CASES.values()]
    details = {}
    after = dce(before, details=details)
    for name in CASES:
        assert details["noops_removed"].get(name, 0) > 0, name
    assert after[0].op == "mul" and after[0].inputs[0] is x
    assert after[1].op == "exp" and after[1].inputs[0] is x
    assert details["dropped"] == 2
    assert details["dropped_ops"] == {"stop_gradient": 1, "fused": 1}
    check.same(before, after, exact=True, special=True)


def test_a_fused_identity_that_casts_is_kept(check):
    x = gd.input("x", (None, 3), "float64")
    narrowing = gd.fused([x], I[0], "float32")
    after = dce([narrowing])
    assert after[0] is narrowing
    check.same([narrowing], after, exact=True, special=True)


def test_a_graph_without_no_ops_is_unchanged():
    x = gd.input("x", (None, 3), "float64")
    y = gd.exp(x) + x
    details = {}
    assert dce([y], details=details) == [y]
    assert details["dropped"] == 0 and details["dropped_ops"] == {}
