"""Learning-rate schedules: callables of the 0-based step ``k`` that return a float.

Each schedule is the closed form of the ``torch.optim.lr_scheduler`` class of the same name,
so ``schedule(k)`` equals the rate PyTorch's optimizer holds before its ``k``-th step. An
optimizer accepts a schedule as ``lr=``; the ``k``-th call of a compiled training step then uses
``schedule(k)`` without recompiling.

==========================  ==========================================================
course name                 class
==========================  ==========================================================
step decay                  :class:`StepLR`, :class:`MultiStepLR`
exponential decay           :class:`ExponentialLR`
polynomial decay            :class:`PolynomialLR`
cosine (annealing)          :class:`CosineAnnealingLR`
cyclical learning rates     :class:`CyclicLR`
warm-up                     :class:`LinearWarmup`
constant                    :class:`ConstantLR`, :func:`constant`
reduce on plateau           :class:`ReduceLROnPlateau` (stateful, driven by a metric)
==========================  ==========================================================

:func:`lr_range_test` (Smith's "LR range test") sweeps the rate to help choose ``lr``.
This module imports nothing from graphdl; matplotlib is imported only by ``plot``.
"""

from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Schedule",
    "ConstantLR",
    "constant",
    "StepLR",
    "MultiStepLR",
    "ExponentialLR",
    "PolynomialLR",
    "CosineAnnealingLR",
    "CyclicLR",
    "LinearWarmup",
    "ReduceLROnPlateau",
    "LRRangeResult",
    "lr_range_test",
]


def _positive(value, name: str, integer: bool = False, allow_zero: bool = False):
    """Return ``value`` after checking that it is a positive (or non-negative) number."""
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero) or not math.isfinite(value):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")
    return int(value) if integer else float(value)


class Schedule:
    """Base class: a learning rate as a function of the 0-based optimizer step ``k``.

    Subclasses implement ``_rate(k)``; calling the schedule checks ``k`` first.

    Example::

        sched = gd.schedules.StepLR(0.1, step_size=30)
        sched(0), sched(30)          # (0.1, 0.01)
        sched.values(3)              # [0.1, 0.1, 0.1]
    """

    def __call__(self, k: int) -> float:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
            raise ValueError(f"a schedule takes the 0-based step as an integer >= 0, got {k!r}")
        return float(self._rate(int(k)))

    def _rate(self, k: int) -> float:
        raise NotImplementedError

    def values(self, num_steps: int) -> list[float]:
        """The rates of steps ``0 .. num_steps - 1``.

        Formula: ``[schedule(0), ..., schedule(num_steps - 1)]``

        Example::

            gd.schedules.ExponentialLR(1.0, gamma=0.5).values(3)   # [1.0, 0.5, 0.25]
        """
        return [self(k) for k in range(_positive(num_steps, "num_steps", True, True))]

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={value!r}" for key, value in vars(self).items())
        return f"{type(self).__name__}({fields})"


class ConstantLR(Schedule):
    """Constant rate, optionally scaled by ``factor`` for the first ``total_iters`` steps
    (PyTorch's ``ConstantLR``).

    Formula: ``lr_k = lr * factor`` if ``k < total_iters`` else ``lr``

    Example::

        sched = ConstantLR(0.1, factor=0.5, total_iters=2)
        sched.values(3)              # [0.05, 0.05, 0.1]
    """

    def __init__(self, lr: float, factor: float = 1.0 / 3, total_iters: int = 5):
        self.lr = _positive(lr, "lr", allow_zero=True)
        self.factor = _positive(factor, "factor", allow_zero=True)
        if self.factor > 1:
            raise ValueError(f"factor must be in [0, 1], got {factor!r}")
        self.total_iters = _positive(total_iters, "total_iters", integer=True, allow_zero=True)

    def _rate(self, k: int) -> float:
        return self.lr * self.factor if k < self.total_iters else self.lr


def constant(lr: float) -> ConstantLR:
    """The constant schedule: the same rate at every step.

    Formula: ``lr_k = lr``

    Example::

        sched = constant(0.01)
        sched(0) == sched(10_000) == 0.01
    """
    return ConstantLR(lr, factor=1.0, total_iters=0)


