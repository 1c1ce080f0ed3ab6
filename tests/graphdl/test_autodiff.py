"""gd.grad: broadcasting, accumulation, second derivatives, deep graphs."""

import numpy as np
import pytest

import graphdl as gd

RNG = np.random.default_rng(7)


def test_broadcast_gradients_are_summed_back():
    x = gd.input("x", (None, 3), "float64")
    b = gd.param("b", np.zeros(3))
    s = gd.param("s", np.ones((1, 3)))
    loss = ((x + b) * s).sum()
    gb, gs = gd.function([x], gd.grad(loss, [b, s]))(np.arange(6.0).reshape(2, 3))
    np.testing.assert_allclose(gb, [2, 2, 2])
    np.testing.assert_allclose(gs, [[3, 5, 7]])


def test_diamond_accumulates():
    x = gd.input("x", (), "float64")
    h = gd.sigmoid(x)
    loss = h * h + 3 * h
    g = gd.function([x], gd.grad(loss, x))(np.float64(0.3))
    s = 1 / (1 + np.exp(-0.3))
    np.testing.assert_allclose(g, (2 * s + 3) * s * (1 - s), rtol=1e-12)


def test_unused_wrt_gets_zeros():
    x = gd.input("x", (2,), "float64")
    unused = gd.param("u", np.ones((2, 3)))
    g = gd.function([x], gd.grad(x.sum(), unused))(np.ones(2))
    np.testing.assert_array_equal(g, np.zeros((2, 3)))


def test_single_and_list_wrt():
    x = gd.input("x", (2,), "float64")
    assert isinstance(gd.grad(x.sum(), x), gd.Tensor)
    assert isinstance(gd.grad(x.sum(), [x]), list)


def test_second_derivative_of_elementwise_chain():
    x = gd.input("x", (5,), "float64")
    y = (gd.tanh(x) * gd.sigmoid(2 * x)).sum()
    (g,) = gd.grad(y, [x])
    h = gd.grad(g.sum(), x)     # the diagonal of the Hessian
    xs = RNG.standard_normal(5)
    got = gd.function([x], h)(xs)
    f = lambda v: np.tanh(v) / (1 + np.exp(-2 * v))  # noqa: E731
    eps = 1e-4
    numeric = (f(xs + eps) - 2 * f(xs) + f(xs - eps)) / eps ** 2
    np.testing.assert_allclose(got, numeric, rtol=1e-5, atol=1e-6)


def test_grad_of_grad_through_matmul_matches_finite_differences():
    x = gd.input("x", (4, 3), "float64")
    W = gd.param("W", RNG.standard_normal((3, 2)))
    loss = gd.sigmoid(x @ W).sum()
    gW = gd.grad(loss, W)
    second = (gW * gW).sum()           # a scalar function of W built from the gradient
    report = gd.check_grad(second, [W], feed={x: RNG.standard_normal((4, 3))})
    assert report, str(report)


def test_deep_graph_does_not_recurse():
    x = gd.input("x", (3,), "float64")
    h = x
    for _ in range(3000):
        h = h * 1.0001 + 0.0
    g = gd.function([x], gd.grad(h.sum(), x))(np.ones(3))
    np.testing.assert_allclose(g, 1.0001 ** 3000, rtol=1e-9)


def test_where_gradient_does_not_leak_nan_from_the_unused_branch():
    x = gd.input("x", (3,), "float64")
    safe = gd.where(x > 0, gd.log(gd.maximum(x, 1e-300)), x * 0)
    g = gd.function([x], gd.grad(safe.sum(), x))(np.array([-1.0, 0.0, 2.0]))
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, [0, 0, 0.5])


def test_mlp_gradients_match_finite_differences():
    x = gd.input("x", (None, 4), "float64")
    y = gd.input("y", (None,), "int64")
    W1 = gd.param("W1", RNG.standard_normal((4, 5)) * 0.5)
    b1 = gd.param("b1", RNG.standard_normal(5) * 0.1)
    W2 = gd.param("W2", RNG.standard_normal((5, 3)) * 0.5)
    h = gd.tanh(x @ W1 + b1)
    loss = gd.losses.cross_entropy(h @ W2, y) + 1e-2 * gd.regularizers.l2([W1, W2])
    feed = {x: RNG.standard_normal((6, 4)), y: RNG.integers(0, 3, 6)}
    report = gd.check_grad(loss, [W1, b1, W2], feed=feed)
    assert report, str(report)


def test_check_grad_catches_a_wrong_gradient(monkeypatch):
    from graphdl.ops import registry
    x = gd.input("x", (3,), "float64")
    loss = gd.softplus(x).sum()
    feed = {x: RNG.standard_normal(3)}
    assert gd.check_grad(loss, [x], feed=feed)
    wrong = registry.get("sigmoid")
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry._REGISTRY["sigmoid"] = type(wrong)(**{**wrong.__dict__, "d_out": registry.Y})
    loss2 = gd.sigmoid(x).sum()
    report = gd.check_grad(loss2, [x], feed=feed)
    assert not report and report.worst.name == "x"


@pytest.mark.parametrize("loss_name", ["mse", "mae", "lq"])
def test_regression_losses_match_closed_forms(loss_name):
    p = gd.input("p", (None, 3), "float64")
    t = gd.input("t", (None, 3), "float64")
    pv, tv = RNG.standard_normal((4, 3)), RNG.standard_normal((4, 3))
    fn = {"mse": lambda: gd.losses.mse(p, t), "mae": lambda: gd.losses.mae(p, t),
          "lq": lambda: gd.losses.lq(p, t, q=1.5)}[loss_name]
    want = {"mse": np.mean((pv - tv) ** 2), "mae": np.mean(np.abs(pv - tv)),
            "lq": np.mean(np.abs(pv - tv) ** 1.5)}[loss_name]
    np.testing.assert_allclose(gd.function([p, t], fn())(pv, tv), want, rtol=1e-12)
    assert gd.check_grad(fn(), [p], feed={p: pv, t: tv})


@pytest.mark.parametrize("backend", ["reference", "llvm"])
def test_square_gradient_at_zero_is_zero_not_nan(backend):
    x = gd.input("x", (3,), "float64")
    g = gd.function([x], gd.grad((x ** 2).sum(), x), backend=backend)(np.array([0.0, 1.0, -2.0]))
    np.testing.assert_array_equal(g, [0.0, 2.0, -4.0])
