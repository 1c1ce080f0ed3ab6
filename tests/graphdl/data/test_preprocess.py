"""Standardizer, MinMaxScaler and one_hot against hand-computed values."""

import numpy as np
import pytest

from graphdl.data.preprocess import MinMaxScaler, Standardizer, one_hot


def test_standardizer_uses_train_statistics_only():
    train = np.array([[1.0, 10.0], [3.0, 30.0]], dtype=np.float32)    # mean (2, 20), std (1, 10)
    scaler = Standardizer().fit(train)
    np.testing.assert_allclose(scaler.transform(train), [[-1, -1], [1, 1]], rtol=1e-6)
    np.testing.assert_allclose(scaler.transform([[5.0, 0.0]]), [[3, -2]], rtol=1e-6)
    assert scaler.transform(train).dtype == np.float32
    np.testing.assert_allclose(scaler.mean.ravel(), [2, 20])


def test_standardizer_constant_feature_and_inverse():
    data = np.array([[1.0, 4.0], [1.0, 6.0], [1.0, 8.0]])
    scaler = Standardizer()
    out = scaler.fit_transform(data)
    np.testing.assert_array_equal(out[:, 0], 0.0)          # eps guard: no division by zero
    assert out[:, 1].std() == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(scaler.inverse_transform(out), data)
    ints = Standardizer().fit_transform(np.array([[0], [2]]))
    assert ints.dtype == np.float64
    np.testing.assert_allclose(ints.ravel(), [-1, 1], rtol=1e-6)


def test_standardizer_per_channel_for_images():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(6, 3, 4, 4)) * np.array([1, 5, 10])[None, :, None, None] + 7
    out = Standardizer(axis=(0, 2, 3)).fit_transform(images)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-9)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, rtol=1e-6)


def test_scaler_errors():
    with pytest.raises(RuntimeError, match="fit"):
        Standardizer().transform(np.ones((2, 2)))
    scaler = Standardizer().fit(np.ones((4, 3)))
    with pytest.raises(ValueError, match="fitted on shape"):
        scaler.transform(np.ones((4, 2)))
    with pytest.raises(ValueError, match="at least one sample"):
        Standardizer().fit(np.ones((0, 3)))
    with pytest.raises(ValueError, match="feature_range"):
        MinMaxScaler((1, 0))


def test_min_max_scaler_by_hand():
    train = np.array([[0.0, -1.0, 5.0], [10.0, 1.0, 5.0]])
    scaler = MinMaxScaler().fit(train)
    np.testing.assert_allclose(scaler.transform([[5.0, 0.0, 5.0]]), [[0.5, 0.5, 0.0]])
    np.testing.assert_allclose(scaler.transform([[20.0, 3.0, 6.0]]), [[2.0, 2.0, 1.0]])
    symmetric = MinMaxScaler((-1, 1)).fit(train)
    np.testing.assert_allclose(symmetric.transform(train), [[-1, -1, -1], [1, 1, -1]])
    np.testing.assert_allclose(symmetric.inverse_transform(symmetric.transform(train)), train)


def test_one_hot_by_hand_and_shapes():
    np.testing.assert_array_equal(one_hot([0, 2, 1], 3), [[1, 0, 0], [0, 0, 1], [0, 1, 0]])
    assert one_hot([0, 2, 1], 3).dtype == np.float32
    assert one_hot(np.zeros((2, 5), dtype=int), 4).shape == (2, 5, 4)
    np.testing.assert_array_equal(one_hot(np.array([1.0, 0.0]), 2), [[0, 1], [1, 0]])


@pytest.mark.parametrize("labels, message", [
    ([0, 1, 7, 2], r"label 7 at index \(2,\) is out of range for num_classes=5"),
    ([0, -1], r"label -1 at index \(1,\)"),
    ([0.5, 1.0], "not an integer"),
    (["a"], "integers"),
])
def test_one_hot_names_the_bad_label(labels, message):
    with pytest.raises(ValueError, match=message):
        one_hot(labels, 5)
