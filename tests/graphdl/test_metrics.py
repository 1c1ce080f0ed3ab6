"""Metrics against hand-computed cases, brute-force definitions and (when present) scikit-learn."""

import warnings

import numpy as np
import pytest

from graphdl import metrics
from graphdl.metrics import (
    UndefinedMetricWarning,
    accuracy,
    confusion_matrix,
    f1,
    precision,
    recall,
    roc_auc,
    roc_curve,
)

# A 3-class case worked out by hand:
#   class 0: tp=2, predicted 2, true 3 -> P=1,   R=2/3, F1=4/5
#   class 1: tp=1, predicted 2, true 2 -> P=1/2, R=1/2, F1=1/2
#   class 2: tp=1, predicted 2, true 1 -> P=1/2, R=1,   F1=2/3
Y_TRUE = np.array([0, 0, 0, 1, 1, 2])
Y_PRED = np.array([0, 1, 0, 1, 2, 2])


def test_accuracy_by_hand():
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 6)
    assert accuracy(["a", "b"], ["a", "a"]) == 0.5


def test_confusion_matrix_rows_are_true_class():
    expected = np.array([[2, 1, 0], [0, 1, 1], [0, 0, 1]])
    np.testing.assert_array_equal(confusion_matrix(Y_TRUE, Y_PRED), expected)
    # Explicit labels reorder rows and columns; unknown labels are ignored.
    np.testing.assert_array_equal(
        confusion_matrix(Y_TRUE, Y_PRED, labels=[2, 0]), np.array([[1, 0], [0, 2]]))
    np.testing.assert_array_equal(
        confusion_matrix(Y_TRUE, Y_PRED, labels=[0, 1, 2, 3])[3], np.zeros(4))


@pytest.mark.parametrize("average, p, r, f", [
    ("macro", 2 / 3, 13 / 18, 59 / 90),
    ("weighted", 3 / 4, 4 / 6, 61 / 90),
    ("micro", 4 / 6, 4 / 6, 4 / 6),
])
def test_multiclass_averages_by_hand(average, p, r, f):
    assert precision(Y_TRUE, Y_PRED, average=average) == pytest.approx(p)
    assert recall(Y_TRUE, Y_PRED, average=average) == pytest.approx(r)
    assert f1(Y_TRUE, Y_PRED, average=average) == pytest.approx(f)


def test_average_none_gives_per_class_values():
    np.testing.assert_allclose(precision(Y_TRUE, Y_PRED, average=None), [1, 0.5, 0.5])
    np.testing.assert_allclose(recall(Y_TRUE, Y_PRED, average=None), [2 / 3, 0.5, 1])
    np.testing.assert_allclose(f1(Y_TRUE, Y_PRED, average=None), [0.8, 0.5, 2 / 3])


def test_binary_by_hand_and_pos_label():
    y_true = [0, 1, 1, 0, 1]
    y_pred = [1, 1, 0, 0, 1]       # tp=2, fp=1, fn=1, tn=1
    assert precision(y_true, y_pred) == pytest.approx(2 / 3)
    assert recall(y_true, y_pred) == pytest.approx(2 / 3)
    assert f1(y_true, y_pred) == pytest.approx(2 / 3)
    # pos_label=0: tp=1, fp=1, fn=1
    assert precision(y_true, y_pred, pos_label=0) == pytest.approx(1 / 2)
    assert recall(["n", "y", "y"], ["y", "y", "n"], pos_label="y") == pytest.approx(1 / 2)


def test_zero_division_is_zero_with_warning():
    with pytest.warns(UndefinedMetricWarning):
        assert precision([1, 1, 0], [0, 0, 0]) == 0.0
    with pytest.warns(UndefinedMetricWarning):
        assert recall([0, 0, 0], [0, 1, 0]) == 0.0
    with pytest.warns(UndefinedMetricWarning):
        # class 2 is never predicted: precision 0 enters the macro mean
        assert precision([0, 1, 2], [0, 1, 1], average="macro") == pytest.approx((1 + 0.5) / 3)


