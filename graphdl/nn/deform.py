"""DeformableConv2D: a convolution whose sampling grid is learned (Dai et al. 2017; v2 with
a modulation mask, Zhu et al. 2019), built on gd.deform_conv2d.
"""

from __future__ import annotations

import numpy as np

from graphdl import init as _init
from graphdl.errors import shape_error
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
    weighted sum when modulated). That sub-layer `.offset_conv` has 2*offset_groups*kh*kw
    output channels ((dy, dx) per offset group and kernel tap, torchvision's order), plus
    offset_groups*kh*kw mask logits (sigmoid) after them when modulated. W (out, in/groups,
    kh, kw) and b are initialised as torch.nn.Conv2d's. `groups` splits the channels as in
    Conv2D; `offset_groups` gives each block of in_channels/offset_groups input channels its
    own sampling grid (torchvision.ops.DeformConv2d's offset groups). padding is an int or a
    pair (no 'same').

    Example:
        >>> dconv = gd.nn.DeformableConv2D(16, 32, kernel_size=3, padding=1, modulated=True,
        ...                                groups=2, offset_groups=4)
        >>> h = dconv(x)                          # (N, 16, H, W) -> (N, 32, H, W)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, bias: bool = True, modulated: bool = False,
                 name: str | None = None, dtype="float32", groups: int = 1,
                 offset_groups: int = 1):
        super().__init__(name)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.groups, self.offset_groups = int(groups), int(offset_groups)
        if self.groups < 1 or self.in_channels % self.groups or \
                self.out_channels % self.groups:
            raise shape_error(f"DeformableConv2D: groups={groups} must divide in_channels="
                              f"{in_channels} and out_channels={out_channels}")
        if self.offset_groups < 1 or self.in_channels % self.offset_groups:
            raise shape_error(f"DeformableConv2D: offset_groups={offset_groups} must divide "
                              f"in_channels={in_channels}")
        self.kernel_size = ints(kernel_size, 2, "kernel_size")
        self.stride, self.dilation = ints(stride, 2, "stride"), ints(dilation, 2, "dilation")
        self.padding = ints(padding, 2, "padding")
        self.modulated = bool(modulated)
        kk = int(np.prod(self.kernel_size))
        fan_in = self.in_channels // self.groups * kk
        self.weight = self.param("weight", (self.out_channels, self.in_channels // self.groups)
                                 + self.kernel_size, torch_weight_init(), dtype)
        self.bias = self.param("bias", (self.out_channels,), torch_bias_init(fan_in),
                               dtype) if bias else None
        self.offset_conv = Conv2D(self.in_channels,
                                  (3 if self.modulated else 2) * self.offset_groups * kk,
                                  self.kernel_size, self.stride, self.padding, self.dilation,
                                  name=f"{self.name}.offset_conv", dtype=dtype,
                                  weight_init=_init.zeros(), bias_init=_init.zeros())

    def forward(self, x, training: bool = False):
        n_off = 2 * self.offset_groups * int(np.prod(self.kernel_size))
        out = self.offset_conv(x, training=training)
        mask = None
        offset = out
        if self.modulated:
            offset = out[:, :n_off]
            mask = apply("sigmoid", out[:, n_off:])
        return deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding,
                             self.dilation, mask=mask, groups=self.groups,
                             offset_groups=self.offset_groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"groups={self.groups}, offset_groups={self.offset_groups}, "
                f"bias={self.bias is not None}, modulated={self.modulated}")
