"""Splits (disjoint, covering, stratified) and searches (on objectives with a known minimum)."""

import math

import numpy as np
import pytest

from graphdl import select
from graphdl.select import (
    IntUniform,
    LogUniform,
    Uniform,
    bayes_search,
    grid_search,
    holdout_split,
    kfold,
    leave_one_group_out,
    random_search,
    stratified_kfold,
)

# ---------------------------------------------------------------------------- splits


def _check_partition(train, test, n):
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.union1d(train, test), np.arange(n))


def test_holdout_sizes_disjoint_and_seeded():
    train, test = holdout_split(50, test_size=0.2, seed=3)
    _check_partition(train, test, 50)
    assert test.size == 10
    again = holdout_split(50, test_size=0.2, seed=3)
    other = holdout_split(50, test_size=0.2, seed=4)
    np.testing.assert_array_equal(test, again[1])
    assert not np.array_equal(test, other[1])
    assert holdout_split(10, test_size=0.25)[1].size == 3      # ceil(2.5)
    assert holdout_split(10, test_size=4)[1].size == 4


def test_holdout_stratified_keeps_proportions():
    y = np.repeat([0, 1, 2], [60, 30, 10])
    np.random.default_rng(0).shuffle(y)
    train, test = holdout_split(100, test_size=0.2, seed=1, stratify=y)
    _check_partition(train, test, 100)
    np.testing.assert_array_equal(np.bincount(y[test]), [12, 6, 2])
    np.testing.assert_array_equal(np.bincount(y[train]), [48, 24, 8])
    # small classes keep a training sample even when rounding would move them all to test
    # (shares 1.6 and 6.4: plain largest-remainder rounding would put both 0s in test)
    y = np.array([0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
    train, test = holdout_split(10, test_size=8, stratify=y)
    np.testing.assert_array_equal(np.bincount(y[test]), [1, 7])
    np.testing.assert_array_equal(np.bincount(y[train]), [1, 1])


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 10, "test_size": 1.5}, "test_size"),
    ({"n": 10, "test_size": 10}, "at least one"),
    ({"n": 4, "stratify": [0, 0, 0, 1]}, "single sample"),
    ({"n": 4, "stratify": [0, 1]}, "stratify has 2"),
    ({"n": 6, "test_size": 4, "stratify": [0, 0, 1, 1, 2, 2]}, "without a training sample"),
])
def test_holdout_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        holdout_split(**kwargs)


def test_kfold_partitions_with_sklearn_sizes():
    folds = kfold(23, k=5, seed=0)
    assert [test.size for _, test in folds] == [5, 5, 5, 4, 4]
    all_test = np.concatenate([test for _, test in folds])
    np.testing.assert_array_equal(np.sort(all_test), np.arange(23))
    for train, test in folds:
        _check_partition(train, test, 23)
    plain = kfold(10, k=3, shuffle=False)
    np.testing.assert_array_equal(plain[0][1], [0, 1, 2, 3])
    np.testing.assert_array_equal(plain[2][1], [7, 8, 9])
    with pytest.raises(ValueError, match="k=11"):
        kfold(10, k=11)


def test_stratified_kfold_balances_each_class():
    y = np.repeat([0, 1, 2], [23, 12, 5])
    np.random.default_rng(1).shuffle(y)
    folds = stratified_kfold(y, k=4, seed=2)
    tests = np.concatenate([test for _, test in folds])
    np.testing.assert_array_equal(np.sort(tests), np.arange(40))
    for train, test in folds:
        _check_partition(train, test, 40)
        counts = np.bincount(y[test], minlength=3)
        for c, total in enumerate([23, 12, 5]):
            assert math.floor(total / 4) <= counts[c] <= math.ceil(total / 4)
        assert 9 <= test.size <= 11


def test_leave_one_group_out():
    groups = np.array(["b", "a", "b", "c", "a", "a"])
    folds = leave_one_group_out(groups)
    assert len(folds) == 3
    np.testing.assert_array_equal(folds[0][1], [1, 4, 5])     # group "a"
    np.testing.assert_array_equal(folds[0][0], [0, 2, 3])
    np.testing.assert_array_equal(folds[2][1], [3])           # group "c"
    with pytest.raises(ValueError, match="two groups"):
        leave_one_group_out([1, 1, 1])


# -------------------------------------------------------------------------- searches


def quadratic(config):
    """Known minimum 0 at x = 0.3, y = -1 (module level, so worker processes can load it)."""
    return (config["x"] - 0.3) ** 2 + (config["y"] + 1.0) ** 2


def bumpy_1d(config):
    """Smooth 1-D objective with its minimum near x = 1.32 on [-2, 3]."""
    x = config["x"]
    return math.sin(3 * x) + 0.5 * (x - 1.0) ** 2


def test_grid_search_finds_exact_minimum_and_tabulates():
    space = {"x": [0.0, 0.3, 0.6], "y": [-2.0, -1.0, 0.0, 1.0]}
    result = grid_search(quadratic, space)
    assert result.best_config == {"x": 0.3, "y": -1.0}
    assert result.best_value == 0.0
    assert len(result.trials) == 12
    assert result.trials[0]["config"] == {"x": 0.0, "y": -2.0}     # itertools.product order
    assert all(t["seconds"] >= 0 for t in result.trials)
    table = result.table()
    lines = table.splitlines()
    assert len(lines) == 14 and "value" in lines[0]
    best_rows = [line for line in lines if line.lstrip().startswith("*")]
    assert len(best_rows) == 1 and "0.3" in best_rows[0] and "-1" in best_rows[0]
    assert result.table(sort=True).splitlines()[2].lstrip().startswith("*")


