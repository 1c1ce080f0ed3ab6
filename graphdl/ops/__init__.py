"""The op catalog: public op functions and the operators of `Tensor`.

Elementwise public functions are generated from the registry (one formula each); their
docstrings carry the formula. Structured ops and composites are plain functions.
"""

from __future__ import annotations

import sympy as sp

from graphdl.graph import Tensor, as_tensor
from graphdl.ops import activations as _activations  # noqa: F401 - registers the ops
from graphdl.ops import elementwise as _ew
from graphdl.ops.composites import log_softmax, softmax
from graphdl.ops.elementwise import apply, cast, fused
from graphdl.ops.indexing import (concat, gather, getitem, one_hot, scatter_add,
                                  stop_gradient, take)
from graphdl.ops.registry import all_ops, get
from graphdl.ops.structured import (argmax, broadcast_to, dim_size, matmul, max, mean, min,
                                    reshape, sum, swapaxes, tensordot, transpose)
from graphdl.ops.conv import (conv, conv1d, conv2d, conv3d, conv_transpose, conv_transpose1d,
                             conv_transpose2d, conv_transpose3d, pad, unwindows, windows)
from graphdl.ops.norm import batch_norm, group_norm, instance_norm, layer_norm
from graphdl.ops.pool import (avg_pool, avg_pool1d, avg_pool2d, avg_pool3d, global_avg_pool,
                             global_max_pool, max_pool, max_pool1d, max_pool2d, max_pool3d)
from graphdl.ops.random import (drop_block, drop_connect, dropout, gaussian_dropout,
                               random_step, random_uniform, random_updates, spatial_dropout)
from graphdl.ops.scan import scan  # recurrence: scan.py, recurrent.py
from graphdl.ops.recurrent import gru, lstm, rnn
from graphdl.ops.deform import deform_conv2d, ps_roi_align, ps_roi_pool


def _make_public(name: str, params=()):
    op = get(name)
    arg_names = [str(s) for s in op.symbols]

    def public(*args, **kwargs):
        extra = {p: kwargs.pop(p) for p in params if p in kwargs}
        if kwargs:
            raise TypeError(f"{name}() got unexpected keyword arguments {sorted(kwargs)}")
        return apply(name, *args, **extra)

    public.__name__ = public.__qualname__ = name
    formula = sp.sstr(op.formula)
    public.__doc__ = (f"{op.doc}: {name}({', '.join(arg_names + list(params))}) = {formula}\n\n"
                      f"The derivative is derived by sympy; see gd.explain(gd.{name}).\n\n"
                      f"Example:\n    >>> y = gd.{name}({', '.join(arg_names)}"
                      f"{''.join(f', {p}=0.1' for p in params)})\n")
    public.opdef = op
    return public


exp = _make_public("exp")
log = _make_public("log")
sqrt = _make_public("sqrt")
abs = _make_public("abs")  # noqa: A001 - NumPy's name
maximum = _make_public("maximum")
minimum = _make_public("minimum")
where = _make_public("where")
add = _make_public("add")
subtract = _make_public("sub")
multiply = _make_public("mul")
divide = _make_public("div")
negative = _make_public("neg")
power = _make_public("pow")
greater = _make_public("greater")
greater_equal = _make_public("greater_equal")
less = _make_public("less")
less_equal = _make_public("less_equal")
equal = _make_public("equal")
not_equal = _make_public("not_equal")
logical_not = _make_public("logical_not")
logical_and = _make_public("logical_and")
logical_or = _make_public("logical_or")
sigmoid = _make_public("sigmoid")
tanh = _make_public("tanh")
relu = _make_public("relu")
softplus = _make_public("softplus")
swish = _make_public("swish")
prelu = _make_public("prelu")
_leaky_relu = _make_public("leaky_relu", params=("alpha",))
_elu = _make_public("elu", params=("alpha",))


def leaky_relu(x, alpha: float = 0.01) -> Tensor:
    """Leaky ReLU: x for x > 0, alpha x otherwise (course eq. 32 with its typo fixed).

    Example:
        >>> h = gd.leaky_relu(z, alpha=0.1)
    """
    return _leaky_relu(x, alpha=alpha)


