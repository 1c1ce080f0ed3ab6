"""Normalization: batch/layer/instance/group norm against NumPy, torch and finite differences."""

import numpy as np
import pytest

import graphdl as gd

RNG = np.random.default_rng(3)

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # torch is optional: the NumPy references still run
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


def _normalized(x, axes, eps):
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    return (x - mu) / np.sqrt(var + eps)


def _run(outputs, feed):
    return gd.function(list(feed), outputs, backend="reference")(*feed.values())


def _channel(v, ndim):
    return v.reshape((-1,) + (1,) * (ndim - 2))


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (2, 3, 4, 5)])
def test_batch_norm_training_and_running_statistics(shape):
    c = shape[1]
    x = gd.input("x", (None,) + shape[1:], "float64")
    gamma, beta = gd.input("g", (c,), "float64"), gd.input("b", (c,), "float64")
    rm = gd.state("rm", np.full(c, 0.5))
    rv = gd.state("rv", np.full(c, 2.0))
    y, updates = gd.batch_norm(x, gamma, beta, rm, rv, training=True, momentum=0.3)
    xv, gv, bv = RNG.standard_normal(shape), RNG.standard_normal(c), RNG.standard_normal(c)
    f = gd.function([x, gamma, beta], y, updates=updates, backend="reference")
    got = f(xv, gv, bv)
    axes = (0,) + tuple(range(2, len(shape)))
    want = _normalized(xv, axes, 1e-5) * _channel(gv, len(shape)) + _channel(bv, len(shape))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    n = xv.size // c
    np.testing.assert_allclose(rm.value, 0.7 * 0.5 + 0.3 * xv.mean(axis=axes), rtol=1e-12)
    np.testing.assert_allclose(rv.value, 0.7 * 2.0 + 0.3 * xv.var(axis=axes) * n / (n - 1),
                               rtol=1e-12)
    y_eval, none = gd.batch_norm(x, gamma, beta, rm, rv, training=False)
    assert none == []
    got = gd.function([x, gamma, beta], y_eval, backend="reference")(xv, gv, bv)
    want = (xv - _channel(rm.value, len(shape))) / np.sqrt(_channel(rv.value, len(shape))
                                                           + 1e-5)
    np.testing.assert_allclose(got, want * _channel(gv, len(shape)) + _channel(bv, len(shape)),
                               rtol=1e-12)


