"""Stochastic regularization layers: Dropout, DropConnect, GaussianDropout, SpatialDropout and
DropBlock (graphdl.ops.random's counter-based ops).

Every one is the identity in eval. In training, its mask is a function of (seed, step,
element index), the same on every backend; `seed=None` draws from gd.seed's seed with a new
stream per call, so two layers (and two graphs) draw different masks. The step is the shared
counter `gd.random_step()`: a training call records the update (step, step + 1) in
`updates()`, so each call of the compiled training function draws new masks.
"""

from __future__ import annotations

from graphdl.nn.layers import Dense
from graphdl.nn.module import Module
from graphdl.ops.random import (
    drop_block,
    drop_connect,
    dropout,
    gaussian_dropout,
    random_updates,
    spatial_dropout,
)

__all__ = ["DropBlock", "DropConnect", "Dropout", "GaussianDropout", "SpatialDropout"]


class _Random(Module):
    """A layer whose training form draws random numbers; p and seed are common to all."""

    def __init__(self, p: float, seed: int | None = None, name: str | None = None):
        super().__init__(name)
        self.p = float(p)
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"{type(self).__name__}: p must be in [0, 1], got {p}")
        self.seed = seed

    def _record(self, y):
        """Record the step-counter update of the random ops in y (training calls only)."""
        self.add_updates(random_updates([y]))
        return y

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Dropout(_Random):
    """Inverted dropout: y = x * m / (1 - p), m = [u >= p], u ~ U[0, 1) (training); y = x (eval).

    Example:
        >>> drop = gd.nn.Dropout(0.5)
        >>> h_train, h_eval = drop(h, training=True), drop(h)
    """

    def forward(self, x, training: bool = False):
        if not training:
            return x
        return self._record(dropout(x, self.p, True, self.seed))


class GaussianDropout(_Random):
    """Gaussian dropout: y = x * (1 + sqrt(p / (1 - p)) z), z ~ N(0, 1) (training); y = x (eval).

    Example:
        >>> noise = gd.nn.GaussianDropout(0.2)
        >>> h = noise(h, training=True)
    """

    def forward(self, x, training: bool = False):
        if not training:
            return x
        return self._record(gaussian_dropout(x, self.p, True, self.seed))


class SpatialDropout(_Random):
    """Channel dropout of x (N, C, *S): y[n, c] = x[n, c] m[n, c] / (1 - p) (training); x (eval).

    Whole feature maps are kept or dropped, as torch's Dropout2d/3d.

    Example:
        >>> drop = gd.nn.SpatialDropout(0.2)
        >>> h = drop(h, training=True)            # (N, C, H, W)
    """

    def forward(self, x, training: bool = False):
        if not training:
            return x
        return self._record(spatial_dropout(x, self.p, True, self.seed))


class DropBlock(_Random):
    """DropBlock of x (N, C, *S): y = x * M * count(M) / sum(M), M 0 on random blocks; x in eval.

    Block seeds are Bernoulli(gamma) with gamma = p / prod(block) * prod(S) /
    prod(S - block + 1) (Ghiasi et al., 2018), as torchvision.ops.drop_block2d.

    Example:
        >>> drop = gd.nn.DropBlock(0.1, block_size=3)
        >>> h = drop(h, training=True)            # (N, C, H, W)
    """

    def __init__(self, p: float = 0.1, block_size=7, seed: int | None = None,
                 name: str | None = None):
        super().__init__(p, seed, name)
        self.block_size = block_size

    def forward(self, x, training: bool = False):
        if not training:
            return x
        return self._record(drop_block(x, self.p, self.block_size, True, self.seed))

    def extra_repr(self) -> str:
        return f"p={self.p}, block_size={self.block_size}"


class DropConnect(_Random):
    """DropConnect around a Dense layer: y = x @ (W * M / (1 - p)) + b, M = [u >= p] (training).

    The eval form is the Dense layer, y = x @ W + b. One weight mask per call of the compiled
    function, shared by the batch (the bias is not dropped). The params are the wrapped
    layer's.

    Example:
        >>> layer = gd.nn.DropConnect(gd.nn.Dense(64, 32), p=0.5)
        >>> h = layer(x, training=True)
    """

    def __init__(self, dense: Dense, p: float = 0.5, seed: int | None = None,
                 name: str | None = None):
        super().__init__(p, seed, name)
        if not isinstance(dense, Dense):
            raise TypeError(f"DropConnect wraps a gd.nn.Dense layer, got {dense!r}")
        self.dense = dense

    def forward(self, x, training: bool = False):
        if not training:
            return self.dense(x, training=False)
        w = drop_connect(self.dense.weight, self.p, True, self.seed)
        y = x @ w
        if self.dense.bias is not None:
            y = y + self.dense.bias
        return self._record(y)
