"""Model selection: data splits and hyper-parameter searches, in NumPy.

Splits return index arrays (sorted, ``int64``) that index the caller's own data:

- :func:`holdout_split` (optionally stratified), :func:`kfold`, :func:`stratified_kfold`,
  :func:`leave_one_group_out`.

Searches minimise ``objective(config) -> float`` over a search space, a dict from parameter
name to either a list (a choice among its values) or a distribution (:class:`Uniform`,
:class:`LogUniform`, :class:`IntUniform`), and return a :class:`SearchResult`:

- :func:`grid_search` (lists only, every combination), :func:`random_search`,
  :func:`bayes_search` (Gaussian-process Bayesian optimisation with expected improvement).

``n_jobs > 1`` evaluates trials in worker processes (``concurrent.futures``
``ProcessPoolExecutor``). The objective is then sent to the workers by pickle, so it must be
defined at module level (not a lambda or a nested function); its arguments and result
must be picklable too. Where processes start with "spawn" (macOS, Windows) the calling
script needs the usual ``if __name__ == "__main__":`` guard. Configurations are drawn before
any trial runs, so the results equal those of ``n_jobs=1`` for the same seed; ``n_jobs=-1``
uses every core. This module imports nothing from graphdl.
"""

from __future__ import annotations

import itertools
import math
import numbers
import os
import pickle
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "holdout_split", "kfold", "stratified_kfold", "leave_one_group_out",
    "Uniform", "LogUniform", "IntUniform", "SearchResult",
    "grid_search", "random_search", "bayes_search",
]


# ----------------------------------------------------------------------------------- splits


def _count(n, name: str = "n", minimum: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {n!r}")
    return int(n)


def _labels(y, name: str) -> np.ndarray:
    array = np.asarray(y)
    if array.ndim != 1 or array.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {array.shape}")
    return array


def _test_count(n: int, test_size) -> int:
    """Number of test samples: ``ceil(test_size * n)`` for a fraction, else the integer."""
    if isinstance(test_size, numbers.Integral) and not isinstance(test_size, bool):
        n_test = int(test_size)
    elif isinstance(test_size, numbers.Real) and 0.0 < test_size < 1.0:
        n_test = math.ceil(test_size * n)
    else:
        raise ValueError(f"test_size must be a fraction in (0, 1) or a count, got {test_size!r}")
    if not 1 <= n_test <= n - 1:
        raise ValueError(f"test_size={test_size!r} leaves {n_test} of {n} samples for testing; "
                         "both train and test need at least one")
    return n_test


def holdout_split(n: int, test_size=0.2, seed: int = 0, stratify=None):
    """Split ``range(n)`` at random into a training and a test part.

    Formula: ``n_test = ceil(test_size * n)`` (or ``test_size`` itself if an integer); with
    ``stratify=y`` each class ``c`` gives about ``n_test * n_c / n`` of its samples (largest
    remainders rounded up), so both parts keep the class proportions.

    Example::

        train_idx, test_idx = holdout_split(len(X), test_size=0.25, stratify=y)
        X_train, X_test = X[train_idx], X[test_idx]
    """
    n = _count(n, minimum=2)
    n_test = _test_count(n, test_size)
    rng = np.random.default_rng(seed)
    if stratify is None:
        test = rng.permutation(n)[:n_test]
    else:
        y = _labels(stratify, "stratify")
        if y.shape[0] != n:
            raise ValueError(f"stratify has {y.shape[0]} labels but n={n}")
        classes, y_index, counts = np.unique(y, return_inverse=True, return_counts=True)
        if counts.min() < 2:
            rare = classes[np.argmin(counts)]
            raise ValueError(f"class {rare!r} has a single sample; stratification needs two")
        per_class = _allocate(counts, n_test)
        test = np.concatenate([
            rng.permutation(np.flatnonzero(y_index == c))[:per_class[c]]
            for c in range(classes.shape[0])
        ])
    mask = np.zeros(n, dtype=bool)
    mask[test] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def _allocate(counts: np.ndarray, n_test: int) -> np.ndarray:
    """Test samples per class: ``n_test * n_c / n`` by largest remainders, at most ``n_c - 1``
    so that every class keeps a training sample."""
    if n_test > int((counts - 1).sum()):
        raise ValueError(f"a stratified test part of {n_test} samples would leave some class "
                         "without a training sample; lower test_size")
    share = n_test * counts / counts.sum()
    per_class = np.minimum(np.floor(share).astype(np.int64), counts - 1)
    order = np.argsort(-(share - per_class), kind="stable")
    while per_class.sum() < n_test:
        room = order[per_class[order] < counts[order] - 1]
        per_class[room[: n_test - per_class.sum()]] += 1
    return per_class


def _folds_from_assignment(fold_of: np.ndarray, k: int):
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(k)]


