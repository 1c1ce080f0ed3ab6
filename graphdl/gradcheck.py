"""gd.check_grad: compare derived gradients with central finite differences.

The derived gradient comes from `gd.grad` compiled on a backend; the numerical one perturbs
each entry of each `wrt` tensor by +-eps and evaluates the loss twice (float64 recommended:
in float32 central differences are only good to about 1e-3). The report is truthy when every
entry agrees within `atol + rtol * |numerical|`, and names the worst entry otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from graphdl.autodiff import grad
from graphdl.function import function
from graphdl.graph import Tensor, toposort


@dataclass
class GradCheckEntry:
    """The comparison for one tensor of `wrt`."""

    name: str
    max_abs_error: float
    max_rel_error: float
    worst_index: tuple
    derived: float
    numerical: float
    passed: bool


@dataclass
class GradCheckReport:
    """Per-tensor results of a gradient check; truthy when all passed."""

    entries: list = field(default_factory=list)

    def __bool__(self) -> bool:
        return all(e.passed for e in self.entries)

    @property
    def worst(self) -> GradCheckEntry | None:
        """The entry with the largest relative error."""
        return max(self.entries, key=lambda e: e.max_rel_error, default=None)

    def __str__(self) -> str:
        lines = ["gradient check: " + ("passed" if self else "FAILED")]
        for e in self.entries:
            lines.append(f"  {e.name}: max rel error {e.max_rel_error:.2e} at {e.worst_index}"
                         f" (derived {e.derived:.6g}, numerical {e.numerical:.6g})"
                         + ("" if e.passed else "  <-- mismatch"))
        return "\n".join(lines)


def check_grad(loss: Tensor, wrt, feed=None, eps: float | None = None, rtol: float = 1e-5,
               atol: float = 1e-8, backend: str = "reference") -> GradCheckReport:
    """Check gd.grad(loss, wrt) against central differences (loss' ~ (L(w+e) - L(w-e)) / 2e).

    `wrt` holds params, state or inputs; `feed` maps every input of the graph to an array.
    Params are perturbed in place and restored. `eps` defaults to 1e-6 for float64 and 1e-3
    for float32 (whose central differences are good to about 1e-3 only: pass rtol=1e-2).

    Example:
        >>> report = gd.check_grad(loss, [W, b], feed={x: xs, y: ys})
        >>> assert report, str(report)
    """
    wrt = [wrt] if isinstance(wrt, Tensor) else list(wrt)
    feed = dict(feed or {})
    inputs = [n for n in toposort([loss]) if n.op == "input"]
    missing = [n.name for n in inputs if n not in feed]
    if missing:
        raise ValueError(f"check_grad: no value given for input(s) {missing}")
    arrays = {n: np.array(feed[n], dtype=n.dtype) for n in inputs}
    grads = grad(loss, wrt)
    f = function(inputs, [loss] + grads, backend=backend)
    derived = f(*[arrays[n] for n in inputs])[1:]
    f_loss = function(inputs, loss, backend=backend)

    def evaluate():
        return float(f_loss(*[arrays[n] for n in inputs]))

    report = GradCheckReport()
    for w, g in zip(wrt, derived):
        step = eps if eps is not None else (1e-6 if w.dtype == "float64" else 1e-3)
        target = arrays[w] if w.op == "input" else w.storage.array
        numerical = _central_differences(target, evaluate, step)
        report.entries.append(_compare(w, np.asarray(g, np.float64), numerical, rtol, atol))
    return report


def _central_differences(target: np.ndarray, evaluate, eps: float) -> np.ndarray:
    out = np.zeros(target.shape, np.float64)
    for idx in np.ndindex(target.shape):
        saved = target[idx]
        target[idx] = saved + eps
        plus = evaluate()
        target[idx] = saved - eps
        minus = evaluate()
        target[idx] = saved
        out[idx] = (plus - minus) / (2 * eps)
    return out


def _compare(w, derived, numerical, rtol, atol) -> GradCheckEntry:
    name = w.name or repr(w)
    if derived.size == 0:
        return GradCheckEntry(name, 0.0, 0.0, (), 0.0, 0.0, True)
    abs_err = np.abs(derived - numerical)
    rel_err = abs_err / (atol + np.abs(numerical))
    worst = np.unravel_index(int(np.argmax(rel_err)), rel_err.shape)
    passed = bool(np.all(abs_err <= atol + rtol * np.abs(numerical)))
    return GradCheckEntry(name, float(abs_err.max()), float(rel_err[worst]),
                          tuple(int(i) for i in worst), float(derived[worst]),
                          float(numerical[worst]), passed)
