"""Normalization layers: BatchNorm, LayerNorm, InstanceNorm and GroupNorm.

Each normalizes with the biased variance of its statistics, then scales by a learnable
gamma ("<name>.weight", ones) and shifts by beta ("<name>.bias", zeros), as torch.nn does:
y = (x - mean) / sqrt(var + eps) * gamma + beta. BatchNorm, and InstanceNorm with
track_running_stats=True, differ between training (batch or instance statistics, running
statistics updated) and eval (running statistics).
"""

from __future__ import annotations

import numbers

import numpy as np

from graphdl.errors import shape_error
from graphdl.graph import as_tensor
from graphdl.init import ones, zeros
from graphdl.nn.module import Module
from graphdl.ops.norm import batch_norm, group_norm, instance_norm, layer_norm
from graphdl.ops.structured import transpose

__all__ = ["BatchNorm", "GroupNorm", "InstanceNorm", "LayerNorm"]


def _momentum(momentum, what: str):
    """None (a cumulative average) or a float in [0, 1]."""
    if momentum is None:
        return None
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real):
        raise TypeError(f"{what}: momentum must be a number or None, got {momentum!r}")
    if not 0.0 <= float(momentum) <= 1.0:
        raise ValueError(f"{what}: momentum must be in [0, 1], got {momentum}")
    return float(momentum)


class _Affine(Module):
    """A normalization with optional per-feature gamma (weight) and beta (bias)."""

    def _affine_params(self, shape, affine: bool, dtype) -> None:
        self.weight = self.param("weight", shape, ones(), dtype) if affine else None
        self.bias = self.param("bias", shape, zeros(), dtype) if affine else None

    def _running_stats(self, track: bool, dtype) -> None:
        """States "<name>.running_mean" (zeros) and "<name>.running_var" (ones), or None."""
        self.running_mean = self.running_var = None
        if track:
            n = self.num_features
            self.running_mean = self.state("running_mean", np.zeros(n, dtype=dtype))
            self.running_var = self.state("running_var", np.ones(n, dtype=dtype))


class BatchNorm(_Affine):
    """Batch norm over every axis but `axis`: y = (x - mean_B) / sqrt(var_B + eps) * gamma + beta.

    Training: batch statistics (biased variance), and updates of the running statistics in
    PyTorch's form r <- (1 - momentum) r + momentum * stat with the unbiased batch variance
    var_B * n / (n - 1) (n values per channel); eval: the running statistics. momentum=None
    is torch's cumulative moving average, r <- r + (stat - r) / k at the k-th training call,
    counted by the int64 state "<name>.num_batches_tracked" (created only in that case; it
    is saved and restored with the other states). axis=1 covers torch's BatchNorm1d (N, C) or
    (N, C, L), BatchNorm2d (N, C, H, W) and BatchNorm3d; another axis (-1 for channels-last
    (N, T, C)) is moved to 1 and back. track_running_stats=False uses batch statistics in
    both forms. State: "<name>.running_mean" (zeros), "<name>.running_var" (ones).

    Example:
        >>> bn = gd.nn.BatchNorm(16)
        >>> h_train, h_eval = bn(h, training=True), bn(h)   # bn.updates(): running stats
        >>> cma = gd.nn.BatchNorm(16, momentum=None)        # cumulative moving average
    """

    def __init__(self, num_features: int, axis: int = 1, eps: float = 1e-5,
                 momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, name: str | None = None, dtype="float32"):
        super().__init__(name)
        self.num_features, self.axis = int(num_features), int(axis)
        self.eps, self.momentum = float(eps), _momentum(momentum, "BatchNorm")
        self._affine_params((self.num_features,), affine, dtype)
        self._running_stats(track_running_stats, dtype)
        self.num_batches_tracked = None
        if track_running_stats and self.momentum is None:
            self.num_batches_tracked = self.state("num_batches_tracked",
                                                  np.array(0, dtype=np.int64))

    def forward(self, x, training: bool = False):
        x = as_tensor(x)
        axis = self.axis % x.ndim if x.ndim >= 2 else self.axis
        if x.ndim < 2 or axis == 0 or x.shape[axis] != self.num_features:
            raise shape_error(f"{self.name}: expected {self.num_features} channels on axis "
                              f"{self.axis} (not the batch axis), got x of shape {x.shape}")
        perm = None
        if axis != 1:
            perm = (0, axis) + tuple(a for a in range(1, x.ndim) if a != axis)
            x = transpose(x, perm)
        use_batch = training or self.running_mean is None
        y, updates = batch_norm(x, self.weight, self.bias, self.running_mean,
                                self.running_var, training=use_batch, momentum=self.momentum,
                                eps=self.eps, num_batches_tracked=self.num_batches_tracked)
        if training:
            self.add_updates(updates)
        if perm is not None:
            y = transpose(y, tuple(int(i) for i in np.argsort(perm)))
        return y

    def extra_repr(self) -> str:
        return (f"{self.num_features}, axis={self.axis}, eps={self.eps}, "
                f"momentum={self.momentum}")