@pytest.mark.parametrize("call, message", [
    (lambda: accuracy([0, 1], [0]), "different lengths"),
    (lambda: accuracy([], []), "at least one sample"),
    (lambda: precision([0, 1, 2], [0, 1, 2]), "average='binary'"),
    (lambda: f1([0, 1], [0, 1], average="mean"), "average must be one of"),
    (lambda: recall([0, 1], [0, 1], pos_label=3), "pos_label=3"),
    (lambda: accuracy(np.zeros((3, 2)), [0, 1, 1]), "1-D"),
    (lambda: roc_curve([0, 1, 2], [0.1, 0.2, 0.3]), "binary"),
    (lambda: roc_auc([1, 1], [0.1, 0.2]), "both classes"),
    (lambda: roc_curve([0, 1], [0.1, np.nan]), "NaN"),
    (lambda: confusion_matrix([0, 1], [0, 1], labels=[5]), "none of the given labels"),
])
def test_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_roc_curve_by_hand():
    # scikit-learn's documented example, worked out by hand: thresholds are the distinct
    # scores descending, preceded by inf.
    fpr, tpr, thr = roc_curve([1, 1, 2, 2], [0.1, 0.4, 0.35, 0.8], pos_label=2)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(thr, [np.inf, 0.8, 0.4, 0.35, 0.1])


def test_roc_curve_drops_collinear_points():
    # Descending scores give tps=[1,2,3,3,3], fps=[0,0,0,1,2]: the points at 0.4 and 0.2
    # lie on straight segments and are dropped.
    fpr, tpr, thr = roc_curve([0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.4, 0.5])
    np.testing.assert_allclose(fpr, [0, 0, 0, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 1, 1])
    np.testing.assert_allclose(thr, [np.inf, 0.5, 0.3, 0.1])


def test_roc_curve_tied_scores_share_one_threshold():
    fpr, tpr, thr = roc_curve([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9])
    np.testing.assert_allclose(thr, [np.inf, 0.9, 0.5, 0.2])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])


def test_roc_curve_one_class_gives_nan_with_warning():
    with pytest.warns(UndefinedMetricWarning):
        fpr, tpr, _ = roc_curve([1, 1, 1], [0.1, 0.2, 0.3])
    assert np.isnan(fpr).all() and not np.isnan(tpr).any()


def _pairwise_auc(y, s):
    """AUC as P(score of a positive > score of a negative), ties counting 1/2."""
    pos, neg = s[y == 1], s[y == 0]
    diff = pos[:, None] - neg[None, :]
    return np.mean((diff > 0) + 0.5 * (diff == 0))


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_equals_pairwise_probability(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60)
    y[:2] = [0, 1]
    s = np.round(rng.normal(size=60) + y, 1)     # rounding makes ties
    assert roc_auc(y, s) == pytest.approx(_pairwise_auc(y, s))


def test_roc_auc_perfect_and_inverted():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0


def test_module_exports_are_documented():
    for name in metrics.__all__:
        assert getattr(metrics, name).__doc__, name


# ---------------------------------------------------------------- against scikit-learn


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("average", ["macro", "micro", "weighted", None])
def test_matches_sklearn_multiclass(seed, average):
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 4, 40)
    y_pred = np.where(rng.random(40) < 0.6, y_true, rng.integers(0, 5, 40))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for ours, theirs in [(precision, skm.precision_score), (recall, skm.recall_score),
                             (f1, skm.f1_score)]:
            np.testing.assert_allclose(ours(y_true, y_pred, average=average),
                                       theirs(y_true, y_pred, average=average))
    assert accuracy(y_true, y_pred) == pytest.approx(skm.accuracy_score(y_true, y_pred))
    np.testing.assert_array_equal(confusion_matrix(y_true, y_pred),
                                  skm.confusion_matrix(y_true, y_pred))


@pytest.mark.parametrize("seed", range(6))
def test_matches_sklearn_binary_and_roc(seed):
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 2, 50)
    y_true[:2] = [0, 1]
    scores = np.round(rng.normal(size=50) + y_true, 1)
    y_pred = (scores > 0.5).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for ours, theirs in [(precision, skm.precision_score), (recall, skm.recall_score),
                             (f1, skm.f1_score)]:
            assert ours(y_true, y_pred) == pytest.approx(theirs(y_true, y_pred))
            assert ours(y_true, y_pred, pos_label=0) == pytest.approx(
                theirs(y_true, y_pred, pos_label=0))
    for ours, theirs in zip(roc_curve(y_true, scores), skm.roc_curve(y_true, scores)):
        np.testing.assert_allclose(ours, theirs)
    assert roc_auc(y_true, scores) == pytest.approx(skm.roc_auc_score(y_true, scores))
