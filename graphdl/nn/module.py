"""The layer base class: `Module`, unique layer names, and PyTorch's default initializers.

A layer creates its parameters once, in its constructor (it knows the input sizes from its
arguments), and builds graph nodes each time it is called:

    layer = gd.nn.Dense(64, 10)          # params "dense.weight" (64, 10), "dense.bias" (10,)
    y = layer(x, training=True)          # a Tensor; the same params in every graph built
    layer.params()                       # [dense.weight, dense.bias]
    layer.updates()                      # (state, value) pairs of the last training call

Conventions:

- **Names**: a layer's name is `name=` when given, else its snake-case class name made
  unique in this process ("conv2d", "conv2d_1", ...); its params and state are named
  "<layer>.<what>" (PyTorch's attribute names: weight, bias, running_mean, ...), so a model's
  checkpoint (`gd.save(path, params=model.params() + model.states())`) has unique keys, and
  the same model built in a fresh process has the same keys. `reset_names()` restarts the
  counters (to rebuild a model under its first names in one process).
- **Train and eval forms**: `layer(x, training=False)` (the default) builds the eval form;
  `training=True` the training form (dropout active, batch statistics).
- **Updates**: a call with `training=True` records the (variable, new value) pairs the
  training function must apply (batch-norm running statistics, the step counter of random
  ops); `updates()` returns those of the LAST training-mode call (eval calls leave them), for
  the layer and, recursively, its sub-layers, each variable once:
  `gd.function([x, y], [loss], updates=opt.updates(loss, model.params()) + model.updates())`.
  They already contain the dropout step counter: do not add `gd.random_updates` as well.
- **Sub-layers** are found in the attributes (a Module, or a list or tuple of them);
  `params()` and `states()` walk them recursively, in attribute order, each tensor once.
"""

from __future__ import annotations

import math
import re

import numpy as np

from graphdl.graph import Tensor, param, state
from graphdl.init import Initializer, he_uniform, uniform

__all__ = ["Module", "reset_names", "torch_bias_init", "torch_weight_init"]

_NAME_COUNTS: dict = {}


def _unique_name(base: str) -> str:
    """base, then base_1, base_2, ... for later layers of the same base name."""
    count = _NAME_COUNTS.get(base, 0)
    _NAME_COUNTS[base] = count + 1
    return base if count == 0 else f"{base}_{count}"


def reset_names() -> None:
    """Restart the automatic layer names ("dense", "dense_1", ...) from the beginning.

    Example:
        >>> gd.nn.reset_names(); gd.nn.Dense(4, 2).name
        'dense'
    """
    _NAME_COUNTS.clear()


def _snake_case(name: str) -> str:
    """Conv2D -> conv2d, BatchNorm -> batch_norm, LSTM -> lstm, GRU -> gru."""
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z][a-z])", "_", name)
    name = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", name)
    return name.lower()


def torch_weight_init() -> Initializer:
    """PyTorch's default weight init: kaiming_uniform(a=sqrt(5)), i.e. w ~ U(-b, b) with
    b = sqrt(1 / fan_in) (fan_in from gd.init's table: dense (in, out), conv (out, in, k...)).

    Example:
        >>> w = gd.param("w", (16, 3, 3, 3), init=gd.nn.torch_weight_init())
    """
    return he_uniform(nonlinearity="leaky_relu", a=math.sqrt(5.0))


def torch_bias_init(fan_in: int) -> Initializer:
    """PyTorch's default bias init: b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    Example:
        >>> b = gd.param("b", (16,), init=gd.nn.torch_bias_init(27))
    """
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return uniform(-bound, bound)


def _merge_updates(pairs) -> list:
    """Each updated variable once (the first pair wins; the step counter recurs per layer)."""
    seen, merged = set(), []
    for var, value in pairs:
        if var not in seen:
            seen.add(var)
            merged.append((var, value))
    return merged


