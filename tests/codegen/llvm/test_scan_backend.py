"""Scans on the LLVM backend against the reference interpreter, and the shape of what is
compiled: the body once, whatever T is."""

import re
import time

import numpy as np
import pytest
from graphdl.codegen.llvm import jit
from graphdl.codegen.llvm.lower import lower

import graphdl as gd
from graphdl.passes import optimize

RNG = np.random.default_rng(5)


def _both(inputs, outputs, *arrays, rtol=None, atol=None):
    ref = gd.function(inputs, outputs, backend="reference")(*arrays)
    got = gd.function(inputs, outputs, backend="llvm")(*arrays)
    for r, g in zip(ref, got):
        assert r.shape == g.shape and r.dtype == g.dtype
        tol = rtol if rtol is not None else (1e-11 if r.dtype == np.float64 else 2e-5)
        np.testing.assert_allclose(g, r, rtol=tol, atol=atol if atol is not None else tol)
    return got


@pytest.mark.parametrize("dtype,reverse", [("float32", False), ("float64", True)])
def test_scan_forward_and_gradients_match_the_reference(dtype, reverse):
    x = gd.input("x", (6, None, 3), dtype)
    h0 = gd.input("h0", (None, 3), dtype)
    W = gd.param("W", (RNG.standard_normal((3, 3)) * 0.5).astype(dtype))

    def step(carry, xs):
        h, n = carry
        h2 = gd.tanh(h @ W + xs[0])
        return [h2, n + 1], [h2 * 2.0, h2.sum(axis=1)]
    (hT, n), (ys, sums) = gd.scan(step, [h0, gd.constant(0)], [x], reverse=reverse)
    loss = (ys * ys).sum() + (hT * hT).sum() + sums.sum()
    grads = gd.grad(loss, [W, x, h0])
    xv = RNG.standard_normal((6, 4, 3)).astype(dtype)
    hv = RNG.standard_normal((4, 3)).astype(dtype)
    got = _both([x, h0], [hT, n, ys, sums, loss] + grads, xv, hv)
    assert got[1] == 6


def test_batch_first_inputs_are_read_in_place_and_unread_outputs_are_not_computed():
    x = gd.input("x", (None, 7, 3))
    W = gd.param("W", np.eye(3, dtype=np.float32))
    xs = gd.transpose(x, (1, 0, 2))
    (h,), (ys,) = gd.scan(lambda c, s: ([gd.tanh(c[0] @ W + s[0])], [c[0]]),
                          [gd.broadcast_to(gd.constant(0.0), (None, 3))], [xs])
    module, plan = lower([x], optimize([h]), [], {"batch": 4})
    text = str(module)
    assert len(re.findall(r'define void @"k\d+_scan"', text)) == 1   # one scan kernel ...
    assert plan.arena_bytes < 4 * 3 * 4 * 8 + 4096       # ... no ys, no history, no x copy
    assert "scan0.step" in text
    _both([x], [h, ys], RNG.standard_normal((4, 7, 3)).astype(np.float32))


def test_nested_scans_and_their_gradients():
    x = gd.input("x", (3, 2, 4, 2), "float64")
    W = gd.param("W", RNG.standard_normal((2, 2)) * 0.5)

    def outer(c, xs):
        (last,), (inner,) = gd.scan(
            lambda ci, xi: ([gd.tanh(ci[0] @ W + xi[0] + c[0])], [ci[0] * 2.0]),
            [c[0]], [xs[0]])
        return [last * 0.5], [inner.sum(axis=0)]
    (h,), (ys,) = gd.scan(outer, [gd.constant(np.zeros((4, 2)))], [x])
    loss = (ys * ys).sum() + (h * h).sum()
    _both([x], [h, ys] + gd.grad(loss, [W, x]), RNG.standard_normal((3, 2, 4, 2)))


def test_truncated_bptt_matches_the_reference():
    x = gd.input("x", (8, 2, 3))
    W = gd.param("W", (RNG.standard_normal((3, 3)) * 0.5).astype(np.float32))
    (h,), (ys,) = gd.scan(lambda c, s: ([gd.tanh(c[0] @ W + s[0])], [c[0]]),
                          [gd.constant(np.zeros((2, 3), np.float32))], [x], bptt=3)
    loss = (ys * ys).sum() + h.sum()
    _both([x], gd.grad(loss, [W, x]), RNG.standard_normal((8, 2, 3)).astype(np.float32))


@pytest.mark.parametrize("kind,stacked", [("rnn", False), ("lstm", False), ("gru", True)])
def test_recurrent_layers_match_the_reference(kind, stacked):
    G = {"rnn": 1, "lstm": 4, "gru": 3}[kind]
    n, T, I, H = 3, 5, 4, 6
    x = gd.input("x", (None, T, I), "float64")

    def weights(inp):
        return [gd.param(f"w{k}", RNG.uniform(-0.4, 0.4, s)) for k, s in
                enumerate(((G * H, inp), (G * H, H), (G * H,), (G * H,)))]
    layers = [weights(I), weights(I), weights(2 * H), weights(2 * H)] if stacked else \
        [weights(I)]
    args = [[w[k] for w in layers] for k in range(4)]
    args = args if stacked else [a[0] for a in args]
    if kind == "lstm":
        out, (h, _) = gd.lstm(x, None, None, *args)
    else:
        out, h = getattr(gd, kind)(x, None, *args, bidirectional=stacked)
    loss = (out * out).sum() + (h * h).sum()
    params = [w for ws in layers for w in ws]
    _both([x], [out, h, loss] + gd.grad(loss, params + [x]), RNG.standard_normal((n, T, I)))


