"""The training loop: `gd.Trainer`, `gd.fit`, `History`, `EarlyStopping`.

A Trainer compiles ONE training step (forward, backward and the optimizer's update as a single
`gd.function`, one call per batch) and drives it over epochs or steps:

    trainer = gd.Trainer(loss, params, inputs=[x, y], optimizer=gd.optim.Adam(lr=1e-3),
                         metrics={"acc": (gd.argmax(logits, 1), "accuracy")}, output=logits)
    history = trainer.fit((X, y), epochs=10, batch_size=32, validation=(Xv, yv),
                          early_stopping=gd.EarlyStopping(patience=5), checkpoint="run.npz")
    trainer.evaluate(Xt, yt)        # {"loss": ..., "acc": ...}
    trainer.predict(Xt)             # the output tensor's values, batch by batch

Conventions:

- **Data**: `train=` is a tuple of arrays in the order of `inputs` (one array for a single
  input), a `gd.data.Dataset`, or a `gd.data.DataLoader`. Arrays are batched by a DataLoader
  seeded with `seed`; epoch e draws its order from `default_rng(seed + e)`, so the position
  (epoch, batch) determines the data exactly and a run resumes bit for bit (`gd.save` /
  `gd.load` store the position). A given DataLoader is re-positioned with `set_epoch`.
- **Counting**: `epochs=` and `steps=` count what THIS call runs; `trainer.epoch` and
  `trainer.step` count everything done (across calls and checkpoints).
- **Metrics**: a dict name -> spec. A spec is a scalar tensor (averaged over batches,
  weighted by batch size), a `(tensor, fn)` pair (per-sample values of the tensor are
  gathered over the epoch and `fn(y_true, values)` is applied, `fn` a callable or the name
  of a `gd.metrics` function), or a bare `fn` applied to the trainer's `output=` tensor.
  `y_true` is the LAST input's array (the labels). Training metrics are computed from the
  training step's own outputs during the epoch (as Keras does); `val_` metrics by
  `evaluate` after it.
- **Evaluation** runs in batches of `batch_size` plus one last partial batch. Each new batch
  size is compiled once by the llvm backend, so keep batch sizes fixed.
- **Loss of a set** is the batch-size-weighted mean of the batch losses: the mean over the
  samples for mean-reduced losses (a regularizer term counts once per batch).

Example:
    >>> history = gd.fit(loss, (X, y), epochs=5, progress=False)
    >>> history["loss"], history.trainer.evaluate(X, y)
"""

from __future__ import annotations

import math
import numbers
import os
import sys

import numpy as np

from graphdl import checkpoint as _checkpoint
from graphdl import metrics as _metrics
from graphdl import ops as _ops
from graphdl.data.datasets import Dataset
from graphdl.data.loader import DataLoader
from graphdl.function import function
from graphdl.graph import Graph, Tensor, toposort
from graphdl.optim import Adam, Optimizer
from graphdl.schedules import ReduceLROnPlateau

__all__ = ["EarlyStopping", "History", "Trainer", "fit", "plot_roc"]

_MATPLOTLIB = "this plot needs matplotlib: pip install graphdl[examples]"


def _import_figure():
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(_MATPLOTLIB) from error
    return Figure


