"""Normalization layers against NumPy formulas (and torch.nn when importable): batch norm's
training and eval forms and its running statistics over several steps (momentum or the
cumulative average of momentum=None, unbiased variance); layer, instance and group norm,
instance norm's optional running statistics; gradients by finite differences (float64)."""

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
    ln, inorm, gn = nn.LayerNorm((3, 5)), nn.InstanceNorm(4, affine=True), nn.GroupNorm(2, 4)
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
                         (nn.InstanceNorm(4, affine=True),
                          torch.nn.InstanceNorm2d(4, affine=True))):
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
    (lambda: nn.InstanceNorm(2, affine=True, dtype="float64"), False),
    (lambda: nn.BatchNorm(2, momentum=None, dtype="float64"), True),
    (lambda: nn.InstanceNorm(2, affine=True, track_running_stats=True, dtype="float64"), True),
    (lambda: nn.InstanceNorm(2, affine=True, track_running_stats=True, dtype="float64"), False),
], ids=["batch_norm_train", "batch_norm_eval", "layer_norm", "group_norm", "instance_norm",
        "batch_norm_cma_train", "instance_norm_tracked_train", "instance_norm_tracked_eval"])
def test_gradients_match_finite_differences(make, training):
    layer = make()
    _randomize(layer)
    x = gd.input("x", (3, 2, 3), "float64")
    weights = gd.constant(RNG.standard_normal((3, 2, 3)))
    loss = (layer(x, training=training) * weights).sum() + (layer(x, training=training) ** 2
                                                           ).sum() * 0.1
    report = gd.check_grad(loss, layer.params() + [x], feed={x: RNG.standard_normal((3, 2, 3))})
    assert report, str(report)


# -- momentum=None (cumulative moving average) and InstanceNorm's running statistics

BACKENDS = ["reference", "llvm"]


def _ema(old, stat, factor):
    return (1 - factor) * old + factor * stat


