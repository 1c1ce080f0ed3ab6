"""Counter-based randomness and the dropout family: statistics, seeds, steps, backends."""

import numpy as np
import pytest

import graphdl as gd
from graphdl.ops import random as gr


def _ref(inputs, outputs, *arrays, updates=None):
    return gd.function(inputs, outputs, updates=updates, backend="reference")(*arrays)


def test_uniform_numbers_are_uniform_in_the_unit_interval():
    for dtype in ("float32", "float64"):
        u = _ref([], gd.random_uniform((200_000,), step=3, seed=11, dtype=dtype))
        assert u.dtype == dtype and u.min() >= 0.0 and u.max() < 1.0
        counts = np.histogram(u, bins=20, range=(0, 1))[0]
        chi2 = ((counts - u.size / 20) ** 2 / (u.size / 20)).sum()
        assert chi2 < 50, chi2          # 19 degrees of freedom: p < 1e-4 beyond 45
        assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.01


def test_uniform_numbers_follow_the_documented_splitmix64_formula():
    key = gr.stream_key(42, 0)
    base = gr.mix64(key ^ gr.mix64(7 + gr.GOLDEN))
    want = [(gr.mix64(base + (i + 1) * gr.GOLDEN) >> 40) * 2.0 ** -24 for i in range(6)]
    u = _ref([], gd.random_uniform((2, 3), step=7, seed=42))
    np.testing.assert_array_equal(u.ravel(), np.array(want, np.float32))


def test_dropout_mask_mean_scaling_and_gradient():
    x = gd.input("x", (None, 1000), "float64")
    y = gd.dropout(x, 0.3, seed=1, step=0)
    out, g = _ref([x], [y, gd.grad(y.sum(), x)], np.ones((100, 1000)))
    kept = out != 0
    assert abs(kept.mean() - 0.7) < 0.005
    np.testing.assert_allclose(out[kept], 1 / 0.7)
    np.testing.assert_array_equal(g, out)           # d/dx = mask / (1 - p)


@pytest.mark.parametrize("fn", [gd.dropout, gd.drop_connect, gd.gaussian_dropout,
                                gd.spatial_dropout, gd.drop_block])
def test_every_variant_is_the_identity_in_eval(fn):
    x = gd.input("x", (None, 3, 8, 8))
    assert fn(x, 0.4, training=False) is x
    assert fn(x, 0.0, training=True) is x


def test_masks_are_reproducible_per_seed_and_differ_across_seeds_steps_and_layers():
    x = gd.input("x", (4, 50))
    ones = np.ones((4, 50), np.float32)

    def masks(seed, step):
        return _ref([x], [gd.dropout(x, 0.5, seed=seed, step=step),
                          gd.dropout(x * 2.0, 0.5, seed=seed, step=step)], ones)

    a, b = masks(5, 0), masks(5, 0)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], masks(6, 0)[0])
    assert not np.array_equal(a[0], masks(5, 1)[0])
    # seed=None: gd's seed and one stream per call, restarted by set_seed
    gr.set_seed(123)
    first = _ref([x], [gd.dropout(x, 0.5), gd.dropout(x, 0.5)], ones)
    assert not np.array_equal(first[0], first[1])   # two layers, two streams
    gd.random_step().value = 7
    gr.set_seed(123)
    assert int(gd.random_step().value) == 0       # the step counter restarts too
    again = _ref([x], [gd.dropout(x, 0.5), gd.dropout(x, 0.5)], ones)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])


@pytest.mark.parametrize("backend", ["reference", "llvm"])
def test_the_step_counter_advances_with_random_updates(backend):
    x = gd.input("x", (None, 64))
    y = gd.dropout(x, 0.5)
    updates = gd.random_updates(y)
    step = gd.random_step()
    assert [var for var, _ in updates] == [step]
    f = gd.function([x], y, updates=updates, backend=backend)
    start = int(step.value)
    ones = np.ones((8, 64), np.float32)
    first, second = f(ones), f(ones)
    assert int(step.value) == start + 2
    assert not np.array_equal(first, second)
    step.value = start                              # the mask is a function of the step
    np.testing.assert_array_equal(f(ones), first)


