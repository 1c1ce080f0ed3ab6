"""gd.scan on the reference backend: semantics against NumPy loops, the traced body, gradients
(finite differences in float64, second order, truncated BPTT) and errors."""

import numpy as np
import pytest

import graphdl as gd
from graphdl.ops.scan_grad import merge_unslices

RNG = np.random.default_rng(7)


def _rnn_step(W):
    def step(carry, xs):
        h = gd.tanh(carry[0] @ W + xs[0])
        return [h], [h * 2.0]
    return step


def _numpy_rnn(h, W, x, reverse=False):
    ys = np.empty(x.shape)
    for t in (range(len(x) - 1, -1, -1) if reverse else range(len(x))):
        h = np.tanh(h @ W + x[t])
        ys[t] = 2 * h
    return h, ys


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_matches_a_numpy_loop(reverse):
    x = gd.input("x", (6, None, 3), "float64")
    h0 = gd.input("h0", (None, 3), "float64")
    W = gd.param("W", RNG.standard_normal((3, 3)))
    (hT,), (ys,) = gd.scan(_rnn_step(W), [h0], [x], reverse=reverse)
    assert hT.shape == h0.shape and ys.shape == (6, gd.Dim("batch"), 3)
    xv, hv = RNG.standard_normal((6, 4, 3)), RNG.standard_normal((4, 3))
    got = gd.function([x, h0], [hT, ys], backend="reference")(xv, hv)
    want = _numpy_rnn(hv, W.value, xv, reverse)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-12)


def test_several_carries_and_ys_and_an_int_counter():
    x = gd.input("x", (5, 2), "float64")

    def step(carry, xs):
        total, count, prod = carry
        return [total + xs[0], count + 1, prod * xs[0]], [total, prod.sum()]
    init = [gd.constant(np.zeros(2)), gd.constant(0), gd.constant(np.ones(2))]
    (total, count, prod), (before, psum) = gd.scan(step, init, [x])
    assert count.dtype == "int64"
    xv = RNG.standard_normal((5, 2))
    out = gd.function([x], [total, count, prod, before, psum], backend="reference")(xv)
    np.testing.assert_allclose(out[0], xv.sum(0))
    assert out[1] == 5
    np.testing.assert_allclose(out[2], xv.prod(0))
    np.testing.assert_allclose(out[3], np.concatenate([[0 * xv[0]], np.cumsum(xv, 0)[:-1]]))
    np.testing.assert_allclose(out[4], np.concatenate([[2.0], np.cumprod(xv, 0).sum(1)[:-1]]))


def test_no_xs_needs_length_and_counts_steps():
    (n,), _ = gd.scan(lambda c, xs: ([c[0] * 2.0], []), [gd.constant(1.0, "float64")], [],
                      length=10)
    assert gd.function([], n, backend="reference")() == 1024.0
    with pytest.raises(gd.ShapeError):
        gd.scan(lambda c, xs: (c, []), [gd.constant(1.0)], [])


def test_the_graph_does_not_grow_with_T():
    sizes = []
    for T in (3, 30, 300):
        x = gd.input("x", (T, None, 4))
        W = gd.param("W", np.eye(4, dtype=np.float32))
        (h,), _ = gd.scan(_rnn_step(W), [gd.input("h0", (None, 4))], [x])
        loss = (h * h).sum()
        sizes.append(len(gd.Graph([loss] + gd.grad(loss, [W, x])).nodes))
    assert sizes[0] == sizes[1] == sizes[2]


def test_outside_tensors_become_consts_and_unused_xs_are_dropped():
    W = gd.param("W", np.eye(3))
    b = gd.param("b", np.zeros(3))
    x, unused = gd.input("x", (4, 3), "float64"), gd.input("u", (4, 7), "float64")
    (h,), _ = gd.scan(lambda c, xs: ([c[0] @ W.T + (b + 1.0) + xs[0] * 0.5], []),
                      [gd.constant(np.zeros((1, 3)))], [x, unused])
    node = h.inputs[0]
    body = node.attr("body")
    assert body.n_x == 1 and node.inputs[1] is x
    consts = node.inputs[2:]
    assert {c.op for c in consts} == {"transpose", "add"}   # W.T and b + 1: hoisted, once
    leaves = [n for n in gd.Graph(body.outputs).nodes if n.is_leaf]
    assert all(n.op in ("input", "constant") for n in leaves)
    assert all(n.op != "constant" or n.value.size <= 16 for n in leaves)


