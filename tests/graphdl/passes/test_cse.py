"""cse: merges equal constants, commutative operand orders and permuted fused nodes."""

import numpy as np
import sympy as sp

import graphdl as gd
from graphdl.ops.registry import I
from graphdl.passes.cse import cse


def _inputs(dtype):
    return gd.input("x", (None, 20), dtype), gd.input("y", (None, 20), dtype)


def test_equal_large_constants_with_different_uids_merge(dtype, check):
    x, _ = _inputs(dtype)
    c1 = gd.constant(np.arange(20.0), dtype)
    c2 = gd.constant(np.arange(20.0), dtype)
    assert c1 is not c2                              # more than 16 elements: not interned
    before = [x * c1 + x * c2]
    details = {}
    after = cse(before, details=details)
    ops = check.ops(after)
    assert ops["constant"] == 1 and ops["mul"] == 1
    assert after[0].inputs[0] is after[0].inputs[1]
    assert details["merged"]["constant"] == 1 and details["merged"]["mul"] == 1
    check.same(before, after, exact=True, special=True)


def test_constants_that_differ_in_a_zero_sign_or_dtype_stay_apart(check):
    x, _ = _inputs("float64")
    plus = gd.constant(np.zeros(20), "float64")
    minus = gd.constant(-np.zeros(20), "float64")
    narrow = gd.constant(np.zeros(20), "float32")
    before = [x + plus, x + minus, x + narrow]
    after = cse(before)
    assert check.ops(after)["constant"] == 3
    check.same(before, after, exact=True, special=True)


def test_commutative_operand_orders_merge_and_the_merge_cascades(dtype, check):
    x, y = _inputs(dtype)
    before = [gd.exp(x + y), gd.exp(y + x), gd.maximum(x, y) * gd.maximum(y, x), x - y, y - x]
    after = cse(before)
    assert after[0] is after[1]
    assert check.ops(after)["maximum"] == 1
    assert after[3] is not after[4]                  # sub is not commutative
    check.same(before, after, exact=True, special=True)


def test_fused_nodes_equal_up_to_input_order_merge(dtype, check):
    x, y = _inputs(dtype)
    a = gd.fused([x, y], I[0] * sp.exp(I[1]), dtype)
    b = gd.fused([y, x], I[1] * sp.exp(I[0]), dtype)
    other = gd.fused([y, x], I[0] * sp.exp(I[1]), dtype)    # y * exp(x): different
    repeated = gd.fused([x, y, x], I[2] * sp.exp(I[1]), dtype)
    before = [a, b, other, repeated]
    after = cse(before)
    assert after[0] is after[1] is after[3]
    assert after[2] is not after[0]
    check.same(before, after, exact=True, special=True)


def test_unevaluated_fused_expressions_are_not_merged_with_their_simplification(check):
    x, y = _inputs("float64")
    with sp.evaluate(False):
        roundabout = (I[0] - I[1]) + I[1]            # not x in floats: inf - inf is NaN
    before = [gd.fused([x, y], roundabout, "float64"), gd.fused([x, y], I[0] + 0 * I[1],
                                                                "float64")]
    after = cse(before)
    assert after[0] is not after[1]
    check.same(before, after, exact=True, special=True)


def test_nothing_to_merge_leaves_the_graph_alone():
    x, y = _inputs("float64")
    before = [gd.exp(x) * y]
    details = {}
    assert cse(before, details=details)[0] is before[0]
    assert details["merged"] == {}