def test_batch_norm_momentum_none_adds_a_batch_counter_state():
    bn = nn.BatchNorm(3, momentum=None, name="cma_bn")
    assert [s.name for s in bn.states()] == ["cma_bn.running_mean", "cma_bn.running_var",
                                             "cma_bn.num_batches_tracked"]
    assert bn.num_batches_tracked.dtype == "int64" and int(bn.num_batches_tracked.value) == 0
    assert "momentum=None" in repr(bn)
    bn(gd.input("x", (None, 3)), training=True)
    assert [v for v, _ in bn.updates()] == bn.states()
    assert nn.BatchNorm(3).num_batches_tracked is None              # momentum given: no counter
    assert nn.BatchNorm(3, momentum=None, track_running_stats=False).states() == []
    for bad, error in ((1.5, ValueError), ("0.1", TypeError), (True, TypeError)):
        with pytest.raises(error, match="momentum"):
            nn.BatchNorm(3, momentum=bad)
        with pytest.raises(error, match="momentum"):
            nn.InstanceNorm(3, momentum=bad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_norm_momentum_none_averages_every_batch_equally(backend):
    bn = nn.BatchNorm(4, axis=-1, momentum=None)                   # channels last (N, T, C)
    _randomize(bn)
    x = gd.input("x", (None, 3, 4))
    step = gd.function([x], bn(x, training=True), updates=bn.updates(), backend=backend)
    gamma, beta = bn.weight.value, bn.bias.value
    mean, var = bn.running_mean.value.astype(np.float64), bn.running_var.value.astype(np.float64)
    for k, n in enumerate((2, 6, 3, 5), start=1):
        xs = (RNG.standard_normal((n, 3, 4)) * k + k).astype(np.float32)
        np.testing.assert_allclose(step(xs), _normalize(xs, (0, 1)) * gamma + beta, rtol=1e-4,
                                   atol=1e-4)
        mean = mean + (xs.mean(axis=(0, 1)) - mean) / k            # PyTorch's CMA, step by step
        var = var + (xs.var(axis=(0, 1), ddof=1) - var) / k
        assert int(bn.num_batches_tracked.value) == k
        np.testing.assert_allclose(bn.running_mean.value, mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bn.running_var.value, var, rtol=1e-5, atol=1e-6)
    xs = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    evaluate = gd.function([x], bn(x), backend=backend)
    np.testing.assert_allclose(evaluate(xs), (xs - mean) / np.sqrt(var + 1e-5) * gamma + beta,
                               rtol=1e-4, atol=1e-5)
    assert int(bn.num_batches_tracked.value) == 4


def test_batch_norm_counter_is_saved_and_restored(tmp_path):
    bn = nn.BatchNorm(2, momentum=None)
    x = gd.input("x", (None, 2))
    step = gd.function([x], bn(x, training=True), updates=bn.updates())
    for _ in range(3):
        step(RNG.standard_normal((4, 2)).astype(np.float32))
    path = gd.save(tmp_path / "bn.npz", params=bn.params() + bn.states())
    saved = {v.name: v.value.copy() for v in bn.states()}
    step(RNG.standard_normal((4, 2)).astype(np.float32))
    gd.load(path, params=bn.params() + bn.states())
    for v in bn.states():
        np.testing.assert_array_equal(v.value, saved[v.name])
    assert int(bn.num_batches_tracked.value) == 3


def test_batch_norm_momentum_none_matches_torch_then_eval():
    torch = pytest.importorskip("torch")
    ours, theirs = nn.BatchNorm(3, momentum=None), torch.nn.BatchNorm2d(3, momentum=None)
    _randomize(ours)
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(ours.weight.value))
        theirs.bias.copy_(torch.tensor(ours.bias.value))
    x = gd.input("x", (None, 3, 4, 4))
    step = gd.function([x], ours(x, training=True), updates=ours.updates())
    theirs.train()
    for n in (4, 2, 5):
        xs = (RNG.standard_normal((n, 3, 4, 4)) * n - 1).astype(np.float32)
        np.testing.assert_allclose(step(xs), theirs(torch.tensor(xs)).detach().numpy(),
                                   rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ours.running_mean.value, theirs.running_mean.numpy(),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ours.running_var.value, theirs.running_var.numpy(),
                                   rtol=1e-5)
        assert int(ours.num_batches_tracked.value) == int(theirs.num_batches_tracked)
    theirs.eval()
    xs = RNG.standard_normal((2, 3, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(_ref([x], ours(x), xs),
                               theirs(torch.tensor(xs)).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_instance_norm_has_torchs_defaults():
    inorm = nn.InstanceNorm(4)
    assert inorm.params() == [] and inorm.states() == []            # affine=False, untracked
    assert (inorm.affine, inorm.track_running_stats, inorm.momentum) == (False, False, 0.1)
    tracked = nn.InstanceNorm(4, affine=True, track_running_stats=True, name="inorm")
    assert [p.name for p in tracked.params()] == ["inorm.weight", "inorm.bias"]
    assert [s.name for s in tracked.states()] == ["inorm.running_mean", "inorm.running_var"]
    with pytest.raises(gd.ShapeError, match="channels"):
        tracked(gd.input("x", (None, 3, 5)))
    xs = RNG.standard_normal((2, 3, 5)).astype(np.float32)          # untracked, no affine:
    x = gd.input("x", (None, 3, 5))                                 # any channel count
    np.testing.assert_allclose(_ref([x], inorm(x), xs), _normalize(xs, 2), rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("spatial", [(6,), (3, 4), (2, 3, 2)], ids=["1d", "2d", "3d"])
def test_instance_norm_tracks_running_statistics(backend, spatial):
    c = 3
    axes = tuple(range(2, 2 + len(spatial)))
    bshape = (c,) + (1,) * len(spatial)
    inorm = nn.InstanceNorm(c, momentum=0.3, affine=True, track_running_stats=True)
    _randomize(inorm)
    gamma, beta = _affine(inorm, bshape)
    x = gd.input("x", (None, c) + spatial)
    y = inorm(x, training=True)
    assert [v for v, _ in inorm.updates()] == [inorm.running_mean, inorm.running_var]
    step = gd.function([x], y, updates=inorm.updates(), backend=backend)
    mean, var = np.zeros(c), np.ones(c)
    for n in (3, 1, 4):
        xs = (RNG.standard_normal((n, c) + spatial) * 2 + RNG.uniform(-3, 3)).astype(np.float32)
        np.testing.assert_allclose(step(xs), _normalize(xs, axes) * gamma + beta, rtol=1e-4,
                                   atol=1e-4)
        mean = _ema(mean, xs.mean(axis=axes).mean(0), 0.3)        # mean over the batch of
        var = _ema(var, xs.var(axis=axes, ddof=1).mean(0), 0.3)   # per-instance statistics
        np.testing.assert_allclose(inorm.running_mean.value, mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(inorm.running_var.value, var, rtol=1e-5, atol=1e-6)
    xs = RNG.standard_normal((2, c) + spatial).astype(np.float32)
    evaluate = gd.function([x], inorm(x), backend=backend)
    want = (xs - mean.reshape(bshape)) / np.sqrt(var.reshape(bshape) + 1e-5) * gamma + beta
    np.testing.assert_allclose(evaluate(xs), want, rtol=1e-4, atol=1e-5)
    untracked = nn.InstanceNorm(c)                                  # eval: instance statistics
    np.testing.assert_allclose(gd.function([x], untracked(x), backend=backend)(xs),
                               _normalize(xs, axes), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("momentum", [0.3, None])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_instance_norm_with_running_statistics_matches_torch(dims, affine, momentum):
    torch = pytest.importorskip("torch")
    cls = {1: torch.nn.InstanceNorm1d, 2: torch.nn.InstanceNorm2d, 3: torch.nn.InstanceNorm3d}
    spatial = {1: (7,), 2: (4, 5), 3: (3, 2, 4)}[dims]
    ours = nn.InstanceNorm(3, momentum=momentum, affine=affine, track_running_stats=True)
    theirs = cls[dims](3, momentum=momentum, affine=affine, track_running_stats=True)
    if affine:
        _randomize(ours)
        with torch.no_grad():
            theirs.weight.copy_(torch.tensor(ours.weight.value))
            theirs.bias.copy_(torch.tensor(ours.bias.value))
    x = gd.input("x", (None, 3) + spatial)
    step = gd.function([x], ours(x, training=True), updates=ours.updates())
    theirs.train()
    for n in (2, 4, 1):
        xs = (RNG.standard_normal((n, 3) + spatial) * 2 + n).astype(np.float32)
        np.testing.assert_allclose(step(xs), theirs(torch.tensor(xs)).detach().numpy(),
                                   rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(ours.running_mean.value, theirs.running_mean.numpy(),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ours.running_var.value, theirs.running_var.numpy(),
                                   rtol=1e-5, atol=1e-6)
    theirs.eval()
    xs = RNG.standard_normal((2, 3) + spatial).astype(np.float32)
    np.testing.assert_allclose(_ref([x], ours(x), xs),
                               theirs(torch.tensor(xs)).detach().numpy(), rtol=1e-4, atol=1e-5)
    untracked_ours, untracked_theirs = nn.InstanceNorm(3), cls[dims](3).eval()
    np.testing.assert_allclose(_ref([x], untracked_ours(x), xs),
                               untracked_theirs(torch.tensor(xs)).numpy(), rtol=1e-4,
                               atol=1e-5)
