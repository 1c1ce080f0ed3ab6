"""Checkpoints: `gd.save` / `gd.load` of params, optimizer state and the training loop.

One `.npz` file (`np.savez`, no pickle) holds:

- `param/<name>` for every param and `state/<name>` for every state variable given (an
  optimizer's slots and its step counter `<Optimizer>.step`, a scheduled rate); tensors are
  keyed by their names, so names must be unique and a rebuilt model finds its values again;
- `trainer/...` arrays of a `gd.Trainer`: history, early-stopping best params, the sums of
  an unfinished epoch;
- `extra/<key>` for array values of `extra=`;
- `__graphdl__`: JSON metadata: format version, graphdl version, shapes and dtypes, the
  trainer's position (epoch, step, batch within the epoch, data seed), a stateful learning
  rate schedule (ReduceLROnPlateau), the global generator of `gd.seed`, the training graph's
  fingerprint, and the JSON values of `extra=`.

Resuming is exact: `gd.load(path, trainer=trainer)` in a fresh process that rebuilt the same
graph restores every value bit for bit and the trainer's position in the data, so the next
`trainer.fit(...)` continues the run as if it had never stopped. A trainer's data order
depends only on (seed, epoch, batch), which the checkpoint stores.

Example:
    >>> gd.save("run.npz", trainer=trainer, extra={"note": "baseline"})
    >>> info = gd.load("run.npz", trainer=trainer)     # in a fresh process, same script
    >>> trainer.fit((X, y), epochs=5)                    # continues the run
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings

import numpy as np

from graphdl.errors import ShapeError
from graphdl.graph import Tensor
from graphdl.random import current_seed, generator
from graphdl.random import seed as _seed

__all__ = ["Checkpoint", "load", "save"]

FORMAT = "graphdl-checkpoint"
VERSION = 1
META_KEY = "__graphdl__"


class Checkpoint:
    """What `gd.load` read: metadata, arrays by key, `extra`, and the trainer's position.

    Example:
        >>> ckpt = gd.load("run.npz")
        >>> ckpt.params["W1"].shape, ckpt.epoch, ckpt.step, ckpt.extra
    """

    def __init__(self, path: str, meta: dict, arrays: dict, restored: list):
        self.path = path
        self.meta = meta
        self.arrays = arrays
        self.restored = restored        # keys written into the given tensors
        trainer = meta.get("trainer") or {}
        self.epoch = trainer.get("epoch")
        self.step = trainer.get("step")
        self.extra = dict(meta.get("extra") or {})
        self.extra.update({k[len("extra/"):]: v for k, v in arrays.items()
                           if k.startswith("extra/")})

    @property
    def params(self) -> dict:
        """{param name: array} of every saved param."""
        return {k[len("param/"):]: v for k, v in self.arrays.items() if k.startswith("param/")}

    @property
    def state(self) -> dict:
        """{state name: array} of every saved state variable (optimizer slots, counters)."""
        return {k[len("state/"):]: v for k, v in self.arrays.items() if k.startswith("state/")}

    def __repr__(self) -> str:
        return (f"<Checkpoint {self.path!r}: {len(self.params)} params, {len(self.state)} "
                f"state, epoch {self.epoch}, step {self.step}>")


# ------------------------------------------------------------------------------ helpers
def _key(t: Tensor) -> str:
    return f"{t.op}/{t.name}"


def _tensors(params, optimizer, trainer) -> list:
    """The variables to save or restore, each once, in a stable order."""
    found = []
    if params is not None:
        items = params.values() if isinstance(params, dict) else \
            [params] if isinstance(params, Tensor) else params
        for p in items:
            if not isinstance(p, Tensor) or p.op not in ("param", "state"):
                raise TypeError(f"params must be gd.param (or gd.state) tensors, got {p!r}")
            found.append(p)
    if optimizer is not None:
        found += optimizer.state_variables()
    if trainer is not None:
        found += list(trainer.params) + trainer.state_variables()
    found = list(dict.fromkeys(found))
    by_key: dict = {}
    for t in found:
        other = by_key.setdefault(_key(t), t)
        if other is not t:
            raise ValueError(f"two different {t.op} tensors are named {t.name!r}; checkpoints "
                             "key tensors by name, so give each a unique name")
    return found


def _optimizer_of(optimizer, trainer):
    if optimizer is not None:
        if not optimizer.state_variables():
            raise ValueError(f"{type(optimizer).__name__} has no state yet: call "
                             "opt.updates(loss, params) (or build the Trainer) first")
        return optimizer
    return trainer.optimizer if trainer is not None else None


def _fingerprint(trainer) -> str:
    from graphdl.fingerprint import fingerprint
    return fingerprint(trainer.inputs, [trainer.loss], list(trainer.updates))[0]


def _json_extra(extra) -> tuple:
    if extra is None:
        return {}, {}
    if not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict, got {type(extra).__name__}")
    values, arrays = {}, {}
    for key, value in extra.items():
        if isinstance(value, np.ndarray):
            arrays[f"extra/{key}"] = value
            continue
        try:
            json.dumps(value)
        except TypeError:
            raise TypeError(f"extra[{key!r}] must be a NumPy array or JSON-serializable, got "
                            f"{type(value).__name__}") from None
        values[str(key)] = value
    return values, arrays


def _write(path: str, arrays: dict) -> None:
    """Write to a temporary file in the same folder, then rename: never a partial file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------------- save
