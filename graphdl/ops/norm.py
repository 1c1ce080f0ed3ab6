"""Normalization layers as composites: batch, layer, instance and group norm.

Each normalizes with the biased variance of its statistics axes (computed in two passes,
mean first, for accuracy), then applies an optional per-channel scale `gamma` and shift
`beta`: y = (x - mean) / sqrt(var + eps) * gamma + beta, with PyTorch's eps placement.
Gradients come from autodiff through the primitives (sum, mean, sqrt, ...).
"""

from __future__ import annotations

from graphdl.errors import dtype_error, shape_error
from graphdl.graph import Tensor, as_tensor
from graphdl.ops.elementwise import apply, cast
from graphdl.ops.structured import dim_size, mean, reshape
from graphdl.shapes import FLOAT_DTYPES, Dim, format_shape


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


def batch_norm(x, gamma=None, beta=None, running_mean=None, running_var=None,
               training: bool = True, momentum: float = 0.1, eps: float = 1e-5):
    """Batch normalization of x (N, C, *S) per channel; returns (y, updates).

    Training: y = (x - mean_B) / sqrt(var_B + eps) * gamma + beta, statistics over every
    axis but the channels (biased var), and `updates` holds (state, new value) pairs for the
    running statistics in PyTorch's form: r <- (1 - momentum) r + momentum * stat, with the
    unbiased variance var_B * n / (n - 1). Eval: the running statistics, and no updates.
    Give the updates to gd.function (`updates=opt.updates(...) + updates`).

    Example:
        >>> rm, rv = gd.state("rm", np.zeros(16, np.float32)), gd.state("rv", np.ones(16, np.float32))
        >>> y, bn_updates = gd.batch_norm(h, gamma, beta, rm, rv, training=True)
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
    shape = (c,) + (1,) * (x.ndim - 2)
    axes = (0,) + tuple(range(2, x.ndim))
    if not training:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm in eval mode needs running_mean and running_var")
        mu = reshape(cast(running_mean, x.dtype), shape)
        var = reshape(cast(running_var, x.dtype), shape)
        return _affine((x - mu) / apply("sqrt", var + eps), gamma, beta, shape), []
    y, mu, var = _normalize(x, axes, eps)
    updates = []
    m = float(momentum)
    if running_mean is not None:
        batch_mean = cast(reshape(mu, (c,)), running_mean.dtype)
        updates.append((running_mean, (1.0 - m) * running_mean + m * batch_mean))
    if running_var is not None:
        n = dim_size(x, axes, x.dtype)
        unbiased = cast(reshape(var, (c,)) * (n / (n - 1.0)), running_var.dtype)
        updates.append((running_var, (1.0 - m) * running_var + m * unbiased))
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


def instance_norm(x, gamma=None, beta=None, eps: float = 1e-5) -> Tensor:
    """Normalize each sample and channel over its spatial axes (x of shape (N, C, *S)).

    y[n, c] = (x[n, c] - mean_S) / sqrt(var_S + eps) * gamma[c] + beta[c]

    Example:
        >>> y = gd.instance_norm(h, gamma, beta)
    """
    x = _check(x, "instance_norm", min_ndim=3)
    c = x.shape[1]
    gamma, beta = (_channel_param(t, c, "instance_norm", n)
                   for t, n in ((gamma, "gamma"), (beta, "beta")))
    y, _, _ = _normalize(x, tuple(range(2, x.ndim)), eps)
    return _affine(y, gamma, beta, (c,) + (1,) * (x.ndim - 2))


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
