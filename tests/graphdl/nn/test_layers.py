"""Dense, Maxout, Activation and Flatten against NumPy (and torch.nn.Linear when importable);
PyTorch's default initialization; gradients by finite differences (float64)."""

import math

import numpy as np
import pytest

import graphdl as gd
from graphdl import nn

RNG = np.random.default_rng(5)


def _ref(inputs, outputs, *arrays):
    return gd.function(inputs, outputs, backend="reference")(*arrays)


def test_dense_is_x_at_w_plus_b_on_the_last_axis():
    layer = nn.Dense(6, 4)
    assert layer.weight.shape == (6, 4) and layer.bias.shape == (4,)
    x = gd.input("x", (None, 3, 6))
    xs = RNG.standard_normal((2, 3, 6)).astype(np.float32)
    want = xs @ layer.weight.value + layer.bias.value
    np.testing.assert_allclose(_ref([x], layer(x), xs), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(_ref([x], layer(x, training=True), xs),
                                  _ref([x], layer(x), xs))      # no train/eval difference
    assert nn.Dense(6, 4, bias=False).params()[0].shape == (6, 4)
    with pytest.raises(gd.ShapeError):
        layer(gd.input("z", (None, 5)))


def test_default_init_is_pytorchs_uniform_one_over_sqrt_fan_in():
    gd.seed(1)
    layer = nn.Dense(400, 300)
    bound = 1 / math.sqrt(400)
    for p in (layer.weight, layer.bias):
        v = p.value
        assert v.min() >= -bound and v.max() <= bound
        assert abs(v.std() - bound / math.sqrt(3)) < 0.05 * bound   # U(-b, b): std b / sqrt 3


def test_dense_matches_torch_linear_with_copied_weights():
    torch = pytest.importorskip("torch")
    layer = nn.Dense(5, 3)
    linear = torch.nn.Linear(5, 3)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(layer.weight.value.T))   # torch stores (out, in)
        linear.bias.copy_(torch.tensor(layer.bias.value))
    xs = RNG.standard_normal((4, 5)).astype(np.float32)
    x = gd.input("x", (None, 5))
    np.testing.assert_allclose(_ref([x], layer(x), xs),
                               linear(torch.tensor(xs)).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_maxout_is_the_max_over_linear_pieces():
    layer = nn.Maxout(5, 3, pieces=4)
    assert layer.weight.shape == (5, 12)
    xs = RNG.standard_normal((7, 5)).astype(np.float32)
    z = xs @ layer.weight.value + layer.bias.value
    want = z.reshape(7, 3, 4).max(axis=2)
    x = gd.input("x", (None, 5))
    np.testing.assert_allclose(_ref([x], layer(x), xs), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        nn.Maxout(5, 3, pieces=0)


def test_activation_by_name_callable_and_keyword_arguments():
    x = gd.input("x", (None, 4))
    xs = RNG.standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(_ref([x], nn.Activation("relu")(x), xs), np.maximum(xs, 0))
    np.testing.assert_allclose(_ref([x], nn.Activation(gd.tanh)(x), xs), np.tanh(xs),
                               rtol=1e-5, atol=1e-6)
    leaky = nn.Activation("leaky_relu", alpha=0.2)
    np.testing.assert_allclose(_ref([x], leaky(x), xs), np.where(xs > 0, xs, 0.2 * xs),
                               rtol=1e-6)
    assert "leaky_relu" in repr(leaky)
    with pytest.raises(ValueError):
        nn.Activation("no_such_op")


def test_flatten_keeps_the_batch_and_joins_the_rest():
    x = gd.input("x", (None, 2, 3, 4))
    xs = RNG.standard_normal((5, 2, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(_ref([x], nn.Flatten()(x), xs), xs.reshape(5, 24))
    np.testing.assert_array_equal(_ref([x], nn.Flatten(2)(x), xs), xs.reshape(5, 2, 12))


@pytest.mark.parametrize("make", [lambda: nn.Dense(3, 2, dtype="float64"),
                                  lambda: nn.Maxout(3, 2, pieces=3, dtype="float64")],
                         ids=["dense", "maxout"])
def test_gradients_match_finite_differences(make):
    layer = make()
    x = gd.input("x", (4, 3), "float64")
    loss = (gd.tanh(layer(x)) ** 2).sum()
    report = gd.check_grad(loss, layer.params() + [x], feed={x: RNG.standard_normal((4, 3))})
    assert report, str(report)
