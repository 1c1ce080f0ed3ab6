"""Recurrent networks as composites over gd.scan: rnn (course eq. 60), lstm (eqs. 61-66), gru.

Conventions are PyTorch's (API.md, "Recurrence"): inputs are batch-first (N, T, features);
weights have torch.nn.RNN/LSTM/GRU's layouts, W_ih (G*H, I) and W_hh (G*H, H) with the gates
stacked in the order i, f, g, o (LSTM) or r, z, n (GRU); outputs are (N, T, D*H) and the final
states (N, H), or (L*D, N, H) for stacked or bidirectional networks.

One layer and direction is one scan whose body is one time step (traced once: the graph and
the compiled code do not grow with T). W.T and b_ih + b_hh are computed outside the loop
(gd.scan lifts them as loop constants). Weights given as tensors make one layer; lists give
num_layers x num_directions layers in PyTorch's order (l0, l0_reverse, l1, l1_reverse, ...).
A bidirectional layer runs a second scan over the reversed time axis and concatenates the
two outputs on the feature axis, as PyTorch does.
"""

from __future__ import annotations

from graphdl.errors import shape_error
from graphdl.graph import as_tensor, constant
from graphdl.ops.elementwise import apply
from graphdl.ops.indexing import concat
from graphdl.ops.scan import scan
from graphdl.ops.structured import broadcast_to, reshape, transpose

_ACTIVATIONS = {"tanh": "tanh", "relu": "relu"}


def _sigmoid(x):
    return apply("sigmoid", x)


def _tanh(x):
    return apply("tanh", x)


# -- cells: one time step, (carries, x_t, weights) -> new carries; ys = [new h] ---------------------
def _rnn_cell(nonlinearity):
    act = _ACTIVATIONS[nonlinearity]

    def cell(carry, x, w):
        (h,) = carry
        return [apply(act, _affine(x, h, w))]
    return cell


def _lstm_cell(carry, x, w):
    """Course eqs. 61-66 with PyTorch's gate order i, f, g, o."""
    h, c = carry
    a = _affine(x, h, w)
    H = h.shape[-1]
    i, f = _sigmoid(a[:, :H]), _sigmoid(a[:, H:2 * H])
    g, o = _tanh(a[:, 2 * H:3 * H]), _sigmoid(a[:, 3 * H:])
    c_new = f * c + i * g
    return [o * _tanh(c_new), c_new]


def _gru_cell(carry, x, w):
    """PyTorch's GRU: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) n + z h."""
    (h,) = carry
    H = h.shape[-1]
    gi = x @ w["Wi"] if w["bi"] is None else x @ w["Wi"] + w["bi"]
    gh = h @ w["Wh"] if w["bh"] is None else h @ w["Wh"] + w["bh"]
    r = _sigmoid(gi[:, :H] + gh[:, :H])
    z = _sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
    n = _tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
    return [n + z * (h - n)]


def _affine(x, h, w):
    a = x @ w["Wi"] + h @ w["Wh"]
    return a if w["b"] is None else a + w["b"]


def _weights(W_ih, W_hh, b_ih, b_hh, gates, H, I, split_bias):
    """The loop constants of one layer: transposed weights and the (summed) biases."""
    W_ih, W_hh = as_tensor(W_ih), as_tensor(W_hh)
    if W_ih.shape != (gates * H, I) or W_hh.shape != (gates * H, H):
        raise shape_error(f"recurrent weights must be W_ih ({gates * H}, {I}) and W_hh "
                          f"({gates * H}, {H}) (PyTorch's layout), got {W_ih.shape} and "
                          f"{W_hh.shape}")
    w = {"Wi": transpose(W_ih), "Wh": transpose(W_hh)}
    biases = [as_tensor(b) for b in (b_ih, b_hh) if b is not None]
    for b in biases:
        if b.shape != (gates * H,):
            raise shape_error(f"recurrent biases must have shape ({gates * H},), got {b.shape}")
    if split_bias:
        w["bi"] = None if b_ih is None else as_tensor(b_ih)
        w["bh"] = None if b_hh is None else as_tensor(b_hh)
    else:
        w["b"] = None if not biases else biases[0] if len(biases) == 1 else \
            biases[0] + biases[1]
    return w


# -- the stack of layers ------------------------------------------------------------------------------
def _as_layers(value, n):
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"expected {n} tensors (num_layers x directions), got {len(value)}")
        return list(value)
    return [value] * n if value is None else [value]


