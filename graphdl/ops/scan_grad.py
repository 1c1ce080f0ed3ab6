"""The gradient of `scan` (graphdl/ops/scan.py): a scan in the other direction whose body is
the VJP of the forward body.

For one configuration (`GradKey`: which inputs need gradients, which outputs have
cotangents, truncation), `Backward` builds the backward step once, in placeholders, and
caches it on the Body:

- the forward body is applied to placeholders for the step's carries, xs and consts, and
  reverse mode runs from all its outputs at once (their cotangents are placeholders);
- the carries of the backward scan are the carries' cotangents, then the running sums of
  the consts' gradients; its ys are the xs' gradients;
- the forward values the VJP reads (an LSTM's gates, tanh(c)) become per-step inputs,
  "residuals": a carry leaving the step comes from the forward scan's history, a y from its
  ys, anything else is saved by the forward scan as an extra output, so the backward step
  never recomputes the forward one. Views (transposes, slices) are redone, not saved;
- a sum of zero-padded slices' gradients (the gates of an LSTM) becomes one concat
  (`merge_unslices`).

`vjp` then wires the stacked inputs (history rows, xs, cotangents, residuals, the bptt mask)
into a `scan` of that step with the real consts; `scan` traces it like any other step, so
loop-invariant parts (W.T) are computed once, outside the loop.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np

from graphdl.graph import Tensor, constant, depends_on, toposort
from graphdl.graph import input as placeholder
from graphdl.ops.indexing import concat
from graphdl.ops.scan import (
    _backprop,
    _rows,
    _zeros,
    history,
    scan,
    scan_get,
    substitute,
)
from graphdl.ops.structured import broadcast_to
from graphdl.shapes import FLOAT_DTYPES

_CHEAP = ("reshape", "transpose", "broadcast_to", "slice", "stop_gradient")  # views: re-done


class GradKey(NamedTuple):
    """Which gradients a backward step computes, from which cotangents (hashable, with a
    canonical repr: it is part of the index of residual outputs)."""

    carries: tuple      # float carries: their cotangents are the backward carries
    xs: tuple           # xs that need a gradient
    consts: tuple       # consts that need a gradient
    ys: tuple           # ys with a cotangent
    residuals: tuple    # (key, j) of residual outputs with a cotangent (higher order)
    history: bool       # whether carry histories have cotangents
    bptt: int           # truncation (0: none)


class Backward:
    """The backward step of a body for one GradKey, in placeholders.

    carries  : cotangents of the float carries, then accumulators of the consts' gradients
    xs       : per step: the carries entering the step, the xs, the cotangents of ys and
               residuals, of the histories, the residuals (`sources`), the bptt mask
    consts   : the body's consts
    outputs  : new carries, then the gradients of the needed xs
    saved    : the body nodes the forward scan saves per step (residual outputs)
    sources  : for each residual placeholder: ("carry", k) the carry leaving the step,
               ("y", k) output y_k, or ("saved", j)
    """

    def __init__(self, body, key: GradKey):
        nc, nx = body.n_carry, body.n_x
        like = [_like(f"{n}{k}", t) for n, ts in (("c", body.carries), ("x", body.xs),
                                                  ("k", body.consts)) for k, t in enumerate(ts)]
        c_t, x_t, k_ph = like[:nc], like[nc:nc + nx], like[nc + nx:]
        seeded = [body.residuals(k2)[j] for k2, j in key.residuals]
        forward = body.apply(c_t, x_t, k_ph, seeded)
        outs, seeded = forward[:len(body.outputs)], forward[len(body.outputs):]
        g_c = [_like(f"g_c{k}", c_t[k]) for k in key.carries]
        g_y = [_like(f"g_y{k}", outs[nc + k]) for k in key.ys]
        g_r = [_like(f"g_r{j}", t) for j, t in enumerate(seeded)]
        acc = [_like(f"acc{j}", k_ph[j]) for j in key.consts]
        g_h = [_like(f"g_h{k}", c_t[k]) for k in key.carries] if key.history else []
        mask = placeholder("mask", (), "float32") if key.bptt and key.carries else None
        extra = [mask] if mask is not None else []
        cot = _backprop_all([outs[k] for k in key.carries] + [outs[nc + k] for k in key.ys]
                            + seeded, g_c + g_y + g_r,
                            [c_t[k] for k in key.carries] + [x_t[k] for k in key.xs]
                            + [k_ph[j] for j in key.consts])
        new_c = []
        for i, k in enumerate(key.carries):      # the cotangent of the carry entering
            g = cot.get(c_t[k])
            g = _zeros(c_t[k]) if g is None else (g * mask if mask is not None else g)
            new_c.append(g + g_h[i] if g_h else g)
        new_acc = [a if cot.get(k_ph[j]) is None else a + cot[k_ph[j]]
                   for a, j in zip(acc, key.consts)]
        g_x = [_zeros(x_t[k]) if cot.get(x_t[k]) is None else cot[x_t[k]] for k in key.xs]
        outputs, residual_ph, self.sources, self.saved = _split_residuals(
            body, merge_unslices(new_c + new_acc + g_x), c_t, x_t, k_ph,
            g_c + acc + g_y + g_r + g_h + extra)
        self.carries = g_c + acc
        self.xs = c_t + x_t + g_y + g_r + g_h + residual_ph + extra
        self.consts = k_ph
        self.outputs = outputs


def _like(name, t) -> Tensor:
    return placeholder(name, t.shape, t.dtype)


def _backprop_all(roots, cotangents, targets) -> dict:
    """Reverse mode from several roots (a root given twice gets the sum of its cotangents);
    int-valued roots have none."""
    seeds: dict = {}
    for node, g in zip(roots, cotangents):
        if node.dtype in FLOAT_DTYPES:
            seeds[node] = seeds[node] + g if node in seeds else g
    return _backprop(seeds, targets) if seeds else {}


def _split_residuals(body, outputs, c_t, x_t, k_ph, cot_ph):
    """Replace the forward values the backward graph reads by placeholders.

    A forward value is a node that depends on the step's carries or xs but on no cotangent.
    Where such a node is read by the cotangent computation it becomes a residual, except
    that views (transpose, slice...) are redone from their input instead (saving a
    transposed copy of the carry would cost a copy for nothing). Residuals that are outputs
    of the body come from the scan's ys and history; the others are saved by the forward
    scan (`saved`).
    """
    order = toposort(outputs)
    step = depends_on(order, c_t + x_t)
    cot = depends_on(order, cot_ph)
    forward = {n for n in step if n not in cot and not n.is_leaf}
    needed: dict = {}

    def need(n):
        if n not in forward or n in needed:
            return
        if n.op in _CHEAP:
            for p in n.inputs:
                need(p)
            return
        needed[n] = None

    for n in order:
        if n not in forward:
            for p in n.inputs:
                need(p)
    for o in outputs:
        need(o)
    back = dict(zip(c_t + x_t + k_ph, body.inputs))
    nc = body.n_carry
    residual_ph, sources, saved, mapping = [], [], [], {}
    for n in needed:
        (f,) = substitute([n], back)
        if any(f is o for o in body.outputs):
            k = next(i for i, o in enumerate(body.outputs) if o is f)
            source = ("carry", k) if k < nc else ("y", k - nc)
        else:
            source = ("saved", len(saved))
            saved.append(f)
        ph = placeholder(f"r{len(residual_ph)}", n.shape, n.dtype)
        mapping[n] = ph
        residual_ph.append(ph)
        sources.append(source)
    return substitute(outputs, mapping), residual_ph, sources, tuple(saved)


def vjp(cotangents, node):
    """Gradients of a scan's inputs: one scan in the other direction over the VJP of its body
    (its carries: the carries' cotangents and the consts' gradients so far)."""
    body = node.attr("body")
    nc, nx = body.n_carry, body.n_x
    needed = set(getattr(cotangents, "needed", range(len(node.inputs))))
    key = _grad_key(cotangents, node, needed)
    if not key.carries and not key.xs and not key.consts:
        return [None] * len(node.inputs)
    plan = body.backward(key)
    consts = list(node.inputs[nc + nx:])

    def step(carries, xs_t):
        mapping = dict(zip(plan.carries, carries))
        mapping.update(zip(plan.xs, xs_t))
        mapping.update(zip(plan.consts, consts))
        out = substitute(plan.outputs, mapping)
        return out[:len(plan.carries)], out[len(plan.carries):]

    finals, gxs = scan(step, _backward_init(cotangents, node, key),
                       _backward_xs(cotangents, node, key, plan),
                       reverse=not node.attr("reverse"))
    grads = [None] * len(node.inputs)
    for i, k in enumerate(key.carries):
        grads[k] = finals[i] if k in needed else None
    for i, j in enumerate(key.consts):
        grads[nc + nx + j] = finals[len(key.carries) + i]
    for i, k in enumerate(key.xs):
        grads[nc + k] = gxs[i]
    return grads


def _grad_key(cotangents, node, needed) -> GradKey:
    body = node.attr("body")
    nc, nx, ny = body.n_carry, body.n_x, body.n_y
    floats = tuple(k for k in range(nc) if body.carries[k].dtype in FLOAT_DTYPES)
    return GradKey(
        carries=floats,
        xs=tuple(k for k in range(nx) if nc + k in needed
                 and body.xs[k].dtype in FLOAT_DTYPES),
        consts=tuple(j for j in range(body.n_const) if nc + nx + j in needed
                     and body.consts[j].dtype in FLOAT_DTYPES),
        ys=tuple(k for k in range(ny) if nc + k in cotangents),
        residuals=tuple(sorted((i[1:] for i in cotangents if isinstance(i, tuple)),
                               key=repr)),
        history=bool(floats) and any(isinstance(i, int) and i >= nc + ny for i in cotangents),
        bptt=node.attr("bptt") if floats else 0)


def _rows_of_steps(node):
    """History rows (start, stop) of the carries entering and leaving each step, and of the
    final carry."""
    T = node.attr("length")
    if node.attr("reverse"):
        return (1, T + 1), (0, T), 0
    return (0, T), (1, T + 1), T


def _history_cotangent(cotangents, node, k) -> Tensor:
    body = node.attr("body")
    index = body.n_carry + body.n_y + k
    return cotangents[index] if index in cotangents else _zeros(history(node, k))


def _backward_xs(cotangents, node, key, plan) -> list:
    """The stacked per-step inputs of the backward scan, in the order of plan.xs."""
    body = node.attr("body")
    nc, nx = body.n_carry, body.n_x
    enter, leave, _ = _rows_of_steps(node)
    xs = [_rows(history(node, k), *enter) for k in range(nc)]
    xs += list(node.inputs[nc:nc + nx])
    xs += [cotangents[nc + k] for k in key.ys]
    xs += [cotangents[("residual",) + r] for r in key.residuals]
    if key.history:
        xs += [_rows(_history_cotangent(cotangents, node, k), *enter) for k in key.carries]
    for kind, k in plan.sources:
        xs.append(_rows(history(node, k), *leave) if kind == "carry" else
                  scan_get(node, nc + k) if kind == "y" else
                  scan_get(node, ("residual", key, k)))
    if key.bptt:
        xs.append(constant(_bptt_mask(node.attr("length"), key.bptt, node.attr("reverse")),
                           "float32"))
    return xs


def _backward_init(cotangents, node, key) -> list:
    """The backward scan's initial carries: the final carries' cotangents, zero sums."""
    body = node.attr("body")
    _, _, end = _rows_of_steps(node)
    init = []
    for k in key.carries:
        g = cotangents.get(k)
        if key.history:
            row = _rows(_history_cotangent(cotangents, node, k), end, end + 1)
            row = row.reshape(body.carries[k].shape)
            g = row if g is None else g + row
        init.append(_zeros(body.carries[k]) if g is None else g)
    return init + [_zeros(body.consts[j]) for j in key.consts]


def _bptt_mask(T: int, k: int, reverse: bool) -> np.ndarray:
    """1 where the gradient of the carry entering step t flows, 0 at every k-th step run."""
    order = np.arange(T) if not reverse else T - 1 - np.arange(T)
    return np.where((order % k == 0) & (order > 0), 0.0, 1.0)


# -- gradient clean-up: a sum of disjoint unslices is a concat -----------------------------------
def _unslice_piece(node):
    """(axis, start, stop) when node places its input in one contiguous band of one axis."""
    if node.op != "unslice":
        return None
    spec, shape = node.attr("spec"), node.attr("in_shape")
    band = [(a, s) for a, (s, d) in enumerate(zip(spec, shape))
            if s not in ((0, None, 1), (0, d, 1))]
    if len(band) != 1 or band[0][1][2] != 1 or band[0][1][1] is None:
        return None
    axis, (start, stop, _) = band[0]
    return axis, start, stop


def _add_terms(node, users):
    """The terms of a tree of adds whose inner adds are used only inside the tree."""
    terms, stack = [], [node]
    while stack:
        n = stack.pop()
        if n.op == "add" and (n is node or users.get(n, 0) == 1) and \
                all(p.shape == node.shape and p.dtype == node.dtype for p in n.inputs):
            stack.extend(reversed(n.inputs))
        else:
            terms.append(n)
    return terms


def _as_concat(node, users):
    terms = _add_terms(node, users)
    pieces = [_unslice_piece(t) for t in terms]
    if len(terms) < 2 or any(p is None for p in pieces) or len({p[0] for p in pieces}) != 1:
        return None
    axis = pieces[0][0]
    bands = sorted(zip(pieces, terms), key=lambda pt: pt[0][1])
    if any(a[0][2] > b[0][1] for a, b in itertools.pairwise(bands)):
        return None                                    # overlapping bands add up
    parts, at, size = [], 0, node.shape[axis]
    for (_, start, stop), term in bands:
        if start > at:
            parts.append(_zeros_band(node, axis, start - at))
        parts.append(term.inputs[0])
        at = stop
    if at < size:
        parts.append(_zeros_band(node, axis, size - at))
    return concat(parts, axis)


def _zeros_band(node, axis, n):
    shape = node.shape[:axis] + (n,) + node.shape[axis + 1:]
    return broadcast_to(constant(0.0, node.dtype), shape)


def merge_unslices(outputs) -> list:
    """Rewrite each sum of unslices of disjoint bands of one axis as one concat.

    The gradient of x[:, a:b], x[:, b:c], ... (the gates of an LSTM) arrives as a sum of
    zero-padded unslices; a concat writes each band once instead of adding padded copies.
    """
    order = toposort(outputs)
    users: dict = {}
    for n in order:
        for p in n.inputs:
            users[p] = users.get(p, 0) + 1
    mapping = {}
    for n in order:
        if n.op == "add" and n.dtype in FLOAT_DTYPES:
            merged = _as_concat(n, users)
            if merged is not None and merged.dtype == n.dtype and merged.shape == n.shape:
                mapping[n] = merged
    return substitute(outputs, mapping) if mapping else list(outputs)
