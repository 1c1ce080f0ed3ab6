"""gd.rnn, gd.lstm, gd.gru against a NumPy loop written here (always) and torch.nn.RNN/LSTM/GRU
(forward and gradients, when torch is importable); finite differences in float64."""

import numpy as np
import pytest

import graphdl as gd

RNG = np.random.default_rng(11)
N, T, I, H = 3, 5, 4, 3
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _numpy_cell(kind, x, h, c, Wi, Wh, bi, bh):
    """One step of PyTorch's cells, written directly from their documented equations."""
    gi, gh = x @ Wi.T + bi, h @ Wh.T + bh
    if kind == "rnn":
        return np.tanh(gi + gh), None
    if kind == "gru":
        r = _sigmoid(gi[:, :H] + gh[:, :H])
        z = _sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
        n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
        return (1 - z) * n + z * h, None
    a = gi + gh
    i, f, g, o = (_sigmoid(a[:, :H]), _sigmoid(a[:, H:2 * H]), np.tanh(a[:, 2 * H:3 * H]),
                  _sigmoid(a[:, 3 * H:]))
    c = f * c + i * g
    return o * np.tanh(c), c


def _numpy_network(kind, x, weights, layers, directions):
    """(outputs (N, T, D*H), final h per layer/direction, final c) of a stacked network."""
    hs, cs = [], []
    for layer in range(layers):
        outs = []
        for d in range(directions):
            Wi, Wh, bi, bh = weights[layer * directions + d]
            h, c = np.zeros((x.shape[0], H)), np.zeros((x.shape[0], H))
            out = np.zeros((x.shape[0], x.shape[1], H))
            for t in (range(x.shape[1] - 1, -1, -1) if d else range(x.shape[1])):
                h, c = _numpy_cell(kind, x[:, t], h, c, Wi, Wh, bi, bh)
                out[:, t] = h
            outs.append(out)
            hs.append(h)
            cs.append(c)
        x = np.concatenate(outs, axis=2)
    return x, np.stack(hs), np.stack(cs) if kind == "lstm" else None


def _weights(kind, layers, directions):
    G, out = GATES[kind], []
    for layer in range(layers):
        inp = I if layer == 0 else H * directions
        for _ in range(directions):
            out.append([RNG.uniform(-0.6, 0.6, s) for s in
                        ((G * H, inp), (G * H, H), (G * H,), (G * H,))])
    return out


def _graph(kind, x, weights, stacked, bidirectional=False):
    params = [[gd.constant(w) for w in ws] for ws in weights]
    args = [[p[k] for p in params] for k in range(4)]
    if not stacked:
        args = [a[0] for a in args]
    if kind == "lstm":
        out, (h, c) = gd.lstm(x, None, None, *args, bidirectional=bidirectional)
        return out, h, c
    out, h = getattr(gd, kind)(x, None, *args, bidirectional=bidirectional)
    return out, h, None


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("layers,directions", [(1, 1), (2, 2)])
def test_forward_matches_a_numpy_loop(kind, layers, directions):
    weights = _weights(kind, layers, directions)
    x = gd.input("x", (None, T, I), "float64")
    stacked = (layers, directions) != (1, 1)
    out, h, c = _graph(kind, x, weights, stacked, directions == 2)
    assert out.shape == (gd.Dim("batch"), T, directions * H)
    xv = RNG.standard_normal((N, T, I))
    got = gd.function([x], [out, h] + ([c] if c is not None else []),
                      backend="reference")(xv)
    want_out, want_h, want_c = _numpy_network(kind, xv, weights, layers, directions)
    np.testing.assert_allclose(got[0], want_out, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got[1], want_h if stacked else want_h[0], rtol=1e-12)
    if c is not None:
        np.testing.assert_allclose(got[2], want_c if stacked else want_c[0], rtol=1e-12)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_gradients_match_finite_differences(kind):
    G = GATES[kind]
    x = gd.input("x", (2, T, I), "float64")
    Wi, Wh = gd.input("Wi", (G * H, I), "float64"), gd.input("Wh", (G * H, H), "float64")
    bi, bh = gd.input("bi", (G * H,), "float64"), gd.input("bh", (G * H,), "float64")
    h0 = gd.input("h0", (2, H), "float64")
    if kind == "lstm":
        out, (h, c) = gd.lstm(x, h0, h0 * 0.5, Wi, Wh, bi, bh)
        last = h + c
    else:
        out, h = getattr(gd, kind)(x, h0, Wi, Wh, bi, bh)
        last = h
    weights = gd.constant(RNG.standard_normal((2, T, H)))
    loss = (out * weights).sum() + (last * last).sum()
    wrt = [x, Wi, Wh, bi, bh, h0]
    feed = {t: RNG.uniform(-0.7, 0.7, t.shape) for t in wrt}
    report = gd.check_grad(loss, wrt, feed=feed, rtol=1e-6, atol=1e-8)
    assert report, str(report)


