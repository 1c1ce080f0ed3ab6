"""Recurrent layers: RNN, LSTM and GRU around gd.rnn / gd.lstm / gd.gru (a scan per layer and
direction, compiled once whatever the sequence length).

Arguments, parameter names and layouts are torch.nn.RNN/LSTM/GRU's: per layer l and direction,
"<name>.weight_ih_l{l}" (G*H, I), "<name>.weight_hh_l{l}" (G*H, H), "<name>.bias_ih_l{l}",
"<name>.bias_hh_l{l}" (G*H,), with a "_reverse" suffix for the backward direction; gates i, f,
g, o (LSTM) and r, z, n (GRU); every weight ~ U(-1/sqrt(H), 1/sqrt(H)). Inputs are
batch-first (N, T, I) unless batch_first=False ((T, N, I)); states are (L*D, N, H).

A call returns (outputs, final state): outputs (N, T, D*H) and h_n (L*D, N, H), or
(h_n, c_n) for the LSTM. `dropout` applies to the outputs of every layer but the last, in
training only, as in PyTorch.
"""

from __future__ import annotations

import math

from graphdl.graph import as_tensor
from graphdl.init import uniform
from graphdl.nn.module import Module
from graphdl.ops.indexing import concat
from graphdl.ops.random import dropout, random_updates
from graphdl.ops.recurrent import gru, lstm, rnn
from graphdl.ops.structured import transpose

__all__ = ["GRU", "LSTM", "RNN"]


class _Recurrent(Module):
    """The shared machinery of RNN, LSTM and GRU: params, layers, directions, dropout."""

    gates = 1

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = True, dropout: float = 0.0,
                 bidirectional: bool = False, bptt: int | None = None,
                 name: str | None = None, dtype="float32"):
        super().__init__(name)
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.num_layers, self.bidirectional = int(num_layers), bool(bidirectional)
        self.batch_first, self.bptt = bool(batch_first), bptt
        self.dropout = float(dropout)
        if self.num_layers < 1 or not 0.0 <= self.dropout <= 1.0:
            raise ValueError(f"{type(self).__name__}: num_layers >= 1 and dropout in [0, 1] "
                             f"are needed, got {num_layers} and {dropout}")
        directions = 2 if self.bidirectional else 1
        G, H = self.gates * self.hidden_size, self.hidden_size
        init = uniform(-1.0 / math.sqrt(H), 1.0 / math.sqrt(H))
        self.bias = bool(bias)
        self.all_weights = []           # PyTorch's order: per layer and direction, ih, hh
        for layer in range(self.num_layers):
            size = self.input_size if layer == 0 else H * directions
            for d in range(directions):
                suffix = f"l{layer}" + ("_reverse" if d else "")
                self.all_weights += [self.param(f"weight_ih_{suffix}", (G, size), init, dtype),
                                     self.param(f"weight_hh_{suffix}", (G, H), init, dtype)]
                if self.bias:
                    self.all_weights += [self.param(f"bias_ih_{suffix}", (G,), init, dtype),
                                         self.param(f"bias_hh_{suffix}", (G,), init, dtype)]

    def _kind(self, which: int) -> list:
        per = 4 if self.bias else 2
        return self.all_weights[which::per] if which < per else []

    @property
    def weight_ih(self) -> list:
        """W_ih (G*H, I) of each layer and direction, in PyTorch's order."""
        return self._kind(0)

    @property
    def weight_hh(self) -> list:
        """W_hh (G*H, H) of each layer and direction."""
        return self._kind(1)

    @property
    def bias_ih(self) -> list:
        """b_ih (G*H,) of each layer and direction (empty without biases)."""
        return self._kind(2)

    @property
    def bias_hh(self) -> list:
        """b_hh (G*H,) of each layer and direction (empty without biases)."""
        return self._kind(3)

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _layer_weights(self, layer: int) -> tuple:
        """(W_ih, W_hh, b_ih, b_hh) lists of one layer's directions (None biases if none)."""
        ks = slice(layer * self.directions, (layer + 1) * self.directions)
        b_ih = self.bias_ih[ks] if self.bias_ih else None
        b_hh = self.bias_hh[ks] if self.bias_hh else None
        return self.weight_ih[ks], self.weight_hh[ks], b_ih, b_hh

    def _layers(self, x, states, run_layer, training):
        """Run the stack: run_layer(x, layer_states, weights) -> (out, finals tuple)."""
        x = as_tensor(x)
        if not self.batch_first:
            x = transpose(x, (1, 0, 2))
        D = self.directions
        finals = []
        for layer in range(self.num_layers):
            own = tuple(None if s is None else as_tensor(s)[layer * D:(layer + 1) * D]
                        for s in states)
            x, last = run_layer(x, own, self._layer_weights(layer))
            finals.append(last)
            if training and self.dropout > 0 and layer < self.num_layers - 1:
                x = dropout(x, self.dropout, True)
                self.add_updates(random_updates([x]))
        out = x if self.batch_first else transpose(x, (1, 0, 2))
        stacked = tuple(concat([f[i] for f in finals], axis=0) for i in range(len(finals[0])))
        return out, stacked

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bidirectional={self.bidirectional}, batch_first={self.batch_first}")


