"""Datasets: an in-memory container, small real data sets and synthetic generators.

- :class:`Dataset` holds ``X`` and ``y`` arrays that share their first dimension.
- :func:`load_digits`, :func:`load_iris`, :func:`load_breast_cancer` return the scikit-learn
  toy data sets (bundled with scikit-learn, no download), split with stratification into
  ``(X_train, y_train, X_test, y_test)`` as ``float32`` / ``int64``. scikit-learn is
  imported only when one of them is called.
- :func:`spirals`, :func:`moons`, :func:`regression` and :func:`sequences` generate data
  from a seed with NumPy alone.

The module uses :func:`graphdl.select.holdout_split` (NumPy only) for the splits.
"""

from __future__ import annotations

import numbers

import numpy as np

from graphdl.select import holdout_split

__all__ = [
    "Dataset",
    "load_digits",
    "load_iris",
    "load_breast_cancer",
    "spirals",
    "moons",
    "regression",
    "sequences",
]


class Dataset:
    """In-memory pairs ``(X[i], y[i])``; indexing with an int, slice or index array.

    Formula: ``dataset[idx] = (X[idx], y[idx])``, ``len(dataset) = X.shape[0]``

    Example::

        ds = Dataset(X, y)
        xb, yb = ds[np.array([0, 5, 7])]
        loader = DataLoader(ds, batch_size=64)
    """

    def __init__(self, X, y):
        X = np.asarray(X)
        y = np.asarray(y)
        if X.ndim == 0 or y.ndim == 0:
            raise ValueError("X and y need a first (sample) dimension; got a scalar")
        if X.shape[0] != y.shape[0]:
            raise ValueError(f"X and y have different numbers of samples: {X.shape[0]} != "
                             f"{y.shape[0]}")
        self.X = X
        self.y = y

    def __len__(self) -> int:
        return self.X.shape[0]

    def __getitem__(self, index):
        return self.X[index], self.y[index]

    def __repr__(self) -> str:
        return (f"Dataset(X: {self.X.shape} {self.X.dtype}, y: {self.y.shape} {self.y.dtype})")


# ------------------------------------------------------------------------ scikit-learn data


def _sklearn_datasets():
    try:
        import sklearn.datasets
    except ImportError as error:
        raise ImportError(
            "graphdl's load_* data sets need scikit-learn: pip install graphdl[examples]"
        ) from error
    return sklearn.datasets


def _split(X, y, test_size, seed):
    X = np.ascontiguousarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    train, test = holdout_split(X.shape[0], test_size=test_size, seed=seed, stratify=y)
    return X[train], y[train], X[test], y[test]


def load_digits(test_size=0.2, seed: int = 0, flatten: bool = True):
    """The 8x8 handwritten digits (1797 samples, 10 classes, pixel values 0..16).

    Formula: a stratified hold-out split; ``X`` is ``(n, 64)`` when ``flatten`` else
    ``(n, 1, 8, 8)`` (NCHW, for convolutions).

    Example::

        X_train, y_train, X_test, y_test = load_digits()
        X_train.shape, X_train.dtype, y_train.dtype     # (1437, 64) float32 int64
    """
    bunch = _sklearn_datasets().load_digits()
    X = bunch.data if flatten else bunch.images[:, None, :, :]
    return _split(X, bunch.target, test_size, seed)


def load_iris(test_size=0.2, seed: int = 0):
    """Fisher's iris flowers (150 samples, 4 features, 3 classes).

    Formula: a stratified hold-out split of the raw measurements (centimetres).

    Example::

        X_train, y_train, X_test, y_test = load_iris(test_size=0.3)
    """
    bunch = _sklearn_datasets().load_iris()
    return _split(bunch.data, bunch.target, test_size, seed)


def load_breast_cancer(test_size=0.2, seed: int = 0):
    """Wisconsin breast cancer (569 samples, 30 features, 2 classes: 0 malignant, 1 benign).

    Formula: a stratified hold-out split of the raw features (standardise them before use).

    Example::

        X_train, y_train, X_test, y_test = load_breast_cancer()
    """
    bunch = _sklearn_datasets().load_breast_cancer()
    return _split(bunch.data, bunch.target, test_size, seed)


# --------------------------------------------------------------------------- synthetic data


def _count(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _noise(value) -> float:
    if not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"noise must be a number >= 0, got {value!r}")
    return float(value)