def test_bidirectional_gradients_match_finite_differences():
    weights = _weights("gru", 1, 2)
    x = gd.input("x", (2, T, I), "float64")
    params = [[gd.input(f"w{d}{k}", w.shape, "float64") for k, w in enumerate(ws)]
              for d, ws in enumerate(weights)]
    out, h = gd.gru(x, None, *[[p[k] for p in params] for k in range(4)], bidirectional=True)
    loss = (out * gd.constant(RNG.standard_normal((2, T, 2 * H)))).sum() + (h * h).sum()
    wrt = [x] + [p for ps in params for p in ps]
    feed = {x: RNG.standard_normal((2, T, I))}
    feed.update({p: w for ps, ws in zip(params, weights) for p, w in zip(ps, ws)})
    report = gd.check_grad(loss, wrt, feed=feed, rtol=1e-6, atol=1e-8)
    assert report, str(report)


def test_many_to_one_last_output_is_the_final_state():
    weights = _weights("lstm", 1, 1)
    x = gd.input("x", (None, T, I), "float64")
    out, h, _ = _graph("lstm", x, weights, stacked=False)
    last, hT = gd.function([x], [out[:, -1], h], backend="reference")(
        RNG.standard_normal((N, T, I)))
    np.testing.assert_array_equal(last, hT)


def test_relu_rnn_and_bad_arguments():
    weights = _weights("rnn", 1, 1)[0]
    x = gd.input("x", (None, T, I), "float64")
    _, h = gd.rnn(x, None, *[gd.constant(w) for w in weights], nonlinearity="relu")
    xv = RNG.standard_normal((N, T, I))
    hv = np.zeros((N, H))
    for t in range(T):
        hv = np.maximum(0, xv[:, t] @ weights[0].T + weights[2] + hv @ weights[1].T + weights[3])
    np.testing.assert_allclose(gd.function([x], h, backend="reference")(xv), hv, rtol=1e-12)
    W = [gd.constant(w) for w in weights]
    with pytest.raises(ValueError):
        gd.rnn(x, None, *W, nonlinearity="sigmoid")
    with pytest.raises(gd.ShapeError):
        gd.lstm(x, None, None, *W)                  # RNN-shaped weights for an LSTM
    with pytest.raises(ValueError):
        gd.gru(x, None, *W, bidirectional=True)     # one weight set for two directions
    with pytest.raises(gd.ShapeError):
        gd.rnn(x, gd.constant(np.zeros((2, N, H))), *W)


# -- PyTorch parity (skipped without torch) --------------------------------------------------------
@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)])
def test_forward_and_gradients_match_torch(kind, layers, bidirectional):
    torch = pytest.importorskip("torch")
    D = 2 if bidirectional else 1
    module = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](
        I, H, num_layers=layers, bidirectional=bidirectional, batch_first=True).double()
    xv = RNG.standard_normal((N, T, I))
    h0v = RNG.standard_normal((layers * D, N, H))
    xt, h0t = torch.tensor(xv, requires_grad=True), torch.tensor(h0v, requires_grad=True)
    out_t, state = module(xt, (h0t, h0t * 0.5) if kind == "lstm" else h0t)
    hn_t = state[0] if kind == "lstm" else state
    (out_t.pow(2).sum() + hn_t.pow(3).sum()).backward()
    names = [f"{p}_l{layer}{'_reverse' if d else ''}" for layer in range(layers)
             for d in range(D) for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    params = {n: gd.param(n, getattr(module, n).detach().numpy().copy()) for n in names}
    x = gd.input("x", (None, T, I), "float64")
    h0 = gd.input("h0", (layers * D, None, H), "float64")
    stacked = layers > 1 or bidirectional
    args = [[params[n] for n in names[k::4]] for k in range(4)]
    args = args if stacked else [a[0] for a in args]
    h0g = h0 if stacked else h0[0]
    if kind == "lstm":
        out, (hn, _) = gd.lstm(x, h0g, h0g * 0.5, *args, bidirectional=bidirectional)
    else:
        out, hn = getattr(gd, kind)(x, h0g, *args, bidirectional=bidirectional)
    loss = (out * out).sum() + (hn * hn * hn).sum()
    grads = gd.grad(loss, list(params.values()) + [x, h0])
    got = gd.function([x, h0], [out, hn] + grads, backend="reference")(xv, h0v)
    np.testing.assert_allclose(got[0], out_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got[1], hn_t.detach().numpy() if stacked else
                               hn_t.detach().numpy()[0], rtol=1e-10, atol=1e-12)
    want = [getattr(module, n).grad.numpy() for n in names] + [xt.grad.numpy(),
                                                               h0t.grad.numpy()]
    for name, g, w in zip(names + ["x", "h0"], got[2:], want):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-11, err_msg=name)