def _run(kind, x, states, W_ih, W_hh, b_ih, b_hh, bidirectional, bptt, nonlinearity="tanh"):
    """(outputs (N, T, D*H), final carries per layer and direction) of a stacked network."""
    gates, cell = {"rnn": (1, _rnn_cell(nonlinearity)), "lstm": (4, _lstm_cell),
                   "gru": (3, _gru_cell)}[kind]
    x = as_tensor(x)
    if x.ndim != 3 or not isinstance(x.shape[1], int):
        raise shape_error(f"{kind}: x must be (N, T, features) with a static T, got {x.shape}")
    stacked = isinstance(W_ih, (list, tuple))
    D = 2 if bidirectional else 1
    if bidirectional and not stacked:
        raise ValueError(f"{kind}(bidirectional=True) takes lists of weights: forward and "
                         "reverse, per layer")
    count = len(W_ih) if stacked else 1
    if count % D:
        raise ValueError(f"{kind}: {count} weight sets is not a multiple of {D} directions")
    W_hh, b_ih, b_hh = (_as_layers(v, count) for v in (W_hh, b_ih, b_hh))
    W_ih = list(W_ih) if stacked else [W_ih]
    H = as_tensor(W_hh[0]).shape[-1]
    xs = transpose(x, (1, 0, 2))                      # time-major: scan runs over axis 0
    finals = []
    for layer in range(count // D):
        outs = []
        for d in range(D):
            k = layer * D + d
            w = _weights(W_ih[k], W_hh[k], b_ih[k], b_hh[k], gates, H, xs.shape[-1],
                         kind == "gru")
            def step(carry, xt, w=w):
                new = cell(carry, xt[0], w)
                return new, [new[0]]
            last, (ys,) = scan(step, states(k, x, H, count), [xs], reverse=d == 1, bptt=bptt)
            outs.append(ys)
            finals.append(last)
        xs = outs[0] if D == 1 else concat(outs, axis=2)
    return transpose(xs, (1, 0, 2)), finals, stacked


def _initial(h0):
    """states(k, x, H, count) -> the initial carry of layer/direction k of `count`, from a
    user's h0 ((N, H) for one layer, else (L*D, N, H) as PyTorch's) or zeros."""
    def states(k, x, H, count):
        if h0 is None:
            return [broadcast_to(constant(0.0, x.dtype), (x.shape[0], H))]
        h = as_tensor(h0)
        want = (x.shape[0], H) if count == 1 and h.ndim == 2 else (count, x.shape[0], H)
        if h.shape != want:
            raise shape_error(f"initial state: expected shape {want}, got {h.shape}")
        return [h if h.ndim == 2 else h[k]]
    return states


def _stack_states(values):
    """(L*D, N, H) from per-layer (N, H) tensors."""
    return concat([reshape(v, (1,) + v.shape) for v in values], axis=0)


def rnn(x, h0, W_ih, W_hh, b_ih=None, b_hh=None, nonlinearity: str = "tanh",
        bidirectional: bool = False, bptt: int | None = None):
    """Elman RNN over a batch-first sequence (course eq. 60, PyTorch's torch.nn.RNN):

    h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)   (nonlinearity "tanh" or "relu")

    Returns (outputs (N, T, D*H), h_n): h_n is (N, H) for one layer given as tensors, else
    (L*D, N, H) with the weights given as lists (PyTorch's order). h0 may be None (zeros).
    `bptt=k` truncates backpropagation through time to k steps.

    Example:
        >>> out, h_T = gd.rnn(x, None, W_ih, W_hh, b_ih, b_hh)
        >>> logits = h_T @ W_out                    # many-to-one (or out[:, -1])
    """
    if nonlinearity not in _ACTIVATIONS:
        raise ValueError(f"rnn: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    out, finals, stacked = _run("rnn", x, _initial(h0), W_ih, W_hh, b_ih, b_hh,
                                bidirectional, bptt, nonlinearity)
    hs = [f[0] for f in finals]
    return out, (_stack_states(hs) if stacked else hs[0])


def lstm(x, h0, c0, W_ih, W_hh, b_ih=None, b_hh=None, bidirectional: bool = False,
         bptt: int | None = None):
    """LSTM over a batch-first sequence (course eqs. 61-66; PyTorch's torch.nn.LSTM, gates
    i, f, g, o stacked in W_ih (4H, I) and W_hh (4H, H)):

    a = x_t W_ih^T + b_ih + h W_hh^T + b_hh;  i, f, o = sigmoid(a_i, a_f, a_o), g = tanh(a_g)
    c_t = f * c_{t-1} + i * g;  h_t = o * tanh(c_t)

    Returns (outputs (N, T, D*H), (h_n, c_n)), shaped as in `rnn`. h0, c0 may be None (zeros).
    Long sequences (T in the hundreds) drive vanishing gradients into float32 denormals,
    which the CPU computes 10-100x slower: `gd.set_flush_denormal(True)` before compiling
    flushes them to zero (at T = 512 a W6-sized step went from 717 to 63 ms).

    Example:
        >>> out, (h_T, c_T) = gd.lstm(x, None, None, W_ih, W_hh, b_ih, b_hh)
        >>> logits = h_T @ W_out + b_out
    """
    def states(k, x, H, count):
        return _initial(h0)(k, x, H, count) + _initial(c0)(k, x, H, count)
    out, finals, stacked = _run("lstm", x, states, W_ih, W_hh, b_ih, b_hh, bidirectional,
                                bptt)
    hs, cs = [f[0] for f in finals], [f[1] for f in finals]
    if stacked:
        return out, (_stack_states(hs), _stack_states(cs))
    return out, (hs[0], cs[0])


def gru(x, h0, W_ih, W_hh, b_ih=None, b_hh=None, bidirectional: bool = False,
        bptt: int | None = None):
    """GRU over a batch-first sequence, PyTorch's variant (torch.nn.GRU, gates r, z, n):

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr);  z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn));  h_t = (1 - z) * n + z * h_{t-1}

    Returns (outputs (N, T, D*H), h_n), shaped as in `rnn`. h0 may be None (zeros).

    Example:
        >>> out, h_T = gd.gru(x, None, W_ih, W_hh, b_ih, b_hh)
    """
    out, finals, stacked = _run("gru", x, _initial(h0), W_ih, W_hh, b_ih, b_hh,
                                bidirectional, bptt)
    hs = [f[0] for f in finals]
    return out, (_stack_states(hs) if stacked else hs[0])


__all__ = ["gru", "lstm", "rnn"]