def kfold(n: int, k: int = 5, shuffle: bool = True, seed: int = 0):
    """K-fold cross-validation: ``k`` (train, test) pairs whose test parts partition ``range(n)``.

    Formula: fold sizes are ``n // k + 1`` for the first ``n % k`` folds and ``n // k`` for the
    rest (scikit-learn's), over a seeded permutation when ``shuffle``.

    Example::

        for train_idx, test_idx in kfold(len(X), k=5):
            model.fit(X[train_idx]); scores.append(model.score(X[test_idx]))
    """
    n = _count(n)
    k = _count(k, "k", minimum=2)
    if k > n:
        raise ValueError(f"k={k} folds need at least k samples, got n={n}")
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    sizes = np.full(k, n // k)
    sizes[: n % k] += 1
    fold_of = np.empty(n, dtype=np.int64)
    fold_of[order] = np.repeat(np.arange(k), sizes)
    return _folds_from_assignment(fold_of, k)


def stratified_kfold(y, k: int = 5, shuffle: bool = True, seed: int = 0):
    """K-fold whose folds keep the class proportions of ``y``.

    Formula: samples are ordered class by class (shuffled within a class when ``shuffle``)
    and dealt to folds in turn, ``fold = position % k``; every fold then holds
    ``floor`` or ``ceil`` of ``n_c / k`` samples of each class ``c``.

    Example::

        for train_idx, test_idx in stratified_kfold(y, k=5):
            ...
    """
    y = _labels(y, "y")
    k = _count(k, "k", minimum=2)
    if k > y.shape[0]:
        raise ValueError(f"k={k} folds need at least k samples, got {y.shape[0]}")
    rng = np.random.default_rng(seed)
    _, y_index = np.unique(y, return_inverse=True)
    groups = [np.flatnonzero(y_index == c) for c in range(y_index.max() + 1)]
    order = np.concatenate([rng.permutation(g) if shuffle else g for g in groups])
    fold_of = np.empty(y.shape[0], dtype=np.int64)
    fold_of[order] = np.arange(y.shape[0]) % k
    return _folds_from_assignment(fold_of, k)


def leave_one_group_out(groups):
    """One (train, test) pair per distinct group: that group is the test part.

    Formula: for each group ``g`` (sorted), ``test = {i : groups[i] == g}``, ``train`` the rest.

    Example::

        for train_idx, test_idx in leave_one_group_out(subject_ids):
            ...
    """
    groups = _labels(groups, "groups")
    values, index = np.unique(groups, return_inverse=True)
    if values.shape[0] < 2:
        raise ValueError(f"leave_one_group_out needs at least two groups, got {values.tolist()}")
    return _folds_from_assignment(index, values.shape[0])


# ------------------------------------------------------------------------------ the space


class Uniform:
    """A real parameter drawn uniformly from ``[lo, hi]``.

    Formula: ``x = lo + u * (hi - lo)``, ``u ~ U(0, 1)``

    Example::

        random_search(objective, {"dropout": Uniform(0.0, 0.5)})
    """

    def __init__(self, lo: float, hi: float):
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"{type(self).__name__} needs finite lo < hi, got ({lo!r}, {hi!r})")
        self.lo, self.hi = float(lo), float(hi)

    def from_unit(self, u: float):
        """Map ``u`` in [0, 1] to a value. Formula: ``lo + u (hi - lo)``.

        Example::

            Uniform(0, 10).from_unit(0.5)    # 5.0
        """
        return self.lo + float(u) * (self.hi - self.lo)

    def to_unit(self, value) -> float:
        """Inverse of :meth:`from_unit`. Formula: ``(x - lo) / (hi - lo)``.

        Example::

            Uniform(0, 10).to_unit(5.0)      # 0.5
        """
        return (float(value) - self.lo) / (self.hi - self.lo)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.lo!r}, {self.hi!r})"


