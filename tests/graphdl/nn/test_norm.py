"""Normalization layers against NumPy formulas (and torch.nn when importable): batch norm's
training and eval forms and its running statistics over two steps (momentum, unbiased
variance); layer, instance and group norm; gradients by finite differences (float64)."""

import numpy as np
import pytest

import graphdl as gd
from graphdl import nn

RNG = np.random.default_rng(17)


def _ref(inputs, outputs, *arrays, updates=None):
    return gd.function(inputs, outputs, updates=updates, backend="reference")(*arrays)


def _normalize(x, axes, eps=1e-5):
    mean = x.mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)


def _affine(layer, shape):
    return layer.weight.value.reshape(shape), layer.bias.value.reshape(shape)


def _randomize(layer):
    for p in layer.params():
        p.value = RNG.standard_normal(p.shape).astype(p.dtype)


def test_batch_norm_uses_batch_statistics_in_training_and_running_ones_in_eval():
    bn = nn.BatchNorm(3)
    _randomize(bn)
    bn.running_mean.value = np.array([0.5, -1.0, 2.0], np.float32)
    bn.running_var.value = np.array([1.5, 0.5, 4.0], np.float32)
    xs = RNG.standard_normal((4, 3, 5, 5)).astype(np.float32) * 2 + 1
    x = gd.input("x", (None, 3, 5, 5))
    gamma, beta = _affine(bn, (3, 1, 1))
    want = _normalize(xs, (0, 2, 3)) * gamma + beta
    np.testing.assert_allclose(_ref([x], bn(x, training=True), xs), want, rtol=1e-4, atol=1e-5)
    rm, rv = (v.value.reshape(3, 1, 1) for v in (bn.running_mean, bn.running_var))
    want = (xs - rm) / np.sqrt(rv + 1e-5) * gamma + beta
    np.testing.assert_allclose(_ref([x], bn(x), xs), want, rtol=1e-4, atol=1e-5)


def test_batch_norm_running_statistics_over_two_steps():
    bn = nn.BatchNorm(3, momentum=0.2)
    x = gd.input("x", (None, 3, 4))
    y = bn(x, training=True)
    assert [v for v, _ in bn.updates()] == [bn.running_mean, bn.running_var]
    step = gd.function([x], y, updates=bn.updates(), backend="reference")
    mean, var = np.zeros(3), np.ones(3)
    for _ in range(2):
        xs = (RNG.standard_normal((5, 3, 4)) * 3 + 2).astype(np.float32)
        step(xs)
        mean = 0.8 * mean + 0.2 * xs.mean(axis=(0, 2))
        var = 0.8 * var + 0.2 * xs.var(axis=(0, 2), ddof=1)      # unbiased: n = 20
        np.testing.assert_allclose(bn.running_mean.value, mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bn.running_var.value, var, rtol=1e-5, atol=1e-6)


def test_batch_norm_on_features_and_on_a_channels_last_axis():
    xs = RNG.standard_normal((6, 4)).astype(np.float32)
    x = gd.input("x", (None, 4))
    bn = nn.BatchNorm(4)
    np.testing.assert_allclose(_ref([x], bn(x, training=True), xs), _normalize(xs, 0),
                               rtol=1e-4, atol=1e-5)
    seq = RNG.standard_normal((3, 5, 4)).astype(np.float32)           # (N, T, C)
    s = gd.input("s", (None, 5, 4))
    last = nn.BatchNorm(4, axis=-1)
    out = _ref([s], last(s, training=True), seq)
    np.testing.assert_allclose(out, _normalize(seq, (0, 1)), rtol=1e-4, atol=1e-5)
    assert last.updates()[0][1].shape == (4,)
    with pytest.raises(gd.ShapeError):
        nn.BatchNorm(5)(x)


def test_batch_norm_without_running_statistics_normalizes_by_the_batch_in_eval():
    bn = nn.BatchNorm(2, track_running_stats=False, affine=False)
    assert bn.params() == [] and bn.states() == []
    xs = RNG.standard_normal((5, 2, 3)).astype(np.float32)
    x = gd.input("x", (None, 2, 3))
    np.testing.assert_allclose(_ref([x], bn(x), xs), _normalize(xs, (0, 2)), rtol=1e-4,
                               atol=1e-5)
    bn(x, training=True)
    assert bn.updates() == []