def test_equal_bodies_are_one_node_and_the_body_repr_is_canonical():
    W = gd.param("W", np.eye(3, dtype=np.float32))
    x = gd.input("x", (4, None, 3))
    h0 = gd.input("h0", (None, 3))
    a = gd.scan(_rnn_step(W), [h0], [x])[0][0]
    b = gd.scan(_rnn_step(W), [h0], [x])[0][0]
    assert a is b                                   # hash-consed: same op, inputs, body
    c = gd.scan(lambda cs, xs: ([gd.sigmoid(cs[0] @ W + xs[0])], []), [h0], [x])[0][0]
    assert c.inputs[0].attr("body") != a.inputs[0].attr("body")
    assert "sha256=" in repr(a.inputs[0].attr("body"))


@pytest.mark.parametrize("reverse", [False, True])
def test_gradients_match_finite_differences(reverse):
    x = gd.input("x", (5, 2, 3), "float64")
    h0 = gd.input("h0", (2, 3), "float64")
    W = gd.input("W", (3, 3), "float64")
    (hT,), (ys,) = gd.scan(_rnn_step(W), [h0], [x], reverse=reverse)
    loss = (ys * gd.constant(RNG.standard_normal((5, 2, 3)))).sum() + (hT * hT).sum()
    feed = {x: RNG.standard_normal((5, 2, 3)), h0: RNG.standard_normal((2, 3)),
            W: RNG.standard_normal((3, 3)) * 0.5}
    report = gd.check_grad(loss, [x, h0, W], feed=feed, rtol=1e-6, atol=1e-8)
    assert report, str(report)


def test_gradient_of_a_body_with_broadcast_consts_and_two_carries():
    x = gd.input("x", (4, 3, 2), "float64")
    w = gd.input("w", (2,), "float64")
    a = gd.input("a", (), "float64")

    def step(carry, xs):
        h, s = carry
        h2 = gd.sigmoid(h * w + xs[0]) + a * s
        return [h2, s + h2.sum() * 0.1], [h2.max(axis=1)]
    (h, s), (m,) = gd.scan(step, [gd.constant(np.zeros((3, 2))), a * 1.0], [x])
    loss = (h * h).sum() + s * s + (m * m).sum()
    feed = {x: RNG.standard_normal((4, 3, 2)), w: RNG.standard_normal(2), a: np.array(0.3)}
    report = gd.check_grad(loss, [x, w, a], feed=feed, rtol=1e-6, atol=1e-8)
    assert report, str(report)


def test_second_order_gradients_are_scans_too():
    x = gd.input("x", (4, 2, 3), "float64")
    W = gd.input("W", (3, 3), "float64")
    (hT,), (ys,) = gd.scan(_rnn_step(W), [gd.constant(np.zeros((2, 3)))], [x])
    gW = gd.grad((ys * ys).sum() + hT.sum(), W)
    assert any(n.op == "scan" for n in gd.Graph([gW]).nodes if n is not hT.inputs[0])
    loss2 = (gW * gW).sum()
    feed = {x: RNG.standard_normal((4, 2, 3)), W: RNG.standard_normal((3, 3)) * 0.5}
    report = gd.check_grad(loss2, [W, x], feed=feed, rtol=1e-5, atol=1e-8)
    assert report, str(report)


def _unrolled_with_cuts(W, x, h, T, k, reverse):
    ys = [None] * T
    order = range(T - 1, -1, -1) if reverse else range(T)
    for p, t in enumerate(order):
        h = gd.stop_gradient(h) if p % k == 0 and p > 0 else h
        h = gd.tanh(h @ W + x[t])
        ys[t] = h
    return h, ys