def save(path, params=None, optimizer=None, trainer=None, extra=None) -> str:
    """Save params, optimizer state and a trainer's loop state into one .npz file.

    `params`: tensors (a list, one tensor, or a dict of them); `optimizer`: its slots and step
    counter (every `opt.state_variables()` tensor); `trainer`: its params, every state the
    step uses, the optimizer and the loop (epoch, step, data seed, history, early stopping);
    `extra`: a dict of arrays and JSON values. The file is written exactly at `path`
    (atomically). Returns the path.

    Example:
        >>> gd.save("model.npz", params=[W1, b1], optimizer=opt)
        >>> gd.save("run.npz", trainer=trainer, extra={"config": {"lr": 1e-3}})
    """
    path = os.fspath(path)
    opt = _optimizer_of(optimizer, trainer)
    tensors = _tensors(params, optimizer, trainer)
    if not tensors and trainer is None and extra is None:
        raise ValueError("gd.save got nothing to save: give params=, optimizer= or trainer=")
    arrays = {_key(t): np.array(t.value, copy=True) for t in tensors}
    values, extra_arrays = _json_extra(extra)
    arrays.update(extra_arrays)
    from graphdl import __version__
    rng = generator().bit_generator.state
    meta = {"format": FORMAT, "version": VERSION, "graphdl_version": __version__,
            "tensors": {_key(t): [list(t.value.shape), t.value.dtype.name] for t in tensors},
            "rng": {"seed": current_seed(), "state": rng}, "extra": values}
    if opt is not None:
        meta["optimizer"] = {"class": type(opt).__name__, "step_count": opt.step_count}
        if hasattr(opt.lr, "state_dict"):
            meta["optimizer"]["lr_schedule"] = opt.lr.state_dict()
    if trainer is not None:
        loop, loop_arrays = trainer.checkpoint_state()
        meta["trainer"] = loop
        meta["graph"] = {"fingerprint": _fingerprint(trainer)}
        arrays.update({f"trainer/{k}": v for k, v in loop_arrays.items()})
    arrays[META_KEY] = np.array(json.dumps(meta))
    _write(path, arrays)
    return path


# --------------------------------------------------------------------------------- load
def _read(path: str) -> tuple:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"no checkpoint at {path!r}") from None
    except (OSError, ValueError) as error:
        raise ValueError(f"{path!r} is not a readable .npz checkpoint: {error}") from None
    if META_KEY not in arrays:
        raise ValueError(f"{path!r} is an .npz file but not a graphdl checkpoint (no "
                         f"{META_KEY!r} entry)")
    meta = json.loads(str(arrays.pop(META_KEY)))
    if meta.get("format") != FORMAT or meta.get("version", 0) > VERSION:
        raise ValueError(f"{path!r}: unsupported checkpoint format {meta.get('format')!r} "
                         f"version {meta.get('version')!r} (this graphdl reads {VERSION})")
    return meta, arrays


def _check(tensors, arrays, path, strict) -> list:
    """(tensor, array) pairs to assign; every mismatch is reported before anything changes."""
    pairs, missing, wrong = [], [], []
    for t in tensors:
        key = _key(t)
        if key not in arrays:
            missing.append(key)
            continue
        array, current = arrays[key], t.value
        if array.shape != current.shape or array.dtype != current.dtype:
            wrong.append(f"{key}: saved {array.shape} {array.dtype}, the model has "
                         f"{current.shape} {current.dtype}")
            continue
        pairs.append((t, array))
    if wrong:
        raise ShapeError(f"{path!r} does not fit the model:\n  " + "\n  ".join(wrong))
    if missing and strict:
        saved = sorted(k for k in arrays if k.startswith(("param/", "state/")))
        raise KeyError(f"{path!r} has no value for {missing}; it holds {saved} (pass "
                       "strict=False to restore only what it has)")
    return pairs


def load(path, params=None, optimizer=None, trainer=None, strict: bool = True,
         rng: bool | None = None) -> Checkpoint:
    """Restore what `gd.save` stored into the given tensors, optimizer and trainer.

    Tensors are matched by name and kind; shapes and dtypes must match exactly (ShapeError
    otherwise) and, with `strict`, every given tensor must be in the file (KeyError). Nothing
    is changed unless everything fits. `rng` restores the global generator of `gd.seed`
    (default: when a trainer is given). Returns a `Checkpoint` (metadata, arrays, extra);
    with no targets it only reads.

    Example:
        >>> ckpt = gd.load("run.npz", trainer=trainer)
        >>> trainer.epoch, trainer.optimizer.step_count, ckpt.extra
    """
    path = os.fspath(path)
    meta, arrays = _read(path)
    tensors = _tensors(params, optimizer, trainer)
    opt = _optimizer_of(optimizer, trainer)
    if trainer is not None and "trainer" not in meta:
        raise KeyError(f"{path!r} holds no trainer state (it was saved without trainer=)")
    pairs = _check(tensors, arrays, path, strict)
    if trainer is not None:
        saved = (meta.get("graph") or {}).get("fingerprint")
        if saved is not None and saved != _fingerprint(trainer):
            warnings.warn(f"{path!r} was saved from a different training graph; values are "
                          "restored by name", stacklevel=2)
    for t, array in pairs:
        t.value = array
    schedule = (meta.get("optimizer") or {}).get("lr_schedule")
    if opt is not None and schedule is not None and hasattr(opt.lr, "load_state_dict"):
        opt.lr.load_state_dict(schedule)
    if trainer is not None:
        prefix = "trainer/"
        trainer.load_checkpoint_state(meta["trainer"], {k[len(prefix):]: v for k, v in
                                                        arrays.items() if k.startswith(prefix)})
    if (rng if rng is not None else trainer is not None) and "rng" in meta:
        _seed(int(meta["rng"]["seed"]))
        generator().bit_generator.state = meta["rng"]["state"]
    return Checkpoint(path, meta, arrays, [_key(t) for t, _ in pairs])