# ------------------------------------------------------------------------------ History
class History(dict):
    """Per-epoch logs: `history[key]` is a list with one value per completed epoch.

    Keys: "epoch" (1-based), "loss", each training metric, "val_loss" and "val_<metric>"
    with validation, "lr" (the rate of the epoch's last step). `step_loss` lists the loss of
    every training step. `gd.fit` also sets `history.trainer`.

    Example:
        >>> history = trainer.fit((X, y), epochs=3, progress=False)
        >>> history["loss"], history.best("val_loss"), history.plot("loss.png")
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.step_loss: list = []
        self.trainer = None

    @property
    def epochs(self) -> int:
        """Number of epochs recorded."""
        return len(self.get("epoch", []))

    def append(self, logs: dict) -> None:
        """Record one epoch's logs (a key first seen later is padded with NaN before)."""
        n = self.epochs
        for key, value in logs.items():
            self.setdefault(key, [math.nan] * n).append(value)
        for key, values in self.items():
            if len(values) == n:
                values.append(math.nan)

    def best(self, key: str = "val_loss", mode: str = "min") -> tuple:
        """(epoch, value) of the best value of `key`.

        Example:
            >>> epoch, value = history.best("val_acc", mode="max")
        """
        values = np.asarray(self[key], dtype=np.float64)
        pick = np.nanargmin if mode == "min" else np.nanargmax
        i = int(pick(values))
        return self["epoch"][i], float(values[i])

    def plot(self, path=None, keys=None):
        """Plot loss curves (default: loss and val_loss) against the epoch; save a PNG.

        Needs matplotlib (`pip install graphdl[examples]`); returns the matplotlib Figure.

        Example:
            >>> history.plot("loss.png")
            >>> history.plot("acc.png", keys=["acc", "val_acc"])
        """
        Figure = _import_figure()
        keys = [k for k in ("loss", "val_loss") if k in self] if keys is None else list(keys)
        missing = [k for k in keys if k not in self]
        if missing or not keys:
            raise KeyError(f"history has no {missing or 'loss'}; it has {sorted(self)}")
        figure = Figure(figsize=(6, 4))
        axes = figure.add_subplot()
        for key in keys:
            axes.plot(self["epoch"], self[key], marker="o", markersize=3, label=key)
        axes.set_xlabel("epoch")
        axes.set_ylabel(", ".join(keys))
        axes.legend()
        axes.grid(alpha=0.3)
        if path is not None:
            figure.savefig(path, dpi=100)
        return figure

    def __repr__(self) -> str:
        last = {k: v[-1] for k, v in self.items() if v}
        return f"History({self.epochs} epochs, last {last})"


def plot_roc(y_true, scores, path=None, pos_label=1):
    """Plot the ROC curve of binary scores (with its AUC) and save it as a PNG.

    Formula: the points (fpr, tpr) of `gd.metrics.roc_curve`; AUC by `gd.metrics.roc_auc`.

    Example:
        >>> probs = trainer.predict(X_test)[:, 1]
        >>> gd.train.plot_roc(y_test, probs, "roc.png")
    """
    Figure = _import_figure()
    fpr, tpr, _ = _metrics.roc_curve(y_true, scores, pos_label=pos_label)
    auc = _metrics.roc_auc(y_true, scores, pos_label=pos_label)
    figure = Figure(figsize=(4.5, 4.5))
    axes = figure.add_subplot()
    axes.plot(fpr, tpr, label=f"ROC (AUC {auc:.3f})")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.legend(loc="lower right")
    if path is not None:
        figure.savefig(path, dpi=100)
    return figure


# ------------------------------------------------------------------------ EarlyStopping
class EarlyStopping:
    """Stop training when a monitored log stops improving; optionally restore the best params.

    Rule (Keras's): the value improves when `value < best - min_delta` (mode "min") or
    `value > best + min_delta` ("max"). After `patience` epochs in a row without improvement
    training stops; with `restore_best` the params get their values from the best epoch.

    Example:
        >>> stop = gd.EarlyStopping(patience=5, monitor="val_loss", restore_best=True)
        >>> trainer.fit((X, y), epochs=100, validation=(Xv, yv), early_stopping=stop)
        >>> stop.best_epoch, stop.stopped_epoch
    """

    def __init__(self, patience: int = 5, monitor: str = "val_loss", mode: str = "min",
                 min_delta: float = 0.0, restore_best: bool = True):
        if isinstance(patience, bool) or not isinstance(patience, numbers.Integral) or \
                patience < 0:
            raise ValueError(f"patience must be an integer >= 0, got {patience!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if not isinstance(min_delta, numbers.Real) or min_delta < 0:
            raise ValueError(f"min_delta must be a number >= 0, got {min_delta!r}")
        self.patience = int(patience)
        self.monitor = str(monitor)
        self.mode = mode
        self.min_delta = float(min_delta)
        self.restore_best = bool(restore_best)
        self.best = math.inf if mode == "min" else -math.inf
        self.best_epoch = None
        self.wait = 0
        self.stopped_epoch = None
        self.best_values: dict = {}     # param -> array at the best epoch (restore_best)

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, logs: dict, epoch: int, params=()) -> bool:
        """Record one epoch's logs; True when training should stop now.

        Example:
            >>> stop.update({"val_loss": 0.3}, epoch=4, params=[W, b])
        """
        if self.monitor not in logs:
            raise KeyError(f"EarlyStopping monitors {self.monitor!r} but the epoch logged only "
                           f"{sorted(logs)}; pass validation= to fit, or monitor='loss'")
        value = float(logs[self.monitor])
        if math.isfinite(value) and self._improved(value):
            self.best, self.best_epoch, self.wait = value, int(epoch), 0
            if self.restore_best:
                self.best_values = {p: np.array(p.value, copy=True) for p in params}
            return False
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = int(epoch)
            return True
        return False

    def restore(self) -> None:
        """Give the params their values from the best epoch (when restore_best)."""
        for p, value in self.best_values.items():
            p.value = value

    def state(self) -> tuple:
        """(JSON-able dict, {param name: array}) for checkpoints."""
        meta = {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                "stopped_epoch": self.stopped_epoch, "monitor": self.monitor}
        return meta, {p.name: v for p, v in self.best_values.items()}

    def load_state(self, meta: dict, arrays: dict, params) -> None:
        """Restore what `state` returned (params are matched by name)."""
        self.best, self.best_epoch = float(meta["best"]), meta["best_epoch"]
        self.wait, self.stopped_epoch = int(meta["wait"]), meta["stopped_epoch"]
        self.best_values = {p: np.array(arrays[p.name]) for p in params if p.name in arrays}

    def __repr__(self) -> str:
        return (f"EarlyStopping(monitor={self.monitor!r}, mode={self.mode!r}, patience="
                f"{self.patience}, best={self.best!r} at epoch {self.best_epoch})")


