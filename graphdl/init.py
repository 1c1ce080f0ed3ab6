"""Initializers: factories of callables `(shape, dtype) -> np.ndarray` for `gd.param(init=...)`.

Every random initializer draws from `graphdl.random.generator()`, so `gd.seed(n)` followed by
the same declarations gives the same arrays. Draws are made in float64 and then converted to
the requested dtype, so float32 and float64 params of one seed hold the same numbers up to
rounding.

Fan-in and fan-out (Glorot and He) follow `torch.nn.init._calculate_fan_in_and_fan_out`
except for dense weights, whose layout differs between the two libraries:

==========================  ===============================  ==============================
shape                       fan_in                           fan_out
==========================  ===============================  ==============================
dense (in, out), x @ W      shape[0]                         shape[1]
conv (out, in/groups, k..)  shape[1] * prod(k)               shape[0] * prod(k)
==========================  ===============================  ==============================

PyTorch's `nn.Linear` stores (out, in) and computes x @ W.T; graphdl computes x @ W with W of
shape (in, out), so a 2-D shape has its fan-in first. Convolution weights use PyTorch's layout
(out, in/groups, k...) and therefore PyTorch's formula. Shapes of fewer than two dimensions
(biases) have no fan: use zeros(), constant() or the plain uniform()/normal() for them.

Example:
    >>> W = gd.param("W", (64, 128), init=gd.init.xavier_uniform())
    >>> K = gd.param("K", (16, 3, 3, 3), init=gd.init.he_normal())
    >>> b = gd.param("b", (128,), init=gd.init.zeros())
"""

from __future__ import annotations

import math

import numpy as np

from graphdl.errors import dtype_error, shape_error
from graphdl.random import generator

__all__ = [
    "Initializer",
    "calculate_gain",
    "constant",
    "fan_in_and_fan_out",
    "he_normal",
    "he_uniform",
    "normal",
    "ones",
    "uniform",
    "xavier_normal",
    "xavier_uniform",
    "zeros",
]


class Initializer:
    """A callable `(shape, dtype="float32") -> np.ndarray` that fills a new parameter.

    `draw(shape, rng)` returns float64 values (or a fill value); the result is converted to
    `dtype`. Random initializers refuse non-float dtypes, whose values would be truncated.

    Example:
        >>> init = gd.init.normal(std=0.1)
        >>> init((3, 4), "float32").dtype
        dtype('float32')
    """

    def __init__(self, name: str, draw, random: bool = True, **params):
        self.name = name
        self.params = params
        self.random = random
        self._draw = draw

    def __call__(self, shape, dtype="float32") -> np.ndarray:
        shape = (int(shape),) if np.isscalar(shape) else tuple(int(d) for d in shape)
        dtype = np.dtype(dtype)
        if self.random and dtype.kind != "f":
            raise dtype_error(f"gd.init.{self.name} draws floats; it cannot fill a {dtype} "
                              "tensor (use zeros(), ones() or constant())")
        values = self._draw(shape, generator())
        return np.ascontiguousarray(np.broadcast_to(values, shape), dtype=dtype)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"gd.init.{self.name}({args})"


# -- helpers ------------------------------------------------------------------------------
def fan_in_and_fan_out(shape) -> tuple:
    """The (fan_in, fan_out) of a weight shape, in graphdl's layouts (see the module text).

    Formula: dense (in, out): (in, out); conv (out, in/groups, k...): (in * prod(k),
    out * prod(k)).

    Example:
        >>> gd.init.fan_in_and_fan_out((64, 128))
        (64, 128)
        >>> gd.init.fan_in_and_fan_out((16, 3, 5, 5))
        (75, 400)
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2:
        raise shape_error(f"fan in and fan out need a shape of at least 2 dimensions, got "
                          f"{shape}; initialize biases with zeros(), constant() or uniform()")
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain of a nonlinearity, as `torch.nn.init.calculate_gain`.

    Formula: linear/conv/sigmoid 1, tanh 5/3, relu sqrt(2), leaky_relu sqrt(2 / (1 + a^2))
    (a = param, default 0.01), selu 3/4.

    Example:
        >>> gd.init.calculate_gain("relu")
        1.4142135623730951
    """
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d", "sigmoid", "identity")
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1.0 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4.0
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}: choose one of "
                     f"{', '.join(linear + ('tanh', 'relu', 'leaky_relu', 'selu'))}")


def _fan(shape, mode: str) -> int:
    fan_in, fan_out = fan_in_and_fan_out(shape)
    return fan_in if mode == "fan_in" else fan_out


def _empty_or(shape, draw):
    """Zero-element shapes have no fan (division by zero): they are returned empty."""
    return np.zeros(shape) if math.prod(shape) == 0 else draw()


