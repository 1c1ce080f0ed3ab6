"""simplify: every identity on a small graph, structure after and values equal.

Exact rules are checked bitwise on inputs holding NaN, +-inf and +-0; the rules marked
[rounding] / [overflow] in simplify.py to 1e-12 (float64) / 2e-6 (float32).
"""

import numpy as np
import pytest

import graphdl as gd
from graphdl.passes.simplify import SIMPLIFY_RULES, simplify


def _inputs(dtype, shape=(None, 3)):
    return gd.input("x", shape, dtype), gd.input("y", shape, dtype)


def _is(op):
    return lambda t: t.op == op


def case(outputs, *expect, exact=True, special=True):
    """outputs, then one predicate per output on its rewritten tensor."""
    return outputs, expect, exact, special


def _times_one(dtype):
    x, _ = _inputs(dtype)
    row = gd.input("r", (3,), dtype)
    wide = x * gd.constant(1.0, "float64")
    return case([x * 1.0, 1.0 * x, row * gd.constant(np.ones((2, 3)), dtype), wide],
                lambda t: t.op == "input", lambda t: t.op == "input",
                lambda t: t.op == "broadcast_to" and t.shape == (2, 3),
                lambda t: t.op == ("input" if dtype == "float64" else "cast"))


def _add_zero_guarded(dtype):
    x, _ = _inputs(dtype)
    return case([gd.relu(x) + 0.0, gd.exp(x) + 0.0, x + 0.0],
                _is("relu"), _is("exp"), _is("add"))   # x may be -0, and -0 + 0 is +0


def _const_product(dtype):
    x, _ = _inputs(dtype)
    inexact = (x * 0.1) * 0.3
    return case([(x * 2.0) * 0.75, inexact],
                lambda t: t.op == "mul" and float(t.inputs[1].value) == 1.5,
                lambda t: t.op == "mul" and t.inputs[0].op == "mul")


def _const_sum(dtype):
    x, _ = _inputs(dtype)
    return case([(x + 0.5) + 0.25, (x + 1e16) + 1.0],
                lambda t: t.op == "add" and float(t.inputs[1].value) == 0.75,
                lambda t: t.op == "add" and t.inputs[0].op == "add", exact=False)


def _strip_broadcast(dtype):
    x, _ = _inputs(dtype)
    b = gd.input("b", (3,), dtype)
    wide = gd.broadcast_to(b, (None, 3))
    return case([wide * x, gd.exp(wide)],
                lambda t: t.op == "mul" and t.inputs[0] is b,
                lambda t: t.op == "broadcast_to" and t.inputs[0].op == "exp")


def _reshape_broadcast(dtype):
    s = gd.input("s", (), dtype)
    b = gd.input("b", (3,), dtype)
    return case([gd.reshape(gd.broadcast_to(s, (None,)), (-1, 1)),
                 gd.reshape(gd.broadcast_to(b, (None, 3)), (-1, 1, 3))],
                lambda t: t.op == "broadcast_to" and t.inputs[0].shape == (1, 1),
                lambda t: t.op == "broadcast_to" and t.inputs[0].shape == (1, 1, 3))


def _sum_broadcast(dtype):
    b = gd.input("b", (3,), dtype)
    m = gd.input("m", (2, 3), dtype)
    batch = gd.broadcast_to(b, (None, 3)).sum(0)          # a symbolic count: left alone
    return case([gd.broadcast_to(b, (5, 3)).sum(0), gd.broadcast_to(m, (5, 2, 3)).sum(),
                 batch],
                lambda t: "broadcast_to" not in {n.op for n in _nodes(t)},
                lambda t: "broadcast_to" not in {n.op for n in _nodes(t)},
                lambda t: t.op == "sum" and t.inputs[0].op == "broadcast_to", exact=False)


def _nodes(t):
    from graphdl.graph import toposort
    return toposort([t])


def _unary(build, predicate, exact=True, special=True):
    def make(dtype):
        x, y = _inputs(dtype)
        return case([build(x, y)], predicate, exact=exact, special=special)
    return make