class LogUniform(Uniform):
    """A positive real parameter whose logarithm is uniform on ``[log lo, log hi]``.

    Formula: ``x = exp(log lo + u * (log hi - log lo))``; searches model it on the log scale.

    Example::

        random_search(objective, {"lr": LogUniform(1e-5, 1e-1)})
    """

    def __init__(self, lo: float, hi: float):
        if not lo > 0:
            raise ValueError(f"LogUniform needs lo > 0, got {lo!r}")
        super().__init__(lo, hi)

    def from_unit(self, u: float):
        """Map ``u`` in [0, 1] to a value. Formula: ``lo * (hi / lo) ** u``.

        Example::

            LogUniform(1e-4, 1e-2).from_unit(0.5)    # 1e-3
        """
        return math.exp(math.log(self.lo) + float(u) * (math.log(self.hi) - math.log(self.lo)))

    def to_unit(self, value) -> float:
        """Inverse of :meth:`from_unit`. Formula: ``log(x / lo) / log(hi / lo)``.

        Example::

            LogUniform(1e-4, 1e-2).to_unit(1e-3)     # 0.5
        """
        return math.log(float(value) / self.lo) / math.log(self.hi / self.lo)


class IntUniform(Uniform):
    """An integer parameter drawn uniformly from ``lo .. hi`` (both included).

    Formula: ``x = lo + floor(u * (hi - lo + 1))``

    Example::

        random_search(objective, {"hidden": IntUniform(16, 256)})
    """

    def __init__(self, lo: int, hi: int):
        for bound in (lo, hi):
            if isinstance(bound, bool) or not isinstance(bound, numbers.Integral):
                raise ValueError(f"IntUniform needs integer bounds, got ({lo!r}, {hi!r})")
        if lo > hi:
            raise ValueError(f"IntUniform needs lo <= hi, got ({lo!r}, {hi!r})")
        self.lo, self.hi = int(lo), int(hi)

    def from_unit(self, u: float):
        """Map ``u`` in [0, 1] to an integer. Formula: ``lo + floor(u (hi - lo + 1))``.

        Example::

            IntUniform(1, 4).from_unit(0.6)  # 3
        """
        return min(self.lo + math.floor(float(u) * (self.hi - self.lo + 1)), self.hi)

    def to_unit(self, value) -> float:
        """Centre of the value's cell in [0, 1]. Formula: ``(x - lo + 1/2) / (hi - lo + 1)``.

        Example::

            IntUniform(1, 4).to_unit(3)      # 0.625
        """
        return (int(value) - self.lo + 0.5) / (self.hi - self.lo + 1)


_DISTRIBUTIONS = (Uniform, LogUniform, IntUniform)


def _check_space(space, lists_only: bool = False) -> dict:
    if not isinstance(space, dict) or not space:
        raise ValueError("space must be a non-empty dict from parameter name to values")
    for name, values in space.items():
        if isinstance(values, _DISTRIBUTIONS):
            if lists_only:
                raise ValueError(f"grid_search needs a list of values for {name!r}, got {values!r}"
                                 "; use random_search or bayes_search for distributions")
        elif not isinstance(values, (list, tuple)) or len(values) == 0:
            raise ValueError(f"space[{name!r}] must be a non-empty list or a distribution "
                             f"(Uniform, LogUniform, IntUniform), got {values!r}")
    return space