# ------------------------------------------------------------------------------ metrics
class _Metric:
    """One metric: a scalar tensor averaged over batches, or per-sample values + fn."""

    def __init__(self, name: str, tensor: Tensor, fn=None):
        self.name, self.tensor, self.fn = name, tensor, fn


def _metric(name: str, spec, output) -> _Metric:
    if isinstance(spec, Tensor):
        if spec.shape != ():
            raise ValueError(f"metric {name!r}: a lone tensor must be a scalar (averaged over "
                             f"batches); for per-sample values give (tensor, fn), got {spec!r}")
        return _Metric(name, spec)
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], Tensor):
        tensor, fn = spec
    elif callable(spec) or isinstance(spec, str):
        if output is None:
            raise ValueError(f"metric {name!r} is a function of the predictions: give the "
                             "Trainer an output= tensor, or the metric as (tensor, fn)")
        tensor, fn = output, spec
    else:
        raise TypeError(f"metric {name!r}: expected a scalar tensor, (tensor, fn) or fn, "
                        f"got {spec!r}")
    if isinstance(fn, str):
        if fn not in _metrics.__all__ or not callable(getattr(_metrics, fn)):
            raise ValueError(f"metric {name!r}: gd.metrics has no {fn!r}; it has "
                             f"{[n for n in _metrics.__all__ if n[0].islower()]}")
        fn = getattr(_metrics, fn)
    if not callable(fn):
        raise TypeError(f"metric {name!r}: {fn!r} is not callable as fn(y_true, values)")
    if tensor.ndim == 0:
        raise ValueError(f"metric {name!r}: fn(y_true, values) needs per-sample values (a "
                         f"batch dimension), got the scalar {tensor!r}")
    return _Metric(name, tensor, fn)


class _Accumulator:
    """Running sums of one pass over data: loss and scalar metrics, gathered values."""

    def __init__(self, metrics):
        self.metrics = metrics
        self.count = 0
        self.sums = {"loss": 0.0, **{m.name: 0.0 for m in metrics if m.fn is None}}
        self.values = {m.name: [] for m in metrics if m.fn is not None}
        self.targets: list = []

    def add(self, size: int, loss: float, outs: dict, target) -> None:
        self.count += size
        self.sums["loss"] += size * loss
        for m in self.metrics:
            if m.fn is None:
                self.sums[m.name] += size * float(outs[m.name])
            else:
                self.values[m.name].append(np.asarray(outs[m.name]))
        if self.values:
            self.targets.append(np.asarray(target))

    def running(self) -> dict:
        return {k: v / max(self.count, 1) for k, v in self.sums.items()}

    def result(self) -> dict:
        logs = self.running()
        if self.values:
            y_true = np.concatenate(self.targets)
            for m in self.metrics:
                if m.fn is not None:
                    logs[m.name] = float(m.fn(y_true, np.concatenate(self.values[m.name])))
        return logs

    def state(self) -> tuple:
        meta = {"count": self.count, "sums": self.sums}
        arrays = {f"values/{k}": np.concatenate(v) for k, v in self.values.items() if v}
        if self.targets:
            arrays["targets"] = np.concatenate(self.targets)
        return meta, arrays

    def load_state(self, meta: dict, arrays: dict) -> None:
        self.count, self.sums = int(meta["count"]), {k: float(v) for k, v in
                                                     meta["sums"].items()}
        for name in self.values:
            if f"values/{name}" in arrays:
                self.values[name] = [arrays[f"values/{name}"]]
        if "targets" in arrays:
            self.targets = [arrays["targets"]]