def test_masks_are_bit_identical_on_both_backends():
    x = gd.input("x", (None, 3, 9, 9))
    outs = [gd.dropout(x, 0.37, seed=3, step=4), gd.spatial_dropout(x, 0.5, seed=3, step=4),
            gd.drop_block(x, 0.2, 3, seed=9, step=1),
            gd.random_uniform((None, 7), seed=1, step=2, dtype="float64")]
    xv = np.ones((5, 3, 9, 9), np.float32)
    ref = gd.function([x], outs, backend="reference")(xv)
    got = gd.function([x], outs, backend="llvm")(xv)
    for r, g in zip(ref, got):
        np.testing.assert_array_equal(r, g)


def test_gaussian_dropout_noise_is_normal_with_the_right_variance():
    x = gd.input("x", (400, 500), "float64")
    p = 0.2
    noise = _ref([x], gd.gaussian_dropout(x, p, seed=2, step=0), np.ones((400, 500)))
    z = (noise - 1.0) / np.sqrt(p / (1 - p))
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1.0) < 0.01
    assert abs(((z - z.mean()) ** 4).mean() / z.var() ** 2 - 3.0) < 0.05   # kurtosis
    assert abs((np.abs(z) < 1.0).mean() - 0.682689) < 0.005


def test_the_cos_polynomial_of_box_muller_is_accurate():
    u = gd.input("u", (1001,), "float64")
    uv = np.linspace(0.0, 1.0, 1001, endpoint=False) + 0.0004
    np.testing.assert_allclose(_ref([u], gr._cos_2pi(u), uv), np.cos(2 * np.pi * uv),
                               atol=1e-9)


def test_spatial_dropout_drops_whole_channels():
    x = gd.input("x", (None, 16, 5, 5))
    out = _ref([x], gd.spatial_dropout(x, 0.5, seed=4, step=0), np.ones((64, 16, 5, 5),
                                                                       np.float32))
    per_channel = out.reshape(64, 16, -1)
    assert np.all(per_channel.min(axis=2) == per_channel.max(axis=2))
    assert abs((per_channel[:, :, 0] != 0).mean() - 0.5) < 0.05
    assert set(np.unique(out)) <= {0.0, 2.0}


def test_drop_block_drops_contiguous_blocks_and_rescales():
    n, c, s, block, p = 32, 4, 24, 5, 0.15
    x = gd.input("x", (None, c, s, s), "float64")
    out = _ref([x], gd.drop_block(x, p, block, seed=8, step=0), np.ones((n, c, s, s)))
    dropped = out == 0
    assert abs(dropped.mean() - p) < 0.03
    scale = out[~dropped]
    np.testing.assert_allclose(scale, dropped.size / (~dropped).sum(), rtol=1e-6)
    # every dropped pixel lies in a fully dropped block x block square inside the map
    covered = np.zeros_like(dropped)
    for i in range(s - block + 1):
        for j in range(s - block + 1):
            full = dropped[:, :, i:i + block, j:j + block].all(axis=(2, 3))
            covered[:, :, i:i + block, j:j + block] |= full[:, :, None, None]
    np.testing.assert_array_equal(covered, dropped)


def test_dropout_family_gradients_match_finite_differences():
    x = gd.input("x", (2, 3, 6, 6), "float64")
    y = (gd.dropout(x, 0.3, seed=1, step=0) + gd.gaussian_dropout(x, 0.3, seed=2, step=0)
         + gd.spatial_dropout(x, 0.5, seed=3, step=0) + gd.drop_block(x, 0.2, 2, seed=4,
                                                                      step=0))
    rng = np.random.default_rng(0)
    loss = (gd.tanh(y) * gd.constant(rng.standard_normal(x.shape))).sum()
    report = gd.check_grad(loss, [x], feed={x: rng.standard_normal(x.shape)}, rtol=1e-5,
                           atol=1e-7)
    assert report, str(report)


def test_bad_probabilities_and_steps_raise():
    x = gd.input("x", (3,))
    with pytest.raises(ValueError, match="p must be"):
        gd.dropout(x, 1.5)
    with pytest.raises(gd.DTypeError, match="int64 scalar"):
        gd.dropout(x, 0.5, step=gd.input("s", (), "float32"))
    with pytest.raises(gd.ShapeError):
        gd.spatial_dropout(x, 0.5)
