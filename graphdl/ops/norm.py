"""Normalization layers as composites: batch, layer, instance and group norm.

Each normalizes with the biased variance of its statistics axes (computed in two passes,
mean first, for accuracy), then applies an optional per-channel scale `gamma` and shift
`beta`: y = (x - mean) / sqrt(var + eps) * gamma + beta, with PyTorch's eps placement.
Gradients come from autodiff through the primitives (sum, mean, sqrt, ...).

Running statistics (batch norm, and instance norm when given them) are `gd.state`
variables that the caller owns; training returns (state, new value) update pairs in
PyTorch's form r <- (1 - f) r + f * stat with the unbiased variance, where f is `momentum`,
or, with momentum=None, 1 / k at the k-th training call (a cumulative moving average)
counted by an optional `num_batches_tracked` scalar state (int64, as torch's buffer) that
every training call increments.
"""

from __future__ import annotations

from graphdl.errors import dtype_error, shape_error
from graphdl.graph import Tensor, as_tensor
from graphdl.ops.elementwise import apply, cast
from graphdl.ops.structured import dim_size, mean, reshape
from graphdl.shapes import FLOAT_DTYPES, Dim, format_shape

_COUNTER_DTYPES = ("int64",) + FLOAT_DTYPES


def _normalize(x, axes, eps):
    """(x - mean) / sqrt(var + eps) over `axes`, and the (keepdims) mean and biased var."""
    mu = mean(x, axes, keepdims=True)
    centered = x - mu
    var = mean(centered * centered, axes, keepdims=True)
    return centered / apply("sqrt", var + eps), mu, var


def _affine(y, gamma, beta, shape):
    """y * gamma + beta with gamma/beta reshaped to `shape` (broadcast over y)."""
    if gamma is not None:
        y = y * reshape(as_tensor(gamma, y), shape)
    if beta is not None:
        y = y + reshape(as_tensor(beta, y), shape)
    return y


def _check(x, what, min_ndim=2):
    x = as_tensor(x)
    if x.dtype not in FLOAT_DTYPES:
        raise dtype_error(f"{what} needs a float tensor, got {x.dtype}")
    if x.ndim < min_ndim:
        raise shape_error(f"{what} needs at least {min_ndim} dims, got {format_shape(x.shape)}")
    return x


def _channel_param(t, c, what, name):
    if t is None:
        return None
    t = as_tensor(t)
    if t.shape != (c,):
        raise shape_error(f"{what}: {name} must have shape ({c},), got {format_shape(t.shape)}")
    return t


def _counter(t, what):
    """Check an optional num_batches_tracked: a scalar int64 (or float) tensor."""
    if t is None:
        return None
    t = as_tensor(t)
    if t.dtype not in _COUNTER_DTYPES:
        raise dtype_error(f"{what}: num_batches_tracked must be int64 or float, got {t.dtype}")
    if t.shape != ():
        raise shape_error(f"{what}: num_batches_tracked must be a scalar, got "
                          f"{format_shape(t.shape)}")
    return t


def _running_factor(momentum, counter, what, needed: bool):
    """The weight f of this call's statistics: `momentum`, or 1 / (counter + 1) for None."""
    if momentum is not None:
        return float(momentum)
    if counter is None:
        if needed:
            raise ValueError(f"{what}: momentum=None (a cumulative average) needs "
                             "num_batches_tracked, a scalar gd.state counter")
        return None
    return 1.0 / cast(counter + 1, "float64")


def _blend(running, stat, factor):
    """(1 - f) * running + f * stat in running's dtype, the running-statistics update of PyTorch."""
    if isinstance(factor, Tensor):
        factor = cast(factor, running.dtype)
    return (1.0 - factor) * running + factor * cast(stat, running.dtype)


def _running_updates(running_mean, running_var, counter, stat_mean, stat_var, momentum, what):
    """The update pairs of the running statistics (given the (C,) statistics of this call,
    the variance unbiased) and of the batch counter."""
    factor = _running_factor(momentum, counter, what,
                             needed=running_mean is not None or running_var is not None)
    updates = [(r, _blend(r, stat, factor))
               for r, stat in ((running_mean, stat_mean), (running_var, stat_var))
               if r is not None]
    if counter is not None:
        updates.append((counter, counter + 1))
    return updates


