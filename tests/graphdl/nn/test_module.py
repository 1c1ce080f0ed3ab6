"""gd.nn.Module: names, params(), states(), updates() of the last training call, checkpoints."""

import numpy as np
import pytest

import graphdl as gd
from graphdl import nn


def _ref(inputs, outputs, *arrays, updates=None):
    return gd.function(inputs, outputs, updates=updates, backend="reference")(*arrays)


def test_layer_names_are_unique_snake_case_and_prefix_the_params():
    nn.reset_names()
    a, b = nn.Conv2D(1, 2, 3), nn.Conv2D(2, 2, 3)
    bn, lstm, sep = nn.BatchNorm(2), nn.LSTM(2, 3), nn.DepthwiseSeparableConv2D(2, 4, 3)
    assert (a.name, b.name, bn.name, lstm.name) == ("conv2d", "conv2d_1", "batch_norm", "lstm")
    assert sep.name == "depthwise_separable_conv2d"
    assert [p.name for p in a.params()] == ["conv2d.weight", "conv2d.bias"]
    assert [p.name for p in sep.params()] == [
        "depthwise_separable_conv2d.depthwise.weight",
        "depthwise_separable_conv2d.pointwise.weight",
        "depthwise_separable_conv2d.pointwise.bias"]
    assert [s.name for s in bn.states()] == ["batch_norm.running_mean", "batch_norm.running_var"]
    assert nn.Dense(3, 4, name="head").weight.name == "head.weight"
    nn.reset_names()
    assert nn.Conv2D(1, 2, 3).name == "conv2d"


def test_params_are_collected_recursively_in_order_each_once():
    shared = nn.Dense(4, 4)
    model = nn.Sequential(nn.Dense(3, 4), gd.relu, shared, nn.BatchNorm(4), shared,
                          nn.Residual(nn.Dense(4, 4)))
    params = model.params()
    assert len(params) == len(set(params)) == 8
    assert params[2] is shared.weight and params[3] is shared.bias
    assert all(p.op == "param" for p in params)
    assert model.states() == model[3].states()
    assert model.num_params() == 3 * 4 + 4 + 2 * (4 * 4 + 4) + 2 * 4


def test_updates_come_from_the_last_training_call_only():
    model = nn.Sequential(nn.Dense(3, 4), nn.BatchNorm(4), nn.Dropout(0.5), nn.Dense(4, 2),
                          nn.Dropout(0.2))
    x = gd.input("x", (None, 3))
    assert model.updates() == []
    model(x)                                                    # eval: nothing to update
    assert model.updates() == []
    model(x, training=True)
    names = [var.name for var, _ in model.updates()]
    assert names == [model[1].running_mean.name, model[1].running_var.name, "random_step"]
    first = model.updates()
    model(x)                                                    # eval calls keep them
    assert [v for _, v in model.updates()] == [v for _, v in first]
    model(gd.input("x2", (None, 3)), training=True)             # another training graph
    assert next(v for _, v in model.updates()) is not first[0][1]


def test_updates_plus_optimizer_updates_compile_and_advance_the_step_counter():
    gd.seed(0)
    model = nn.Sequential(nn.Dense(3, 8), nn.Dropout(0.5), nn.Dense(8, 2))
    x, y = gd.input("x", (None, 3)), gd.input("y", (None,), dtype="int64")
    loss = gd.losses.cross_entropy(model(x, training=True), y)
    step = gd.function([x, y], [loss], backend="reference",
                       updates=gd.optim.SGD(lr=0.1).updates(loss, model.params())
                       + model.updates())
    counter = gd.random_step()
    before = int(counter.value)
    xs, ys = np.ones((4, 3), np.float32), np.zeros(4, np.int64)
    step(xs, ys)
    step(xs, ys)
    assert int(counter.value) == before + 2


def test_a_custom_module_declares_params_with_the_layer_prefix():
    class Scale(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.gamma = self.param("gamma", (n,), gd.init.constant(2.0))

        def forward(self, x, training=False):
            return x * self.gamma

    layer = Scale(3)
    assert layer.name.startswith("scale") and layer.params()[0].name == f"{layer.name}.gamma"
    x = gd.input("x", (None, 3))
    np.testing.assert_allclose(_ref([x], layer(x), np.ones((2, 3), np.float32)), 2.0)
    with pytest.raises(RuntimeError):
        layer.add_updates([])                                   # only inside forward
    with pytest.raises(NotImplementedError):
        nn.Module()(x)


def test_checkpoint_of_params_and_states_restores_the_model(tmp_path):
    model = nn.Sequential(nn.Conv2D(1, 2, 3), nn.BatchNorm(2), nn.Flatten(), nn.Dense(8, 3))
    model[1].running_mean.value = np.array([1.0, 2.0], np.float32)
    saved = {v.name: v.value.copy() for v in model.params() + model.states()}
    path = gd.save(tmp_path / "model.npz", params=model.params() + model.states())
    for v in model.params() + model.states():
        v.value = np.zeros_like(v.value)
    gd.load(path, params=model.params() + model.states())
    for v in model.params() + model.states():
        np.testing.assert_array_equal(v.value, saved[v.name])


def test_repr_shows_layers_configuration_and_param_shapes():
    model = nn.Sequential(nn.Conv2D(1, 4, 3, name="c"), gd.relu, nn.MaxPool2D(2))
    text = repr(model)
    assert "Conv2D(1, 4, kernel_size=(3, 3)" in text and "c.weight (4, 1, 3, 3)" in text
    assert "relu" in text and "MaxPool2D" in text


@pytest.mark.parametrize("name", nn.__all__)
def test_every_public_name_has_a_formula_line_and_an_example(name):
    doc = getattr(nn, name).__doc__ or ""
    first = doc.strip().splitlines()[0] if doc.strip() else ""
    assert "=" in first or "~" in first or name in ("Module", "reset_names"), first
    assert "Example" in doc and ">>>" in doc