@pytest.mark.parametrize("reverse", [False, True])
def test_bptt_cuts_the_carry_gradient_every_k_steps(reverse):
    T, k = 7, 3
    x = gd.input("x", (T, 2, 3), "float64")
    W = gd.input("W", (3, 3), "float64")
    h0 = gd.input("h0", (2, 3), "float64")
    (hT,), (ys,) = gd.scan(lambda c, xs: ([gd.tanh(c[0] @ W + xs[0])],
                                          [gd.tanh(c[0] @ W + xs[0])]),
                           [h0], [x], reverse=reverse, bptt=k)
    weights = RNG.standard_normal((T, 2, 3))
    loss = (ys * weights).sum() + hT.sum()
    hU, yU = _unrolled_with_cuts(W, x, h0, T, k, reverse)
    lossU = sum((y * weights[t]).sum() for t, y in enumerate(yU)) + hU.sum()
    feed = [RNG.standard_normal((T, 2, 3)), RNG.standard_normal((3, 3)) * 0.5,
            RNG.standard_normal((2, 3))]
    got = gd.function([x, W, h0], [loss] + gd.grad(loss, [x, W, h0]),
                      backend="reference")(*feed)
    want = gd.function([x, W, h0], [lossU] + gd.grad(lossU, [x, W, h0]),
                       backend="reference")(*feed)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
    full = gd.function([x, W, h0], gd.grad(
        (gd.scan(_rnn_step(W), [h0], [x], reverse=reverse)[1][0]).sum(), W),
        backend="reference")(*feed)
    assert not np.allclose(full, got[2])             # the truncation changes the gradient


def test_lstm_style_gradients_reuse_forward_values_and_merge_gate_slices():
    H = 4
    W = gd.input("W", (H, 4 * H), "float64")
    x = gd.input("x", (5, 3, 4 * H), "float64")

    def step(carry, xs):
        h, c = carry
        a = h @ W + xs[0]
        i, f, g = gd.sigmoid(a[:, :H]), gd.sigmoid(a[:, H:2 * H]), gd.tanh(a[:, 2 * H:3 * H])
        o = gd.sigmoid(a[:, 3 * H:])
        c2 = f * c + i * g
        return [o * gd.tanh(c2), c2], []
    zeros = gd.constant(np.zeros((3, H)))
    (h, c), _ = gd.scan(step, [zeros, zeros], [x])
    loss = (h * h).sum() + c.sum()
    gW = gd.grad(loss, W)
    bwd = gW.inputs[0]
    ops = [n.op for n in gd.Graph(bwd.attr("body").outputs).nodes]
    assert ops.count("matmul") == 2                  # gh and gW: the forward is not redone
    assert "unslice" not in ops and "concat" in ops   # gate gradients are one concat
    assert "sigmoid" not in ops                      # gates come saved from the forward scan
    feed = {W: RNG.standard_normal((H, 4 * H)) * 0.3, x: RNG.standard_normal((5, 3, 4 * H))}
    report = gd.check_grad(loss, [W, x], feed=feed, rtol=1e-6, atol=1e-8)
    assert report, str(report)


def test_merge_unslices_keeps_gaps_as_zeros_and_leaves_overlaps_alone():
    a = gd.input("a", (2, 6), "float64")
    g1, g2 = gd.input("g1", (2, 2), "float64"), gd.input("g2", (2, 1), "float64")
    loss = (a[:, 0:2] * g1).sum() + (a[:, 4:5] * g2).sum()
    (ga,) = gd.grad(loss, [a])
    (merged,) = merge_unslices([ga])
    assert merged.op == "concat"
    vals = [RNG.standard_normal(s) for s in ((2, 6), (2, 2), (2, 1))]
    f = gd.function([a, g1, g2], [ga, merged], backend="reference")
    before, after = f(*vals)
    np.testing.assert_array_equal(before, after)
    overlap = (a[:, 0:3] * 2.0).sum() + (a[:, 2:4] * 3.0).sum()
    (go,) = merge_unslices(gd.grad(overlap, [a]))
    assert go.op != "concat"


def test_scan_errors_name_the_problem():
    x = gd.input("x", (4, 3))
    h = gd.constant(np.zeros(3, np.float32))
    with pytest.raises(gd.DTypeError):
        gd.scan(lambda c, xs: ([gd.cast(c[0], "float64")], []), [h], [x])
    with pytest.raises(gd.ShapeError):
        gd.scan(lambda c, xs: ([gd.concat([c[0], c[0]])], []), [h], [x])
    with pytest.raises(gd.ShapeError):
        gd.scan(lambda c, xs: (c, []), [h], [x, gd.input("y", (5, 3))])
    with pytest.raises(gd.ShapeError):
        gd.scan(lambda c, xs: (c, []), [h], [gd.input("z", (None, 3))])
    with pytest.raises(TypeError):
        gd.scan(lambda c, xs: c, [h], [x])
    with pytest.raises(ValueError):
        gd.scan(lambda c, xs: ([], []), [h], [x])
    with pytest.raises(ValueError):
        gd.scan(lambda c, xs: (c, []), [h], [x], bptt=0)