def test_random_search_within_tolerance_and_respects_distributions():
    space = {"x": Uniform(-2, 2), "y": Uniform(-2, 2)}
    result = random_search(quadratic, space, n_trials=200, seed=0)
    assert result.best_value < 0.1
    seen = random_search(lambda c: 0.0, {"k": IntUniform(1, 3), "lr": LogUniform(1e-4, 1.0),
                                         "act": ["relu", "tanh"]}, n_trials=200, seed=1)
    configs = [t["config"] for t in seen.trials]
    assert {c["k"] for c in configs} == {1, 2, 3}
    assert {c["act"] for c in configs} == {"relu", "tanh"}
    lrs = np.array([c["lr"] for c in configs])
    assert lrs.min() >= 1e-4 and lrs.max() <= 1.0
    assert 70 < np.sum(lrs < 1e-2) < 130      # half below the geometric midpoint


def test_bayes_search_within_tolerance():
    space = {"x": Uniform(-2, 2), "y": Uniform(-2, 2)}
    result = bayes_search(quadratic, space, n_trials=25, n_initial=5, seed=0)
    assert result.best_value < 0.01
    assert len(result.trials) == 25


def test_bayes_beats_random_on_smooth_1d_objective():
    space = {"x": Uniform(-2.0, 3.0)}
    grid = np.linspace(-2, 3, 200001)
    optimum = np.min(np.sin(3 * grid) + 0.5 * (grid - 1) ** 2)
    bayes_gaps, random_gaps = [], []
    for seed in range(4):
        bayes_gaps.append(bayes_search(bumpy_1d, space, n_trials=12, seed=seed).best_value
                          - optimum)
        random_gaps.append(random_search(bumpy_1d, space, n_trials=12, seed=seed).best_value
                           - optimum)
    assert np.mean(bayes_gaps) < 0.5 * np.mean(random_gaps)
    assert max(bayes_gaps) < 1e-2


def test_bayes_search_handles_log_int_and_choice_dimensions():
    def objective(c):
        return (math.log10(c["lr"]) + 2) ** 2 + (c["units"] - 7) ** 2 + (c["act"] != "relu")

    space = {"lr": LogUniform(1e-5, 1.0), "units": IntUniform(1, 16), "act": ["tanh", "relu"]}
    result = bayes_search(objective, space, n_trials=30, seed=0)
    assert result.best_config["act"] == "relu" and result.best_config["units"] == 7
    assert abs(math.log10(result.best_config["lr"]) + 2) < 0.3


def test_searches_are_reproducible_and_ignore_nan():
    space = {"x": Uniform(0, 1)}
    a = bayes_search(lambda c: c["x"], space, n_trials=8, seed=5)
    b = bayes_search(lambda c: c["x"], space, n_trials=8, seed=5)
    assert [t["config"] for t in a.trials] == [t["config"] for t in b.trials]
    nan_first = grid_search(lambda c: float("nan") if c["x"] == 0 else c["x"], {"x": [0, 2, 1]})
    assert nan_first.best_config == {"x": 1}


@pytest.mark.parametrize("n_jobs", [2])
def test_parallel_results_equal_sequential(n_jobs):
    grid = {"x": [0.0, 0.3, 0.6], "y": [-1.0, 0.0]}
    one = grid_search(quadratic, grid, n_jobs=1)
    two = grid_search(quadratic, grid, n_jobs=n_jobs)
    assert [(t["config"], t["value"]) for t in one.trials] == [
        (t["config"], t["value"]) for t in two.trials]
    space = {"x": Uniform(-1, 1), "y": LogUniform(0.1, 10)}
    one = random_search(quadratic, space, n_trials=6, seed=7, n_jobs=1)
    two = random_search(quadratic, space, n_trials=6, seed=7, n_jobs=n_jobs)
    assert [(t["config"], t["value"]) for t in one.trials] == [
        (t["config"], t["value"]) for t in two.trials]
    assert one.best_config == two.best_config


def test_search_errors():
    with pytest.raises(ValueError, match="list of values"):
        grid_search(quadratic, {"x": Uniform(0, 1)})
    with pytest.raises(ValueError, match="non-empty"):
        random_search(quadratic, {"x": []})
    with pytest.raises(ValueError, match="n_jobs"):
        grid_search(quadratic, {"x": [0.3], "y": [-1.0]}, n_jobs=0)
    with pytest.raises(ValueError, match="pickle"):
        grid_search(lambda c: 0.0, {"x": [1, 2]}, n_jobs=2)
    with pytest.raises(TypeError, match="return a float"):
        grid_search(lambda c: "bad", {"x": [1]})
    with pytest.raises(ValueError, match="lo > 0"):
        LogUniform(0, 1)
    with pytest.raises(ValueError, match="lo < hi"):
        Uniform(1, 1)


def test_public_names_are_documented():
    for name in select.__all__:
        assert getattr(select, name).__doc__, name
