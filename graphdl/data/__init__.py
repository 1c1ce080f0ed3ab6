"""Data for training: in-memory datasets, mini-batch loading, preprocessing, augmentation.

Everything here runs on the host in NumPy and imports nothing from the graphdl core:

- :mod:`graphdl.data.datasets`: :class:`Dataset`, ``load_digits``/``load_iris``/
  ``load_breast_cancer`` (scikit-learn, imported lazily) and the synthetic ``spirals``,
  ``moons``, ``regression``, ``sequences``.
- :mod:`graphdl.data.loader`: :class:`DataLoader`, seeded per-epoch shuffling.
- :mod:`graphdl.data.preprocess`: :class:`Standardizer`, :class:`MinMaxScaler`, ``one_hot``.
- :mod:`graphdl.data.augment`: seeded image augmentations for the loader's ``transform=``.

Example::

    from graphdl.data import DataLoader, Standardizer, load_digits
    X_train, y_train, X_test, y_test = load_digits()
    scaler = Standardizer().fit(X_train)
    loader = DataLoader((scaler.transform(X_train), y_train), batch_size=64)
"""

from graphdl.data import augment
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
from graphdl.data.preprocess import MinMaxScaler, Standardizer, one_hot

__all__ = [
    "augment",
    "Dataset",
    "DataLoader",
    "load_digits",
    "load_iris",
    "load_breast_cancer",
    "spirals",
    "moons",
    "regression",
    "sequences",
    "Standardizer",
    "MinMaxScaler",
    "one_hot",
]