# ------------------------------------------------------------------------------- data
class _Batches:
    """A DataLoader and how its batches map to the trainer's inputs."""

    def __init__(self, loader: DataLoader, arrays=None):
        self.loader = loader
        self.arrays = arrays        # set when the loader yields index batches

    def epoch(self, epoch: int, skip: int):
        """Iterator over the remaining batches of `epoch` after `skip` of them."""
        self.loader.set_epoch(epoch)
        iterator = iter(self.loader)
        try:
            for b in range(len(self.loader)):
                batch = next(iterator)
                if b >= skip:
                    yield tuple(a[batch[0]] for a in self.arrays) if self.arrays else batch
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()


def _as_arrays(data, n_inputs: int, what: str) -> tuple:
    arrays = (data,) if isinstance(data, np.ndarray) else tuple(data)
    if len(arrays) != n_inputs:
        raise ValueError(f"{what} gives {len(arrays)} array(s) but the trainer has {n_inputs} "
                         "input(s); give one array per input, in the order of inputs=")
    arrays = tuple(np.asarray(a) for a in arrays)
    n = arrays[0].shape[0] if arrays[0].ndim else None
    if n is None or any(a.ndim == 0 or a.shape[0] != n for a in arrays):
        raise ValueError(f"{what}: the arrays must share their first (sample) dimension, got "
                         f"shapes {[a.shape for a in arrays]}")
    return arrays


def _count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------- progress
class _Progress:
    """A tqdm bar per epoch when tqdm is importable, else one printed line per epoch."""

    def __init__(self, enabled: bool, total: int, desc: str):
        self.enabled, self.desc, self.bar = enabled, desc, None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, desc=desc, unit="batch", leave=True, file=sys.stderr,
                            dynamic_ncols=True)

    def update(self, logs: dict) -> None:
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()}, refresh=False)
            self.bar.update(1)

    def close(self, logs: dict) -> None:
        if not self.enabled:
            return
        shown = {k: v for k, v in logs.items() if k != "epoch"}
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=True)
            self.bar.close()
        else:
            text = "  ".join(f"{k} {v:.4g}" for k, v in shown.items())
            print(f"{self.desc}  {text}", flush=True)