class RNN(_Recurrent):
    """Elman RNN (course eq. 60): h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh).

    As torch.nn.RNN. `layer(x, h0=None, training=False)` returns (outputs (N, T, D*H),
    h_n (L*D, N, H)); nonlinearity "tanh" or "relu"; the same in training and eval but for
    `dropout`.

    Example:
        >>> rnn = gd.nn.RNN(8, 32)
        >>> out, h_n = rnn(x)                     # x (N, T, 8); h_n[-1] (N, 32) many-to-one
    """

    gates = 1

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = True,
                 dropout: float = 0.0, bidirectional: bool = False, bptt: int | None = None,
                 name: str | None = None, dtype="float32"):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, bptt, name, dtype)

    def forward(self, x, h0=None, training: bool = False):
        def run_layer(x, states, weights):
            out, h = rnn(x, states[0], *weights, nonlinearity=self.nonlinearity,
                         bidirectional=self.bidirectional, bptt=self.bptt)
            return out, (h,)
        out, (h_n,) = self._layers(x, (h0,), run_layer, training)
        return out, h_n


class LSTM(_Recurrent):
    """LSTM (course eqs. 61-66): c_t = f * c_{t-1} + i * g, h_t = o * tanh(c_t).

    As torch.nn.LSTM, gates i, f, g, o stacked in that order.
    `layer(x, (h0, c0)=None, training=False)` returns (outputs (N, T, D*H), (h_n, c_n)),
    states (L*D, N, H); the same in training and eval but for `dropout`.

    Example:
        >>> lstm = gd.nn.LSTM(8, 64)
        >>> out, (h_n, c_n) = lstm(x)             # logits = head(h_n[-1])
    """

    gates = 4

    def forward(self, x, state=None, training: bool = False):
        h0, c0 = (None, None) if state is None else state

        def run_layer(x, states, weights):
            out, (h, c) = lstm(x, states[0], states[1], *weights,
                               bidirectional=self.bidirectional, bptt=self.bptt)
            return out, (h, c)
        out, (h_n, c_n) = self._layers(x, (h0, c0), run_layer, training)
        return out, (h_n, c_n)


class GRU(_Recurrent):
    """GRU: h_t = (1 - z) * n + z * h_{t-1}, n = tanh(W_in x_t + b_in + r * (W_hn h + b_hn)).

    torch.nn.GRU's variant, gates r, z, n. `layer(x, h0=None, training=False)` returns
    (outputs (N, T, D*H), h_n (L*D, N, H)); the same in training and eval but for `dropout`.

    Example:
        >>> gru = gd.nn.GRU(8, 32, bidirectional=True)
        >>> out, h_n = gru(x)                     # out (N, T, 64), h_n (2, N, 32)
    """

    gates = 3

    def forward(self, x, h0=None, training: bool = False):
        def run_layer(x, states, weights):
            out, h = gru(x, states[0], *weights, bidirectional=self.bidirectional,
                         bptt=self.bptt)
            return out, (h,)
        out, (h_n,) = self._layers(x, (h0,), run_layer, training)
        return out, h_n
