"""gd.init: distributions against their closed forms, fans, seeding and dtypes."""

from __future__ import annotations

import math

import numpy as np
import pytest

import graphdl as gd

SHAPE = (300, 500)          # 150,000 draws: the sample std is within ~0.5% of the true one


# (initializer, shape, expected std, uniform bound or None) from the closed forms.
DISTRIBUTIONS = [
    (gd.init.uniform(), SHAPE, 0.1 / math.sqrt(12.0), 0.05),
    (gd.init.uniform(-1.0, 3.0), SHAPE, 4.0 / math.sqrt(12.0), None),   # mean 1
    (gd.init.normal(), SHAPE, 0.05, None),
    (gd.init.xavier_uniform(), SHAPE, math.sqrt(2.0 / 800), math.sqrt(6.0 / 800)),
    (gd.init.xavier_uniform(gain=2.0), SHAPE, 2 * math.sqrt(2.0 / 800), 2 * math.sqrt(6.0 / 800)),
    (gd.init.xavier_normal(), SHAPE, math.sqrt(2.0 / 800), None),
    (gd.init.he_uniform(), SHAPE, math.sqrt(2.0 / 300), math.sqrt(6.0 / 300)),
    (gd.init.he_normal(), SHAPE, math.sqrt(2.0 / 300), None),
    (gd.init.he_normal(mode="fan_out"), SHAPE, math.sqrt(2.0 / 500), None),
    (gd.init.he_uniform("leaky_relu", a=0.2), SHAPE, math.sqrt(2.0 / 1.04 / 300),
     math.sqrt(6.0 / 1.04 / 300)),
    (gd.init.he_normal("tanh"), SHAPE, 5.0 / 3.0 / math.sqrt(300), None),
    # conv weights (out, in, kh, kw): fan_in = 16 * 9 = 144, fan_out = 64 * 9 = 576
    (gd.init.he_normal(), (64, 16, 3, 3), math.sqrt(2.0 / 144), None),
    (gd.init.xavier_uniform(), (64, 16, 3, 3), math.sqrt(2.0 / 720), math.sqrt(6.0 / 720)),
]


@pytest.mark.parametrize("init, shape, std, bound", DISTRIBUTIONS,
                         ids=[f"{d[0]!r}-{d[1]}" for d in DISTRIBUTIONS])
def test_samples_have_the_closed_form_moments(init, shape, std, bound):
    gd.seed(11)
    w = init(shape, "float64")
    n = w.size
    expected_mean = (init.params["low"] + init.params["high"]) / 2 if init.name == "uniform" \
        else 0.0
    assert w.shape == shape
    assert abs(w.mean() - expected_mean) < 5 * std / math.sqrt(n)
    assert w.std() == pytest.approx(std, rel=0.02 if n < 50_000 else 0.01)
    if bound is not None:
        assert np.all(np.abs(w) <= bound)
        assert np.abs(w).max() > 0.99 * bound


def test_normal_uses_its_mean():
    gd.seed(0)
    w = gd.init.normal(mean=2.0, std=0.5)(SHAPE, "float64")
    assert w.mean() == pytest.approx(2.0, abs=0.01)
    assert w.std() == pytest.approx(0.5, rel=0.01)


@pytest.mark.parametrize("init, value", [(gd.init.zeros(), 0.0), (gd.init.ones(), 1.0),
                                         (gd.init.constant(0.25), 0.25)])
def test_constant_fills(init, value):
    w = init((4, 5), "float32")
    assert w.dtype == np.float32 and w.shape == (4, 5)
    assert np.all(w == np.float32(value))


def test_seed_makes_draws_reproducible():
    gd.seed(5)
    a = gd.param("a", (20, 30), init=gd.init.xavier_uniform())
    b = gd.param("b", (30,), init=gd.init.normal())
    gd.seed(5)
    a2 = gd.param("a", (20, 30), init=gd.init.xavier_uniform())
    b2 = gd.param("b", (30,), init=gd.init.normal())
    np.testing.assert_array_equal(a.value, a2.value)
    np.testing.assert_array_equal(b.value, b2.value)
    gd.seed(6)
    a3 = gd.param("a", (20, 30), init=gd.init.xavier_uniform())
    assert not np.array_equal(a.value, a3.value)


