"""Feature preprocessing in NumPy: :class:`Standardizer`, :class:`MinMaxScaler`, :func:`one_hot`.

Scalers are fitted on the training data only and then applied, unchanged, to validation and
test data (fitting on all data leaks test statistics into training). Statistics are kept in
float64; outputs keep a floating input's dtype (integers become float64).
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["Standardizer", "MinMaxScaler", "one_hot"]


def _as_float(X, name: str = "X") -> np.ndarray:
    X = np.asarray(X)
    if X.ndim == 0 or X.shape[0] == 0:
        raise ValueError(f"{name} must have at least one sample, got shape {X.shape}")
    if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)
            or X.dtype == np.bool_):
        raise ValueError(f"{name} must be numeric, got dtype {X.dtype}")
    return X


def _out_dtype(X: np.ndarray):
    return X.dtype if np.issubdtype(X.dtype, np.floating) else np.float64


def _axes(axis, ndim: int) -> tuple[int, ...]:
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    normalised = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for an array with {ndim} dimensions")
        normalised.append(a % ndim)
    return tuple(sorted(set(normalised)))


class _Scaler:
    """Shared fit/transform plumbing; subclasses set ``_statistics`` and ``_apply``."""

    def __init__(self, axis):
        self.axis = axis
        self._fitted_shape = None

    def fit(self, X):
        """Compute the statistics of ``X`` over ``axis`` (the training data only).

        Formula: see the class docstring.

        Example::

            scaler = Standardizer().fit(X_train)
        """
        X = _as_float(X)
        axes = _axes(self.axis, X.ndim)
        self._statistics(X.astype(np.float64), axes)
        self._fitted_shape = tuple(1 if d in axes else s for d, s in enumerate(X.shape))
        return self

    def _check(self, X) -> np.ndarray:
        if self._fitted_shape is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted yet: call fit(X_train) first")
        X = _as_float(X)
        expected = self._fitted_shape
        if X.ndim != len(expected) or any(
                e != 1 and e != s for e, s in zip(expected, X.shape)):
            raise ValueError(f"X has shape {X.shape}, but the scaler was fitted on shape "
                             f"{tuple('n' if e == 1 else e for e in expected)}")
        return X

    def transform(self, X) -> np.ndarray:
        """Apply the fitted statistics to ``X``.

        Formula: see the class docstring.

        Example::

            X_test_scaled = scaler.transform(X_test)
        """
        X = self._check(X)
        return self._apply(X.astype(np.float64)).astype(_out_dtype(X))

    def fit_transform(self, X) -> np.ndarray:
        """``fit(X)`` then ``transform(X)``.

        Formula: see the class docstring.

        Example::

            X_train_scaled = scaler.fit_transform(X_train)
        """
        return self.fit(X).transform(X)

    def inverse_transform(self, X) -> np.ndarray:
        """Undo :meth:`transform` (for example to report predictions in original units).

        Formula: the inverse of the class's formula.

        Example::

            X_back = scaler.inverse_transform(scaler.transform(X))   # == X (up to rounding)
        """
        X = self._check(X)
        return self._invert(X.astype(np.float64)).astype(_out_dtype(X))


class Standardizer(_Scaler):
    """Standardise features to zero mean and unit variance (the course's eqs. 43-44).

    Formula: ``mu = mean(x)``, ``sigma = sqrt(var(x) + eps)`` over ``axis`` (population
    variance, ``ddof=0``); ``x' = (x - mu) / sigma``. ``eps`` keeps a constant feature finite
    (it maps to 0). ``axis=(0, 2, 3)`` gives per-channel statistics for NCHW images.

    Example::

        scaler = Standardizer()
        X_train = scaler.fit_transform(X_train)
        X_test = scaler.transform(X_test)
    """

    def __init__(self, axis=0, eps: float = 1e-8):
        super().__init__(axis)
        if not isinstance(eps, numbers.Real) or not eps >= 0:
            raise ValueError(f"eps must be a number >= 0, got {eps!r}")
        self.eps = float(eps)
        self.mean = None
        self.std = None

    def _statistics(self, X, axes):
        self.mean = X.mean(axis=axes, keepdims=True)
        self.std = np.sqrt(X.var(axis=axes, keepdims=True) + self.eps)
        if np.any(self.std == 0):
            raise ValueError("a feature is constant and eps=0: its standard deviation is 0")

    def _apply(self, X):
        return (X - self.mean) / self.std

    def _invert(self, X):
        return X * self.std + self.mean


class MinMaxScaler(_Scaler):
    """Rescale features linearly to ``feature_range`` (default ``[0, 1]``).

    Formula: ``x' = a + (x - min) * (b - a) / (max - min)`` with ``(a, b) = feature_range``
    and the minimum and maximum over ``axis``; a constant feature (``max == min``) is treated
    as ``max - min = 1``, as scikit-learn does.

    Example::

        scaler = MinMaxScaler((-1, 1))
        X_train = scaler.fit_transform(X_train)
    """

    def __init__(self, feature_range=(0.0, 1.0), axis=0):
        super().__init__(axis)
        low, high = feature_range
        if not low < high:
            raise ValueError(f"feature_range must be (low, high) with low < high, got "
                             f"{feature_range!r}")
        self.feature_range = (float(low), float(high))
        self.data_min = None
        self.data_range = None

    def _statistics(self, X, axes):
        self.data_min = X.min(axis=axes, keepdims=True)
        span = X.max(axis=axes, keepdims=True) - self.data_min
        self.data_range = np.where(span == 0, 1.0, span)

    def _apply(self, X):
        low, high = self.feature_range
        return low + (X - self.data_min) * (high - low) / self.data_range

    def _invert(self, X):
        low, high = self.feature_range
        return (X - low) * self.data_range / (high - low) + self.data_min


def one_hot(labels, num_classes: int, dtype=np.float32) -> np.ndarray:
    """Encode integer class labels as one-hot rows.

    Formula: ``out[..., j] = 1 if labels[...] == j else 0`` for ``j < num_classes``; the
    output shape is ``labels.shape + (num_classes,)``.

    Example::

        one_hot([0, 2, 1], 3)
        # array([[1, 0, 0], [0, 0, 1], [0, 1, 0]], dtype=float32)
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or (
            num_classes < 1):
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    labels = np.asarray(labels)
    if labels.dtype == np.bool_ or not (np.issubdtype(labels.dtype, np.integer)
                                        or np.issubdtype(labels.dtype, np.floating)):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if np.issubdtype(labels.dtype, np.floating):
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if np.any(bad):
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"label {labels[where]!r} at index {where} is not an integer")
    out_of_range = (labels < 0) | (labels >= num_classes)
    if np.any(out_of_range):
        where = tuple(int(i) for i in np.argwhere(out_of_range)[0])
        raise ValueError(f"label {labels[where].item()!r} at index {where} is out of range for "
                         f"num_classes={num_classes} (valid: 0..{num_classes - 1})")
    return np.eye(num_classes, dtype=dtype)[labels.astype(np.int64)]
