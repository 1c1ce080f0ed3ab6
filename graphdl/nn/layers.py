"""Basic layers: Dense, Maxout (course eq. 33), Activation and Flatten.

Dense weights are (in_features, out_features), graphdl's `x @ W` layout (gd.init's fan
table): PyTorch's nn.Linear stores the transpose, (out, in). Initialization is PyTorch's:
w ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform with a = sqrt(5)), the bias likewise.
"""

from __future__ import annotations

import functools

from graphdl import ops
from graphdl.errors import shape_error
from graphdl.graph import as_tensor
from graphdl.nn.module import Module, torch_bias_init, torch_weight_init
from graphdl.ops.structured import max, reshape

__all__ = ["Activation", "Dense", "Flatten", "Maxout"]


def _check_features(x, n: int, what: str):
    x = as_tensor(x)
    if x.ndim < 1 or x.shape[-1] != n:
        raise shape_error(f"{what} expects {n} features on the last axis, got x of shape "
                          f"{x.shape}")
    return x


class Dense(Module):
    """Fully connected layer: y = x @ W + b, W (in_features, out_features), on the last axis.

    Same in training and eval. PyTorch's init: W, b ~ U(-1/sqrt(in), 1/sqrt(in)).

    Example:
        >>> layer = gd.nn.Dense(64, 10)
        >>> logits = layer(x)                     # x (N, 64) -> (N, 10)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 name: str | None = None, dtype="float32", weight_init=None, bias_init=None):
        super().__init__(name)
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = self.param("weight", (self.in_features, self.out_features),
                                 weight_init or torch_weight_init(), dtype)
        self.bias = self.param("bias", (self.out_features,),
                               bias_init or torch_bias_init(self.in_features),
                               dtype) if bias else None

    def forward(self, x, training: bool = False):
        x = _check_features(x, self.in_features, self.name)
        y = x @ self.weight
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Maxout(Module):
    """Maxout (course eq. 33): y_o = max_j (x @ W_j + b_j)_o over k = `pieces` linear pieces.

    W is (in_features, out_features * pieces), column o * pieces + j holding piece j of
    output o; same in training and eval; PyTorch-style init U(-1/sqrt(in), 1/sqrt(in)).

    Example:
        >>> layer = gd.nn.Maxout(64, 32, pieces=3)
        >>> h = layer(x)                          # (N, 64) -> (N, 32)
    """

    def __init__(self, in_features: int, out_features: int, pieces: int = 2,
                 bias: bool = True, name: str | None = None, dtype="float32"):
        super().__init__(name)
        if int(pieces) < 1:
            raise ValueError(f"Maxout needs pieces >= 1, got {pieces}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.pieces = int(pieces)
        width = self.out_features * self.pieces
        self.weight = self.param("weight", (self.in_features, width), torch_weight_init(),
                                 dtype)
        self.bias = self.param("bias", (width,), torch_bias_init(self.in_features),
                               dtype) if bias else None

    def forward(self, x, training: bool = False):
        x = _check_features(x, self.in_features, self.name)
        z = x @ self.weight
        if self.bias is not None:
            z = z + self.bias
        z = reshape(z, tuple(z.shape[:-1]) + (self.out_features, self.pieces))
        return max(z, axis=-1)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, pieces={self.pieces}"


def _op_named(name: str):
    """The public op `gd.<name>` (an activation such as "relu")."""
    if name not in ops.__all__:
        raise ValueError(f"Activation: graphdl has no op named {name!r}")
    return getattr(ops, name)


class Activation(Module):
    """An elementwise function as a layer: y = fn(x); fn a callable or a gd op name.

    Keyword arguments are passed on (`Activation("leaky_relu", alpha=0.1)`); same in
    training and eval; no params.

    Example:
        >>> act = gd.nn.Activation("relu")       # or gd.nn.Activation(gd.tanh)
        >>> h = act(z)
    """

    def __init__(self, fn, name: str | None = None, **kwargs):
        super().__init__(name)
        fn = _op_named(fn) if isinstance(fn, str) else fn
        if not callable(fn):
            raise TypeError(f"Activation needs a callable or an op name, got {fn!r}")
        self.fn = functools.partial(fn, **kwargs) if kwargs else fn

    def forward(self, x, training: bool = False):
        return self.fn(x)

    def extra_repr(self) -> str:
        fn = self.fn.func if isinstance(self.fn, functools.partial) else self.fn
        return getattr(fn, "__name__", repr(fn))


class Flatten(Module):
    """Flatten the axes from start_axis on: y = reshape(x, x.shape[:start_axis] + (-1,)).

    (N, C, H, W) -> (N, C*H*W) by default; the same in training and eval; no params.

    Example:
        >>> flat = gd.nn.Flatten()(h)            # (N, 32, 2, 2) -> (N, 128)
    """

    def __init__(self, start_axis: int = 1, name: str | None = None):
        super().__init__(name)
        self.start_axis = int(start_axis)

    def forward(self, x, training: bool = False):
        x = as_tensor(x)
        start = self.start_axis % x.ndim if x.ndim else 0
        if start >= x.ndim - 1:
            return x
        return reshape(x, tuple(x.shape[:start]) + (-1,))

    def extra_repr(self) -> str:
        return f"start_axis={self.start_axis}"
