"""Loss functions of the course (section 2), with PyTorch's reductions.

Every loss takes `reduction="mean" | "sum" | "none"`; "mean" averages over all elements
as PyTorch does. The course's eqs. 6-8 sum over the C outputs and average over the N
samples, which is C times PyTorch's mean for C > 1: use reduction="sum" and divide by N
for the course's exact form.
"""

from __future__ import annotations

from graphdl.errors import dtype_error, shape_error
from graphdl.graph import Tensor, as_tensor
from graphdl.ops import elementwise as ew
from graphdl.ops.composites import log_softmax
from graphdl.ops.indexing import one_hot, take, zero_one_error
from graphdl.ops.structured import mean, sum
from graphdl.shapes import FLOAT_DTYPES, format_shape

REDUCTIONS = ("mean", "sum", "none")


def _reduce(per_element: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return mean(per_element)
    if reduction == "sum":
        return sum(per_element)
    if reduction == "none":
        return per_element
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _pair(pred, target, name):
    pred = as_tensor(pred)
    target = as_tensor(target, pred)
    if pred.shape != target.shape:
        raise shape_error(f"{name}: prediction {format_shape(pred.shape)} and target "
                          f"{format_shape(target.shape)} differ (PyTorch would broadcast and "
                          "warn; reshape one of them)")
    if pred.dtype not in FLOAT_DTYPES:
        raise dtype_error(f"{name}: predictions must be float, got {pred.dtype}")
    return pred, target


def mse(pred, target, reduction: str = "mean") -> Tensor:
    """Mean squared error: L = mean (pred - target)^2 (course eq. 6).

    Example:
        >>> loss = gd.losses.mse(yhat, y)
    """
    pred, target = _pair(pred, target, "mse")
    diff = pred - target
    return _reduce(diff * diff, reduction)


def mae(pred, target, reduction: str = "mean") -> Tensor:
    """Mean absolute error: L = mean |pred - target| (course eq. 7).

    Example:
        >>> loss = gd.losses.mae(yhat, y)
    """
    pred, target = _pair(pred, target, "mae")
    return _reduce(ew.apply("abs", pred - target), reduction)


def lq(pred, target, q: float, reduction: str = "mean") -> Tensor:
    """L_q loss: L = mean |pred - target|^q (course eq. 8; q=2 is mse, q=1 is mae).

    Example:
        >>> loss = gd.losses.lq(yhat, y, q=1.5)
    """
    if not q > 0:
        raise ValueError(f"lq needs q > 0, got {q!r}")
    pred, target = _pair(pred, target, "lq")
    return _reduce(ew.apply("abs", pred - target) ** float(q), reduction)


def _labels(scores, labels, name):
    scores = as_tensor(scores)
    labels = as_tensor(labels)
    if scores.ndim != 2:
        raise shape_error(f"{name} needs scores of shape (N, C), got {format_shape(scores.shape)}")
    if scores.dtype not in FLOAT_DTYPES:
        raise dtype_error(f"{name}: scores must be float, got {scores.dtype}")
    return scores, labels


def cross_entropy(logits, labels, reduction: str = "mean") -> Tensor:
    """Softmax cross-entropy: L_i = -log softmax(logits_i)[y_i] (course eqs. 9-10).

    `labels` are int64 class indices of shape (N,), or float class probabilities of shape
    (N, C) (then L_i = -sum_j p_ij log softmax(logits_i)_j). The log-softmax is computed
    stably; labels out of range raise at call time.

    Example:
        >>> loss = gd.losses.cross_entropy(logits, y)
    """
    logits, labels = _labels(logits, labels, "cross_entropy")
    logp = log_softmax(logits, axis=1)
    if labels.dtype == "int64":
        if labels.shape != logits.shape[:1]:
            raise shape_error(f"cross_entropy: labels {format_shape(labels.shape)} do not "
                              f"match logits {format_shape(logits.shape)}")
        target = one_hot(labels, logits.shape[1], logits.dtype)
    elif labels.dtype in FLOAT_DTYPES:
        if labels.shape != logits.shape:
            raise shape_error(f"cross_entropy: probabilities {format_shape(labels.shape)} do "
                              f"not match logits {format_shape(logits.shape)}")
        target = labels
    else:
        raise dtype_error(f"cross_entropy: labels must be int64 indices or float "
                          f"probabilities, got {labels.dtype}")
    return _reduce(-sum(target * logp, axis=1), reduction)


def hinge(scores, labels, margin: float = 1.0, reduction: str = "mean") -> Tensor:
    """Multiclass hinge loss, PyTorch's multi_margin_loss (p=1):
    L_i = sum_{j != y_i} max(0, margin - s_{y_i} + s_j) / C.

    The course's eq. 11 sums over all j including the true class, which adds the constant
    margin to every sample; like PyTorch we skip j = y_i and divide by the number of classes.

    Example:
        >>> loss = gd.losses.hinge(scores, y, margin=1.0)
    """
    scores, labels = _labels(scores, labels, "hinge")
    if labels.dtype != "int64" or labels.shape != scores.shape[:1]:
        raise shape_error(f"hinge needs int64 labels of shape (N,), got {labels.dtype} "
                          f"{format_shape(labels.shape)}")
    n_classes = scores.shape[1]
    correct = take(scores, labels).reshape(-1, 1)
    margins = ew.apply("relu", float(margin) - correct + scores)
    others = 1.0 - one_hot(labels, n_classes, scores.dtype)
    return _reduce(sum(margins * others, axis=1) / float(n_classes), reduction)


def zero_one(scores, labels, reduction: str = "mean") -> Tensor:
    """0-1 loss: the fraction of samples whose argmax is wrong (course eq. 5).

    A metric, not a training loss: gd.grad through it raises NotDifferentiableError.

    Example:
        >>> err = gd.losses.zero_one(logits, y)
    """
    scores, labels = _labels(scores, labels, "zero_one")
    return _reduce(zero_one_error(scores, labels), reduction)


__all__ = ["mse", "mae", "lq", "cross_entropy", "hinge", "zero_one"]