CASES = {
    "x * 1 -> x": _times_one,
    "x * -1 -> -x": _unary(lambda x, y: x * -1.0, _is("neg")),
    "x + (-0) -> x": _unary(lambda x, y: x + gd.constant(-0.0, x.dtype), _is("input")),
    "x + 0 -> x when x cannot be -0": _add_zero_guarded,
    "x - 0 -> x": _unary(lambda x, y: x - 0.0, _is("input")),
    "x / 1 -> x": _unary(lambda x, y: x / 1.0, _is("input")),
    "x / -1 -> -x": _unary(lambda x, y: x / -1.0, _is("neg")),
    "x ** 1 -> x": _unary(lambda x, y: x ** 1.0, _is("input")),
    "-(-x) -> x": _unary(lambda x, y: gd.negative(-x), _is("input")),
    "x + (-y) -> x - y": _unary(lambda x, y: x + (-y), _is("sub")),
    "x - (-y) -> x + y": _unary(lambda x, y: x - (-y), _is("add")),
    "(-x) * (-y) -> x * y": _unary(lambda x, y: (-x) * (-y),
                                   lambda t: t.op == "mul" and t.inputs[0].op == "input"),
    "(-x) * c -> x * (-c)": _unary(lambda x, y: (-x) * 3.0,
                                   lambda t: t.op == "mul" and float(t.inputs[1].value) == -3),
    "log(exp(x)) -> x": _unary(lambda x, y: gd.log(gd.exp(x)), _is("input"), exact=False,
                               special=False),
    "abs(abs(x)) -> abs(x)": _unary(lambda x, y: abs(abs(x)),
                                    lambda t: t.op == "abs" and t.inputs[0].op == "input"),
    "abs(-x) -> abs(x)": _unary(lambda x, y: abs(-x),
                                lambda t: t.op == "abs" and t.inputs[0].op == "input"),
    "x * c1 * c2 -> x * (c1 * c2)": _const_product,
    "(x + c1) + c2 -> x + (c1 + c2)": _const_sum,
    "maximum(x, x) -> x": _unary(lambda x, y: gd.maximum(x, x), _is("input")),
    "minimum(x, x) -> x": _unary(lambda x, y: gd.minimum(x, x), _is("input")),
    "where(c, x, x) -> x": _unary(lambda x, y: gd.where(x > 0, y, y), _is("input")),
    "where(not c, x, y) -> where(c, y, x)": _unary(
        lambda x, y: gd.where(~(x > 0), x, y),
        lambda t: t.op == "where" and t.inputs[0].op == "greater" and t.inputs[1].name == "y"),
    "f(broadcast_to(x), y) -> broadcast_to(f(x, y)) for elementwise f": _strip_broadcast,
    "reshape(broadcast_to(x, s), t) -> broadcast_to(reshape(x, t'), t) when t only adds or "
    "drops unit axes": _reshape_broadcast,
    "sum(broadcast_to(x)) -> n * sum(x) over the broadcast axes": _sum_broadcast,
}


def test_every_rule_has_a_case():
    assert sorted(CASES) == sorted(SIMPLIFY_RULES.names)


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule(name, dtype, check):
    before, expect, exact, special = CASES[name](dtype)
    details = {}
    after = simplify(before, details=details)
    assert details["fired"].get(name, 0) > 0, f"{name!r} did not fire: {details['fired']}"
    for t, predicate in zip(after, expect):
        assert predicate(t), f"{name}: unexpected {t!r} with inputs {t.inputs}"
    check.same(before, after, exact=exact, special=special)


def test_unsafe_identities_are_left_alone(check):
    x, _ = _inputs("float64")
    before = [x * 0.0, x - x, x / x, gd.exp(gd.log(x)), x - gd.constant(-0.0, "float64")]
    details = {}
    after = simplify(before, details=details)
    assert details["fired"] == {}
    assert all(a is b for a, b in zip(before, after))
    check.same(before, after, exact=True, special=True)


def test_chains_reach_the_fixed_point_in_one_call(check):
    x, _ = _inputs("float64")
    before = [gd.log(gd.exp(gd.negative(-x))) * 1.0 * 1.0 + gd.constant(-0.0, "float64")]
    after = simplify(before)
    assert after[0] is x
    check.same(before, after)