def _draw(space: dict, rng: np.random.Generator) -> dict:
    """One raw draw: a unit number per distribution, an index per choice."""
    return {name: float(rng.random()) if isinstance(values, _DISTRIBUTIONS)
            else int(rng.integers(len(values))) for name, values in space.items()}


def _decode(space: dict, raw: dict) -> dict:
    return {name: values.from_unit(raw[name]) if isinstance(values, _DISTRIBUTIONS)
            else values[raw[name]] for name, values in space.items()}


def _encode(space: dict, raw: dict) -> np.ndarray:
    """Point in the normalised box: unit (log) scale per distribution, one-hot per choice."""
    parts = []
    for name, values in space.items():
        if isinstance(values, _DISTRIBUTIONS):
            parts.append([values.to_unit(values.from_unit(raw[name]))])
        else:
            parts.append(np.eye(len(values))[raw[name]])
    return np.concatenate(parts)


# --------------------------------------------------------------------------- the searches


@dataclass
class SearchResult:
    """Outcome of a search: the best configuration and every trial in order.

    ``trials`` is a list of dicts ``{"config": dict, "value": float, "seconds": float}``; NaN
    values never count as best.

    Example::

        result = grid_search(objective, {"lr": [0.1, 0.01]})
        result.best_config, result.best_value
        print(result.table())
    """

    best_config: dict
    best_value: float
    trials: list = field(default_factory=list)
    method: str = "search"

    def table(self, sort: bool = False) -> str:
        """The trials as an aligned text table; ``*`` marks the best row.

        Formula: one row per trial: index, each parameter, value, seconds (``sort=True``
        orders rows by value).

        Example::

            print(result.table(sort=True))
        """
        names = list(self.trials[0]["config"]) if self.trials else []
        rows = [["", "trial", *names, "value", "seconds"]]
        by_value = sorted(range(len(self.trials)), key=lambda i: _rank(self.trials[i]["value"]))
        for i in by_value if sort else range(len(self.trials)):
            trial = self.trials[i]
            best = "*" if i == by_value[0] else ""
            cells = [_cell(trial["config"][name]) for name in names]
            rows.append([best, str(i), *cells, _cell(trial["value"]), f"{trial['seconds']:.3f}"])
        widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
        lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
        lines.insert(1, "-" * len(lines[0]))
        return "\n".join(lines)

    def __str__(self) -> str:
        return (f"{self.method}: best value {_cell(self.best_value)} at {self.best_config} "
                f"({len(self.trials)} trials)")


def _cell(value) -> str:
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)):
        return f"{float(value):.4g}"
    return str(value)


def _rank(value: float) -> tuple:
    return (math.isnan(value), value)


def _timed_call(objective: Callable[[dict], float], config: dict) -> tuple[float, float]:
    start = time.perf_counter()
    result = objective(config)
    try:
        value = float(result)
    except (TypeError, ValueError):
        raise TypeError(f"objective must return a float, got {type(result).__name__}") from None
    return value, time.perf_counter() - start


def _evaluate(objective, configs: list, n_jobs: int) -> list:
    """Run the objective on each config, in processes when ``n_jobs > 1``; order is kept."""
    if not callable(objective):
        raise ValueError(f"objective must be callable, got {objective!r}")
    workers = (os.cpu_count() or 1) if n_jobs == -1 else _count(n_jobs, "n_jobs")
    n_jobs = min(workers, len(configs))
    if n_jobs <= 1:
        outcomes = [_timed_call(objective, config) for config in configs]
    else:
        try:
            pickle.dumps(objective)
        except Exception as error:
            raise ValueError(
                "n_jobs > 1 sends the objective to worker processes by pickle, which failed "
                f"({error}); define it at module level (no lambda or nested function)"
            ) from error
        with ProcessPoolExecutor(max_workers=n_jobs) as pool:
            outcomes = list(pool.map(_timed_call, itertools.repeat(objective), configs))
    return [{"config": c, "value": v, "seconds": s} for c, (v, s) in zip(configs, outcomes)]


