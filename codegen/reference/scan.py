"""NumPy meaning of `scan` and `scan_get` (graphdl/ops/scan.py): a Python loop over the steps,
each step the reference interpreter run on the body graph.

A scan node evaluates to a `ScanValue` holding its outputs (final carries, stacked ys, carry
histories); `scan_get` picks one. Residual outputs (what a backward pass saves per step) are
computed when first asked for, by running the loop again with those body nodes as extra
outputs, so a forward-only program never pays for them.
"""

from __future__ import annotations

import collections

import numpy as np

from graphdl.shapes import bind_dims

_PROGRAMS: collections.OrderedDict = collections.OrderedDict()


def _program(body, extra=()):
    """A reference program computing a body's outputs (and `extra` body nodes) per step.

    Cached by the body object itself (equal bodies have different placeholder objects)."""
    from graphdl.codegen.reference.interpreter import Program
    key = (id(body), extra)
    found = _PROGRAMS.get(key)
    if found is None or found[0] is not body:
        found = _PROGRAMS[key] = (body, Program(body.inputs, list(body.outputs) + list(extra),
                                                []))
        if len(_PROGRAMS) > 256:
            _PROGRAMS.popitem(last=False)
    return found[1]


class ScanValue:
    """The outputs of one evaluated scan node, by scan_get index."""

    def __init__(self, node, arrays, sizes):
        self.node, self.arrays, self.sizes = node, arrays, sizes
        self.outputs = {}
        finals, ys, hist, _ = _run(node, arrays, sizes, ())
        body = node.attr("body")
        nc, ny = body.n_carry, body.n_y
        for k in range(nc):
            self.outputs[k] = finals[k]
            self.outputs[nc + ny + k] = hist[k]
        for k in range(ny):
            self.outputs[nc + k] = ys[k]

    def get(self, index):
        """Output `index` (computing a residual output on first use)."""
        if index not in self.outputs:
            _, key, _ = index
            saved = self.node.attr("body").residuals(key)
            *_, extra = _run(self.node, self.arrays, self.sizes, saved)
            for j, value in enumerate(extra):
                self.outputs[("residual", key, j)] = value
        return self.outputs[index]


def _run(node, arrays, sizes, extra):
    """(final carries, stacked ys, carry histories, stacked extra values) of a scan."""
    body = node.attr("body")
    T, reverse = node.attr("length"), node.attr("reverse")
    nc, nx = body.n_carry, body.n_x
    carries = [np.asarray(a) for a in arrays[:nc]]
    xs, consts = arrays[nc:nc + nx], list(arrays[nc + nx:])
    program = _program(body, tuple(extra))
    ny = body.n_y
    hist = [np.empty((T + 1,) + bind_dims(c.shape, sizes), c.dtype) for c in body.carries]
    ys = [np.empty((T,) + bind_dims(y.shape, sizes), y.dtype) for y in body.outputs[nc:]]
    saved = [np.empty((T,) + bind_dims(e.shape, sizes), e.dtype) for e in extra]
    steps = range(T - 1, -1, -1) if reverse else range(T)
    for k in range(nc):
        hist[k][T if reverse else 0] = carries[k]
    for t in steps:
        values, _ = program.run(carries + [x[t] for x in xs] + consts, sizes)
        carries = [np.asarray(v, dtype=c.dtype) for v, c in zip(values[:nc], body.carries)]
        for k in range(nc):
            hist[k][t if reverse else t + 1] = carries[k]
        for k in range(ny):
            ys[k][t] = values[nc + k]
        for j in range(len(extra)):
            saved[j][t] = values[nc + ny + j]
    return carries, ys, hist, saved


def evaluate_scan(node, arrays, sizes):
    """A scan node's value: a ScanValue."""
    return ScanValue(node, list(arrays), sizes)


def evaluate_scan_get(node, arrays, sizes):
    """One output of an evaluated scan."""
    (value,) = arrays
    return np.asarray(value.get(node.attr("index")), dtype=node.dtype)


SCAN_OPS = {"scan": evaluate_scan, "scan_get": evaluate_scan_get}