# ------------------------------------------------------------------------------ Trainer
class Trainer:
    """Compile a training step for `loss` and run it over data: fit, evaluate, predict.

    `params` default to every gd.param the loss depends on; `inputs` to its gd.inputs in
    order of first use (pass them to be explicit: data arrays follow this order). The
    optimizer (default `gd.optim.Adam()`) builds its updates here, so its slots exist before
    any `gd.load`; the step counters of random ops (dropout) advance with each step too.
    `output` is the tensor `predict` returns. `metrics`: see the module doc. A model whose
    layers differ in training and evaluation (dropout, batch norm) gives `eval_loss` (and
    `eval_metrics`, `output`) built from its eval form; `evaluate` and validation use them.

    Formula: each batch runs theta <- update(theta, grad loss(theta; batch)) in one call.

    Example:
        >>> trainer = gd.Trainer(loss, inputs=[x, y], optimizer=gd.optim.SGD(lr=0.1),
        ...                      metrics={"acc": (gd.argmax(logits, 1), "accuracy")})
        >>> history = trainer.fit((X, y), epochs=10, validation=(Xv, yv), progress=False)
    """

    def __init__(self, loss: Tensor, params=None, inputs=None,
                 optimizer: Optimizer | None = None, metrics=None, output: Tensor | None = None,
                 backend: str | None = None, cast: bool = False,
                 eval_loss: Tensor | None = None, eval_metrics=None, updates=None):
        for name, value in (("loss", loss), ("eval_loss", eval_loss)):
            if value is not None and (not isinstance(value, Tensor) or value.shape != ()):
                raise ValueError(f"the {name} must be a scalar tensor, got {value!r}")
        if loss is None:
            raise ValueError("the loss must be a scalar tensor, got None")
        graph = Graph([loss])
        self.loss = loss
        self.params = [params] if isinstance(params, Tensor) else \
            list(params) if params is not None else graph.leaves("param")
        if not self.params:
            raise ValueError("the loss depends on no gd.param: nothing to train")
        self.inputs = list(inputs) if inputs is not None else graph.leaves("input")
        self.optimizer = optimizer if optimizer is not None else Adam()
        if not isinstance(self.optimizer, Optimizer):
            raise TypeError(f"optimizer must be a gd.optim optimizer, got {optimizer!r}")
        if output is not None and not isinstance(output, Tensor):
            raise TypeError(f"output must be a tensor, got {output!r}")
        self.output = output
        self.metrics = [_metric(str(k), v, output) for k, v in dict(metrics or {}).items()]
        self.eval_loss = loss if eval_loss is None else eval_loss
        self.eval_metrics = self.metrics if eval_metrics is None else \
            [_metric(str(k), v, output) for k, v in dict(eval_metrics).items()]
        if any(m.name in ("loss", "epoch", "lr") or m.name.startswith("val_")
               for m in self.metrics + self.eval_metrics):
            raise ValueError("metric names must not be 'loss', 'epoch', 'lr' or start with "
                             "'val_' (those are history keys)")
        self.backend, self.cast = backend, cast
        # Random ops (dropout) read a step counter that must advance at every training call.
        # `updates=` adds the model's own (batch-norm running statistics: model.updates()),
        # which may already hold the dropout step counter: each variable is updated once.
        own = list(updates or [])
        random_updates = getattr(_ops, "random_updates", None)
        extra = random_updates([loss]) if random_updates is not None else []
        taken = {var for var, _ in own}
        extra = [(var, value) for var, value in extra if var not in taken]
        self.updates = self.optimizer.updates(loss, self.params) + own + extra
        self.epoch = 0              # completed epochs
        self.step = 0               # completed training steps
        self.batch_in_epoch = 0     # steps done in the current, unfinished epoch
        self.seed = None            # the data order's seed (set by fit or a checkpoint)
        self.history = History()
        self.early_stopping = None
        self._partial = None        # _Accumulator of an unfinished epoch
        self._pending_early_stopping = None
        self._functions: dict = {}
        self._initial = {v: np.array(v.value, copy=True)
                         for v in self.params + self.state_variables()}
        lr = self.optimizer.lr
        self._initial_schedule = lr.state_dict() if hasattr(lr, "state_dict") else None

    # -- graph and compiled functions ------------------------------------------------------
    def state_variables(self) -> list:
        """Every gd.state the training step reads or updates (optimizer slots, counters)."""
        nodes = toposort([self.loss] + [value for _, value in self.updates])
        found = [n for n in nodes if n.op == "state"] + \
            [var for var, _ in self.updates if var.op == "state"]
        return list(dict.fromkeys(found))

    @staticmethod
    def _metric_outputs(metrics) -> list:
        return list(dict.fromkeys(m.tensor for m in metrics))

    def _function(self, kind: str):
        if kind not in self._functions:
            if kind == "train":
                f = function(self.inputs, [self.loss] + self._metric_outputs(self.metrics),
                             updates=self.updates, backend=self.backend, cast=self.cast,
                             name="train_step")
            elif kind == "evaluate":
                outs = self._metric_outputs(self.eval_metrics)
                f = function(self.inputs, [self.eval_loss] + outs, backend=self.backend,
                             cast=self.cast, name="evaluate")
            else:
                needed = set(toposort([self.output]))
                f = function([t for t in self.inputs if t in needed], self.output,
                             backend=self.backend, cast=self.cast, name="predict")
            self._functions[kind] = f
        return self._functions[kind]

    @property
    def train_function(self):
        """The compiled training step: `train_function(*batch) -> [loss, metric tensors]`."""
        return self._function("train")

    def _outputs(self, values, metrics) -> tuple:
        loss = float(values[0])
        by_tensor = dict(zip(self._metric_outputs(metrics), values[1:]))
        return loss, {m.name: by_tensor[m.tensor] for m in metrics}

    # -- data ------------------------------------------------------------------------------
    def _batches(self, train, batch_size, seed, shuffle, drop_last, transform) -> _Batches:
        if isinstance(train, DataLoader):
            self.seed = train.seed
            return _Batches(train)
        seed = (self.seed if self.seed is not None else 0) if seed is None else int(seed)
        self.seed = seed
        options = {"batch_size": _count(batch_size, "batch_size"), "shuffle": shuffle,
                   "seed": seed, "drop_last": drop_last}
        if isinstance(train, Dataset):
            train = (train.X, train.y)
        arrays = _as_arrays(train, len(self.inputs), "train")
        if len(arrays) == 2:
            return _Batches(DataLoader(arrays, transform=transform, **options))
        if transform is not None:
            raise ValueError("transform= needs (X, y) training data; with other inputs "
                             "apply it in a DataLoader of your own")
        index = np.arange(arrays[0].shape[0])
        return _Batches(DataLoader((index, index), **options), arrays)

    # -- training --------------------------------------------------------------------------
    def fit(self, train, epochs: int | None = None, steps: int | None = None,
            batch_size: int = 32, validation=None, early_stopping: EarlyStopping | None = None,
            checkpoint=None, progress: bool = True, seed: int | None = None, shuffle: bool = True,
            drop_last: bool = False, transform=None, validation_batch_size: int = 256):
        """Train for `epochs` more epochs or `steps` more steps; return the History.

        `validation`: arrays or a DataLoader (evaluated each epoch, logged as val_*), or a
        callable `fn(trainer) -> dict` whose keys are logged as given. `checkpoint`: a path
        saved with `gd.save(path, trainer=self)` after every epoch (a "{epoch}" field makes
        one file per epoch). `seed` orders the data (default: the resumed run's, else 0;
        a DataLoader keeps its own seed, and batch_size, shuffle, drop_last and transform);
        `progress` shows a tqdm bar per epoch with the running loss and metrics (one line per
        epoch without tqdm; nothing when False). With `steps`, epoch-end work (validation,
        early stopping, checkpoints) happens at each epoch completed within the steps.

        Example:
            >>> trainer.fit((X, y), epochs=20, batch_size=64, validation=(Xv, yv))
            >>> trainer.fit(loader, steps=500, progress=False)
        """
        if (epochs is None) == (steps is None):
            raise ValueError("give either epochs= or steps= (how much this call trains)")
        epochs = None if epochs is None else _count(epochs, "epochs")
        last_step = None if steps is None else self.step + _count(steps, "steps")
        batches = self._batches(train, batch_size, seed, shuffle, drop_last, transform)
        self._attach_early_stopping(early_stopping)
        done = 0
        while epochs is None or done < epochs:
            if last_step is not None and self.step >= last_step:
                break
            logs, bar = self._run_epoch(batches, last_step, progress, epochs, done)
            if logs is None:        # the steps ran out inside the epoch
                break
            done += 1
            if self._end_epoch(logs, bar, validation, validation_batch_size, checkpoint):
                break
        return self.history

    def _run_epoch(self, batches: _Batches, last_step, progress, epochs, done):
        n_batches = len(batches.loader)
        total = n_batches - self.batch_in_epoch
        if last_step is not None:
            total = min(total, last_step - self.step)
        label = f"epoch {self.epoch + 1}" + (f" ({done + 1}/{epochs})" if epochs else "")
        bar = _Progress(progress, total, label)
        acc = self._partial if self._partial is not None else _Accumulator(self.metrics)
        self._partial = acc
        step_fn = self.train_function
        for batch in batches.epoch(self.epoch, self.batch_in_epoch):
            loss, outs = self._outputs(step_fn(*batch), self.metrics)
            acc.add(len(batch[0]), loss, outs, batch[-1])
            self.history.step_loss.append(loss)
            self.step += 1
            self.batch_in_epoch += 1
            if bar.enabled:
                bar.update(acc.running())
            if last_step is not None and self.step >= last_step and \
                    self.batch_in_epoch < n_batches:
                bar.close(acc.running())
                return None, bar
        self.epoch += 1
        self.batch_in_epoch = 0
        self._partial = None
        return {"epoch": self.epoch, **acc.result(), "lr": self._current_lr()}, bar

    def _current_lr(self) -> float:
        lr = self.optimizer.lr
        if isinstance(lr, Tensor):
            return float(lr.value)
        if callable(lr):
            return float(lr(max(self.optimizer.step_count - 1, 0)))
        return float(lr)

    def _end_epoch(self, logs, bar, validation, batch_size, checkpoint) -> bool:
        """Validation, history, plateau schedule, early stopping, checkpoint; True: stop."""
        if validation is not None:
            if callable(validation):
                logs.update({k: float(v) for k, v in dict(validation(self)).items()})
            else:
                results = self.evaluate(validation, batch_size=batch_size)
                logs.update({f"val_{k}": v for k, v in results.items()})
        self.history.append(logs)
        bar.close(logs)
        if isinstance(self.optimizer.lr, ReduceLROnPlateau):
            self.optimizer.lr.step(logs["val_loss" if "val_loss" in logs else "loss"])
        stop = False
        if self.early_stopping is not None:
            stop = self.early_stopping.update(logs, self.epoch, self.params)
            if stop and self.early_stopping.restore_best:
                self.early_stopping.restore()
        if checkpoint is not None:
            path = os.fspath(checkpoint)
            _checkpoint.save(path.format(epoch=self.epoch) if "{epoch" in path else path,
                             trainer=self)
        return stop

    def _attach_early_stopping(self, early_stopping) -> None:
        if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
            raise TypeError(f"early_stopping must be a gd.EarlyStopping, got {early_stopping!r}")
        self.early_stopping = early_stopping
        pending, self._pending_early_stopping = self._pending_early_stopping, None
        if early_stopping is not None and pending is not None and \
                pending[0].get("monitor") == early_stopping.monitor:
            early_stopping.load_state(pending[0], pending[1], self.params)

    def reset(self) -> None:
        """Params and every state variable (optimizer slots, a gd.state learning rate) back
        to their values when the Trainer was built; counters, history and early stopping
        cleared. The compiled functions are kept: k-fold runs compile once.

        Example:
            >>> for train_idx, val_idx in gd.select.kfold(len(X), k=5):
            ...     trainer.reset(); trainer.fit((X[train_idx], y[train_idx]), epochs=5)
        """
        for variable, value in self._initial.items():
            variable.value = value
        self.epoch = self.step = self.batch_in_epoch = 0
        self.seed, self.early_stopping, self._partial = None, None, None
        self._pending_early_stopping = None
        self.history = History()
        if self._initial_schedule is not None:
            self.optimizer.lr.load_state_dict(self._initial_schedule)

    # -- evaluation ------------------------------------------------------------------------
    def _eval_batches(self, data, batch_size: int):
        if len(data) == 1 and isinstance(data[0], DataLoader):
            iterator = iter(data[0])
            for _ in range(len(data[0])):      # one epoch, even of an infinite loader
                yield next(iterator)
            return
        if len(data) == 1 and isinstance(data[0], Dataset):
            data = (data[0].X, data[0].y)
        elif len(data) == 1 and isinstance(data[0], (tuple, list)):
            data = tuple(data[0])
        arrays = _as_arrays(data, len(self.inputs), "evaluate")
        n = arrays[0].shape[0]
        for start in range(0, n, batch_size):
            yield tuple(a[start:start + batch_size] for a in arrays)

    def evaluate(self, *data, batch_size: int = 256) -> dict:
        """Loss and metrics over a data set (no update), in batches.

        `data` is one array per input (X, y), a tuple of them, a Dataset or a DataLoader.
        Formula: loss = sum_b n_b loss_b / sum_b n_b; metrics as in training.

        Example:
            >>> trainer.evaluate(X_test, y_test)      # {"loss": 0.21, "acc": 0.95}
        """
        f = self._function("evaluate")
        acc = _Accumulator(self.eval_metrics)
        for batch in self._eval_batches(data, _count(batch_size, "batch_size")):
            loss, outs = self._outputs(f(*batch), self.eval_metrics)
            acc.add(len(batch[0]), loss, outs, batch[-1])
        if acc.count == 0:
            raise ValueError("evaluate got no samples")
        return acc.result()

    def predict(self, *arrays, batch_size: int = 256) -> np.ndarray:
        """Values of the `output` tensor over the samples, computed in batches.

        Give the arrays of the inputs `output` depends on (usually just X), or of all inputs.

        Example:
            >>> probs = trainer.predict(X_test, batch_size=512)
        """
        if self.output is None:
            raise ValueError("predict needs the Trainer's output= tensor (e.g. the logits)")
        f = self._function("predict")
        if len(arrays) == len(self.inputs) and len(f.inputs) != len(self.inputs):
            arrays = tuple(a for t, a in zip(self.inputs, arrays) if t in f.inputs)
        arrays = _as_arrays(arrays, len(f.inputs), "predict")
        n, batch_size = arrays[0].shape[0], _count(batch_size, "batch_size")
        parts = [f(*(a[s:s + batch_size] for a in arrays)) for s in range(0, n, batch_size)]
        return np.concatenate(parts) if parts else np.empty((0,) + self.output.shape[1:])

    # -- checkpoints (used by gd.save / gd.load) -------------------------------------------
    def checkpoint_state(self) -> tuple:
        """(JSON-able dict, {name: array}) of the loop: position, seed, history, early
        stopping and the unfinished epoch's sums. `gd.save(trainer=...)` stores it."""
        meta = {"epoch": self.epoch, "step": self.step, "batch_in_epoch": self.batch_in_epoch,
                "seed": self.seed, "history_keys": list(self.history)}
        arrays = {f"history/{k}": np.asarray(v, dtype=np.float64)
                  for k, v in self.history.items()}
        arrays["step_loss"] = np.asarray(self.history.step_loss, dtype=np.float64)
        if self.early_stopping is not None:
            es_meta, es_arrays = self.early_stopping.state()
            meta["early_stopping"] = es_meta
            arrays.update({f"early_stopping/{k}": v for k, v in es_arrays.items()})
        if self._partial is not None:
            meta["partial"], partial = self._partial.state()
            arrays.update({f"partial/{k}": v for k, v in partial.items()})
        return meta, arrays

    def load_checkpoint_state(self, meta: dict, arrays: dict) -> None:
        """Restore what `checkpoint_state` returned (gd.load(trainer=...) calls it)."""
        self.epoch, self.step = int(meta["epoch"]), int(meta["step"])
        self.batch_in_epoch, self.seed = int(meta["batch_in_epoch"]), meta["seed"]
        self.history = History()
        for key in meta["history_keys"]:
            values = arrays[f"history/{key}"].tolist()
            self.history[key] = [int(v) for v in values] if key == "epoch" else values
        self.history.step_loss = arrays["step_loss"].tolist()
        self._partial = None
        if "partial" in meta:
            self._partial = _Accumulator(self.metrics)
            self._partial.load_state(meta["partial"], _strip(arrays, "partial/"))
        self._pending_early_stopping = None
        if "early_stopping" in meta:
            self._pending_early_stopping = (meta["early_stopping"],
                                            _strip(arrays, "early_stopping/"))

    def __repr__(self) -> str:
        return (f"<Trainer {len(self.params)} params, {len(self.inputs)} inputs, "
                f"{type(self.optimizer).__name__}, epoch {self.epoch}, step {self.step}>")


def _strip(arrays: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def fit(loss: Tensor, train, *, params=None, inputs=None, optimizer: Optimizer | None = None,
        metrics=None, output: Tensor | None = None, backend: str | None = None,
        cast: bool = False, **options) -> History:
    """Build a `Trainer` and fit it in one call; returns the History (`history.trainer`).

    Keyword options are those of `Trainer.fit` (epochs or steps, batch_size, validation,
    early_stopping, checkpoint, progress, seed, ...).

    Example:
        >>> history = gd.fit(loss, (X, y), inputs=[x, y], epochs=10, progress=False)
        >>> history.trainer.evaluate(X_test, y_test)
    """
    trainer = Trainer(loss, params=params, inputs=inputs, optimizer=optimizer, metrics=metrics,
                      output=output, backend=backend, cast=cast)
    history = trainer.fit(train, **options)
    history.trainer = trainer
    return history
