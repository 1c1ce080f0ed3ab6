"""canonicalize: each rule on a small graph (structure after, values equal, IEEE specials)."""

import numpy as np
import pytest
import sympy as sp

import graphdl as gd
from graphdl.graph import Tensor
from graphdl.ops.registry import I
from graphdl.passes.canonicalize import CANONICAL_RULES, canonicalize


def _x(dtype, shape=(None, 3), name="x"):
    return gd.input(name, shape, dtype)


def _constant_right(op, public):
    def build(dtype):
        x = _x(dtype)
        y = getattr(gd, public)(gd.constant(0.5, dtype), x)

        def expect(out, ops):
            assert out[0].op == op and out[0].inputs[0] is x
        return [y], expect
    return build


def _sub_constant(dtype):
    x = _x(dtype)

    def expect(out, ops):
        assert ops["sub"] == 0 and ops["add"] == 1
        assert float(out[0].inputs[1].value) == -1.5
    return [x - 1.5], expect


def _div_constant(dtype):
    x = _x(dtype)

    def expect(out, ops):
        assert out[0].op == "mul" and float(out[0].inputs[1].value) == 0.25
        assert out[1].op == "div"            # 1/3 is not exact: left alone
    return [x / 4.0, x / 3.0], expect


def _neg_neg(dtype):
    x = _x(dtype)

    def expect(out, ops):
        assert ops["neg"] == 1 and out[0].inputs[0] is x
    return [gd.negative(gd.negative(-x))], expect


def _cast_same(dtype):
    x = _x(dtype)
    same = Tensor.make("cast", (x,), {"to": dtype}, x.shape, dtype)

    def expect(out, ops):
        assert ops["cast"] == 0 and out[0].inputs[0] is x
    return [gd.exp(same)], expect


def _cast_roundtrip(dtype):
    x = _x(dtype)
    b = x > 0
    wide = gd.cast(gd.cast(b, dtype), "bool")
    narrow = "float32" if dtype == "float64" else "bool"
    lossy = gd.cast(gd.cast(x, narrow), dtype)         # rounds: must stay

    def expect(out, ops):
        assert out[0].inputs[0] is b and ops["cast"] == 2
    return [gd.where(wide, x, 0.0), lossy], expect


def _reshape_reshape(dtype):
    x = _x(dtype, (None, 6))
    y = x.reshape(-1, 2, 3).reshape(-1, 3, 2)

    def expect(out, ops):
        assert ops["reshape"] == 1 and out[0].inputs[0] is x
    return [y], expect


def _transpose_transpose(dtype):
    x = _x(dtype, (2, 3, 4))
    y = gd.transpose(gd.transpose(x, (1, 0, 2)), (2, 0, 1))

    def expect(out, ops):
        assert ops["transpose"] == 1 and out[0].inputs[0] is x
        assert out[1] is x                           # the permutations cancel
    identity = gd.transpose(gd.transpose(x, (2, 0, 1)), (1, 2, 0))
    return [y, identity], expect


def _broadcast_same(dtype):
    x = _x(dtype)
    same = Tensor.make("broadcast_to", (x,), {"shape": x.shape}, x.shape, dtype)

    def expect(out, ops):
        assert ops["broadcast_to"] == 0
    return [gd.exp(same)], expect


def _broadcast_broadcast(dtype):
    b = _x(dtype, (3,), "b")
    y = gd.broadcast_to(gd.broadcast_to(b, (2, 3)), (4, 2, 3))

    def expect(out, ops):
        assert ops["broadcast_to"] == 1 and out[0].inputs[0] is b
    return [y], expect


def _fused_as_op(dtype):
    x, y = _x(dtype), _x(dtype, name="y")
    product = gd.fused([x, y], I[0] * I[1], dtype)
    swapped = gd.fused([x, y], I[1] - I[0], dtype)        # y - x
    wider = gd.fused([x, y], I[0] * I[1], "float64" if dtype == "float32" else "float32")

    def expect(out, ops):
        assert out[0].op == "mul"
        assert out[1].op == "sub" and out[1].inputs == (y, x)
        assert out[2].op == "fused"                      # dtype differs from mul's rule
    return [product, swapped, wider], expect


CASES = {
    "add(c, x) -> add(x, c)": _constant_right("add", "add"),
    "maximum(c, x) -> maximum(x, c)": _constant_right("maximum", "maximum"),
    "minimum(c, x) -> minimum(x, c)": _constant_right("minimum", "minimum"),
    "mul(c, x) -> mul(x, c)": _constant_right("mul", "multiply"),
    "x - c -> x + (-c)": _sub_constant,
    "x / c -> x * (1/c) when 1/c is exact": _div_constant,
    "-(-x) -> x": _neg_neg,
    "cast(x, dtype(x)) -> x": _cast_same,
    "cast(cast(x, wider), dtype(x)) -> x": _cast_roundtrip,
    "reshape(reshape(x, s1), s2) -> reshape(x, s2)": _reshape_reshape,
    "transpose(transpose(x, p), q) -> transpose(x, p[q])": _transpose_transpose,
    "broadcast_to(x, shape(x)) -> x": _broadcast_same,
    "broadcast_to(broadcast_to(x, s1), s2) -> broadcast_to(x, s2)": _broadcast_broadcast,
    "fused(formula of op f) -> f": _fused_as_op,
}


def test_every_rule_has_a_case():
    assert sorted(CASES) == sorted(CANONICAL_RULES.names)


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule(name, dtype, check):
    before, expect = CASES[name](dtype)
    details = {}
    after = canonicalize(before, details=details)
    assert details["fired"].get(name, 0) > 0, f"{name!r} did not fire: {details['fired']}"
    expect(after, check.ops(after))
    check.same(before, after, exact=True, special=True)


def test_leaves_are_the_same_objects():
    x = _x("float64")
    p = gd.param("p", np.ones(3))
    (y,) = canonicalize([2.0 * (x * p)])
    assert y.inputs[0].inputs == (x, p)


def test_max_with_signed_zero_constant_keeps_nan(check):
    x = _x("float64")
    before = [gd.maximum(0.0, x), gd.minimum(0.0, x)]
    after = canonicalize(before)
    assert all(t.inputs[0] is x for t in after)
    # NaN propagates from either side; only the sign of a zero result may differ.
    feeds = {x: np.array([[np.nan, 1.0, -1.0]] * 4)}
    for a, b in zip(check.run(before, feeds), check.run(after, feeds)):
        np.testing.assert_array_equal(a, b)


def test_a_fused_expression_is_matched_as_written_not_as_sympy_simplifies_it(check):
    x, y = _x("float64"), _x("float64", name="y")
    with sp.evaluate(False):
        roundabout = (I[0] * I[1]) * (I[1] / I[1])       # NaN where y is 0 or inf
    node = gd.fused([x, y], roundabout, "float64")
    (after,) = canonicalize([node])
    assert after is node
    check.same([node], [after], exact=True, special=True)