def _class_sizes(n: int, classes: int) -> np.ndarray:
    sizes = np.full(classes, n // classes)
    sizes[: n % classes] += 1
    return sizes


def spirals(n: int, classes: int = 3, noise: float = 0.2, seed: int = 0):
    """Interleaved 2-D spirals, one arm per class (the CS231n toy problem), shuffled.

    Formula: for class ``c`` and ``r = linspace(0, 1)``, ``t = 4c + 4r + noise * N(0, 1)``,
    ``x = r * (sin t, cos t)``. Returns ``(X float32 (n, 2), y int64 (n,))``; ``n`` is the
    total, split as evenly as possible between classes.

    Example::

        X, y = spirals(300, classes=3)
    """
    n = _count(n, "n")
    classes = _count(classes, "classes", minimum=2)
    noise = _noise(noise)
    rng = np.random.default_rng(seed)
    points, labels = [], []
    for c, size in enumerate(_class_sizes(n, classes)):
        radius = np.linspace(0.0, 1.0, size)
        angle = 4.0 * c + 4.0 * radius + noise * rng.standard_normal(size)
        points.append(np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=1))
        labels.append(np.full(size, c))
    order = rng.permutation(n)
    X = np.concatenate(points)[order].astype(np.float32)
    return X, np.concatenate(labels)[order].astype(np.int64)


def moons(n: int, noise: float = 0.1, seed: int = 0):
    """Two interleaving half circles (scikit-learn's ``make_moons``), shuffled.

    Formula: class 0 ``(cos t, sin t)``, class 1 ``(1 - cos t, 1/2 - sin t)`` for
    ``t in [0, pi]``, plus ``noise * N(0, I)``. Returns ``(X float32 (n, 2), y int64)``.

    Example::

        X, y = moons(200, noise=0.1)
    """
    n = _count(n, "n", minimum=2)
    noise = _noise(noise)
    rng = np.random.default_rng(seed)
    n_outer = n // 2
    outer = np.linspace(0.0, np.pi, n_outer)
    inner = np.linspace(0.0, np.pi, n - n_outer)
    X = np.concatenate([
        np.stack([np.cos(outer), np.sin(outer)], axis=1),
        np.stack([1.0 - np.cos(inner), 0.5 - np.sin(inner)], axis=1),
    ])
    y = np.concatenate([np.zeros(n_outer), np.ones(n - n_outer)])
    X = X + noise * rng.standard_normal(X.shape)
    order = rng.permutation(n)
    return X[order].astype(np.float32), y[order].astype(np.int64)


def regression(n: int, features: int, noise: float = 0.1, seed: int = 0):
    """A linear regression problem with known weights.

    Formula: ``X ~ N(0, I)``, ``true_w ~ N(0, I)``, ``y = X @ true_w + noise * N(0, 1)`` (no
    bias). Returns ``(X float32 (n, features), y float32 (n,), true_w float32 (features,))``.

    Example::

        X, y, true_w = regression(500, features=8)
        w = np.linalg.lstsq(X, y, rcond=None)[0]        # close to true_w
    """
    n = _count(n, "n")
    features = _count(features, "features")
    noise = _noise(noise)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, features))
    true_w = rng.standard_normal(features)
    y = X @ true_w + noise * rng.standard_normal(n)
    return X.astype(np.float32), y.astype(np.float32), true_w.astype(np.float32)


def sequences(n: int, T: int, features: int, classes: int, seed: int = 0,
              noise: float = 0.3):
    """Sequence classification: the class is the frequency of a wave hidden in noise.

    Formula: class ``c`` has ``c + 1`` periods over the sequence; sample ``i`` is
    ``x[i, t, :] = sin(2 pi (c + 1) t / T + phase_i) * a + noise * N(0, I)`` with a random
    phase per sample and one fixed random direction ``a`` (unit norm times
    ``sqrt(features)``). The time-average carries no class information, so a model must use
    the order of the steps. Needs ``T > 2 * classes`` (Nyquist). Returns
    ``(X float32 (n, T, features), y int64 (n,))``, batch-first as the recurrent ops expect.

    Example::

        X, y = sequences(512, T=20, features=4, classes=3)
    """
    n = _count(n, "n")
    T = _count(T, "T")
    features = _count(features, "features")
    classes = _count(classes, "classes", minimum=2)
    noise = _noise(noise)
    if T <= 2 * classes:
        raise ValueError(f"T={T} steps cannot separate {classes} frequencies; need T > "
                         f"{2 * classes}")
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(features)
    direction *= np.sqrt(features) / np.linalg.norm(direction)
    y = rng.integers(0, classes, size=n)
    phase = rng.uniform(0.0, 2.0 * np.pi, size=n)
    t = np.arange(T)
    wave = np.sin(2.0 * np.pi * (y[:, None] + 1) * t[None, :] / T + phase[:, None])
    X = wave[:, :, None] * direction + noise * rng.standard_normal((n, T, features))
    return X.astype(np.float32), y.astype(np.int64)