@needs_torch
def test_batch_norm_matches_torch_in_train_and_eval_with_running_stats():
    xv = RNG.standard_normal((5, 4, 3, 2))
    gv, bv = RNG.standard_normal(4), RNG.standard_normal(4)
    rm_t, rv_t = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    x = gd.input("x", xv.shape, "float64")
    rm, rv = gd.state("rm", np.zeros(4)), gd.state("rv", np.ones(4))
    y, updates = gd.batch_norm(x, gd.constant(gv), gd.constant(bv), rm, rv, training=True)
    weights = RNG.standard_normal(xv.shape)
    gx = gd.grad((y * gd.constant(weights)).sum(), x)
    step = gd.function([x], [y, gx], updates=updates, backend="reference")
    for _ in range(3):
        got, g = step(xv)
        xt = torch.tensor(xv, requires_grad=True)
        yt = F.batch_norm(xt, rm_t, rv_t, torch.tensor(gv), torch.tensor(bv), training=True,
                          momentum=0.1, eps=1e-5)
        (yt * torch.tensor(weights)).sum().backward()
        np.testing.assert_allclose(got, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(rm.value, rm_t.numpy(), rtol=1e-12)
        np.testing.assert_allclose(rv.value, rv_t.numpy(), rtol=1e-12)
        xv = xv * 1.5 + 0.2
    y_eval, _ = gd.batch_norm(x, gd.constant(gv), gd.constant(bv), rm, rv, training=False)
    want = F.batch_norm(torch.tensor(xv), rm_t, rv_t, torch.tensor(gv), torch.tensor(bv),
                        training=False)
    np.testing.assert_allclose(gd.function([x], y_eval, backend="reference")(xv),
                               want.numpy(), rtol=1e-10, atol=1e-12)


def test_layer_instance_and_group_norm_match_numpy():
    xv = RNG.standard_normal((3, 6, 4, 5))
    x = gd.input("x", (None, 6, 4, 5), "float64")
    g_ln, b_ln = RNG.standard_normal((4, 5)), RNG.standard_normal((4, 5))
    g_c, b_c = RNG.standard_normal(6), RNG.standard_normal(6)
    ln, inn, gn, gn1 = _run([
        gd.layer_norm(x, (4, 5), gd.constant(g_ln), gd.constant(b_ln), eps=1e-3),
        gd.instance_norm(x, gd.constant(g_c), gd.constant(b_c)),
        gd.group_norm(x, 3, gd.constant(g_c), gd.constant(b_c)),
        gd.group_norm(x, 1)], {x: xv})
    np.testing.assert_allclose(ln, _normalized(xv, (2, 3), 1e-3) * g_ln + b_ln, rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(inn, _normalized(xv, (2, 3), 1e-5) * _channel(g_c, 4)
                               + _channel(b_c, 4), rtol=1e-12, atol=1e-12)
    grouped = _normalized(xv.reshape(3, 3, 2, 4, 5), (2, 3, 4), 1e-5).reshape(xv.shape)
    np.testing.assert_allclose(gn, grouped * _channel(g_c, 4) + _channel(b_c, 4), rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(gn1, _normalized(xv, (1, 2, 3), 1e-5), rtol=1e-12, atol=1e-12)


@needs_torch
def test_layer_instance_and_group_norm_match_torch():
    xv = RNG.standard_normal((2, 6, 3, 4))
    gv, bv = RNG.standard_normal(6), RNG.standard_normal(6)
    g2, b2 = RNG.standard_normal((3, 4)), RNG.standard_normal((3, 4))
    x = gd.input("x", xv.shape, "float64")
    outs = _run([gd.layer_norm(x, (3, 4), gd.constant(g2), gd.constant(b2)),
                 gd.instance_norm(x, gd.constant(gv), gd.constant(bv)),
                 gd.group_norm(x, 2, gd.constant(gv), gd.constant(bv))], {x: xv})
    t = torch.tensor(xv)
    wants = [F.layer_norm(t, (3, 4), torch.tensor(g2), torch.tensor(b2)),
             F.instance_norm(t, weight=torch.tensor(gv), bias=torch.tensor(bv)),
             F.group_norm(t, 2, torch.tensor(gv), torch.tensor(bv))]
    for got, want in zip(outs, wants):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["batch_norm", "layer_norm", "instance_norm", "group_norm"])
def test_norm_gradients_match_finite_differences(name):
    x = gd.input("x", (3, 4, 2, 3), "float64")
    gamma = gd.input("gamma", (4,) if name != "layer_norm" else (2, 3), "float64")
    beta = gd.input("beta", gamma.shape, "float64")
    y = {"batch_norm": lambda: gd.batch_norm(x, gamma, beta)[0],
         "layer_norm": lambda: gd.layer_norm(x, (2, 3), gamma, beta),
         "instance_norm": lambda: gd.instance_norm(x, gamma, beta),
         "group_norm": lambda: gd.group_norm(x, 2, gamma, beta)}[name]()
    loss = (y * gd.constant(RNG.standard_normal(y.shape))).sum()
    feed = {x: RNG.standard_normal(x.shape), gamma: RNG.standard_normal(gamma.shape),
            beta: RNG.standard_normal(beta.shape)}
    report = gd.check_grad(loss, [x, gamma, beta], feed=feed, rtol=1e-6, atol=1e-8)
    assert report, str(report)


def test_norm_errors():
    x = gd.input("x", (None, 6, 4))
    with pytest.raises(gd.ShapeError, match="divide"):
        gd.group_norm(x, 4)
    with pytest.raises(gd.ShapeError, match="normalized_shape"):
        gd.layer_norm(x, (6,))
    with pytest.raises(gd.ShapeError, match="gamma"):
        gd.batch_norm(x, gd.input("g", (5,)))
    with pytest.raises(ValueError, match="running"):
        gd.batch_norm(x, training=False)