class LayerNorm(_Affine):
    """Layer norm: y = (x - mean) / sqrt(var + eps) * gamma + beta over the normalized axes.

    Statistics per sample over the last len(normalized_shape) axes; gamma and beta have
    `normalized_shape` (torch.nn.LayerNorm); the same in training and eval.

    Example:
        >>> ln = gd.nn.LayerNorm(128)
        >>> h = ln(h)                             # statistics per sample over 128 features
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 name: str | None = None, dtype="float32"):
        super().__init__(name)
        shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) \
            else normalized_shape
        self.normalized_shape = tuple(int(s) for s in shape)
        self.eps = float(eps)
        self._affine_params(self.normalized_shape, elementwise_affine, dtype)

    def forward(self, x, training: bool = False):
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"


class InstanceNorm(_Affine):
    """Instance norm of x (N, C, *S): y = (x - mean_S) / sqrt(var_S + eps) * gamma[c] + beta[c].

    torch.nn.InstanceNorm1d/2d/3d (one class for any number of spatial axes), with torch's
    defaults: affine=False (no gamma/beta; affine=True gives a learnable "<name>.weight",
    ones, and "<name>.bias", zeros, per channel) and track_running_stats=False (statistics
    per sample and channel over the spatial axes, in training and eval alike).
    track_running_stats=True adds states "<name>.running_mean" (zeros) and
    "<name>.running_var" (ones): training normalizes by the instance statistics and updates
    r <- (1 - momentum) r + momentum * stat with stat the mean over the batch of the
    per-instance means and unbiased variances; eval normalizes by the running statistics.
    momentum=None is accepted as torch does, which then uses momentum 0: the running
    statistics keep their values (torch's InstanceNorm never counts batches; for a cumulative
    average call gd.instance_norm with momentum=None and a num_batches_tracked state).

    Example:
        >>> inorm = gd.nn.InstanceNorm(16, affine=True)
        >>> h = inorm(h)                          # (N, 16, H, W)
        >>> tracked = gd.nn.InstanceNorm(16, track_running_stats=True)
        >>> h_train, h_eval = tracked(h, training=True), tracked(h)  # tracked.updates()
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = False, track_running_stats: bool = False,
                 name: str | None = None, dtype="float32"):
        super().__init__(name)
        self.num_features, self.eps = int(num_features), float(eps)
        self.momentum = _momentum(momentum, "InstanceNorm")
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        self._affine_params((self.num_features,), self.affine, dtype)
        self._running_stats(self.track_running_stats, dtype)

    def forward(self, x, training: bool = False):
        x = as_tensor(x)
        if ((self.affine or self.track_running_stats) and x.ndim >= 3
                and x.shape[1] != self.num_features):
            raise shape_error(f"{self.name}: expected {self.num_features} channels on axis 1, "
                              f"got x of shape {x.shape}")
        if not self.track_running_stats:
            return instance_norm(x, self.weight, self.bias, self.eps)
        momentum = 0.0 if self.momentum is None else self.momentum   # as torch
        y, updates = instance_norm(x, self.weight, self.bias, self.eps,
                                   running_mean=self.running_mean,
                                   running_var=self.running_var, training=training,
                                   momentum=momentum)
        if training:
            self.add_updates(updates)
        return y

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class GroupNorm(_Affine):
    """Group norm of x (N, C, *S): y = (x - mean_g) / sqrt(var_g + eps) * gamma[c] + beta[c].

    Statistics per sample over C / num_groups channels and the spatial axes
    (torch.nn.GroupNorm); the same in training and eval.

    Example:
        >>> gn = gd.nn.GroupNorm(4, 16)
        >>> h = gn(h)                             # (N, 16, H, W), 4 groups of 4 channels
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5,
                 affine: bool = True, name: str | None = None, dtype="float32"):
        super().__init__(name)
        self.num_groups, self.num_channels = int(num_groups), int(num_channels)
        if self.num_groups < 1 or self.num_channels % self.num_groups:
            raise ValueError(f"GroupNorm: {num_groups} groups do not divide {num_channels} "
                             "channels")
        self.eps = float(eps)
        self._affine_params((self.num_channels,), affine, dtype)

    def forward(self, x, training: bool = False):
        return group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}"
