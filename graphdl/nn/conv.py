"""Convolution layers: Conv1D/2D/3D, ConvTranspose1D/2D/3D, DepthwiseSeparableConv2D and the
unshared LocallyConnected1D/2D.

Layouts and defaults are torch.nn's: inputs (N, C, *S); conv weights (out, in/groups, *K),
transposed-conv weights (in, out/groups, *K); weights ~ kaiming_uniform(a=sqrt(5)) and
biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = weight.shape[1] * prod(K) (what
torch computes for both kinds). All of them are the same in training and eval.
"""

from __future__ import annotations

import numpy as np

from graphdl.errors import shape_error
from graphdl.graph import as_tensor
from graphdl.nn.module import Module, ints, torch_bias_init, torch_weight_init
from graphdl.ops.conv import _conv_padding, conv, conv_transpose, pad, windows
from graphdl.ops.structured import reshape, sum, transpose

__all__ = [
    "Conv1D", "Conv2D", "Conv3D", "ConvTranspose1D", "ConvTranspose2D", "ConvTranspose3D",
    "DepthwiseSeparableConv2D", "LocallyConnected1D", "LocallyConnected2D",
]


def _check_groups(in_channels, out_channels, groups, what):
    if groups < 1 or in_channels % groups or out_channels % groups:
        raise ValueError(f"{what}: groups={groups} must divide in_channels={in_channels} "
                         f"and out_channels={out_channels}")


def _padding_spec(padding):
    """The padding as given (an int, ints, pairs, "same" or "valid"), lists made tuples."""
    return tuple(padding) if isinstance(padding, list) else padding


class _ConvNd(Module):
    """y = conv_d(x, W, b): see Conv1D/Conv2D/Conv3D."""

    dims = 0

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, name: str | None = None,
                 dtype="float32", weight_init=None, bias_init=None):
        super().__init__(name)
        d = self.dims
        self.in_channels, self.out_channels, self.groups = int(in_channels), \
            int(out_channels), int(groups)
        _check_groups(self.in_channels, self.out_channels, self.groups, type(self).__name__)
        self.kernel_size = ints(kernel_size, d, "kernel_size")
        self.stride, self.dilation = ints(stride, d, "stride"), ints(dilation, d, "dilation")
        self.padding = _padding_spec(padding)
        fan_in = self.in_channels // self.groups * int(np.prod(self.kernel_size))
        shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        self.weight = self.param("weight", shape, weight_init or torch_weight_init(), dtype)
        self.bias = self.param("bias", (self.out_channels,), bias_init or
                               torch_bias_init(fan_in), dtype) if bias else None

    def forward(self, x, training: bool = False):
        return conv(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                    self.groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding!r}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={self.bias is not None}")


class Conv1D(_ConvNd):
    """1-D convolution of x (N, C, L): y[n, o, p] = b[o] + sum_{c,k} W[o,c,k] xpad[n, c, ps + kd].

    W (out, in/groups, K) as torch.nn.Conv1d; padding an int, a pair, "same" or "valid".

    Example:
        >>> conv = gd.nn.Conv1D(8, 16, kernel_size=3, padding=1)
        >>> h = conv(x)                           # (N, 8, L) -> (N, 16, L)
    """

    dims = 1


class Conv2D(_ConvNd):
    """2-D convolution of x (N, C, H, W): y[n,o,p] = b[o] + sum_{c,k} W[o,c,k] xpad[n, c, ps + kd].

    W (out, in/groups, KH, KW) as torch.nn.Conv2d; groups == in_channels is depthwise.

    Example:
        >>> conv = gd.nn.Conv2D(1, 16, kernel_size=3, padding=1)
        >>> h = conv(x)                           # (N, 1, 8, 8) -> (N, 16, 8, 8)
    """

    dims = 2


class Conv3D(_ConvNd):
    """3-D convolution of x (N, C, D, H, W): y[n,o,p] = b[o] + sum_{c,k} W[o,c,k] xpad[n,c,ps + kd].

    W (out, in/groups, KD, KH, KW) as torch.nn.Conv3d.

    Example:
        >>> conv = gd.nn.Conv3D(2, 4, kernel_size=3, padding="same")
        >>> h = conv(x)                           # (N, 2, D, H, W) -> (N, 4, D, H, W)
    """

    dims = 3