class Module:
    """A layer: `layer(x, training=False)` builds its output; params() and updates() list
    what training needs. Subclasses implement `forward(x, ..., training)`.

    Formula: y = forward(x; params) (the eval form when training is False).

    Example:
        >>> class Scale(gd.nn.Module):
        ...     def __init__(self, n):
        ...         super().__init__()
        ...         self.gamma = self.param("gamma", (n,), gd.init.ones())
        ...     def forward(self, x, training=False):
        ...         return x * self.gamma
    """

    def __init__(self, name: str | None = None):
        self.name = _unique_name(_snake_case(type(self).__name__)) if name is None \
            else str(name)
        self._updates: list = []
        self._pending: list | None = None

    # -- building graphs -------------------------------------------------------------------
    def __call__(self, x, *args, training: bool = False, **kwargs):
        training = bool(training)
        pending: list = []
        outer, self._pending = self._pending, pending
        try:
            y = self.forward(x, *args, training=training, **kwargs)
        finally:
            self._pending = outer
        if training:
            self._updates = _merge_updates(pending)
        return y

    def forward(self, x, training: bool = False):
        """Build the layer's output from x (the eval form when training is False)."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def add_updates(self, pairs) -> None:
        """Record (variable, new value) pairs of the current call (inside forward only)."""
        if self._pending is None:
            raise RuntimeError("add_updates is called from forward(), during a layer call")
        self._pending.extend(pairs)

    # -- declaring variables ---------------------------------------------------------------
    def param(self, what: str, shape, init, dtype="float32") -> Tensor:
        """A gd.param named "<layer name>.<what>"."""
        return param(f"{self.name}.{what}", shape, init=init, dtype=dtype)

    def state(self, what: str, array: np.ndarray) -> Tensor:
        """A gd.state named "<layer name>.<what>", starting from `array`."""
        return state(f"{self.name}.{what}", array)

    # -- what training needs ---------------------------------------------------------------
    def children(self) -> list:
        """The sub-layers held in attributes (Modules, or lists and tuples of them)."""
        found = []
        for value in vars(self).values():
            items = value if isinstance(value, (list, tuple)) else (value,)
            found += [v for v in items if isinstance(v, Module)]
        return list(dict.fromkeys(found))

    def _variables(self, op: str) -> list:
        found = []
        for value in vars(self).values():
            items = value if isinstance(value, (list, tuple)) else (value,)
            for v in items:
                if isinstance(v, Tensor) and v.op == op:
                    found.append(v)
                elif isinstance(v, Module):
                    found += v._variables(op)
        return list(dict.fromkeys(found))

    def params(self) -> list:
        """Every gd.param of the layer and its sub-layers, each once, in attribute order.

        Example:
            >>> opt.updates(loss, model.params())
        """
        return self._variables("param")

    def states(self) -> list:
        """Every gd.state the layer owns (running statistics), recursively.

        Example:
            >>> gd.save("model.npz", params=model.params() + model.states())
        """
        return self._variables("state")

    def updates(self) -> list:
        """(variable, new value) pairs of the last training-mode call, recursively.

        Example:
            >>> step = gd.function([x, y], [loss],
            ...                    updates=opt.updates(loss, model.params()) + model.updates())
        """
        pairs = list(self._updates)
        for child in self.children():
            pairs += child.updates()
        return _merge_updates(pairs)

    def num_params(self) -> int:
        """The number of trainable scalars."""
        return int(sum(int(np.prod(p.shape)) for p in self.params()))

    # -- printing --------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The configuration shown by repr (subclasses override)."""
        return ""

    def __repr__(self) -> str:
        head = f"{type(self).__name__}({self.extra_repr()})"
        own = [v for value in vars(self).values()
               for v in (value if isinstance(value, (list, tuple)) else (value,))
               if isinstance(v, Tensor) and v.op == "param"]
        if 0 < len(own) <= 4:
            head += "  # " + ", ".join(f"{p.name} {tuple(p.shape)}" for p in own)
        elif own:
            head += f"  # {len(own)} params, {sum(int(np.prod(p.shape)) for p in own)} values"
        children = self.children()
        if not children:
            return head
        lines = [head] + ["  " + line for c in children for line in repr(c).splitlines()]
        return "\n".join(lines)


def call(layer, x, training: bool):
    """Call a Module with `training`, or a plain function of one tensor (gd.relu, a lambda)."""
    if isinstance(layer, Module):
        return layer(x, training=training)
    return layer(x)


def ints(value, d: int, what: str) -> tuple:
    """An int or d ints as a d-tuple of ints."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * d
    values = tuple(int(v) for v in value)
    if len(values) != d:
        raise ValueError(f"{what} needs one int or {d} ints, got {value!r}")
    return values
