"""The dropout layers: identity in eval, mask statistics and scaling in training, the step
counter in updates() (new masks each call), the same masks on both backends."""

import numpy as np
import pytest

import graphdl as gd
from graphdl import nn

RNG = np.random.default_rng(19)


def _ref(inputs, outputs, *arrays, updates=None):
    return gd.function(inputs, outputs, updates=updates, backend="reference")(*arrays)


@pytest.mark.parametrize("make", [lambda: nn.Dropout(0.3), lambda: nn.GaussianDropout(0.3),
                                  lambda: nn.SpatialDropout(0.3), lambda: nn.DropBlock(0.3, 3)],
                         ids=["dropout", "gaussian", "spatial", "drop_block"])
def test_every_dropout_layer_is_the_identity_in_eval(make):
    layer = make()
    x = gd.input("x", (None, 2, 6, 6))
    assert layer(x) is x and layer(x, training=False) is x
    assert layer.params() == [] and layer.updates() == []
    y = layer(x, training=True)
    assert y is not x and [v.name for v, _ in layer.updates()] == ["random_step"]


def test_dropout_keeps_one_minus_p_scaled_and_draws_new_masks_each_step():
    layer = nn.Dropout(0.25, seed=3)
    x = gd.input("x", (None, 1000))
    y = layer(x, training=True)
    step = gd.function([x], y, updates=layer.updates(), backend="reference")
    ones = np.ones((50, 1000), np.float32)
    first, second = step(ones), step(ones)
    for out in (first, second):
        kept = out != 0
        assert abs(kept.mean() - 0.75) < 0.01
        np.testing.assert_allclose(out[kept], 1 / 0.75, rtol=1e-6)
    assert (first != second).mean() > 0.2                      # the step counter advanced


def test_masks_are_the_same_on_both_backends():
    x = gd.input("x", (None, 3, 8, 8))
    xs = RNG.standard_normal((4, 3, 8, 8)).astype(np.float32)
    model = nn.Sequential(nn.Dropout(0.5, seed=1), nn.SpatialDropout(0.5, seed=2),
                          nn.GaussianDropout(0.2, seed=3))
    y = model(x, training=True)
    outs = [gd.function([x], y, backend=b)(xs) for b in ("reference", "llvm")]
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-4, atol=1e-5)


def test_spatial_dropout_drops_whole_channels():
    x = gd.input("x", (None, 64, 3, 3))
    out = _ref([x], nn.SpatialDropout(0.5, seed=4)(x, training=True),
               np.ones((8, 64, 3, 3), np.float32))
    per_channel = out.reshape(8, 64, 9)
    assert np.all((per_channel == 0).all(axis=2) | (per_channel == 2.0).all(axis=2))
    assert 0.35 < (per_channel[:, :, 0] == 0).mean() < 0.65


def test_drop_block_zeroes_contiguous_blocks_and_rescales():
    x = gd.input("x", (None, 4, 12, 12))
    out = _ref([x], nn.DropBlock(0.2, block_size=3, seed=5)(x, training=True),
               np.ones((4, 4, 12, 12), np.float32))
    dropped = out == 0
    assert 0.1 < dropped.mean() < 0.3
    np.testing.assert_allclose(out[~dropped], out.size / (~dropped).sum(), rtol=1e-4)
    rows = np.argwhere(dropped[0, 0])                         # a dropped pixel has a 3-wide run
    if len(rows):
        r, c = rows[0]
        assert dropped[0, 0, r, c:c + 3].all() or dropped[0, 0, r:r + 3, c].all()


def test_gaussian_dropout_noise_has_mean_one_and_variance_p_over_one_minus_p():
    x = gd.input("x", (None, 10000))
    out = _ref([x], nn.GaussianDropout(0.2, seed=6)(x, training=True),
               np.ones((10, 10000), np.float32))
    assert abs(out.mean() - 1) < 0.01 and abs(out.var() - 0.25) < 0.01


def test_drop_connect_masks_the_weights_once_for_the_whole_batch():
    dense = nn.Dense(6, 5)
    layer = nn.DropConnect(dense, p=0.5, seed=7)
    assert layer.params() == [dense.weight, dense.bias]
    x = gd.input("x", (None, 6))
    x1, x2 = RNG.standard_normal((2, 6)).astype(np.float32)
    batch = np.stack([x1, x2, x1 + x2])
    np.testing.assert_allclose(_ref([x], layer(x), batch), _ref([x], dense(x), batch))
    out = _ref([x], layer(x, training=True), batch) - dense.bias.value
    np.testing.assert_allclose(out[2], out[0] + out[1], rtol=1e-4, atol=1e-5)   # one mask
    assert not np.allclose(out, _ref([x], dense(x), batch) - dense.bias.value)
    with pytest.raises(TypeError):
        nn.DropConnect(nn.Conv2D(1, 1, 1))