class _ConvTransposeNd(Module):
    """y = conv_transpose_d(x, W, b): see ConvTranspose1D/2D/3D."""

    dims = 0

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 output_padding=0, groups: int = 1, bias: bool = True, dilation=1,
                 name: str | None = None, dtype="float32", weight_init=None, bias_init=None):
        super().__init__(name)
        d = self.dims
        self.in_channels, self.out_channels, self.groups = int(in_channels), \
            int(out_channels), int(groups)
        _check_groups(self.in_channels, self.out_channels, self.groups, type(self).__name__)
        self.kernel_size = ints(kernel_size, d, "kernel_size")
        self.stride, self.dilation = ints(stride, d, "stride"), ints(dilation, d, "dilation")
        self.padding = _padding_spec(padding)
        self.output_padding = ints(output_padding, d, "output_padding")
        fan_in = self.out_channels // self.groups * int(np.prod(self.kernel_size))
        shape = (self.in_channels, self.out_channels // self.groups) + self.kernel_size
        self.weight = self.param("weight", shape, weight_init or torch_weight_init(), dtype)
        self.bias = self.param("bias", (self.out_channels,), bias_init or
                               torch_bias_init(fan_in), dtype) if bias else None

    def forward(self, x, training: bool = False):
        return conv_transpose(x, self.weight, self.bias, self.stride, self.padding,
                              self.output_padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding!r}, "
                f"output_padding={self.output_padding}, groups={self.groups}")


class ConvTranspose1D(_ConvTransposeNd):
    """1-D transposed convolution: y[n, o, i*s + k*d - p] += sum_c W[c, o, k] x[n, c, i] (+ b[o]).

    W (in, out/groups, K) as torch.nn.ConvTranspose1d; output length
    (L - 1)*stride - 2*padding + dilation*(K - 1) + output_padding + 1.

    Example:
        >>> up = gd.nn.ConvTranspose1D(16, 8, kernel_size=2, stride=2)
        >>> h = up(x)                             # (N, 16, L) -> (N, 8, 2L)
    """

    dims = 1


class ConvTranspose2D(_ConvTransposeNd):
    """2-D transposed convolution: y[n, o, i*s + k*d - p] += sum_c W[c, o, k] x[n, c, i] (+ b[o]).

    W (in, out/groups, KH, KW) as torch.nn.ConvTranspose2d.

    Example:
        >>> up = gd.nn.ConvTranspose2D(16, 8, kernel_size=3, stride=2, padding=1, output_padding=1)
        >>> h = up(x)                             # (N, 16, H, W) -> (N, 8, 2H, 2W)
    """

    dims = 2


class ConvTranspose3D(_ConvTransposeNd):
    """3-D transposed convolution: y[n, o, i*s + k*d - p] += sum_c W[c, o, k] x[n, c, i] (+ b[o]).

    W (in, out/groups, KD, KH, KW) as torch.nn.ConvTranspose3d.

    Example:
        >>> up = gd.nn.ConvTranspose3D(4, 2, kernel_size=2, stride=2)
        >>> h = up(x)                             # (N, 4, D, H, W) -> (N, 2, 2D, 2H, 2W)
    """

    dims = 3