class StepLR(Schedule):
    """Step decay: multiply the rate by ``gamma`` every ``step_size`` steps.

    Formula: ``lr_k = lr * gamma ** floor(k / step_size)``

    Example::

        sched = StepLR(0.1, step_size=2, gamma=0.5)
        sched.values(5)              # [0.1, 0.1, 0.05, 0.05, 0.025]
    """

    def __init__(self, lr: float, step_size: int, gamma: float = 0.1):
        self.lr = _positive(lr, "lr", allow_zero=True)
        self.step_size = _positive(step_size, "step_size", integer=True)
        self.gamma = _positive(gamma, "gamma", allow_zero=True)

    def _rate(self, k: int) -> float:
        return self.lr * self.gamma ** (k // self.step_size)


class MultiStepLR(Schedule):
    """Step decay at chosen milestones: multiply by ``gamma`` at each milestone passed.

    Formula: ``lr_k = lr * gamma ** (number of milestones m with m <= k)``

    Example::

        sched = MultiStepLR(1.0, milestones=[2, 4], gamma=0.1)
        sched.values(5)              # [1.0, 1.0, 0.1, 0.1, 0.01]
    """

    def __init__(self, lr: float, milestones, gamma: float = 0.1):
        self.lr = _positive(lr, "lr", allow_zero=True)
        steps = [_positive(m, "each milestone", integer=True, allow_zero=True) for m in milestones]
        if steps != sorted(steps):
            raise ValueError(f"milestones must be increasing, got {list(milestones)!r}")
        self.milestones = steps
        self.gamma = _positive(gamma, "gamma", allow_zero=True)

    def _rate(self, k: int) -> float:
        return self.lr * self.gamma ** bisect.bisect_right(self.milestones, k)


class ExponentialLR(Schedule):
    """Exponential decay: multiply the rate by ``gamma`` every step.

    Formula: ``lr_k = lr * gamma ** k``

    Example::

        sched = ExponentialLR(1.0, gamma=0.9)
        sched(2)                     # 0.81
    """

    def __init__(self, lr: float, gamma: float):
        self.lr = _positive(lr, "lr", allow_zero=True)
        self.gamma = _positive(gamma, "gamma", allow_zero=True)

    def _rate(self, k: int) -> float:
        return self.lr * self.gamma**k


class PolynomialLR(Schedule):
    """Polynomial decay from ``lr`` to ``end_lr`` over ``total_steps`` steps, then constant.

    Formula: ``lr_k = (lr - end_lr) * (1 - min(k, T) / T) ** power + end_lr`` with
    ``T = total_steps``. PyTorch's ``PolynomialLR(total_iters=T, power)`` always decays to 0:
    it is the case ``end_lr=0`` (the default here).

    Example::

        sched = PolynomialLR(1.0, total_steps=4, power=2.0)
        sched.values(5)              # [1.0, 0.5625, 0.25, 0.0625, 0.0]
    """

    def __init__(self, lr: float, total_steps: int, power: float = 1.0, end_lr: float = 0.0):
        self.lr = _positive(lr, "lr", allow_zero=True)
        self.total_steps = _positive(total_steps, "total_steps", integer=True)
        self.power = _positive(power, "power", allow_zero=True)
        self.end_lr = _positive(end_lr, "end_lr", allow_zero=True)

    def _rate(self, k: int) -> float:
        fraction = 1.0 - min(k, self.total_steps) / self.total_steps
        return (self.lr - self.end_lr) * fraction**self.power + self.end_lr


class CosineAnnealingLR(Schedule):
    """Cosine annealing from ``lr`` down to ``eta_min`` over ``T_max`` steps.

    Formula: ``lr_k = eta_min + (lr - eta_min) * (1 + cos(pi * k / T_max)) / 2``. As in
    PyTorch, the formula keeps going after ``T_max``: the rate climbs back to ``lr`` at
    ``2 T_max`` (period ``2 T_max``); stop training at ``T_max`` or wrap the schedule if that
    is not wanted.

    Example::

        sched = CosineAnnealingLR(1.0, T_max=4)
        sched.values(5)              # [1.0, 0.853..., 0.5, 0.146..., 0.0]
    """

    def __init__(self, lr: float, T_max: int, eta_min: float = 0.0):
        self.lr = _positive(lr, "lr", allow_zero=True)
        self.T_max = _positive(T_max, "T_max", integer=True)
        self.eta_min = _positive(eta_min, "eta_min", allow_zero=True)

    def _rate(self, k: int) -> float:
        cosine = (1.0 + math.cos(math.pi * k / self.T_max)) / 2.0
        return self.eta_min + (self.lr - self.eta_min) * cosine


class CyclicLR(Schedule):
    """Cyclical learning rate (Smith 2017): a triangle wave between ``base_lr`` and ``max_lr``.

    Formula (PyTorch's): with ``S = step_size_up + step_size_down`` and
    ``r = step_size_up / S``, ``cycle = floor(1 + k / S)``, ``x = 1 + k / S - cycle``,
    ``h = x / r`` if ``x <= r`` else ``(x - 1) / (r - 1)``, then
    ``lr_k = base_lr + (max_lr - base_lr) * h * scale``, where ``scale`` is 1 for
    ``"triangular"``, ``1 / 2 ** (cycle - 1)`` for ``"triangular2"`` (the amplitude halves every
    cycle) and ``gamma ** k`` for ``"exp_range"``. ``step_size_down`` defaults to
    ``step_size_up``.

    Example::

        sched = CyclicLR(0.1, 1.0, step_size_up=2)
        sched.values(5)              # [0.1, 0.55, 1.0, 0.55, 0.1]
    """

    _MODES = ("triangular", "triangular2", "exp_range")

    def __init__(
        self,
        base_lr: float,
        max_lr: float,
        step_size_up: int,
        step_size_down: int | None = None,
        mode: str = "triangular",
        gamma: float = 1.0,
    ):
        self.base_lr = _positive(base_lr, "base_lr", allow_zero=True)
        self.max_lr = _positive(max_lr, "max_lr", allow_zero=True)
        self.step_size_up = _positive(step_size_up, "step_size_up", integer=True)
        down = step_size_up if step_size_down is None else step_size_down
        self.step_size_down = _positive(down, "step_size_down", integer=True, allow_zero=True)
        if mode not in self._MODES:
            raise ValueError(f"mode must be one of {self._MODES}, got {mode!r}")
        self.mode = mode
        self.gamma = _positive(gamma, "gamma", allow_zero=True)

    def _rate(self, k: int) -> float:
        total = float(self.step_size_up + self.step_size_down)
        ratio = self.step_size_up / total
        cycle = math.floor(1 + k / total)
        x = 1.0 + k / total - cycle
        height = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
        if self.mode == "triangular":
            scale = 1.0
        elif self.mode == "triangular2":
            scale = 1.0 / 2.0 ** (cycle - 1)
        else:
            scale = self.gamma**k
        return self.base_lr + (self.max_lr - self.base_lr) * height * scale


class LinearWarmup(Schedule):
    """Linear warm-up in front of another schedule (or a constant rate).

    Formula: for ``k < W = warmup_steps``,
    ``lr_k = base(0) * (start_factor + (1 - start_factor) * k / W)``; afterwards
    ``lr_k = base(k - W)``, so the wrapped schedule starts its own step count after warm-up
    (PyTorch's ``SequentialLR([LinearLR(start_factor, total_iters=W), base], milestones=[W])``;
    with a plain number it equals ``LinearLR(start_factor, end_factor=1, total_iters=W)``).
    ``start_factor`` defaults to PyTorch's 1/3; 0 gives the ``k / W`` ramp of many papers.

    Example::

        sched = LinearWarmup(CosineAnnealingLR(0.1, T_max=90), warmup_steps=10)
        sched(0), sched(10)          # (0.0333..., 0.1)
    """

    def __init__(self, schedule_or_lr, warmup_steps: int, start_factor: float = 1.0 / 3):
        if callable(schedule_or_lr):
            self.base = schedule_or_lr
        else:
            self.base = constant(schedule_or_lr)
        self.warmup_steps = _positive(warmup_steps, "warmup_steps", integer=True, allow_zero=True)
        self.start_factor = _positive(start_factor, "start_factor", allow_zero=True)
        if self.start_factor > 1:
            raise ValueError(f"start_factor must be in [0, 1], got {start_factor!r}")

    def _rate(self, k: int) -> float:
        if k >= self.warmup_steps:
            return float(self.base(k - self.warmup_steps))
        progress = k / self.warmup_steps
        return float(self.base(0)) * (self.start_factor + (1.0 - self.start_factor) * progress)


class ReduceLROnPlateau(Schedule):
    """Reduce the rate by ``factor`` when a monitored metric stops improving.

    Stateful, unlike the other schedules: call ``.step(metric)`` once per evaluation (for
    example each epoch, with the validation loss); calling the object with any step ``k``
    returns the current rate, so it can be passed as an optimizer's ``lr=``.

    Rule (PyTorch's): the metric improves when ``m < best * (1 - threshold)`` (mode ``"min"``,
    ``threshold_mode="rel"``), ``m < best - threshold`` (``"abs"``), or the mirror images for
    ``"max"``. After more than ``patience`` evaluations without improvement the rate becomes
    ``max(lr * factor, min_lr)``, then ``cooldown`` evaluations are ignored.

    Example::

        sched = ReduceLROnPlateau(0.1, patience=2)
        for val_loss in [1.0, 1.0, 1.0, 1.0]:
            sched.step(val_loss)
        sched(0)                     # 0.01
    """

    _EPS = 1e-8  # PyTorch's eps: changes smaller than this are not applied

    def __init__(
        self,
        lr: float,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float = 0.0,
    ):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        self.lr = _positive(lr, "lr", allow_zero=True)
        self.factor = _positive(factor, "factor", allow_zero=True)
        if self.factor >= 1.0:
            raise ValueError(f"factor must be < 1.0 (it multiplies the rate), got {factor!r}")
        self.mode = mode
        self.patience = _positive(patience, "patience", integer=True, allow_zero=True)
        self.threshold = _positive(threshold, "threshold", allow_zero=True)
        self.threshold_mode = threshold_mode
        self.cooldown = _positive(cooldown, "cooldown", integer=True, allow_zero=True)
        self.min_lr = _positive(min_lr, "min_lr", allow_zero=True)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def __call__(self, k: int = 0) -> float:
        return super().__call__(k)

    def _rate(self, k: int) -> float:
        return self.lr

    def _is_better(self, value: float) -> bool:
        if self.mode == "min" and self.threshold_mode == "rel":
            return value < self.best * (1.0 - self.threshold)
        if self.mode == "min":
            return value < self.best - self.threshold
        if self.threshold_mode == "rel":
            return value > self.best * (1.0 + self.threshold)
        return value > self.best + self.threshold

    def step(self, metric: float) -> float:
        """Record one evaluation of the monitored metric and return the (possibly reduced) rate.

        Formula: ``lr <- max(lr * factor, min_lr)`` after ``patience + 1`` bad evaluations.

        Example::

            sched = ReduceLROnPlateau(0.1, patience=0)
            sched.step(1.0), sched.step(2.0)     # (0.1, 0.01)
        """
        value = float(metric)
        if self._is_better(value):
            self.best = value
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            new_lr = max(self.lr * self.factor, self.min_lr)
            if self.lr - new_lr > self._EPS:
                self.lr = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        return self.lr

    def state_dict(self) -> dict:
        """The mutable state, for checkpoints.

        Formula: ``{lr, best, num_bad_epochs, cooldown_counter}``

        Example::

            state = sched.state_dict(); other.load_state_dict(state)
        """
        keys = ("lr", "best", "num_bad_epochs", "cooldown_counter")
        return {key: getattr(self, key) for key in keys}

    def load_state_dict(self, state: dict) -> None:
        """Restore the state returned by :meth:`state_dict`.

        Formula: sets ``lr, best, num_bad_epochs, cooldown_counter`` from ``state``.

        Example::

            sched.load_state_dict({"lr": 0.01, "best": 0.3, "num_bad_epochs": 0,
                                   "cooldown_counter": 0})
        """
        missing = {"lr", "best", "num_bad_epochs", "cooldown_counter"} - set(state)
        if missing:
            raise ValueError(f"state is missing {sorted(missing)}")
        self.lr = float(state["lr"])
        self.best = float(state["best"])
        self.num_bad_epochs = int(state["num_bad_epochs"])
        self.cooldown_counter = int(state["cooldown_counter"])

    def __repr__(self) -> str:
        return (f"ReduceLROnPlateau(lr={self.lr!r}, mode={self.mode!r}, factor={self.factor!r}, "
                f"patience={self.patience!r}, best={self.best!r})")


@dataclass
class LRRangeResult:
    """What :func:`lr_range_test` measured.

    ``lrs`` and ``losses`` (bias-corrected exponential moving average) are aligned;
    ``raw_losses`` are the values ``train_step`` returned; ``suggestion`` is the rate where the
    smoothed loss falls fastest (``None`` with fewer than three finite points); ``diverged``
    tells whether the sweep stopped early.

    Example::

        result = lr_range_test(train_step)
        result.suggestion, result.plot("lr_range.png")
    """

    lrs: np.ndarray
    losses: np.ndarray
    raw_losses: np.ndarray
    suggestion: float | None
    diverged: bool
    notes: list[str] = field(default_factory=list)

    def plot(self, path=None):
        """Plot smoothed loss against the rate (log x axis); save to ``path`` if given.

        Formula: the curve ``(lrs[i], losses[i])``, with the suggestion marked.

        Example::

            fig = result.plot("lr_range.png")   # returns the matplotlib Figure
        """
        try:
            from matplotlib.figure import Figure
        except ImportError as error:
            raise ImportError(
                "LRRangeResult.plot needs matplotlib: pip install graphdl[examples]"
            ) from error
        figure = Figure(figsize=(6, 4))
        axes = figure.add_subplot()
        axes.plot(self.lrs, self.losses, label="smoothed loss")
        if self.suggestion is not None:
            axes.axvline(self.suggestion, color="red", linestyle="--",
                         label=f"suggestion {self.suggestion:.3g}")
        axes.set_xscale("log")
        axes.set_xlabel("learning rate")
        axes.set_ylabel("loss")
        axes.legend()
        if path is not None:
            figure.savefig(path)
        return figure


def lr_range_test(
    train_step: Callable[[float], float],
    lr_min: float = 1e-7,
    lr_max: float = 10.0,
    num_steps: int = 100,
    smooth: float = 0.98,
    diverge_factor: float = 4.0,
) -> LRRangeResult:
    """Learning-rate range test (Smith 2017): train briefly while the rate grows exponentially.

    ``train_step(lr)`` runs one training step at rate ``lr`` and returns its loss (any
    Python callable). Formula: ``lr_i = lr_min * (lr_max / lr_min) ** (i / (num_steps - 1))``;
    ``avg_i = smooth * avg_{i-1} + (1 - smooth) * loss_i``, reported as
    ``avg_i / (1 - smooth ** (i + 1))``. The sweep stops when the smoothed loss exceeds
    ``diverge_factor`` times its minimum (for positive losses) or a loss is not finite.
    ``suggestion`` is the rate
    at the most negative slope of the smoothed loss against ``log(lr)``.

    Example::

        result = lr_range_test(lambda lr: step(xb, yb, lr=lr)[0], num_steps=50)
        opt = gd.optim.SGD(lr=result.suggestion)
    """
    lr_min = _positive(lr_min, "lr_min")
    lr_max = _positive(lr_max, "lr_max")
    if lr_max <= lr_min:
        raise ValueError(f"lr_max ({lr_max}) must be greater than lr_min ({lr_min})")
    num_steps = _positive(num_steps, "num_steps", integer=True)
    if num_steps < 2:
        raise ValueError(f"num_steps must be >= 2, got {num_steps}")
    if not 0.0 <= smooth < 1.0:
        raise ValueError(f"smooth must be in [0, 1), got {smooth!r}")
    if not diverge_factor > 1.0:
        raise ValueError(f"diverge_factor must be > 1, got {diverge_factor!r}")
    schedule = lr_min * (lr_max / lr_min) ** (np.arange(num_steps) / (num_steps - 1))
    lrs, smoothed, raw = [], [], []
    average, best, diverged, notes = 0.0, math.inf, False, []
    for i, lr in enumerate(schedule):
        loss = float(train_step(float(lr)))
        if not math.isfinite(loss):
            diverged = True
            notes.append(f"loss was {loss} at lr={lr:.3g}; stopped")
            break
        average = smooth * average + (1.0 - smooth) * loss
        value = average / (1.0 - smooth ** (i + 1))
        lrs.append(float(lr))
        smoothed.append(value)
        raw.append(loss)
        best = min(best, value)
        if value > diverge_factor * best and best > 0:
            diverged = True
            notes.append(f"smoothed loss {value:.4g} > {diverge_factor} x best at lr={lr:.3g}")
            break
    losses = np.asarray(smoothed)
    suggestion = None
    if losses.shape[0] >= 3:
        slope = np.gradient(losses, np.log(lrs))
        suggestion = float(lrs[int(np.argmin(slope))])
    return LRRangeResult(np.asarray(lrs), losses, np.asarray(raw), suggestion, diverged, notes)
