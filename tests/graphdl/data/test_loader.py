"""DataLoader batching and seeding, Dataset, and the data sets of graphdl.data.datasets."""

import sys

import numpy as np
import pytest

from graphdl.data.augment import HorizontalFlip
from graphdl.data.datasets import (
    Dataset,
    load_breast_cancer,
    load_digits,
    load_iris,
    moons,
    regression,
    sequences,
    spirals,
)
from graphdl.data.loader import DataLoader

X = np.arange(20, dtype=np.float32).reshape(10, 2)
Y = np.arange(10, dtype=np.int64)


# ----------------------------------------------------------------------------- Dataset


def test_dataset_indexing():
    ds = Dataset(X, Y)
    assert len(ds) == 10
    xb, yb = ds[np.array([3, 1])]
    np.testing.assert_array_equal(xb, [[6, 7], [2, 3]])
    np.testing.assert_array_equal(yb, [3, 1])
    with pytest.raises(ValueError, match="different numbers of samples"):
        Dataset(X, Y[:9])


# -------------------------------------------------------------------------- DataLoader


def test_batch_count_and_sizes():
    assert len(DataLoader((X, Y), batch_size=4)) == 3
    assert [len(yb) for _, yb in DataLoader((X, Y), batch_size=4)] == [4, 4, 2]
    dropped = DataLoader((X, Y), batch_size=4, drop_last=True)
    assert len(dropped) == 2
    assert [len(yb) for _, yb in dropped] == [4, 4]


def test_epoch_visits_every_sample_once_in_seeded_order():
    loader = DataLoader((X, Y), batch_size=3, seed=7)
    for epoch in range(3):
        labels = np.concatenate([yb for _, yb in loader])
        # independent reference: the documented rule, default_rng(seed + epoch)
        np.testing.assert_array_equal(labels, np.random.default_rng(7 + epoch).permutation(10))
    assert loader.epoch == 3


def test_pairs_stay_aligned_and_reshuffle_each_epoch():
    loader = DataLoader(Dataset(X, Y), batch_size=10, seed=0)
    (x1, y1), = list(loader)
    (_, y2), = list(loader)
    np.testing.assert_array_equal(x1[:, 0], 2 * y1)
    assert not np.array_equal(y1, y2)


def test_same_seed_same_batches_and_set_epoch_resumes():
    a = [yb for _, yb in DataLoader((X, Y), batch_size=4, seed=3)]
    b = [yb for _, yb in DataLoader((X, Y), batch_size=4, seed=3)]
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    loader = DataLoader((X, Y), batch_size=4, seed=3)
    list(loader)
    second = [yb for _, yb in loader]
    resumed = DataLoader((X, Y), batch_size=4, seed=3)
    resumed.set_epoch(1)
    assert all(np.array_equal(p, q) for p, q in zip(second, [yb for _, yb in resumed]))


def test_no_shuffle_keeps_order():
    labels = np.concatenate([yb for _, yb in DataLoader((X, Y), batch_size=3, shuffle=False)])
    np.testing.assert_array_equal(labels, Y)


def test_infinite_runs_through_epochs():
    loader = DataLoader((X, Y), batch_size=4, infinite=True, seed=1)
    iterator = iter(loader)
    batches = [next(iterator)[1] for _ in range(7)]       # 3 per epoch: epochs 0, 1, 2
    np.testing.assert_array_equal(np.concatenate(batches[:3]),
                                  np.random.default_rng(1).permutation(10))
    np.testing.assert_array_equal(np.concatenate(batches[3:6]),
                                  np.random.default_rng(2).permutation(10))
    assert len(loader) == 3


def test_transform_is_applied_to_inputs_only():
    images = np.arange(8 * 1 * 2 * 2, dtype=np.float32).reshape(8, 1, 2, 2)
    loader = DataLoader((images, np.arange(8)), batch_size=8, shuffle=False,
                        transform=HorizontalFlip(p=1.0))
    (xb, yb), = list(loader)
    np.testing.assert_array_equal(xb, images[..., ::-1])
    np.testing.assert_array_equal(yb, np.arange(8))
    seen = []
    loader = DataLoader((X, Y), batch_size=5, transform=lambda x, rng: seen.append(rng) or x)
    list(loader)
    assert len(seen) == 2 and isinstance(seen[0], np.random.Generator)


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 11, "drop_last": True}, "no batch"),
    ({"seed": -1}, "seed"),
    ({"transform": 3}, "transform"),
])
def test_loader_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataLoader((X, Y), **kwargs)
    with pytest.raises(ValueError, match="Dataset or an"):
        DataLoader([1, 2, 3])