def test_batch_norm_matches_torch_over_two_training_steps_then_eval():
    torch = pytest.importorskip("torch")
    ours, theirs = nn.BatchNorm(3, momentum=0.3), torch.nn.BatchNorm2d(3, momentum=0.3)
    _randomize(ours)
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(ours.weight.value))
        theirs.bias.copy_(torch.tensor(ours.bias.value))
    x = gd.input("x", (None, 3, 4, 4))
    y = ours(x, training=True)
    step = gd.function([x], y, updates=ours.updates(), backend="reference")
    theirs.train()
    for _ in range(2):
        xs = (RNG.standard_normal((4, 3, 4, 4)) * 2 - 1).astype(np.float32)
        np.testing.assert_allclose(step(xs), theirs(torch.tensor(xs)).detach().numpy(),
                                   rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours.running_mean.value, theirs.running_mean.numpy(), rtol=1e-5)
    np.testing.assert_allclose(ours.running_var.value, theirs.running_var.numpy(), rtol=1e-5)
    theirs.eval()
    xs = RNG.standard_normal((2, 3, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(_ref([x], ours(x), xs),
                               theirs(torch.tensor(xs)).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_layer_instance_and_group_norm_match_their_formulas():
    xs = RNG.standard_normal((2, 4, 3, 5)).astype(np.float32) * 3 + 1
    x = gd.input("x", (None, 4, 3, 5))
    ln, inorm, gn = nn.LayerNorm((3, 5)), nn.InstanceNorm(4), nn.GroupNorm(2, 4)
    for layer in (ln, inorm, gn):
        _randomize(layer)
    gamma, beta = ln.weight.value, ln.bias.value
    cases = [(ln, _normalize(xs, (2, 3)) * gamma + beta),
             (inorm, _normalize(xs, (2, 3)) * _affine(inorm, (4, 1, 1))[0]
              + _affine(inorm, (4, 1, 1))[1]),
             (gn, _normalize(xs.reshape(2, 2, 2, 3, 5), (2, 3, 4)).reshape(xs.shape)
              * _affine(gn, (4, 1, 1))[0] + _affine(gn, (4, 1, 1))[1])]
    for layer, want in cases:
        np.testing.assert_allclose(_ref([x], layer(x), xs), want, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(_ref([x], layer(x, training=True), xs),
                                      _ref([x], layer(x), xs))
        assert layer.updates() == []
    assert nn.LayerNorm(5, elementwise_affine=False).params() == []
    with pytest.raises(ValueError):
        nn.GroupNorm(3, 4)


def test_layer_and_group_norm_match_torch():
    torch = pytest.importorskip("torch")
    xs = RNG.standard_normal((2, 4, 3, 5)).astype(np.float32)
    x = gd.input("x", (None, 4, 3, 5))
    for ours, theirs in ((nn.LayerNorm(5), torch.nn.LayerNorm(5)),
                         (nn.GroupNorm(2, 4), torch.nn.GroupNorm(2, 4)),
                         (nn.InstanceNorm(4), torch.nn.InstanceNorm2d(4, affine=True))):
        _randomize(ours)
        with torch.no_grad():
            theirs.weight.copy_(torch.tensor(ours.weight.value))
            theirs.bias.copy_(torch.tensor(ours.bias.value))
        np.testing.assert_allclose(_ref([x], ours(x), xs),
                                   theirs(torch.tensor(xs)).detach().numpy(), rtol=1e-4,
                                   atol=1e-5)


@pytest.mark.parametrize("make, training", [
    (lambda: nn.BatchNorm(2, dtype="float64"), True),
    (lambda: nn.BatchNorm(2, dtype="float64"), False),
    (lambda: nn.LayerNorm(3, dtype="float64"), False),
    (lambda: nn.GroupNorm(1, 2, dtype="float64"), False),
    (lambda: nn.InstanceNorm(2, dtype="float64"), False),
], ids=["batch_norm_train", "batch_norm_eval", "layer_norm", "group_norm", "instance_norm"])
def test_gradients_match_finite_differences(make, training):
    layer = make()
    _randomize(layer)
    x = gd.input("x", (3, 2, 3), "float64")
    weights = gd.constant(RNG.standard_normal((3, 2, 3)))
    loss = (layer(x, training=training) * weights).sum() + (layer(x, training=training) ** 2
                                                           ).sum() * 0.1
    report = gd.check_grad(loss, layer.params() + [x], feed={x: RNG.standard_normal((3, 2, 3))})
    assert report, str(report)
