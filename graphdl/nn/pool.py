"""Pooling layers: MaxPool1D/2D/3D, AvgPool1D/2D/3D, GlobalAvgPool and GlobalMaxPool.

Arguments and semantics are torch.nn's (stride defaults to the kernel, padding, dilation for
max pooling, ceil_mode, count_include_pad). No params; the same in training and eval.
"""

from __future__ import annotations

from graphdl.nn.module import Module, ints
from graphdl.ops.pool import avg_pool, global_avg_pool, global_max_pool, max_pool

__all__ = [
    "AvgPool1D", "AvgPool2D", "AvgPool3D", "GlobalAvgPool", "GlobalMaxPool", "MaxPool1D",
    "MaxPool2D", "MaxPool3D",
]


class _MaxPoolNd(Module):
    dims = 0

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1,
                 ceil_mode: bool = False, name: str | None = None):
        super().__init__(name)
        d = self.dims
        self.kernel_size = ints(kernel_size, d, "kernel_size")
        self.stride = None if stride is None else ints(stride, d, "stride")
        self.padding, self.dilation = ints(padding, d, "padding"), ints(dilation, d, "dilation")
        self.ceil_mode = bool(ceil_mode)

    def forward(self, x, training: bool = False):
        return max_pool(x, self.kernel_size, self.stride, self.padding, self.dilation,
                        self.ceil_mode)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride or self.kernel_size}, "
                f"padding={self.padding}")


class MaxPool1D(_MaxPoolNd):
    """1-D max pooling of x (N, C, L): y[n, c, o] = max_k xpad[n, c, o*stride + k*dilation].

    As torch.nn.MaxPool1d (padding with -inf); stride defaults to the kernel.

    Example:
        >>> pool = gd.nn.MaxPool1D(2)
        >>> h = pool(x)                           # (N, C, L) -> (N, C, L // 2)
    """

    dims = 1


class MaxPool2D(_MaxPoolNd):
    """2-D max pooling of x (N, C, H, W): y[n, c, o] = max_k xpad[n, c, o*stride + k*dilation].

    As torch.nn.MaxPool2d; stride defaults to the kernel.

    Example:
        >>> pool = gd.nn.MaxPool2D(2)
        >>> h = pool(x)                           # (N, C, 8, 8) -> (N, C, 4, 4)
    """

    dims = 2


class MaxPool3D(_MaxPoolNd):
    """3-D max pooling of x (N, C, D, H, W): y[n, c, o] = max_k xpad[n, c, o*stride + k*dilation].

    As torch.nn.MaxPool3d; stride defaults to the kernel.

    Example:
        >>> pool = gd.nn.MaxPool3D(2)
        >>> h = pool(x)                           # (N, C, 4, 4, 4) -> (N, C, 2, 2, 2)
    """

    dims = 3


class _AvgPoolNd(Module):
    dims = 0

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override=None,
                 name: str | None = None):
        super().__init__(name)
        d = self.dims
        self.kernel_size = ints(kernel_size, d, "kernel_size")
        self.stride = None if stride is None else ints(stride, d, "stride")
        self.padding = ints(padding, d, "padding")
        self.ceil_mode, self.count_include_pad = bool(ceil_mode), bool(count_include_pad)
        self.divisor_override = divisor_override

    def forward(self, x, training: bool = False):
        return avg_pool(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                        self.count_include_pad, self.divisor_override)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride or self.kernel_size}, "
                f"padding={self.padding}")


class AvgPool1D(_AvgPoolNd):
    """1-D average pooling of x (N, C, L): y[n, c, o] = sum_k xpad[n, c, o*stride + k] / count.

    As torch.nn.AvgPool1d (count_include_pad=True: the padding counts); stride = kernel.

    Example:
        >>> pool = gd.nn.AvgPool1D(2)
        >>> h = pool(x)                           # (N, C, L) -> (N, C, L // 2)
    """

    dims = 1


class AvgPool2D(_AvgPoolNd):
    """2-D average pooling of x (N, C, H, W): y[n, c, o] = sum_k xpad[n, c, o*stride + k] / count.

    As torch.nn.AvgPool2d; stride defaults to the kernel.

    Example:
        >>> pool = gd.nn.AvgPool2D(2)
        >>> h = pool(x)                           # (N, C, 8, 8) -> (N, C, 4, 4)
    """

    dims = 2


class AvgPool3D(_AvgPoolNd):
    """3-D average pooling of x (N, C, D, H, W): y[n, c, o] = sum_k xpad[n, c, o*s + k] / count.

    As torch.nn.AvgPool3d; stride defaults to the kernel.

    Example:
        >>> pool = gd.nn.AvgPool3D(2)
        >>> h = pool(x)                           # (N, C, 4, 4, 4) -> (N, C, 2, 2, 2)
    """

    dims = 3


class GlobalAvgPool(Module):
    """Global average pooling: y[n, c] = mean_s x[n, c, s] over every spatial axis of (N, C, *S).

    keepdims=True keeps (N, C, 1, ...). No params; the same in training and eval.

    Example:
        >>> features = gd.nn.GlobalAvgPool()(h)   # (N, C, H, W) -> (N, C)
    """

    def __init__(self, keepdims: bool = False, name: str | None = None):
        super().__init__(name)
        self.keepdims = bool(keepdims)

    def forward(self, x, training: bool = False):
        return global_avg_pool(x, self.keepdims)


class GlobalMaxPool(Module):
    """Global max pooling: y[n, c] = max_s x[n, c, s] over every spatial axis of (N, C, *S).

    keepdims=True keeps (N, C, 1, ...). No params; the same in training and eval.

    Example:
        >>> features = gd.nn.GlobalMaxPool()(h)   # (N, C, H, W) -> (N, C)
    """

    def __init__(self, keepdims: bool = False, name: str | None = None):
        super().__init__(name)
        self.keepdims = bool(keepdims)

    def forward(self, x, training: bool = False):
        return global_max_pool(x, self.keepdims)