class DepthwiseSeparableConv2D(Module):
    """Depthwise then pointwise convolution: y = pointwise_1x1(depthwise_KxK(x, groups=C)).

    The depthwise Conv2D (in -> in * depth_multiplier, groups=in, no bias) filters each
    channel alone; the pointwise 1x1 Conv2D (-> out, with the bias) mixes channels. Its
    sub-layers are `.depthwise` and `.pointwise` (params "<name>.depthwise.weight", ...).

    Example:
        >>> sep = gd.nn.DepthwiseSeparableConv2D(16, 32, kernel_size=3, padding=1)
        >>> h = sep(x)                            # (N, 16, H, W) -> (N, 32, H, W)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, depth_multiplier: int = 1, bias: bool = True,
                 name: str | None = None, dtype="float32"):
        super().__init__(name)
        mid = int(in_channels) * int(depth_multiplier)
        self.depthwise = Conv2D(in_channels, mid, kernel_size, stride, padding, dilation,
                                groups=int(in_channels), bias=False,
                                name=f"{self.name}.depthwise", dtype=dtype)
        self.pointwise = Conv2D(mid, out_channels, 1, bias=bias,
                                name=f"{self.name}.pointwise", dtype=dtype)

    def forward(self, x, training: bool = False):
        return self.pointwise(self.depthwise(x, training=training), training=training)


class _LocallyConnectedNd(Module):
    """Unshared convolution: see LocallyConnected1D/2D."""

    dims = 0

    def __init__(self, in_channels: int, out_channels: int, input_size, kernel_size,
                 stride=1, padding=0, dilation=1, bias: bool = True, name: str | None = None,
                 dtype="float32"):
        super().__init__(name)
        d = self.dims
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.input_size = ints(input_size, d, "input_size")
        self.kernel_size = ints(kernel_size, d, "kernel_size")
        self.stride, self.dilation = ints(stride, d, "stride"), ints(dilation, d, "dilation")
        self.padding = _conv_padding(padding, d, self.kernel_size, self.dilation, self.stride,
                                     type(self).__name__)
        self.output_size = tuple(
            (s + a + b - dl * (k - 1) - 1) // st + 1
            for s, (a, b), k, st, dl in zip(self.input_size, self.padding, self.kernel_size,
                                            self.stride, self.dilation))
        if min(self.output_size) < 1:
            raise ValueError(f"{type(self).__name__}: the kernel {self.kernel_size} does not "
                             f"fit in the input {self.input_size} (after padding)")
        fan_in = self.in_channels * int(np.prod(self.kernel_size))
        init = torch_bias_init(fan_in)     # kaiming_uniform(a=sqrt(5)) is U(+-1/sqrt(fan_in))
        shape = self.output_size + (self.out_channels, self.in_channels) + self.kernel_size
        self.weight = self.param("weight", shape, init, dtype)
        self.bias = self.param("bias", (self.out_channels,) + self.output_size, init,
                               dtype) if bias else None

    def forward(self, x, training: bool = False):
        x = as_tensor(x)
        d = self.dims
        if x.ndim != d + 2 or tuple(x.shape[1:]) != (self.in_channels,) + self.input_size:
            raise shape_error(f"{self.name} expects x of shape (N, {self.in_channels}, "
                              f"{', '.join(map(str, self.input_size))}), got {x.shape}")
        n = x.shape[0]
        kk, length = int(np.prod(self.kernel_size)), int(np.prod(self.output_size))
        cols = windows(pad(x, [(0, 0), (0, 0)] + list(self.padding)), self.kernel_size,
                       self.stride, self.dilation)                        # (N, C, *K, *O)
        cols = reshape(cols, (n, 1, self.in_channels * kk, length))
        w = reshape(self.weight, (length, self.out_channels, self.in_channels * kk))
        w = transpose(w, (1, 2, 0))                                       # (O_c, C*K, L)
        y = sum(cols * w, axis=2)                                         # (N, O_c, L)
        y = reshape(y, (n, self.out_channels) + self.output_size)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, input_size={self.input_size}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}")


class LocallyConnected1D(_LocallyConnectedNd):
    """Unshared 1-D convolution: y[n, o, p] = b[o, p] + sum_{c,k} W[p, o, c, k] xpad[n, c, ps + kd].

    Each output position p has its own weights: W (L_out, out, in, K), b (out, L_out); the
    input length is fixed (`input_size`). Built as windows, an elementwise product and a sum.

    Example:
        >>> lc = gd.nn.LocallyConnected1D(4, 8, input_size=10, kernel_size=3)
        >>> h = lc(x)                             # (N, 4, 10) -> (N, 8, 8)
    """

    dims = 1


class LocallyConnected2D(_LocallyConnectedNd):
    """Unshared 2-D convolution: y[n, o, p] = b[o, p] + sum_{c,k} W[p, o, c, k] xpad[n, c, ps + kd].

    W (H_out, W_out, out, in, KH, KW): a torch conv weight per output position; b (out,
    H_out, W_out); the input size is fixed (`input_size`).

    Example:
        >>> lc = gd.nn.LocallyConnected2D(1, 8, input_size=(8, 8), kernel_size=3)
        >>> h = lc(x)                             # (N, 1, 8, 8) -> (N, 8, 6, 6)
    """

    dims = 2
