"""Parameter penalties R(theta) of the course's eq. 4 (structural risk minimization)."""

from __future__ import annotations

from graphdl.graph import Tensor, as_tensor
from graphdl.ops import elementwise as ew
from graphdl.ops.structured import sum


def _params(params):
    params = [params] if isinstance(params, Tensor) else list(params)
    if not params:
        raise ValueError("a regularizer needs at least one tensor")
    return [as_tensor(p) for p in params]


def l1(params) -> Tensor:
    """L1 penalty: R = sum_i |w_i| over every tensor given.

    Example:
        >>> loss = data_loss + 1e-4 * gd.regularizers.l1([W1, W2])
    """
    terms = [sum(ew.apply("abs", p)) for p in _params(params)]
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


def l2(params) -> Tensor:
    """Squared L2 penalty: R = sum_i w_i^2 over every tensor given (course eq. 4).

    Scale it with your own lambda; 0.5 * lam * l2(...) gives the gradient lam * w (eq. 42).

    Example:
        >>> loss = data_loss + 1e-4 * gd.regularizers.l2([W1, W2])
    """
    terms = [sum(p * p) for p in _params(params)]
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


__all__ = ["l1", "l2"]
