"""RNN, LSTM and GRU layers against a NumPy loop written here (always) and torch.nn.RNN/LSTM/
GRU with copied weights (when importable); PyTorch's names, layouts and init; stacked,
bidirectional and time-major forms; dropout between layers; gradients (float64)."""

import math

import numpy as np
import pytest

import graphdl as gd
from graphdl import nn

RNG = np.random.default_rng(23)


def _ref(inputs, outputs, *arrays):
    return gd.function(inputs, outputs, backend="reference")(*arrays)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def np_cell(kind, x, h, c, Wi, Wh, bi, bh):
    """One time step of torch.nn.RNN / LSTM / GRU (gates i, f, g, o and r, z, n)."""
    gi, gh = x @ Wi.T + bi, h @ Wh.T + bh
    H = h.shape[1]
    if kind == "rnn":
        return np.tanh(gi + gh), None
    if kind == "gru":
        r, z = _sigmoid(gi[:, :H] + gh[:, :H]), _sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
        n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
        return (1 - z) * n + z * h, None
    a = gi + gh
    i, f, g, o = _sigmoid(a[:, :H]), _sigmoid(a[:, H:2 * H]), np.tanh(a[:, 2 * H:3 * H]), \
        _sigmoid(a[:, 3 * H:])
    c = f * c + i * g
    return o * np.tanh(c), c


def np_recurrent(kind, layer, xs):
    """The layer's stack over batch-first xs, by loops over layers, directions and steps."""
    D, H = layer.directions, layer.hidden_size
    hs, cs, inp = [], [], xs
    for l_index in range(layer.num_layers):
        outs = []
        for d in range(D):
            k = l_index * D + d
            weights = [p[k].value for p in (layer.weight_ih, layer.weight_hh, layer.bias_ih,
                                            layer.bias_hh)]
            h = c = np.zeros((xs.shape[0], H))
            steps = range(inp.shape[1])
            out = [None] * inp.shape[1]
            for t in (reversed(steps) if d else steps):
                h, c = np_cell(kind, inp[:, t], h, c, *weights)
                out[t] = h
            outs.append(np.stack(out, axis=1))
            hs.append(h)
            cs.append(c)
        inp = np.concatenate(outs, axis=2)
    return inp, np.stack(hs), (np.stack(cs) if kind == "lstm" else None)


LAYERS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("num_layers, bidirectional", [(1, False), (2, True)])
def test_recurrent_layers_match_a_numpy_loop(kind, num_layers, bidirectional):
    layer = LAYERS[kind](3, 4, num_layers=num_layers, bidirectional=bidirectional)
    D = 2 if bidirectional else 1
    xs = RNG.standard_normal((2, 5, 3)).astype(np.float32)
    x = gd.input("x", (None, 5, 3))
    out, state = layer(x)
    h_n, c_n = state if kind == "lstm" else (state, None)
    assert out.shape[1:] == (5, D * 4) and h_n.shape[0] == num_layers * D
    got = _ref([x], [out, h_n] + ([c_n] if c_n is not None else []), xs)
    want_out, want_h, want_c = np_recurrent(kind, layer, xs.astype(np.float64))
    np.testing.assert_allclose(got[0], want_out, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[1], want_h, rtol=1e-4, atol=1e-5)
    if c_n is not None:
        np.testing.assert_allclose(got[2], want_c, rtol=1e-4, atol=1e-5)


def test_names_layouts_and_init_follow_pytorch():
    gd.seed(4)
    layer = nn.LSTM(3, 20, num_layers=2, bidirectional=True, name="enc")
    names = [p.name for p in layer.params()]
    assert names[:4] == ["enc.weight_ih_l0", "enc.weight_hh_l0", "enc.bias_ih_l0",
                         "enc.bias_hh_l0"]
    assert names[4:6] == ["enc.weight_ih_l0_reverse", "enc.weight_hh_l0_reverse"]
    assert names[-1] == "enc.bias_hh_l1_reverse" and len(names) == 16
    assert layer.weight_ih[0].shape == (80, 3) and layer.weight_ih[2].shape == (80, 40)
    bound = 1 / math.sqrt(20)
    assert all(np.abs(p.value).max() <= bound for p in layer.params())
    assert len(nn.GRU(3, 4, bias=False).params()) == 2


