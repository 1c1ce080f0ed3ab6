"""DeformableConv2D: a convolution whose sampling grid is learned (Dai et al. 2017; v2 with
a modulation mask, Zhu et al. 2019), built on gd.deform_conv2d.
"""

from __future__ import annotations

import numpy as np

from graphdl import init as _init
from graphdl.nn.conv import Conv2D
from graphdl.nn.module import Module, ints, torch_bias_init, torch_weight_init
from graphdl.ops.deform import deform_conv2d
from graphdl.ops.elementwise import apply

__all__ = ["DeformableConv2D"]


class DeformableConv2D(Module):
    """Deformable 2-D convolution: y = deform_conv2d(x, offsets(x), W, b[, mask(x)]).

    The offsets (and, with modulated=True, the mask) come from a regular Conv2D on the input
    with the same kernel_size, stride, padding and dilation, initialised to zero as in the
    paper, so the layer starts as an ordinary convolution (times sigmoid(0) = 0.5 on the
    weighted sum when modulated). That sub-layer `.offset_conv` has 2*kh*kw output channels
    ((dy, dx) per kernel tap, torchvision's order), plus kh*kw mask logits (sigmoid) after
    them when modulated. W (out, in, kh, kw) and b are initialised as torch.nn.Conv2d's.
    groups = 1; padding is an int or a pair (no 'same').

    Example:
        >>> dconv = gd.nn.DeformableConv2D(16, 32, kernel_size=3, padding=1, modulated=True)
        >>> h = dconv(x)                          # (N, 16, H, W) -> (N, 32, H, W)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, bias: bool = True, modulated: bool = False,
                 name: str | None = None, dtype="float32"):
        super().__init__(name)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = ints(kernel_size, 2, "kernel_size")
        self.stride, self.dilation = ints(stride, 2, "stride"), ints(dilation, 2, "dilation")
        self.padding = ints(padding, 2, "padding")
        self.modulated = bool(modulated)
        kk = int(np.prod(self.kernel_size))
        fan_in = self.in_channels * kk
        self.weight = self.param("weight", (self.out_channels, self.in_channels)
                                 + self.kernel_size, torch_weight_init(), dtype)
        self.bias = self.param("bias", (self.out_channels,), torch_bias_init(fan_in),
                               dtype) if bias else None
        self.offset_conv = Conv2D(self.in_channels, (3 if self.modulated else 2) * kk,
                                  self.kernel_size, self.stride, self.padding, self.dilation,
                                  name=f"{self.name}.offset_conv", dtype=dtype,
                                  weight_init=_init.zeros(), bias_init=_init.zeros())

    def forward(self, x, training: bool = False):
        kk = int(np.prod(self.kernel_size))
        out = self.offset_conv(x, training=training)
        mask = None
        offset = out
        if self.modulated:
            offset = out[:, :2 * kk]
            mask = apply("sigmoid", out[:, 2 * kk:])
        return deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding,
                             self.dilation, mask=mask)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"bias={self.bias is not None}, modulated={self.modulated}")
