"""Sequential, Residual and Inception: composition, shapes, params, gradients; a tiny CNN
trained on both backends."""

import numpy as np
import pytest

import graphdl as gd
from graphdl import nn

RNG = np.random.default_rng(3)


def _ref(inputs, outputs, *arrays):
    return gd.function(inputs, outputs, backend="reference")(*arrays)


def test_sequential_chains_layers_and_functions():
    model = nn.Sequential(nn.Dense(3, 5), gd.relu, nn.Dense(5, 2))
    assert len(model) == 3 and model[1] is gd.relu and next(iter(model)) is model[0]
    x = gd.input("x", (None, 3))
    xs = RNG.standard_normal((4, 3)).astype(np.float32)
    W1, b1, W2, b2 = (p.value for p in model.params())
    want = np.maximum(xs @ W1 + b1, 0) @ W2 + b2
    np.testing.assert_allclose(_ref([x], model(x), xs), want, rtol=1e-5, atol=1e-6)
    assert nn.Sequential([nn.Dense(3, 5), gd.relu]).append(nn.Dense(5, 1))(x).shape[1:] == (1,)
    with pytest.raises(TypeError):
        nn.Sequential(nn.Dense(3, 5), 3)


def test_residual_adds_the_identity_or_the_shortcut():
    x = gd.input("x", (None, 4, 6, 6))
    xs = RNG.standard_normal((2, 4, 6, 6)).astype(np.float32)
    conv = nn.Conv2D(4, 4, 3, padding=1)
    block = nn.Residual(conv, activation=gd.relu)
    want = np.maximum(_ref([x], conv(x), xs) + xs, 0)
    np.testing.assert_allclose(_ref([x], block(x), xs), want, rtol=1e-5, atol=1e-5)
    down = nn.Residual(nn.Conv2D(4, 8, 3, stride=2, padding=1), shortcut=nn.Conv2D(4, 8, 1, 2))
    assert down(x).shape[1:] == (8, 3, 3)
    assert len(down.params()) == 4


def test_inception_concatenates_parallel_branches_on_the_channels():
    x = gd.input("x", (None, 4, 6, 6))
    block = nn.Inception([nn.Conv2D(4, 2, 1), nn.Conv2D(4, 3, 3, padding=1),
                          nn.Sequential(nn.MaxPool2D(3, 1, 1), nn.Conv2D(4, 1, 1))])
    y = block(x)
    assert y.shape[1:] == (6, 6, 6)
    xs = RNG.standard_normal((2, 4, 6, 6)).astype(np.float32)
    parts = [_ref([x], b(x), xs) for b in block.branches]
    np.testing.assert_allclose(_ref([x], y, xs), np.concatenate(parts, axis=1), rtol=1e-6)
    assert len(block.params()) == 6


def test_gradients_through_blocks_match_finite_differences():
    x = gd.input("x", (2, 2, 4, 4), "float64")
    model = nn.Sequential(
        nn.Residual(nn.Conv2D(2, 2, 3, padding=1, dtype="float64"), activation=gd.tanh),
        nn.Inception([nn.Conv2D(2, 1, 1, dtype="float64"), nn.AvgPool2D(3, 1, 1)]),
        nn.Flatten(), nn.Dense(48, 1, dtype="float64"))
    loss = (model(x) ** 2).sum()
    xs = RNG.standard_normal((2, 2, 4, 4))
    report = gd.check_grad(loss, model.params() + [x], feed={x: xs})
    assert report, str(report)


def _tiny_cnn():
    return nn.Sequential(
        nn.Conv2D(1, 4, 3, padding=1), nn.BatchNorm(4), gd.relu, nn.MaxPool2D(2),
        nn.Flatten(), nn.Dropout(0.2), nn.Dense(4 * 4 * 4, 3))


def test_a_tiny_cnn_trains_and_decreases_its_loss_on_both_backends():
    gd.seed(0)
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((24, 1, 8, 8)).astype(np.float32)
    ys = rng.integers(0, 3, 24)
    xs[ys == 1, :, :4] += 1.0                                  # learnable classes
    xs[ys == 2, :, :, :4] -= 1.0
    model = _tiny_cnn()
    start = {v: v.value.copy() for v in model.params() + model.states()}
    x, y = gd.input("x", (None, 1, 8, 8)), gd.input("y", (None,), dtype="int64")
    loss = gd.losses.cross_entropy(model(x, training=True), y)
    eval_loss = gd.losses.cross_entropy(model(x), y)
    counter = gd.random_step()
    step0 = int(counter.value)
    curves = {}
    for backend in ("reference", "llvm"):
        for v, value in start.items():
            v.value = value
        counter.value = np.array(step0)                       # the same masks on each
        opt = gd.optim.Adam(lr=0.02)
        step = gd.function([x, y], [loss], backend=backend,
                           updates=opt.updates(loss, model.params()) + model.updates())
        evaluate = gd.function([x, y], eval_loss, backend=backend)
        curves[backend] = [float(step(xs, ys)[0]) for _ in range(15)]
        assert curves[backend][-1] < 0.5 * curves[backend][0], curves[backend]
        assert float(evaluate(xs, ys)) < curves[backend][0]
        assert not np.allclose(model[1].running_mean.value, 0)
    np.testing.assert_allclose(curves["llvm"][:3], curves["reference"][:3], rtol=1e-3)