def _result(trials: list, method: str) -> SearchResult:
    best = min(trials, key=lambda trial: _rank(trial["value"]))
    return SearchResult(dict(best["config"]), best["value"], trials, method)


def grid_search(objective: Callable[[dict], float], space: dict, n_jobs: int = 1) -> SearchResult:
    """Evaluate every combination of the listed values; return the one with the least value.

    Formula: ``argmin over the Cartesian product of space's lists of objective(config)``,
    in the order of ``itertools.product`` over the dict's keys.

    Example::

        result = grid_search(train_and_validate, {"lr": [1e-3, 1e-2], "hidden": [64, 128]})
        result.best_config           # {"lr": ..., "hidden": ...}
    """
    space = _check_space(space, lists_only=True)
    names = list(space)
    configs = [dict(zip(names, combo)) for combo in itertools.product(*space.values())]
    return _result(_evaluate(objective, configs, n_jobs), "grid_search")


def random_search(
    objective: Callable[[dict], float],
    space: dict,
    n_trials: int = 20,
    seed: int = 0,
    n_jobs: int = 1,
) -> SearchResult:
    """Evaluate ``n_trials`` configurations drawn independently from the space.

    Formula: each parameter is drawn from its distribution (a list: uniform choice), all from
    one ``numpy.random.default_rng(seed)``; the least value wins (Bergstra & Bengio 2012).

    Example::

        space = {"lr": LogUniform(1e-4, 1e-1), "hidden": IntUniform(16, 256)}
        result = random_search(train_and_validate, space, n_trials=30)
    """
    space = _check_space(space)
    n_trials = _count(n_trials, "n_trials")
    rng = np.random.default_rng(seed)
    configs = [_decode(space, _draw(space, rng)) for _ in range(n_trials)]
    return _result(_evaluate(objective, configs, n_jobs), "random_search")


# ------------------------------------------------------------------ Bayesian optimisation

_SQRT5 = math.sqrt(5.0)
# Hyper-parameter grids for the GP, chosen by marginal likelihood; the box is [0, 1]^d.
_LENGTH_SCALES = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
_NOISE_RATIOS = (1e-6, 1e-4, 1e-2, 1e-1)


def _matern52(a: np.ndarray, b: np.ndarray, length: float) -> np.ndarray:
    """Matern 5/2 kernel: ``(1 + sqrt5 r + 5 r^2 / 3) exp(-sqrt5 r)``, ``r = |a - b| / l``."""
    distance = np.sqrt(np.maximum(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1), 0.0)) / length
    return (1.0 + _SQRT5 * distance + 5.0 / 3.0 * distance**2) * np.exp(-_SQRT5 * distance)