@pytest.mark.parametrize("shape, fans", [
    ((64, 128), (64, 128)),                 # dense (in, out): x @ W
    ((128, 64), (128, 64)),
    ((16, 3, 5, 5), (75, 400)),             # conv2d (out, in, kh, kw)
    ((8, 4, 3), (12, 24)),                  # conv1d
    ((8, 2, 3, 3, 3), (54, 216)),           # conv3d
    ((32, 1, 3, 3), (9, 288)),              # depthwise: in/groups = 1
])
def test_fan_in_and_fan_out(shape, fans):
    assert gd.init.fan_in_and_fan_out(shape) == fans


@pytest.mark.parametrize("shape", [(10,), ()])
def test_fans_need_two_dimensions(shape):
    with pytest.raises(gd.ShapeError, match="at least 2"):
        gd.init.xavier_uniform()(shape, "float32")


def test_dense_fan_in_is_the_first_axis():
    """(in, out) layout: he with fan_in depends on shape[0] only."""
    gd.seed(1)
    tall = gd.init.he_normal()((2000, 50), "float64")
    wide = gd.init.he_normal()((50, 2000), "float64")
    assert tall.std() == pytest.approx(math.sqrt(2.0 / 2000), rel=0.02)
    assert wide.std() == pytest.approx(math.sqrt(2.0 / 50), rel=0.02)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_is_respected(dtype):
    for init in (gd.init.xavier_normal(), gd.init.he_uniform(), gd.init.uniform(),
                 gd.init.zeros()):
        assert init((3, 4), dtype).dtype == np.dtype(dtype)
    p = gd.param("W", (3, 4), init=gd.init.xavier_uniform(), dtype=dtype)
    assert p.dtype == dtype and p.value.dtype == np.dtype(dtype)


def test_same_seed_gives_the_same_numbers_in_both_float_dtypes():
    gd.seed(2)
    a = gd.init.normal()((10, 10), "float64")
    gd.seed(2)
    b = gd.init.normal()((10, 10), "float32")
    np.testing.assert_array_equal(a.astype(np.float32), b)


def test_default_param_dtype_and_integer_fills():
    W = gd.param("W", (64, 128), init=gd.init.xavier_uniform())
    assert W.dtype == "float32"
    assert gd.init.constant(3)((2,), "int64").tolist() == [3, 3]
    with pytest.raises(TypeError, match="draws floats"):
        gd.init.normal()((2, 2), "int64")


def test_zero_element_shapes_are_empty():
    assert gd.init.xavier_uniform()((0, 5), "float32").shape == (0, 5)
    assert gd.init.he_normal()((4, 0, 3, 3), "float64").size == 0


def test_calculate_gain_matches_pytorch_values():
    assert gd.init.calculate_gain("relu") == math.sqrt(2.0)
    assert gd.init.calculate_gain("tanh") == 5.0 / 3.0
    assert gd.init.calculate_gain("sigmoid") == 1.0
    assert gd.init.calculate_gain("leaky_relu") == math.sqrt(2.0 / (1 + 0.01 ** 2))
    assert gd.init.calculate_gain("selu") == 0.75
    with pytest.raises(ValueError):
        gd.init.calculate_gain("gelu")


def test_invalid_arguments():
    with pytest.raises(ValueError):
        gd.init.he_normal(mode="fan_avg")
    with pytest.raises(ValueError):
        gd.init.uniform(1.0, -1.0)
    with pytest.raises(ValueError):
        gd.init.normal(std=-1.0)


def test_matches_torch_fans_when_torch_is_installed():
    torch = pytest.importorskip("torch")
    for shape in [(16, 3, 5, 5), (8, 4, 3)]:
        t = torch.empty(shape)
        assert gd.init.fan_in_and_fan_out(shape) == \
            torch.nn.init._calculate_fan_in_and_fan_out(t)
    # dense: graphdl's (in, out) is torch's (out, in) transposed
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(128, 64))
    assert gd.init.fan_in_and_fan_out((64, 128)) == (fan_in, fan_out)