def _by_running_stats(x, running_mean, running_var, gamma, beta, shape, eps, what):
    """The eval form: normalize by the running statistics (cast to x's dtype)."""
    if running_mean is None or running_var is None:
        raise ValueError(f"{what} in eval mode needs running_mean and running_var")
    mu = reshape(cast(running_mean, x.dtype), shape)
    var = reshape(cast(running_var, x.dtype), shape)
    return _affine((x - mu) / apply("sqrt", var + eps), gamma, beta, shape)


def batch_norm(x, gamma=None, beta=None, running_mean=None, running_var=None,
               training: bool = True, momentum: float | None = 0.1, eps: float = 1e-5,
               num_batches_tracked=None):
    """Batch normalization of x (N, C, *S) per channel; returns (y, updates).

    Training: y = (x - mean_B) / sqrt(var_B + eps) * gamma + beta, statistics over every
    axis but the channels (biased var), and `updates` holds (state, new value) pairs for the
    running statistics in PyTorch's form: r <- (1 - f) r + f * stat, with the unbiased
    variance var_B * n / (n - 1) and f = momentum. momentum=None is torch's cumulative moving
    average, f = 1 / k at the k-th training call: it needs `num_batches_tracked`, a scalar
    int64 gd.state counting the calls so far (0 at first). When that counter is given it is
    incremented by every training call, whatever the momentum (torch's buffer of the same
    name). Eval: the running statistics, and no updates.
    Give the updates to gd.function (`updates=opt.updates(...) + updates`).

    Example:
        >>> rm, rv = gd.state("rm", np.zeros(16, np.float32)), gd.state("rv", np.ones(16, np.float32))
        >>> y, bn_updates = gd.batch_norm(h, gamma, beta, rm, rv, training=True)
        >>> k = gd.state("k", np.array(0, np.int64))          # cumulative average instead
        >>> y, bn_updates = gd.batch_norm(h, gamma, beta, rm, rv, momentum=None,
        ...                               num_batches_tracked=k)
    """
    x = _check(x, "batch_norm")
    c = x.shape[1]
    if isinstance(c, Dim):
        raise shape_error("batch_norm: the channel axis must be static")
    gamma, beta = (_channel_param(t, c, "batch_norm", n)
                   for t, n in ((gamma, "gamma"), (beta, "beta")))
    running_mean, running_var = (_channel_param(t, c, "batch_norm", n)
                                 for t, n in ((running_mean, "running_mean"),
                                              (running_var, "running_var")))
    counter = _counter(num_batches_tracked, "batch_norm")
    shape = (c,) + (1,) * (x.ndim - 2)
    axes = (0,) + tuple(range(2, x.ndim))
    if not training:
        return _by_running_stats(x, running_mean, running_var, gamma, beta, shape, eps,
                                 "batch_norm"), []
    y, mu, var = _normalize(x, axes, eps)
    n = dim_size(x, axes, x.dtype)
    updates = _running_updates(running_mean, running_var, counter, reshape(mu, (c,)),
                               reshape(var, (c,)) * (n / (n - 1.0)), momentum, "batch_norm")
    return _affine(y, gamma, beta, shape), updates


def layer_norm(x, normalized_shape, gamma=None, beta=None, eps: float = 1e-5) -> Tensor:
    """Normalize over the last len(normalized_shape) axes, as torch's layer_norm.

    y = (x - mean) / sqrt(var + eps) * gamma + beta, gamma and beta of normalized_shape.

    Example:
        >>> y = gd.layer_norm(h, (128,), gamma, beta)
    """
    x = _check(x, "layer_norm", min_ndim=1)
    normalized_shape = (tuple(normalized_shape) if not isinstance(normalized_shape, int)
                        else (normalized_shape,))
    k = len(normalized_shape)
    if k == 0 or k > x.ndim or tuple(x.shape[x.ndim - k:]) != normalized_shape:
        raise shape_error(f"layer_norm: normalized_shape {normalized_shape} is not the end "
                          f"of {format_shape(x.shape)}")
    y, _, _ = _normalize(x, tuple(range(x.ndim - k, x.ndim)), eps)
    for t, name in ((gamma, "gamma"), (beta, "beta")):
        if t is not None and as_tensor(t).shape != normalized_shape:
            raise shape_error(f"layer_norm: {name} must have shape {normalized_shape}")
    return _affine(y, gamma, beta, normalized_shape)