def elu(x, alpha: float = 1.0) -> Tensor:
    """Exponential linear unit: x for x > 0, alpha (exp(x) - 1) otherwise (course eq. 37).

    Example:
        >>> h = gd.elu(z, alpha=1.0)
    """
    return _elu(x, alpha=alpha)


leaky_relu.opdef = get("leaky_relu")
elu.opdef = get("elu")


def _install_operators():
    """Attach Python operators and NumPy-style methods to Tensor."""
    def binary(name):
        return (lambda a, b: apply(name, a, b)), (lambda a, b: apply(name, b, a))

    for dunder, name in (("add", "add"), ("sub", "sub"), ("mul", "mul"),
                         ("truediv", "div"), ("pow", "pow")):
        fwd, rev = binary(name)
        setattr(Tensor, f"__{dunder}__", fwd)
        setattr(Tensor, f"__r{dunder}__", rev)
    Tensor.__matmul__ = lambda a, b: matmul(a, b)
    Tensor.__rmatmul__ = lambda a, b: matmul(as_tensor(b, a), a)
    Tensor.__neg__ = lambda a: apply("neg", a)
    Tensor.__pos__ = lambda a: a
    Tensor.__abs__ = lambda a: apply("abs", a)
    Tensor.__gt__ = lambda a, b: apply("greater", a, b)
    Tensor.__ge__ = lambda a, b: apply("greater_equal", a, b)
    Tensor.__lt__ = lambda a, b: apply("less", a, b)
    Tensor.__le__ = lambda a, b: apply("less_equal", a, b)
    Tensor.__invert__ = lambda a: apply("logical_not", a)
    Tensor.__getitem__ = getitem
    Tensor.T = property(lambda a: transpose(a), doc="The transpose (axes reversed).")
    Tensor.mT = property(lambda a: swapaxes(a), doc="Transpose of the last two axes.")
    Tensor.reshape = lambda a, *shape: reshape(a, *shape)
    Tensor.transpose = lambda a, *axes: transpose(a, axes or None)
    Tensor.sum = lambda a, axis=None, keepdims=False: sum(a, axis, keepdims)
    Tensor.mean = lambda a, axis=None, keepdims=False: mean(a, axis, keepdims)
    Tensor.max = lambda a, axis=None, keepdims=False: max(a, axis, keepdims)
    Tensor.min = lambda a, axis=None, keepdims=False: min(a, axis, keepdims)
    Tensor.argmax = lambda a, axis=-1: argmax(a, axis)
    Tensor.astype = lambda a, dtype: cast(a, dtype)


_install_operators()

__all__ = [
    "apply", "fused", "cast", "all_ops", "get",
    "exp", "log", "sqrt", "abs", "maximum", "minimum", "where", "add", "subtract",
    "multiply", "divide", "negative", "power", "greater", "greater_equal", "less",
    "less_equal", "equal", "not_equal", "logical_not", "logical_and", "logical_or",
    "sigmoid", "tanh", "relu", "leaky_relu", "prelu", "softplus", "swish", "elu",
    "softmax", "log_softmax", "matmul", "tensordot", "sum", "mean", "max", "min", "argmax", "dim_size",
    "reshape", "transpose", "swapaxes", "broadcast_to", "concat", "gather", "scatter_add",
    "take", "one_hot", "stop_gradient", "getitem",
    # convolution, pooling, normalization, randomness (conv.py, pool.py, norm.py, random.py)
    "windows", "unwindows", "pad", "conv", "conv1d", "conv2d", "conv3d", "conv_transpose",
    "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "max_pool", "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool", "avg_pool1d",
    "avg_pool2d", "avg_pool3d", "global_avg_pool", "global_max_pool",
    "batch_norm", "layer_norm", "instance_norm", "group_norm",
    "random_uniform", "random_step", "random_updates", "dropout", "drop_connect",
    "gaussian_dropout", "spatial_dropout", "drop_block",
    # recurrence (scan.py, recurrent.py)
    "scan", "rnn", "lstm", "gru",
    # deformable convolution, position-sensitive RoI align and pooling (deform.py)
    "deform_conv2d", "ps_roi_align", "ps_roi_pool",
]
