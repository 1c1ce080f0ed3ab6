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


# -- running statistics: momentum=None (cumulative average), num_batches_tracked, instance norm


BACKENDS = ["reference", "llvm"]


def _numpy_running(rm, rv, stat_mean, stat_var, factor):
    """PyTorch's update r <- (1 - f) r + f * stat, written out in NumPy."""
    return (1 - factor) * rm + factor * stat_mean, (1 - factor) * rv + factor * stat_var


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_norm_momentum_none_is_a_cumulative_average_counted_by_a_state(backend):
    c = 3
    x = gd.input("x", (None, c, 4), "float64")
    rm, rv = gd.state("rm", np.full(c, 0.25)), gd.state("rv", np.full(c, 3.0))
    k = gd.state("k", np.array(0, np.int64))
    y, updates = gd.batch_norm(x, running_mean=rm, running_var=rv, momentum=None,
                               num_batches_tracked=k)
    assert [v for v, _ in updates] == [rm, rv, k]
    step = gd.function([x], y, updates=updates, backend=backend)
    batches = [RNG.standard_normal((n, c, 4)) * s + o
               for n, s, o in ((5, 1.0, 0.0), (2, 3.0, -1.0), (7, 0.5, 2.0), (3, 2.0, 1.0))]
    for i, xv in enumerate(batches, start=1):
        np.testing.assert_allclose(step(xv), _normalized(xv, (0, 2), 1e-5), rtol=1e-9,
                                   atol=1e-10)
        assert k.value.dtype == np.int64 and int(k.value) == i
    # the cumulative average of the per-batch statistics; the initial values are forgotten
    want_mean = np.mean([b.mean(axis=(0, 2)) for b in batches], axis=0)
    want_var = np.mean([b.var(axis=(0, 2), ddof=1) for b in batches], axis=0)
    np.testing.assert_allclose(rm.value, want_mean, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(rv.value, want_var, rtol=1e-12)
    y_eval, none = gd.batch_norm(x, running_mean=rm, running_var=rv, training=False,
                                 momentum=None, num_batches_tracked=k)
    assert none == []
    xv = RNG.standard_normal((2, c, 4))
    got = gd.function([x], y_eval, backend=backend)(xv)
    np.testing.assert_allclose(got, (xv - _channel(want_mean, 3))
                               / np.sqrt(_channel(want_var, 3) + 1e-5), rtol=1e-10)
    assert int(k.value) == len(batches)                   # eval does not count


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_norm_counter_resumes_and_counts_with_a_float_momentum(backend):
    x = gd.input("x", (None, 2), "float32")
    rm = gd.state("rm", np.zeros(2, np.float32))
    rv = gd.state("rv", np.ones(2, np.float32))
    k = gd.state("k", np.array(5, np.int64))               # as after 5 earlier batches
    _, cma = gd.batch_norm(x, running_mean=rm, running_var=rv, momentum=None,
                           num_batches_tracked=k)
    step = gd.function([x], [], updates=cma, backend=backend)
    mean, var = np.zeros(2), np.ones(2)
    for i in range(6, 9):
        xv = RNG.standard_normal((4, 2)).astype(np.float32) + i
        step(xv)
        mean, var = _numpy_running(mean, var, xv.mean(0), xv.var(0, ddof=1), 1.0 / i)
        assert int(k.value) == i
        np.testing.assert_allclose(rm.value, mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(rv.value, var, rtol=1e-5, atol=1e-6)
    _, ema = gd.batch_norm(x, running_mean=rm, running_var=rv, momentum=0.5,
                           num_batches_tracked=k)
    xv = RNG.standard_normal((4, 2)).astype(np.float32)
    gd.function([x], [], updates=ema, backend=backend)(xv)
    mean, var = _numpy_running(mean, var, xv.mean(0), xv.var(0, ddof=1), 0.5)
    assert int(k.value) == 9
    np.testing.assert_allclose(rm.value, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rv.value, var, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_norm_cumulative_average_beside_an_optimizer_in_one_step(backend):
    x = gd.input("x", (None, 3), "float64")
    w = gd.param("w", np.eye(3))
    rm, rv = gd.state("rm", np.zeros(3)), gd.state("rv", np.ones(3))
    k = gd.state("k", np.array(0, np.int64))
    y, bn = gd.batch_norm(x @ w, running_mean=rm, running_var=rv, momentum=None,
                          num_batches_tracked=k)
    loss = (y * gd.constant(np.array([1.0, -2.0, 0.5]))).sum()
    opt = gd.optim.SGD(lr=0.1)
    step = gd.function([x], [loss], updates=opt.updates(loss, [w]) + bn, backend=backend)
    w_np, stats = np.eye(3), []
    for _ in range(3):
        xv = RNG.standard_normal((6, 3))
        h = xv @ w_np                                      # statistics of the weights before
        stats.append((h.mean(0), h.var(0, ddof=1)))
        step(xv)
        w_np = w.value.copy()
    assert int(k.value) == 3 and opt.step_count == 3
    np.testing.assert_allclose(rm.value, np.mean([m for m, _ in stats], axis=0), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(rv.value, np.mean([v for _, v in stats], axis=0), rtol=1e-10)


def test_batch_norm_momentum_none_needs_a_scalar_counter():
    x = gd.input("x", (None, 3))
    rm, rv = gd.state("rm", np.zeros(3, np.float32)), gd.state("rv", np.ones(3, np.float32))
    with pytest.raises(ValueError, match="num_batches_tracked"):
        gd.batch_norm(x, running_mean=rm, running_var=rv, momentum=None)
    with pytest.raises(gd.ShapeError, match="scalar"):
        gd.batch_norm(x, running_mean=rm, running_var=rv, momentum=None,
                      num_batches_tracked=gd.state("k2", np.zeros(2, np.int64)))
    with pytest.raises(gd.DTypeError, match="num_batches_tracked"):
        gd.batch_norm(x, running_mean=rm, running_var=rv, momentum=None,
                      num_batches_tracked=gd.state("k3", np.array(False)))
    _, updates = gd.batch_norm(x, momentum=None)            # nothing to average: fine
    assert updates == []
    with pytest.raises(ValueError, match="num_batches_tracked"):
        gd.instance_norm(gd.input("s", (None, 3, 4)), running_mean=rm, momentum=None)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("spatial", [(5,), (3, 4), (2, 3, 2)], ids=["1d", "2d", "3d"])
def test_instance_norm_running_statistics_over_steps_then_eval(backend, spatial):
    c = 2
    shape = (c,) + spatial
    ndim = len(shape) + 1
    axes = tuple(range(2, ndim))
    x = gd.input("x", (None,) + shape, "float64")
    gamma, beta = RNG.standard_normal(c), RNG.standard_normal(c)
    rm, rv = gd.state("rm", np.full(c, 0.5)), gd.state("rv", np.full(c, 2.0))
    y, updates = gd.instance_norm(x, gd.constant(gamma), gd.constant(beta), running_mean=rm,
                                  running_var=rv, training=True, momentum=0.25)
    assert [v for v, _ in updates] == [rm, rv]
    step = gd.function([x], y, updates=updates, backend=backend)
    mean, var = np.full(c, 0.5), np.full(c, 2.0)
    for n in (3, 1, 4):                                    # changing batch sizes
        xv = RNG.standard_normal((n,) + shape) * RNG.uniform(0.5, 3) + RNG.uniform(-2, 2)
        want = _normalized(xv, axes, 1e-5) * _channel(gamma, ndim) + _channel(beta, ndim)
        np.testing.assert_allclose(step(xv), want, rtol=1e-9, atol=1e-10)
        per_mean = xv.mean(axis=axes)                      # (n, c): one per instance
        per_var = xv.var(axis=axes, ddof=1)
        mean, var = _numpy_running(mean, var, per_mean.mean(0), per_var.mean(0), 0.25)
        np.testing.assert_allclose(rm.value, mean, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(rv.value, var, rtol=1e-12)
    y_eval, none = gd.instance_norm(x, gd.constant(gamma), gd.constant(beta),
                                    running_mean=rm, running_var=rv, training=False)
    assert none == []
    xv = RNG.standard_normal((2,) + shape)
    want = ((xv - _channel(mean, ndim)) / np.sqrt(_channel(var, ndim) + 1e-5)
            * _channel(gamma, ndim) + _channel(beta, ndim))
    np.testing.assert_allclose(gd.function([x], y_eval, backend=backend)(xv), want,
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_instance_norm_cumulative_average_with_a_counter(backend):
    x = gd.input("x", (None, 3, 6), "float32")
    rm = gd.state("rm", np.zeros(3, np.float32))
    rv = gd.state("rv", np.ones(3, np.float32))
    k = gd.state("k", np.array(0, np.int64))
    _, updates = gd.instance_norm(x, running_mean=rm, running_var=rv, momentum=None,
                                  num_batches_tracked=k)
    step = gd.function([x], [], updates=updates, backend=backend)
    means, variances = [], []
    for n in (2, 5, 3):
        xv = (RNG.standard_normal((n, 3, 6)) * 2 + 1).astype(np.float32)
        step(xv)
        means.append(xv.mean(axis=2).mean(0))
        variances.append(xv.var(axis=2, ddof=1).mean(0))
    assert int(k.value) == 3
    np.testing.assert_allclose(rm.value, np.mean(means, axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rv.value, np.mean(variances, axis=0), rtol=1e-5, atol=1e-6)


def test_instance_norm_without_running_statistics_keeps_its_form():
    x = gd.input("x", (None, 2, 5), "float64")
    y = gd.instance_norm(x)
    assert isinstance(y, gd.Tensor)
    xv = RNG.standard_normal((3, 2, 5))
    for form in (y, gd.instance_norm(x, training=False)):
        np.testing.assert_allclose(_run([form], {x: xv})[0], _normalized(xv, (2,), 1e-5),
                                   rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="running_mean and running_var"):
        gd.instance_norm(x, running_mean=gd.state("rm", np.zeros(2)), training=False)
    with pytest.raises(gd.ShapeError, match="running_var"):
        gd.instance_norm(x, running_var=gd.state("rv", np.ones(3)))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_instance_norm_with_running_statistics_gradients_match_finite_differences(training):
    x = gd.input("x", (3, 2, 4), "float64")
    gamma, beta = gd.input("gamma", (2,), "float64"), gd.input("beta", (2,), "float64")
    rm = gd.state("rm", RNG.standard_normal(2))
    rv = gd.state("rv", RNG.uniform(0.5, 2.0, 2))
    y, _ = gd.instance_norm(x, gamma, beta, running_mean=rm, running_var=rv,
                            training=training)
    loss = (y * gd.constant(RNG.standard_normal(y.shape))).sum() + 0.1 * (y ** 2).sum()
    feed = {x: RNG.standard_normal(x.shape), gamma: RNG.standard_normal(2),
            beta: RNG.standard_normal(2)}
    report = gd.check_grad(loss, [x, gamma, beta], feed=feed, rtol=1e-6, atol=1e-8)
    assert report, str(report)


def test_instance_norm_running_statistics_match_torch_functional():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    c = 4
    gv, bv = RNG.standard_normal(c), RNG.standard_normal(c)
    rm_t, rv_t = torch.zeros(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64)
    x = gd.input("x", (None, c, 3, 5), "float64")
    rm, rv = gd.state("rm", np.zeros(c)), gd.state("rv", np.ones(c))
    y, updates = gd.instance_norm(x, gd.constant(gv), gd.constant(bv), running_mean=rm,
                                  running_var=rv, momentum=0.2)
    weights = gd.input("w", (None, c, 3, 5), "float64")
    gx = gd.grad((y * weights).sum(), x)
    step = gd.function([x, weights], [y, gx], updates=updates)           # llvm
    for n in (2, 5, 3):
        xv, wv = RNG.standard_normal((n, c, 3, 5)) * 2 + 1, RNG.standard_normal((n, c, 3, 5))
        got, g = step(xv, wv)
        xt = torch.tensor(xv, requires_grad=True)
        yt = F.instance_norm(xt, rm_t, rv_t, torch.tensor(gv), torch.tensor(bv),
                             use_input_stats=True, momentum=0.2, eps=1e-5)
        (yt * torch.tensor(wv)).sum().backward()
        np.testing.assert_allclose(got, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(rm.value, rm_t.numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(rv.value, rv_t.numpy(), rtol=1e-12)
    y_eval, _ = gd.instance_norm(x, gd.constant(gv), gd.constant(bv), running_mean=rm,
                                 running_var=rv, training=False)
    xv = RNG.standard_normal((2, c, 3, 5))
    want = F.instance_norm(torch.tensor(xv), rm_t, rv_t, torch.tensor(gv), torch.tensor(bv),
                           use_input_stats=False)
    np.testing.assert_allclose(gd.function([x], y_eval)(xv), want.numpy(), rtol=1e-10,
                               atol=1e-12)


def test_batch_norm_cumulative_average_matches_torch_functional():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rm_t, rv_t = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    x = gd.input("x", (None, 3, 4), "float64")
    rm, rv = gd.state("rm", np.zeros(3)), gd.state("rv", np.ones(3))
    k = gd.state("k", np.array(0, np.int64))
    y, updates = gd.batch_norm(x, running_mean=rm, running_var=rv, momentum=None,
                               num_batches_tracked=k)
    step = gd.function([x], y, updates=updates, backend="reference")
    for i, n in enumerate((4, 2, 6, 3), start=1):
        xv = RNG.standard_normal((n, 3, 4)) * i - i
        # torch.nn's _BatchNorm: num_batches_tracked += 1, factor = 1 / num_batches_tracked
        want = F.batch_norm(torch.tensor(xv), rm_t, rv_t, training=True, momentum=1.0 / i)
        np.testing.assert_allclose(step(xv), want.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(rm.value, rm_t.numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(rv.value, rv_t.numpy(), rtol=1e-12)
