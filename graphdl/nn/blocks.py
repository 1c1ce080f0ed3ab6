"""Containers and architectural blocks: Sequential, Residual and Inception.

Their parts are layers (Modules, called with the container's `training`) or plain functions
of one tensor (gd.relu, a lambda), called as they are. params(), states() and updates()
collect the parts' own, recursively.
"""

from __future__ import annotations

from graphdl.nn.module import Module, call
from graphdl.ops.indexing import concat

__all__ = ["Inception", "Residual", "Sequential"]


def _check_callable(part, what: str):
    if not callable(part):
        raise TypeError(f"{what} takes layers or functions of one tensor, got {part!r}")
    return part


class Sequential(Module):
    """A chain of layers: y = f_n(... f_2(f_1(x))), each f a layer or a function of one tensor.

    Each layer gets the call's `training`; indexing and len() reach the layers.

    Example:
        >>> model = gd.nn.Sequential(gd.nn.Dense(64, 128), gd.relu, gd.nn.Dropout(0.5),
        ...                          gd.nn.Dense(128, 10))
        >>> logits_train, logits_eval = model(x, training=True), model(x)
    """

    def __init__(self, *layers, name: str | None = None):
        super().__init__(name)
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        self.layers = [_check_callable(layer, "Sequential") for layer in layers]

    def forward(self, x, training: bool = False):
        for layer in self.layers:
            x = call(layer, x, training)
        return x

    def append(self, layer) -> Sequential:
        """Add a layer at the end (returns self)."""
        self.layers.append(_check_callable(layer, "Sequential"))
        return self

    def __getitem__(self, index):
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}("]
        for layer in self.layers:
            text = repr(layer) if isinstance(layer, Module) else \
                getattr(layer, "__name__", repr(layer))
            lines += ["  " + line for line in text.splitlines()]
        return "\n".join(lines + [")"])


class Residual(Module):
    """A residual block (He et al., 2016): y = act(block(x) + shortcut(x)).

    The shortcut is the identity by default; give one (e.g. a 1x1 Conv2D) when the block
    changes the shape. `activation` (e.g. gd.relu) is applied after the sum when given.

    Example:
        >>> block = gd.nn.Sequential(gd.nn.Conv2D(16, 16, 3, padding=1), gd.nn.BatchNorm(16),
        ...                          gd.relu, gd.nn.Conv2D(16, 16, 3, padding=1))
        >>> h = gd.nn.Residual(block, activation=gd.relu)(h, training=True)
    """

    def __init__(self, block, shortcut=None, activation=None, name: str | None = None):
        super().__init__(name)
        self.block = _check_callable(block, "Residual")
        self.shortcut = None if shortcut is None else _check_callable(shortcut, "Residual")
        self.activation = None if activation is None else \
            _check_callable(activation, "Residual")

    def forward(self, x, training: bool = False):
        skip = x if self.shortcut is None else call(self.shortcut, x, training)
        y = call(self.block, x, training) + skip
        return y if self.activation is None else call(self.activation, y, training)


class Inception(Module):
    """An inception block (Szegedy et al., 2015): y = concat([b_1(x), ..., b_k(x)], axis).

    Parallel branches see the same input; their outputs are joined on `axis` (the channels,
    1, by default), so they must agree on every other axis.

    Example:
        >>> block = gd.nn.Inception([gd.nn.Conv2D(16, 8, 1),
        ...                          gd.nn.Conv2D(16, 8, 3, padding=1),
        ...                          gd.nn.Sequential(gd.nn.MaxPool2D(3, 1, 1),
        ...                                           gd.nn.Conv2D(16, 8, 1))])
        >>> h = block(x)                          # (N, 16, H, W) -> (N, 24, H, W)
    """

    def __init__(self, branches, axis: int = 1, name: str | None = None):
        super().__init__(name)
        self.branches = [_check_callable(b, "Inception") for b in branches]
        if not self.branches:
            raise ValueError("Inception needs at least one branch")
        self.axis = int(axis)

    def forward(self, x, training: bool = False):
        return concat([call(b, x, training) for b in self.branches], axis=self.axis)

    def extra_repr(self) -> str:
        return f"axis={self.axis}"
