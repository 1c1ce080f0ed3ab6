"""Classification metrics: plain functions on NumPy arrays.

The argument order, ``average=`` values and zero-division behaviour follow scikit-learn, so
code written against ``sklearn.metrics`` reads the same here:

- ``accuracy(y_true, y_pred)``
- ``precision``, ``recall``, ``f1`` with ``average="binary" | "macro" | "micro" | "weighted"``
  (or ``None`` for one value per class)
- ``confusion_matrix(y_true, y_pred, labels=None)``, rows are the true class
- ``roc_curve(y_true, scores, pos_label=1)`` and ``roc_auc(y_true, scores)`` (binary)

A ratio with a zero denominator (for example precision of a class that is never predicted)
is 0.0 and emits an :class:`UndefinedMetricWarning`, as scikit-learn's default does. This
module imports nothing from graphdl.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = [
    "UndefinedMetricWarning",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "confusion_matrix",
    "roc_curve",
    "roc_auc",
]

_AVERAGES = ("binary", "macro", "micro", "weighted", None)


class UndefinedMetricWarning(UserWarning):
    """Warning emitted when a metric has a zero denominator and is reported as 0.0.

    Example::

        warnings.simplefilter("ignore", gd.metrics.UndefinedMetricWarning)
    """


def _as_labels(values, name: str) -> np.ndarray:
    """Return ``values`` as a 1-D array; a column vector ``(n, 1)`` is flattened."""
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D (one entry per sample), got shape {array.shape}; "
            "for per-class scores pass scores.argmax(axis=1), or scores[:, 1] to roc_curve"
        )
    return array


def _check_pair(y_true, y_pred, second: str = "y_pred") -> tuple[np.ndarray, np.ndarray]:
    """Validate two per-sample arrays: 1-D, same length, not empty."""
    y_true = _as_labels(y_true, "y_true")
    y_other = _as_labels(y_pred, second)
    if y_true.shape[0] != y_other.shape[0]:
        raise ValueError(
            f"y_true and {second} have different lengths: {y_true.shape[0]} != {y_other.shape[0]}"
        )
    if y_true.shape[0] == 0:
        raise ValueError("metrics need at least one sample; got empty arrays")
    return y_true, y_other


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray, metric: str) -> np.ndarray:
    """Elementwise ``numerator / denominator`` with 0.0 (and a warning) where it is 0/0."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    zero = denominator == 0
    if np.any(zero):
        warnings.warn(
            f"{metric} is ill-defined for labels with no {_DENOMINATOR_WORD[metric]} samples; "
            "it is set to 0.0",
            UndefinedMetricWarning,
            stacklevel=4,
        )
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=~zero)


_DENOMINATOR_WORD = {"precision": "predicted", "recall": "true", "f1": "true nor predicted"}


def accuracy(y_true, y_pred) -> float:
    """Fraction of samples whose predicted label equals the true label.

    Formula: ``accuracy = (1/n) * sum_i [y_pred_i == y_true_i]``

    Example::

        >>> accuracy([0, 1, 2, 2], [0, 1, 1, 2])
        0.75
    """
    y_true, y_pred = _check_pair(y_true, y_pred)
    return float(np.mean(y_true == y_pred))


def confusion_matrix(y_true, y_pred, labels=None) -> np.ndarray:
    """Count matrix ``C`` where ``C[i, j]`` is the number of samples of true class ``labels[i]``
    predicted as ``labels[j]`` (rows = true class, columns = predicted class).

    Formula: ``C[i, j] = sum_k [y_true_k == labels[i]] * [y_pred_k == labels[j]]``; ``labels``
    defaults to the sorted union of both arrays. Samples whose labels are not in ``labels``
    are ignored, as in scikit-learn.

    Example::

        >>> confusion_matrix([0, 0, 1, 1], [0, 1, 1, 1])
        array([[1, 1],
               [0, 2]])
    """
    y_true, y_pred = _check_pair(y_true, y_pred)
    if labels is None:
        labels = np.union1d(y_true, y_pred)
    else:
        labels = _as_labels(labels, "labels")
        if labels.shape[0] == 0:
            raise ValueError("labels must not be empty")
        if np.unique(labels).shape[0] != labels.shape[0]:
            raise ValueError(f"labels contains duplicates: {labels.tolist()}")
        if not np.any(np.isin(y_true, labels)):
            raise ValueError("none of the given labels occurs in y_true")
    true_index = _index_in(labels, y_true)
    pred_index = _index_in(labels, y_pred)
    keep = (true_index >= 0) & (pred_index >= 0)
    size = labels.shape[0]
    flat = true_index[keep] * size + pred_index[keep]
    return np.bincount(flat, minlength=size * size).reshape(size, size).astype(np.int64)