# -- constant fills -----------------------------------------------------------------------
def zeros() -> Initializer:
    """All zeros: w = 0.

    Example:
        >>> b = gd.param("b", (128,), init=gd.init.zeros())
    """
    return Initializer("zeros", lambda shape, rng: 0.0, random=False)


def ones() -> Initializer:
    """All ones: w = 1.

    Example:
        >>> gamma = gd.param("gamma", (128,), init=gd.init.ones())
    """
    return Initializer("ones", lambda shape, rng: 1.0, random=False)


def constant(value) -> Initializer:
    """Every element the same value: w = value.

    Example:
        >>> b = gd.param("b", (128,), init=gd.init.constant(0.1))
    """
    return Initializer("constant", lambda shape, rng: np.asarray(value), random=False,
                       value=value)


# -- plain distributions ------------------------------------------------------------------
def uniform(low: float = -0.05, high: float = 0.05) -> Initializer:
    """Uniform draws: w ~ U(low, high).

    Example:
        >>> W = gd.param("W", (64, 128), init=gd.init.uniform(-0.1, 0.1))
    """
    if not low <= high:
        raise ValueError(f"uniform needs low <= high, got low={low!r}, high={high!r}")
    return Initializer("uniform", lambda shape, rng: rng.uniform(low, high, shape),
                       low=low, high=high)


def normal(mean: float = 0.0, std: float = 0.05) -> Initializer:
    """Gaussian draws: w ~ N(mean, std^2).

    Example:
        >>> W = gd.param("W", (64, 128), init=gd.init.normal(std=0.01))
    """
    if std < 0:
        raise ValueError(f"normal needs std >= 0, got {std!r}")
    return Initializer("normal", lambda shape, rng: rng.normal(mean, std, shape),
                       mean=mean, std=std)


# -- scaled by the fans -------------------------------------------------------------------
def xavier_uniform(gain: float = 1.0) -> Initializer:
    """Glorot uniform: w ~ U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out)).

    The variance is gain^2 * 2 / (fan_in + fan_out), as `torch.nn.init.xavier_uniform_`.

    Example:
        >>> W = gd.param("W", (64, 128), init=gd.init.xavier_uniform())
    """
    def draw(shape, rng):
        def sample():
            fan_in, fan_out = fan_in_and_fan_out(shape)
            bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
            return rng.uniform(-bound, bound, shape)
        return _empty_or(shape, sample)
    return Initializer("xavier_uniform", draw, gain=gain)


def xavier_normal(gain: float = 1.0) -> Initializer:
    """Glorot normal: w ~ N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out)).

    Example:
        >>> W = gd.param("W", (128, 10), init=gd.init.xavier_normal())
    """
    def draw(shape, rng):
        def sample():
            fan_in, fan_out = fan_in_and_fan_out(shape)
            return rng.normal(0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), shape)
        return _empty_or(shape, sample)
    return Initializer("xavier_normal", draw, gain=gain)


def he_uniform(nonlinearity: str = "relu", a: float = 0.0,
               mode: str = "fan_in") -> Initializer:
    """He (Kaiming) uniform: w ~ U(-b, b), b = gain * sqrt(3 / fan), gain = sqrt(2) for relu.

    As `torch.nn.init.kaiming_uniform_`; `a` is the leaky_relu slope (gain sqrt(2/(1+a^2))),
    `fan` is fan_in (default) or fan_out. The variance is gain^2 / fan.

    Example:
        >>> W = gd.param("W", (64, 128), init=gd.init.he_uniform())
    """
    _fan_mode_check(mode)
    gain = calculate_gain(nonlinearity, a)

    def draw(shape, rng):
        def sample():
            bound = gain * math.sqrt(3.0 / _fan(shape, mode))
            return rng.uniform(-bound, bound, shape)
        return _empty_or(shape, sample)
    return Initializer("he_uniform", draw, nonlinearity=nonlinearity, a=a, mode=mode)


def he_normal(nonlinearity: str = "relu", a: float = 0.0, mode: str = "fan_in") -> Initializer:
    """He (Kaiming) normal: w ~ N(0, std^2), std = gain / sqrt(fan), gain = sqrt(2) for relu.

    As `torch.nn.init.kaiming_normal_`; `a` is the leaky_relu slope, `fan` is fan_in (default)
    or fan_out.

    Example:
        >>> K = gd.param("K", (16, 3, 3, 3), init=gd.init.he_normal())
    """
    _fan_mode_check(mode)
    gain = calculate_gain(nonlinearity, a)

    def draw(shape, rng):
        def sample():
            return rng.normal(0.0, gain / math.sqrt(_fan(shape, mode)), shape)
        return _empty_or(shape, sample)
    return Initializer("he_normal", draw, nonlinearity=nonlinearity, a=a, mode=mode)


def _fan_mode_check(mode: str) -> None:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