# ---------------------------------------------------------------------- scikit-learn sets


def test_load_digits_split_shapes_and_stratification():
    pytest.importorskip("sklearn")
    X_train, y_train, X_test, y_test = load_digits(test_size=0.2, seed=0)
    assert X_train.shape == (1437, 64) and X_test.shape == (360, 64)
    assert X_train.dtype == np.float32 and y_train.dtype == np.int64
    assert X_train.max() == 16.0
    # stratified: every class has 17-19% of its samples in the test part
    counts = np.bincount(y_test) / (np.bincount(y_test) + np.bincount(y_train))
    assert np.all(np.abs(counts - 0.2) < 0.02)
    images = load_digits(flatten=False)[0]
    assert images.shape == (1437, 1, 8, 8)


def test_load_iris_and_breast_cancer():
    pytest.importorskip("sklearn")
    X_train, y_train, X_test, y_test = load_iris(test_size=0.2)
    assert X_train.shape == (120, 4) and X_test.shape == (30, 4)
    assert np.bincount(y_test).tolist() == [10, 10, 10] and len(y_train) == 120
    X_train, y_train, _, y_test = load_breast_cancer()
    assert X_train.shape[1] == 30 and len(y_train) + len(y_test) == 569


def test_load_without_sklearn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install graphdl\[examples\]"):
        load_iris()


# ------------------------------------------------------------------------ synthetic sets


def test_spirals_and_moons_shapes_balance_and_seed():
    X_s, y_s = spirals(301, classes=3, seed=0)
    assert X_s.shape == (301, 2) and X_s.dtype == np.float32 and y_s.dtype == np.int64
    assert np.bincount(y_s).tolist() == [101, 100, 100]
    assert np.abs(X_s).max() <= 1.0
    np.testing.assert_array_equal(spirals(301, seed=0)[0], X_s)
    X_m, y_m = moons(200, noise=0.0)
    assert np.bincount(y_m).tolist() == [100, 100]
    # noise-free moons lie exactly on their unit circles
    outer = X_m[y_m == 0]
    np.testing.assert_allclose(np.hypot(outer[:, 0], outer[:, 1]), 1.0, rtol=1e-6)
    inner = X_m[y_m == 1]
    np.testing.assert_allclose(np.hypot(inner[:, 0] - 1, inner[:, 1] - 0.5), 1.0, rtol=1e-6)


def test_regression_recovers_true_weights():
    X_r, y_r, true_w = regression(400, features=5, noise=0.01, seed=2)
    assert X_r.shape == (400, 5) and true_w.shape == (5,)
    w = np.linalg.lstsq(X_r.astype(np.float64), y_r.astype(np.float64), rcond=None)[0]
    np.testing.assert_allclose(w, true_w, atol=0.01)


def test_sequences_are_learnable_from_temporal_structure():
    X_q, y_q = sequences(600, T=16, features=3, classes=4, seed=0)
    assert X_q.shape == (600, 16, 3) and X_q.dtype == np.float32
    assert set(np.unique(y_q)) == {0, 1, 2, 3}
    # Nearest class centroid on the spectrum over time: near-perfect, so the task is learnable.
    spectrum = np.abs(np.fft.rfft(X_q, axis=1)).sum(axis=2)
    train, test = np.arange(400), np.arange(400, 600)
    centroids = np.stack([spectrum[train][y_q[train] == c].mean(0) for c in range(4)])
    predicted = np.argmin(((spectrum[test][:, None] - centroids) ** 2).sum(-1), axis=1)
    assert np.mean(predicted == y_q[test]) > 0.95
    # The time-average alone carries no class signal: centroid accuracy near chance.
    mean = X_q.mean(axis=1)
    centroids = np.stack([mean[train][y_q[train] == c].mean(0) for c in range(4)])
    predicted = np.argmin(((mean[test][:, None] - centroids) ** 2).sum(-1), axis=1)
    assert np.mean(predicted == y_q[test]) < 0.45
    with pytest.raises(ValueError, match="Nyquist|frequencies"):
        sequences(10, T=6, features=2, classes=3)