def _index_in(labels: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Position of each value in ``labels``, or -1 where the value is not a label."""
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    position = np.clip(np.searchsorted(sorted_labels, values), 0, labels.shape[0] - 1)
    found = sorted_labels[position] == values
    return np.where(found, order[position], -1)


def _per_class_counts(y_true, y_pred, average, pos_label):
    """True positives, predicted counts and true counts for the labels ``average`` uses."""
    if average not in _AVERAGES:
        raise ValueError(f"average must be one of {_AVERAGES}, got {average!r}")
    y_true, y_pred = _check_pair(y_true, y_pred)
    present = np.union1d(y_true, y_pred)
    if average == "binary":
        if present.shape[0] > 2:
            raise ValueError(
                f"average='binary' needs at most two distinct labels, found {present.shape[0]} "
                f"({present.tolist()[:10]}); use average='macro', 'micro' or 'weighted'"
            )
        if pos_label not in present and present.shape[0] == 2:
            raise ValueError(f"pos_label={pos_label!r} is not a valid label: {present.tolist()}")
        labels = np.asarray([pos_label])
    else:
        labels = present
    true_index = _index_in(labels, y_true)
    pred_index = _index_in(labels, y_pred)
    size = labels.shape[0]
    hit = (true_index == pred_index) & (true_index >= 0)
    tp = np.bincount(true_index[hit], minlength=size)
    predicted = np.bincount(pred_index[pred_index >= 0], minlength=size)
    actual = np.bincount(true_index[true_index >= 0], minlength=size)
    return tp, predicted, actual


def _combine(per_class_num, per_class_den, actual, average, metric):
    """Average per-class ratios the way scikit-learn's ``average=`` does."""
    if average == "micro":
        return float(_safe_divide(per_class_num.sum(), per_class_den.sum(), metric))
    scores = _safe_divide(per_class_num, per_class_den, metric)
    if average is None:
        return scores
    if average == "weighted":
        if actual.sum() == 0:
            return 0.0
        return float(np.average(scores, weights=actual))
    return float(np.mean(scores))


def precision(y_true, y_pred, average: str | None = "binary", pos_label=1):
    """Precision: of the samples predicted as a class, the fraction that truly are.

    Formula: ``precision = tp / (tp + fp)``, per class, then averaged: ``binary`` reports
    ``pos_label`` only; ``macro`` is the unweighted mean over classes; ``weighted`` weights
    each class by its support (number of true samples); ``micro`` pools tp and fp over all
    classes; ``None`` returns one value per class (sorted labels).

    Example::

        >>> precision([0, 1, 1, 0], [1, 1, 0, 0])
        0.5
    """
    tp, predicted, actual = _per_class_counts(y_true, y_pred, average, pos_label)
    return _combine(tp, predicted, actual, average, "precision")


def recall(y_true, y_pred, average: str | None = "binary", pos_label=1):
    """Recall (sensitivity): of the samples of a class, the fraction predicted as it.

    Formula: ``recall = tp / (tp + fn)``, per class, averaged as in :func:`precision`.

    Example::

        >>> recall([0, 1, 1, 1], [0, 1, 0, 1])
        0.6666666666666666
    """
    tp, _, actual = _per_class_counts(y_true, y_pred, average, pos_label)
    return _combine(tp, actual, actual, average, "recall")


def f1(y_true, y_pred, average: str | None = "binary", pos_label=1):
    """F1 score: harmonic mean of precision and recall.

    Formula: ``f1 = 2 * precision * recall / (precision + recall) = 2 tp / (2 tp + fp + fn)``,
    per class, averaged as in :func:`precision` (``micro`` pools tp, fp and fn first).

    Example::

        >>> f1([0, 1, 1, 0], [1, 1, 0, 0])
        0.5
    """
    tp, predicted, actual = _per_class_counts(y_true, y_pred, average, pos_label)
    return _combine(2 * tp, predicted + actual, actual, average, "f1")


def roc_curve(y_true, scores, pos_label=1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Receiver operating characteristic: false and true positive rates per score threshold.

    Formula: for each threshold ``t`` (the distinct scores, descending), predict positive when
    ``score >= t``; ``fpr = fp / negatives``, ``tpr = tp / positives``. As in scikit-learn,
    collinear intermediate points are dropped (``drop_intermediate=True``) and a first point
    ``(0, 0)`` with threshold ``inf`` is prepended. A rate whose class is absent is NaN (with an
    :class:`UndefinedMetricWarning`).

    Example::

        >>> fpr, tpr, thr = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        >>> fpr, tpr
        (array([0. , 0. , 0.5, 0.5, 1. ]), array([0. , 0.5, 0.5, 1. , 1. ]))
    """
    y_true, scores = _check_pair(y_true, scores, "scores")
    _check_binary_scores(y_true, scores)
    positive = y_true == pos_label
    order = np.argsort(scores, kind="mergesort")[::-1]
    sorted_scores = scores[order].astype(np.float64)
    positive = positive[order]
    # Last index of each run of equal scores: thresholds sit between distinct score values.
    distinct = np.where(np.diff(sorted_scores))[0]
    threshold_index = np.r_[distinct, positive.shape[0] - 1]
    tps = np.cumsum(positive)[threshold_index].astype(np.float64)
    fps = 1.0 + threshold_index - tps
    thresholds = sorted_scores[threshold_index]
    if fps.shape[0] > 2:
        # A point is kept only where the curve turns (non-zero second difference).
        corner = np.logical_or(np.diff(fps, 2), np.diff(tps, 2))
        keep = np.where(np.r_[True, corner, True])[0]
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    tps = np.r_[0.0, tps]
    fps = np.r_[0.0, fps]
    thresholds = np.r_[np.inf, thresholds]
    fpr = _rate(fps, "No negative samples in y_true; the false positive rate is undefined")
    tpr = _rate(tps, "No positive samples in y_true; the true positive rate is undefined")
    return fpr, tpr, thresholds


def _check_binary_scores(y_true: np.ndarray, scores: np.ndarray) -> None:
    """Reject multiclass labels and non-numeric or non-finite scores."""
    classes = np.unique(y_true)
    if classes.shape[0] > 2:
        raise ValueError(
            f"ROC needs binary labels, found {classes.shape[0]} classes ({classes.tolist()[:10]})"
        )
    real = np.issubdtype(scores.dtype, np.integer) or np.issubdtype(scores.dtype, np.floating)
    if not (real or scores.dtype == np.bool_):
        raise ValueError(f"scores must be real numbers, got dtype {scores.dtype}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinity")


def _rate(counts: np.ndarray, message: str) -> np.ndarray:
    """Cumulative counts divided by their total, or NaN with a warning when the total is 0."""
    if counts[-1] <= 0:
        warnings.warn(message, UndefinedMetricWarning, stacklevel=3)
        return np.full(counts.shape, np.nan)
    return counts / counts[-1]


def roc_auc(y_true, scores, pos_label=1) -> float:
    """Area under the ROC curve (binary), by the trapezoid rule over :func:`roc_curve`.

    Formula: ``auc = sum_i (fpr[i+1] - fpr[i]) * (tpr[i+1] + tpr[i]) / 2``; equal to the
    probability that a random positive scores above a random negative (ties count 1/2).

    Example::

        >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        0.75
    """
    y_true, scores = _check_pair(y_true, scores, "scores")
    positive = y_true == pos_label
    if positive.all() or not positive.any():
        raise ValueError(
            "ROC AUC needs both classes in y_true (pos_label="
            f"{pos_label!r}); found only {np.unique(y_true).tolist()}"
        )
    fpr, tpr, _ = roc_curve(y_true, scores, pos_label=pos_label)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