def test_initial_state_and_time_major_inputs():
    layer = nn.GRU(3, 4, batch_first=False)
    xs = RNG.standard_normal((5, 2, 3)).astype(np.float32)            # (T, N, I)
    h0 = RNG.standard_normal((1, 2, 4)).astype(np.float32)
    x, h = gd.input("x", (5, None, 3)), gd.input("h", (1, None, 4))
    out, h_n = layer(x, h)
    got_out, got_h = _ref([x, h], [out, h_n], xs, h0)
    batch_first = nn.GRU(3, 4)
    for a, b in zip(batch_first.params(), layer.params()):
        a.value = b.value
    xb = gd.input("xb", (None, 5, 3))
    xs_batch_first = np.ascontiguousarray(xs.transpose(1, 0, 2))
    want_out, want_h = _ref([xb, h], list(batch_first(xb, h)), xs_batch_first, h0)
    np.testing.assert_allclose(got_out, want_out.transpose(1, 0, 2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_h, want_h, rtol=1e-5, atol=1e-6)
    lstm = nn.LSTM(3, 4)                                 # explicit zero states = the default
    c = gd.input("c", (1, None, 4))
    zeros = np.zeros((1, 2, 4), np.float32)
    xs = np.ascontiguousarray(xs.transpose(1, 0, 2))
    np.testing.assert_allclose(_ref([xb, h, c], lstm(xb, (h, c))[0], xs, zeros, zeros),
                               _ref([xb], lstm(xb)[0], xs), rtol=1e-6)


def test_dropout_between_layers_only_in_training():
    layer = nn.LSTM(3, 4, num_layers=2, dropout=0.5)
    x = gd.input("x", (None, 5, 3))
    layer(x)
    assert layer.updates() == []
    out, _ = layer(x, training=True)
    assert [v.name for v, _ in layer.updates()] == ["random_step"]
    xs = RNG.standard_normal((2, 5, 3)).astype(np.float32)
    assert not np.allclose(_ref([x], out, xs), _ref([x], layer(x)[0], xs))


def test_recurrent_layers_match_torch_with_copied_weights():
    torch = pytest.importorskip("torch")
    xs = RNG.standard_normal((2, 6, 3)).astype(np.float32)
    x = gd.input("x", (None, 6, 3))
    for kind, cls in (("rnn", torch.nn.RNN), ("lstm", torch.nn.LSTM), ("gru", torch.nn.GRU)):
        ours = LAYERS[kind](3, 4, num_layers=2, bidirectional=True, name=f"t_{kind}")
        theirs = cls(3, 4, num_layers=2, bidirectional=True, batch_first=True)
        with torch.no_grad():
            for p in ours.params():
                getattr(theirs, p.name.split(".", 1)[1]).copy_(torch.tensor(p.value))
        out, state = ours(x)
        t_out, t_state = theirs(torch.tensor(xs))
        h_n, t_h = (state[0], t_state[0]) if kind == "lstm" else (state, t_state)
        got_out, got_h = _ref([x], [out, h_n], xs)
        np.testing.assert_allclose(got_out, t_out.detach().numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got_h, t_h.detach().numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_gradients_match_finite_differences(kind):
    layer = LAYERS[kind](2, 3, bidirectional=kind == "gru", dtype="float64")
    x = gd.input("x", (2, 3, 2), "float64")
    out, state = layer(x)
    h_n = state[0] if kind == "lstm" else state
    loss = (out ** 2).sum() + h_n.sum()
    report = gd.check_grad(loss, layer.params() + [x], feed={x: RNG.standard_normal((2, 3, 2))})
    assert report, str(report)