def test_an_lstm_training_step_matches_the_reference_over_several_steps():
    T, I, H = 6, 5, 8
    results = []
    for backend in ("reference", "llvm"):
        rng = np.random.default_rng(3)
        ps = [gd.param(n, rng.uniform(-0.3, 0.3, s).astype(np.float32)) for n, s in
              (("W_ih", (4 * H, I)), ("W_hh", (4 * H, H)), ("b_ih", (4 * H,)),
               ("b_hh", (4 * H,)), ("Wd", (H, 3)), ("bd", (3,)))]
        x, y = gd.input("x", (None, T, I)), gd.input("y", (None,), "int64")
        _, (h, _) = gd.lstm(x, None, None, *ps[:4])
        loss = gd.losses.cross_entropy(h @ ps[4] + ps[5], y)
        step = gd.function([x, y], [loss], updates=gd.optim.Adam(lr=1e-2).updates(loss, ps),
                           backend=backend)
        xv, yv = rng.standard_normal((4, T, I)).astype(np.float32), np.array([0, 1, 2, 1])
        results.append([step(xv, yv)[0] for _ in range(4)] + [p.value.copy() for p in ps])
    for r, g in zip(*results):
        np.testing.assert_allclose(g, r, rtol=2e-5, atol=2e-6)


def _lstm_training_graph(T, I=28, H=128):
    ps = [gd.param(n, np.zeros(s, np.float32)) for n, s in
          (("W_ih", (4 * H, I)), ("W_hh", (4 * H, H)), ("b_ih", (4 * H,)), ("b_hh", (4 * H,)),
           ("Wd", (H, 10)), ("bd", (10,)))]
    x, y = gd.input("x", (None, T, I)), gd.input("y", (None,), "int64")
    _, (h, _) = gd.lstm(x, None, None, *ps[:4])
    loss = gd.losses.cross_entropy(h @ ps[4] + ps[5], y)
    updates = gd.optim.Adam(lr=1e-3).updates(loss, ps)
    return [x, y], [loss], list(updates)


def test_compiled_code_does_not_grow_with_T():
    sizes, seconds = [], []
    for T in (28, 128, 512):
        inputs, outputs, updates = _lstm_training_graph(T)
        start = time.perf_counter()
        values = optimize(outputs + [v for _, v in updates])
        module, plan = lower(inputs, values[:1], [(var, v) for (var, _), v in
                                                  zip(updates, values[1:])], {"batch": 64})
        text = str(module)
        if T in (28, 512):
            jit.compile_ir(text)
        seconds.append(time.perf_counter() - start)
        sizes.append((text.count("\n"), text.count("define "), len(plan.kernels)))
    print(f"lowering + LLVM at T = 28, 128, 512: {seconds[0]:.2f}, ({seconds[1]:.2f} "
          f"lowering only), {seconds[2]:.2f} s")
    assert sizes[0] == sizes[1] == sizes[2], sizes


@pytest.fixture
def two_threads():
    before = gd.get_num_threads()
    gd.set_num_threads(2)
    yield
    gd.set_num_threads(before)


def _scan_labels(f, n):
    return [k.label for k in f.program.for_sizes({"batch": n}).plan.kernels
            if k.name.endswith("_scan")]


def test_row_parallel_scans_match_the_reference(two_threads):
    n, T, I, H = 32, 5, 6, 48
    ps = [gd.param(f"w{k}", RNG.uniform(-0.3, 0.3, s)) for k, s in
          enumerate(((4 * H, I), (4 * H, H), (4 * H,), (4 * H,)))]
    x = gd.input("x", (None, T, I), "float64")
    out, (h, c) = gd.lstm(x, None, None, *ps)
    loss = (out * out).sum() + (h * c).sum()
    outputs = [out, h, loss] + gd.grad(loss, ps + [x])
    _both([x], outputs, RNG.standard_normal((n, T, I)))
    f = gd.function([x], outputs)
    f(RNG.standard_normal((n, T, I)))
    labels = _scan_labels(f, n)
    assert len(labels) == 2 and all("2 row blocks" in label for label in labels), labels


def test_bodies_that_mix_rows_stay_serial(two_threads):
    n, H = 32, 64
    x = gd.input("x", (6, None, H), "float64")
    W = gd.param("W", RNG.standard_normal((H, H)) * 0.1)
    (h,), (ys,) = gd.scan(lambda c, s: ([gd.tanh(c[0] @ W + s[0]) - c[0].mean(axis=0)],
                                        [c[0]]),
                          [gd.broadcast_to(gd.constant(0.0, "float64"), (None, H))], [x])
    loss = (ys * ys).sum() + (h * h).sum()
    outputs = [h, ys] + gd.grad(loss, [W, x])
    _both([x], outputs, RNG.standard_normal((6, n, H)))
    f = gd.function([x], outputs)
    f(RNG.standard_normal((6, n, H)))
    assert not any("row blocks" in label for label in _scan_labels(f, n))


def test_indexing_with_step_values_inside_a_body_is_refused_clearly():
    labels = gd.input("labels", (4, 3), "int64")
    (h,), _ = gd.scan(lambda c, s: ([c[0] + gd.one_hot(s[0], 5, "float64")], []),
                      [gd.constant(np.zeros((3, 5)))], [labels])
    value = np.array([[0, 1, 2]] * 4)
    np.testing.assert_array_equal(gd.function([labels], h, backend="reference")(value)[0],
                                  [4, 0, 0, 0, 0])
    with pytest.raises(NotImplementedError, match="outside the scan"):
        gd.function([labels], h, backend="llvm")(value)
