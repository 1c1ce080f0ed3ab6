"""The rule-table driver: fixed points, declared commutativity, loops, shape keeping."""

import numpy as np
import pytest

import graphdl as gd
from graphdl.errors import GraphdlError
from graphdl.graph import Tensor
from graphdl.passes.rewrite import (
    P,
    RewriteLoop,
    RuleError,
    RuleTable,
    const,
    rewrite_to_fixed_point,
    rule,
    var,
)

mul, add = P("mul"), P("add")
x_ = var("x")


def _one(v):
    return bool(np.all(v == 1))


def _swap(node):
    return Tensor.make(node.op, node.inputs[::-1], {}, node.shape, node.dtype)


def test_fighting_rules_raise_rewrite_loop_naming_them():
    def constant_first(node):
        return node.inputs[0].op == "constant"

    table = RuleTable([
        rule("x * c -> c * x", mul(x_, const("c")).where(lambda n: not constant_first(n)),
             lambda node: _swap(node)),
        rule("c * x -> x * c", mul(const("c"), x_).where(constant_first),
             lambda node: _swap(node)),
    ])
    x = gd.input("x", (3,), "float64")
    with pytest.raises(RewriteLoop) as err:
        rewrite_to_fixed_point([x * 2.0], table, max_rounds=5)
    assert isinstance(err.value, GraphdlError)
    assert "x * c -> c * x" in str(err.value) and "c * x -> x * c" in str(err.value)
    assert set(err.value.rules) == {"x * c -> c * x", "c * x -> x * c"}


def test_commutativity_is_declared_not_implied():
    x = gd.input("x", (3,), "float64")
    y = 1.0 * x                                  # the constant on the left
    plain = RuleTable([rule("x * 1 -> x", mul(x_, const("c", _one)), lambda x: x)])
    declared = RuleTable([rule("x * 1 -> x", mul(x_, const("c", _one)), lambda x: x)],
                         commutative={"mul"})
    assert rewrite_to_fixed_point([y], plain) == [y]
    assert rewrite_to_fixed_point([y], declared) == [x]


def test_a_smaller_replacement_is_broadcast_back_and_a_narrower_one_widened(check):
    x = gd.input("x", (3,), "float32")
    y = x * gd.constant(np.ones((2, 3)), "float64")
    table = RuleTable([rule("x * 1 -> x", mul(x_, const("c", _one)), lambda x: x)])
    (z,) = rewrite_to_fixed_point([y], table)
    assert (z.op, z.shape, z.dtype) == ("broadcast_to", (2, 3), "float64")
    assert z.inputs[0].op == "cast"
    check.same([y], [z], exact=True, special=True)


def test_a_replacement_of_another_shape_is_a_rule_error():
    x = gd.input("x", (2, 3), "float64")
    table = RuleTable([rule("exp(x) -> sum(x)", P("exp")(x_), lambda x: x.sum(1))])
    with pytest.raises(RuleError, match="exp"):
        rewrite_to_fixed_point([gd.exp(x)], table)


def test_stats_count_rounds_and_rules_and_the_table_keeps_a_tally():
    x = gd.input("x", (3,), "float64")
    table = RuleTable([rule("-(-x) -> x", P("neg")(P("neg")(x_)), lambda x: x)])
    stats = {}
    (y,) = rewrite_to_fixed_point([gd.negative(gd.negative(gd.negative(-x)))], table, stats=stats)
    assert y is x
    assert stats["fired"] == {"-(-x) -> x": 2} and stats["rounds"] >= 2
    assert table.fired["-(-x) -> x"] == 2


def test_repeated_names_in_a_pattern_must_be_the_same_node():
    x = gd.input("x", (3,), "float64")
    y = gd.input("y", (3,), "float64")
    table = RuleTable([rule("x + x -> 2 x", add(x_, x_), lambda x: x * 2.0)])
    (same,) = rewrite_to_fixed_point([x + x], table)
    (other,) = rewrite_to_fixed_point([x + y], table)
    assert same.op == "mul" and other.op == "add"


def test_leaves_stay_and_rebuilt_nodes_keep_the_users_site():
    x = gd.input("x", (3,), "float64")
    p = gd.param("p", np.ones(3))
    inner = gd.negative(-x)
    y = gd.exp(inner * p)
    table = RuleTable([rule("-(-x) -> x", P("neg")(P("neg")(x_)), lambda x: x)])
    (z,) = rewrite_to_fixed_point([y], table)
    assert z.inputs[0].inputs == (x, p)
    assert z.site == y.site and z.inputs[0].site == y.inputs[0].site


def test_duplicate_rule_names_are_refused():
    r = rule("x -> x", P("neg")(x_), lambda x: None)
    with pytest.raises(ValueError, match="duplicate"):
        RuleTable([r, r])
