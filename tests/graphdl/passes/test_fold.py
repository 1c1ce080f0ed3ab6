"""fold_constants: constant subgraphs become constants; leaves and impure cases stay."""

import numpy as np
import pytest

import graphdl as gd
from graphdl.errors import ArgumentError
from graphdl.graph import Tensor
from graphdl.passes import fold
from graphdl.passes.fold import fold_constants


def test_constant_arithmetic_folds_into_one_constant(dtype, check):
    x = gd.input("x", (None, 3), dtype)
    c = gd.constant(np.array([1.0, 2.0, 3.0]), dtype)
    folded = gd.exp(c * 2.0 - 1.0) / gd.constant(3.0, dtype)
    before = [x + folded, folded]
    details = {}
    after = fold_constants(before, details=details)
    assert after[0].op == "add" and after[0].inputs[1].op == "constant"
    assert after[1].op == "constant" and after[1].dtype == dtype
    assert check.ops(after) == {"input": 1, "add": 1, "constant": 1}
    assert sum(details["folded"].values()) == 4
    check.same(before, after, exact=True, special=True)


def test_structured_ops_of_constants_fold(dtype, check):
    a = gd.constant(np.arange(6.0).reshape(2, 3), dtype)
    b = gd.constant(np.ones((3, 4)), dtype)
    labels = gd.constant(np.array([0, 2, 1]), "int64")
    before = [(a @ b).sum(1), a.T.reshape(6), gd.one_hot(labels, 3, dtype)]
    after = fold_constants(before)
    assert all(t.op == "constant" for t in after)
    check.same(before, after, exact=True)


def test_static_dim_size_folds_whatever_its_input(check):
    x = gd.input("x", (None, 5), "float64")
    size = Tensor.make("dim_size", (x,), {"axes": (1,)}, (), "float64")
    batch = gd.dim_size(x, 0)                        # symbolic: known at run time only
    before = [x / size, x / batch]
    after = fold_constants(before)
    assert after[0].inputs[1].op == "constant" and float(after[0].inputs[1].value) == 5
    assert after[1].inputs[1].op == "dim_size"
    check.same(before, after, exact=True, special=True)


def test_params_state_and_inputs_are_never_folded(check):
    x = gd.input("x", (3,), "float64")
    p = gd.param("p", np.ones(3))
    s = gd.state("s", np.ones(3))
    before = [p * 2.0 + s, x * 1.0]
    after = fold_constants(before)
    assert after == before
    assert after[0].inputs[0].inputs[0] is p


def test_results_over_the_size_cap_are_left_to_run_time(monkeypatch, check):
    monkeypatch.setattr(fold, "MAX_FOLD_ELEMENTS", 10)
    small = gd.constant(np.arange(10.0), "float64")
    big = gd.constant(np.arange(11.0), "float64")
    before = [small * 2.0, big * 2.0]
    after = fold_constants(before)
    assert after[0].op == "constant" and after[1].op == "mul"
    check.same(before, after, exact=True)


def test_broadcast_to_is_not_expanded_but_its_users_fold(check):
    c = gd.constant(2.0, "float64")
    wide = gd.broadcast_to(c, (4, 3))
    before = [wide, wide.sum(0)]
    after = fold_constants(before)
    assert after[0] is wide
    assert after[1].op == "constant" and np.all(after[1].value == 8.0)
    check.same(before, after, exact=True)


def test_an_evaluation_error_is_left_for_run_time(check):
    labels = gd.constant(np.array([0, 7]), "int64")
    before = [gd.one_hot(labels, 3)]
    after = fold_constants(before)
    assert after[0].op == "one_hot"
    with pytest.raises(ArgumentError, match="out of range"):
        check.run(after, {})