def instance_norm(x, gamma=None, beta=None, eps: float = 1e-5, *, running_mean=None,
                  running_var=None, training: bool = True, momentum: float | None = 0.1,
                  num_batches_tracked=None):
    """Normalize each sample and channel over its spatial axes (x of shape (N, C, *S)).

    y[n, c] = (x[n, c] - mean_S) / sqrt(var_S + eps) * gamma[c] + beta[c]

    Without running statistics this returns y (the same in training and eval). Given
    `running_mean`/`running_var` (torch's F.instance_norm) it returns (y, updates):
    training (torch's use_input_stats=True) normalizes by the instance statistics and
    updates r <- (1 - f) r + f * stat, where stat is the mean over the batch of the
    per-instance means and unbiased variances var_S * n / (n - 1) (n = prod(S)); eval
    (training=False) normalizes by the running statistics and returns no updates. f and
    `num_batches_tracked` work as in gd.batch_norm (momentum=None: f = 1 / k at the k-th
    training call, counted by num_batches_tracked).

    Example:
        >>> y = gd.instance_norm(h, gamma, beta)
        >>> rm, rv = gd.state("rm", np.zeros(16, np.float32)), gd.state("rv", np.ones(16, np.float32))
        >>> y, in_updates = gd.instance_norm(h, running_mean=rm, running_var=rv, training=True)
    """
    x = _check(x, "instance_norm", min_ndim=3)
    c = x.shape[1]
    gamma, beta = (_channel_param(t, c, "instance_norm", n)
                   for t, n in ((gamma, "gamma"), (beta, "beta")))
    tracked = not (running_mean is None and running_var is None and num_batches_tracked is None)
    if tracked and isinstance(c, Dim):
        raise shape_error("instance_norm: running statistics need a static channel axis")
    running_mean, running_var = (_channel_param(t, c, "instance_norm", n)
                                 for t, n in ((running_mean, "running_mean"),
                                              (running_var, "running_var")))
    counter = _counter(num_batches_tracked, "instance_norm")
    shape = (c,) + (1,) * (x.ndim - 2)
    axes = tuple(range(2, x.ndim))
    if tracked and not training:
        return _by_running_stats(x, running_mean, running_var, gamma, beta, shape, eps,
                                 "instance_norm"), []
    y, mu, var = _normalize(x, axes, eps)
    y = _affine(y, gamma, beta, shape)
    if not tracked:
        return y
    # mu and var are (N, C, 1, ...): the statistics are their means over the batch
    batch_axes, n = (0,) + axes, dim_size(x, axes, x.dtype)
    updates = _running_updates(running_mean, running_var, counter, mean(mu, batch_axes),
                               mean(var, batch_axes) * (n / (n - 1.0)), momentum,
                               "instance_norm")
    return y, updates


def group_norm(x, groups: int, gamma=None, beta=None, eps: float = 1e-5) -> Tensor:
    """Normalize each sample over groups of C/groups channels and the spatial axes.

    y = (x - mean_group) / sqrt(var_group + eps) * gamma[c] + beta[c] (torch's group_norm)

    Example:
        >>> y = gd.group_norm(h, 4, gamma, beta)
    """
    x = _check(x, "group_norm")
    c = x.shape[1]
    groups = int(groups)
    if isinstance(c, Dim) or groups < 1 or c % groups:
        raise shape_error(f"group_norm: {groups} groups do not divide the channels of "
                          f"{format_shape(x.shape)}")
    gamma, beta = (_channel_param(t, c, "group_norm", n)
                   for t, n in ((gamma, "gamma"), (beta, "beta")))
    grouped = reshape(x, (x.shape[0], groups, c // groups) + tuple(x.shape[2:]))
    y, _, _ = _normalize(grouped, tuple(range(2, grouped.ndim)), eps)
    return _affine(reshape(y, x.shape), gamma, beta, (c,) + (1,) * (x.ndim - 2))


__all__ = ["batch_norm", "group_norm", "instance_norm", "layer_norm"]
