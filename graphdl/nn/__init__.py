"""gd.nn: layers built as graphs of graphdl's ops, each with its params and a train/eval form.

    model = gd.nn.Sequential(
        gd.nn.Conv2D(1, 16, 3, padding=1), gd.nn.BatchNorm(16), gd.relu, gd.nn.MaxPool2D(2),
        gd.nn.Flatten(), gd.nn.Dropout(0.3), gd.nn.Dense(16 * 4 * 4, 10))
    logits = model(x, training=True)                       # the training form
    loss = gd.losses.cross_entropy(logits, y)
    step = gd.function([x, y], [loss], updates=opt.updates(loss, model.params())
                       + model.updates())                  # + running stats, dropout steps
    predict = gd.function([x], gd.argmax(model(x), 1))     # the eval form (training=False)

See graphdl/nn/module.py for the conventions (names, training, updates).
"""

from __future__ import annotations

from graphdl.nn.blocks import Inception, Residual, Sequential
from graphdl.nn.conv import (
                             Conv1D,
                             Conv2D,
                             Conv3D,
                             ConvTranspose1D,
                             ConvTranspose2D,
                             ConvTranspose3D,
                             DepthwiseSeparableConv2D,
                             LocallyConnected1D,
                             LocallyConnected2D,
)
from graphdl.nn.deform import DeformableConv2D
from graphdl.nn.dropout import DropBlock, DropConnect, Dropout, GaussianDropout, SpatialDropout
from graphdl.nn.layers import Activation, Dense, Flatten, Maxout
from graphdl.nn.module import Module, reset_names, torch_bias_init, torch_weight_init
from graphdl.nn.norm import BatchNorm, GroupNorm, InstanceNorm, LayerNorm
from graphdl.nn.pool import (
                             AvgPool1D,
                             AvgPool2D,
                             AvgPool3D,
                             GlobalAvgPool,
                             GlobalMaxPool,
                             MaxPool1D,
                             MaxPool2D,
                             MaxPool3D,
)
from graphdl.nn.recurrent import GRU, LSTM, RNN

__all__ = [
    "GRU", "LSTM", "RNN", "Activation", "AvgPool1D", "AvgPool2D", "AvgPool3D", "BatchNorm",
    "Conv1D", "Conv2D", "Conv3D", "ConvTranspose1D", "ConvTranspose2D", "ConvTranspose3D",
    "DeformableConv2D",
    "Dense", "DepthwiseSeparableConv2D", "DropBlock", "DropConnect", "Dropout", "Flatten",
    "GaussianDropout", "GlobalAvgPool", "GlobalMaxPool", "GroupNorm", "Inception",
    "InstanceNorm", "LayerNorm", "LocallyConnected1D", "LocallyConnected2D", "MaxPool1D",
    "MaxPool2D", "MaxPool3D", "Maxout", "Module", "Residual", "Sequential", "SpatialDropout",
    "reset_names", "torch_bias_init", "torch_weight_init",
]