def _fit_gp(x: np.ndarray, y: np.ndarray):
    """Choose length scale and noise by profile marginal likelihood (signal variance in
    closed form, ``s2 = y^T A^-1 y / n``); return a predictor of mean and std."""
    n = y.shape[0]
    best = None
    for length in _LENGTH_SCALES:
        kernel = _matern52(x, x, length)
        for noise in _NOISE_RATIOS:
            try:
                chol = np.linalg.cholesky(kernel + noise * np.eye(n))
            except np.linalg.LinAlgError:
                continue
            alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, y))
            signal = max(float(y @ alpha) / n, 1e-12)
            score = -0.5 * n * math.log(signal) - float(np.log(np.diag(chol)).sum())
            if best is None or score > best[0]:
                best = (score, length, chol, alpha, signal)
    _, length, chol, alpha, signal = best

    def predict(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cross = _matern52(points, x, length)
        mean = cross @ alpha
        v = np.linalg.solve(chol, cross.T)
        variance = signal * np.maximum(1.0 - (v**2).sum(0), 1e-12)
        return mean, np.sqrt(variance)

    return predict


_erf = np.vectorize(math.erf, otypes=[np.float64])


def _expected_improvement(mean, std, best: float, xi: float = 0.01) -> np.ndarray:
    """EI for minimisation: ``(f* - mu - xi) Phi(z) + sigma phi(z)``, ``z = (f* - mu - xi) / s``.
    """
    gain = best - mean - xi
    z = gain / std
    cdf = 0.5 * (1.0 + _erf(z / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * z**2) / math.sqrt(2.0 * math.pi)
    return gain * cdf + std * pdf


def _candidates(space, rng, raws, values, n_random=1000, n_local=250):
    """Random draws plus Gaussian perturbations (in the unit box) of the best points so far."""
    out = [_draw(space, rng) for _ in range(n_random)]
    top = [raws[i] for i in np.argsort(values, kind="stable")[:5]]
    for i in range(n_local):
        raw = dict(top[i % len(top)])
        for name, domain in space.items():
            if isinstance(domain, _DISTRIBUTIONS):
                raw[name] = float(np.clip(raw[name] + 0.05 * rng.standard_normal(), 0.0, 1.0))
            elif rng.random() < 0.2:
                raw[name] = int(rng.integers(len(domain)))
        out.append(raw)
    return out


def bayes_search(
    objective: Callable[[dict], float],
    space: dict,
    n_trials: int = 20,
    n_initial: int = 5,
    seed: int = 0,
) -> SearchResult:
    """Bayesian optimisation: a Gaussian process models the objective, expected improvement
    picks the next configuration.

    Formula: after ``n_initial`` random trials, fit a GP (Matern 5/2 kernel on the
    ``[0, 1]``-normalised box; log scale for :class:`LogUniform`, one-hot for lists) to the
    standardised values, and evaluate the candidate maximising
    ``EI(x) = (f* - mu(x)) Phi(z) + sigma(x) phi(z)``, ``z = (f* - mu(x)) / sigma(x)``, among
    random draws and perturbations of the best points. Trials run one after another.

    Example::

        result = bayes_search(train_and_validate, {"lr": LogUniform(1e-4, 1e-1)}, n_trials=25)
    """
    space = _check_space(space)
    n_trials = _count(n_trials, "n_trials")
    n_initial = min(_count(n_initial, "n_initial"), n_trials)
    rng = np.random.default_rng(seed)
    raws = [_draw(space, rng) for _ in range(n_initial)]
    trials = _evaluate(objective, [_decode(space, raw) for raw in raws], 1)
    while len(trials) < n_trials:
        x = np.stack([_encode(space, raw) for raw in raws])
        y = np.array([trial["value"] for trial in trials])
        finite = np.isfinite(y)
        if not finite.any():
            raw = _draw(space, rng)
        else:
            # Failed (NaN/inf) trials are modelled as slightly worse than the worst success.
            worst = y[finite].max() + 0.1 * (np.ptp(y[finite]) + 1e-12)
            y = np.where(finite, y, worst)
            scale = y.std() if y.std() > 0 else 1.0
            y_std = (y - y.mean()) / scale
            predict = _fit_gp(x, y_std)
            pool = _candidates(space, rng, raws, y_std)
            points = np.stack([_encode(space, raw) for raw in pool])
            mean, std = predict(points)
            gain = _expected_improvement(mean, std, float(y_std.min()))
            seen = (np.abs(points[:, None, :] - x[None, :, :]).max(-1) < 1e-9).any(1)
            gain = np.where(seen & ~seen.all(), -np.inf, gain)
            raw = pool[int(np.argmax(gain))]
        raws.append(raw)
        trials += _evaluate(objective, [_decode(space, raw)], 1)
    return _result(trials, "bayes_search")
