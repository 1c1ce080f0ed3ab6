"""scan: a loop over the leading axis whose step function is traced once, as a body graph.

    carry, ys = gd.scan(fn, init, xs)        # fn(carry_list, x_list) -> (carry_list, y_list)

means, for t = 0, 1, ..., T-1 (T-1, ..., 0 with reverse=True):

    carry, y_t = fn(carry, [x[t] for x in xs]);     ys = [stack of y_t in time order]

`fn` runs once, on placeholder tensors; the graph it builds is the scan's *body*, shared by
every step. The graph therefore does not grow with T, and neither does the code a backend
makes from it: unrolled RNNs (Theano, tinygrad) see compile time grow with T, even
quadratically.

Graph form (graphdl nodes have one output, so a scan is a node plus projections):

- `scan`(init carries..., xs..., consts...) with attributes `body` (a `Body`), `length` T,
  `reverse` and `bptt`. Tensors from outside that `fn` reads (weights, biases, W.T) are found
  while tracing and become explicit inputs, the *consts*, replaced by placeholders inside
  the body, so a body is closed and hashable (its canonical text is its identity).
- `scan_get`(scan, index) reads one output. `index` k < nc: the final carry k; nc + k: the
  stacked ys[k], shape (T, ...); nc + ny + k: the carry history of carry k, shape
  (T+1, ...), in time order (forward: the carry entering step t is history[t], leaving it
  history[t+1]; reverse: entering history[t+1], leaving history[t]);
  ("residual", key, j): the j-th value the backward pass `key` saves from each step
  (shape (T, ...); see `Backward`). Backends compute only the outputs that are read.

Gradient (`_scan_vjp`): a reverse scan whose body is the VJP of this body. It carries the
cotangents of the carries and accumulates the consts' gradients as extra carries; its xs are
the carry history, the xs, the ys' cotangents and the per-step values the forward scan saved
(residuals: the forward intermediates the VJP reads, e.g. the gates of an LSTM, so the
backward step never recomputes the forward one). Gradients of scans are scans, so they can be
differentiated again. `bptt=k` truncates backpropagation through time: the gradient of a
carry is cut at every k-th step (counted in the order the steps run), as if the carry went
through stop_gradient there; the forward values are unchanged.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import numpy as np
import sympy as sp

from graphdl.errors import dtype_error, shape_error
from graphdl.graph import Tensor, as_tensor, constant, input as placeholder, toposort
from graphdl.ops.indexing import _slice, concat
from graphdl.ops.registry import structured
from graphdl.ops.structured import broadcast_to
from graphdl.shapes import FLOAT_DTYPES, format_shape

PROJECTIONS = ("scan_get",)       # ops that select one output of a multi-output node
_INLINE_CONSTANT_SIZE = 16        # constants up to this size stay inside a body (interned)
_CHEAP = ("reshape", "transpose", "broadcast_to", "slice", "stop_gradient")  # views: re-done


# -- graph utilities ---------------------------------------------------------------------
def _postorder(outputs, stop=frozenset()):
    """Nodes reachable from outputs, inputs first, not descending below nodes in `stop`."""
    order, seen = [], set()
    stack = [(t, False) for t in reversed(list(outputs))]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node in stop:
            continue
        stack.append((node, True))
        for parent in reversed(node.inputs):
            if id(parent) not in seen:
                stack.append((parent, False))
    return order


def substitute(outputs, mapping: dict) -> list:
    """The graph of `outputs` rebuilt with the tensors of `mapping` replaced (same shapes and
    dtypes); unchanged subgraphs are the same nodes (hash-consing)."""
    memo = dict(mapping)
    for node in _postorder(outputs, stop=memo):
        if node in memo:
            continue
        inputs = [memo.get(p, p) for p in node.inputs]
        if all(a is b for a, b in zip(inputs, node.inputs)):
            memo[node] = node
            continue
        new = Tensor.make(node.op, inputs, dict(node.attrs), node.shape, node.dtype)
        new.site = node.site
        memo[node] = new
    return [memo.get(o, o) for o in outputs]


def _depends(order, sources) -> set:
    """The nodes of `order` (a topological order) that depend on any of `sources`."""
    out = set(sources)
    for node in order:
        if any(p in out for p in node.inputs):
            out.add(node)
    return out


def _zeros(like) -> Tensor:
    return broadcast_to(constant(0.0, like.dtype), like.shape)


def _rows(x, start, stop) -> Tensor:
    """x[start:stop] along axis 0."""
    return _slice(x, ((start, stop, 1),) + ((0, None, 1),) * (x.ndim - 1))


# -- the body ------------------------------------------------------------------------------
def _attr_text(value) -> str:
    return sp.srepr(value) if isinstance(value, sp.Basic) else repr(value)


def _digest(inputs, outputs) -> str:
    """A canonical hash of a body: ops, attributes, structure, shapes, dtypes, constant bytes
    and input positions (names, uids and sites do not count)."""
    h = hashlib.sha256()
    for p in inputs:
        h.update(f"in {format_shape(p.shape)} {p.dtype};".encode())
    position = {p: k for k, p in enumerate(inputs)}
    index = {}
    for node in toposort(outputs):
        index[node] = len(index)
        if node in position:
            text = f"arg#{position[node]}"
        elif node.op == "constant":
            text = "constant:" + hashlib.sha256(node.storage.array.tobytes()).hexdigest()
        elif node.is_leaf:
            raise ValueError(f"a scan body holds the free leaf {node!r}: a tracing bug")
        else:
            attrs = ",".join(f"{k}={_attr_text(v)}" for k, v in node.attrs)
            args = ",".join(str(index[p]) for p in node.inputs)
            text = f"{node.op}({args})[{attrs}]"
        h.update(f"{text}|{format_shape(node.shape)}|{node.dtype};".encode())
    h.update(("out " + ",".join(str(index[o]) for o in outputs)).encode())
    return h.hexdigest()


class Body:
    """A traced step: placeholders in (carries, per-step xs, loop constants), outputs out (the
    new carries, then the per-step ys). Immutable; two bodies are equal when their canonical
    texts are (the digest), which is also their repr, so graph fingerprints see it.

    Example:
        >>> body = node.attr("body")
        >>> body.n_carry, body.n_y
    """

    __slots__ = ("carries", "xs", "consts", "outputs", "digest", "_backward")

    def __init__(self, carries, xs, consts, outputs):
        self.carries, self.xs, self.consts = tuple(carries), tuple(xs), tuple(consts)
        self.outputs = tuple(outputs)
        self.digest = _digest(self.inputs, self.outputs)
        self._backward: dict = {}

    @property
    def inputs(self) -> tuple:
        """All placeholders: carries, xs, consts (the order of the scan node's inputs)."""
        return self.carries + self.xs + self.consts

    n_carry = property(lambda self: len(self.carries))
    n_x = property(lambda self: len(self.xs))
    n_const = property(lambda self: len(self.consts))
    n_y = property(lambda self: len(self.outputs) - len(self.carries))

    def apply(self, carries, xs, consts, extra=()) -> list:
        """The body's outputs (then those of `extra` body nodes) computed from other tensors."""
        mapping = dict(zip(self.inputs, list(carries) + list(xs) + list(consts)))
        return substitute(list(self.outputs) + list(extra), mapping)

    def backward(self, key: "GradKey") -> "Backward":
        """The backward step for one gradient configuration (built once, then cached)."""
        found = self._backward.get(key)
        if found is None:
            found = self._backward[key] = Backward(self, key)
        return found

    def residuals(self, key: "GradKey") -> tuple:
        """The body nodes whose per-step values the backward step `key` reads."""
        return self.backward(key).saved

    def __hash__(self) -> int:
        return hash(self.digest)

    def __eq__(self, other) -> bool:
        return isinstance(other, Body) and other.digest == self.digest

    def __repr__(self) -> str:
        return (f"Body(carries={self.n_carry}, xs={self.n_x}, consts={self.n_const}, "
                f"ys={self.n_y}, sha256={self.digest})")


def _stays_inside(t: Tensor) -> bool:
    return t.op == "constant" and t.storage.array.size <= _INLINE_CONSTANT_SIZE


def _as_list(value, what) -> list:
    if isinstance(value, Tensor) or not isinstance(value, (list, tuple)):
        raise TypeError(f"scan: {what} must be a list or tuple of tensors, got "
                        f"{type(value).__name__}")
    return [as_tensor(v) for v in value]


def _conform_carry(new, old, k):
    new = as_tensor(new, old)
    if new.dtype != old.dtype:
        raise dtype_error(f"scan: the step returns carry {k} as {new.dtype}, it came in as "
                          f"{old.dtype}")
    if new.shape != old.shape:
        try:
            new = broadcast_to(new, old.shape)
        except ValueError:
            raise shape_error(f"scan: the step returns carry {k} with shape "
                              f"{format_shape(new.shape)}, it came in as "
                              f"{format_shape(old.shape)}") from None
    return new


def trace(fn, carry_like, x_like):
    """Trace `fn` once on placeholders: (Body, outer consts, indices of the xs it reads).

    Outer tensors that the traced graph reads become consts (their placeholders are inputs
    of the body); constants of at most _INLINE_CONSTANT_SIZE elements stay inside.
    """
    carries = [placeholder(f"carry{k}", c.shape, c.dtype) for k, c in enumerate(carry_like)]
    xs = [placeholder(f"x{k}", x.shape, x.dtype) for k, x in enumerate(x_like)]
    result = fn(list(carries), list(xs))
    if not (isinstance(result, (list, tuple)) and len(result) == 2):
        raise TypeError("scan: the step function must return (new_carries, ys), two lists")
    new_carries = _as_list(result[0], "the new carries")
    ys = _as_list(result[1], "the ys")
    if len(new_carries) != len(carries):
        raise ValueError(f"scan: the step returns {len(new_carries)} carries, it takes "
                         f"{len(carries)}")
    outputs = [_conform_carry(n, c, k) for k, (n, c) in enumerate(zip(new_carries, carries))]
    outputs += ys
    order = toposort(outputs)
    inside = _depends(order, carries + xs)
    free: dict = {}

    def lift(t):
        if t not in inside and not _stays_inside(t) and t not in free:
            free[t] = placeholder(f"const{len(free)}", t.shape, t.dtype)

    for node in order:
        if node in inside:
            for p in node.inputs:
                lift(p)
    for o in outputs:
        lift(o)
    body_outputs = substitute(outputs, free)
    used = {id(n) for n in _postorder(body_outputs)}
    kept = [k for k, x in enumerate(xs) if id(x) in used]
    body = Body(carries, [xs[k] for k in kept], list(free.values()), body_outputs)
    return body, list(free), kept


# -- the node --------------------------------------------------------------------------------
def _scan_vjp(cotangents, node):
    return _vjp(cotangents, node)


SCAN = structured("scan", vjp=_scan_vjp,
                  doc="A loop over the leading axis with a traced step (see gd.scan); its "
                      "outputs are read with scan_get")
def _scan_get_vjp(gy, node):
    raise RuntimeError("scan_get is a projection: graphdl.autodiff hands its cotangent to the "
                       "scan node (PROJECTIONS), never to this rule")


SCAN_GET = structured("scan_get", vjp=_scan_get_vjp,
                      doc="One output of a scan (autodiff hands its cotangent to the scan)")


def output_like(node, index) -> tuple:
    """(shape, dtype) of output `index` of a scan node (see the module docstring)."""
    body, T = node.attr("body"), node.attr("length")
    nc, ny = body.n_carry, body.n_y
    if isinstance(index, tuple):
        kind, key, j = index
        if kind != "residual":
            raise ValueError(f"scan_get: unknown output {index!r}")
        r = body.residuals(key)[j]
        return (T,) + r.shape, r.dtype
    if 0 <= index < nc:
        c = body.carries[index]
        return c.shape, c.dtype
    if nc <= index < nc + ny:
        y = body.outputs[index]
        return (T,) + y.shape, y.dtype
    if nc + ny <= index < 2 * nc + ny:
        c = body.carries[index - nc - ny]
        return (T + 1,) + c.shape, c.dtype
    raise ValueError(f"scan_get: a scan with {nc} carries and {ny} ys has no output {index}")


def scan_get(node, index) -> Tensor:
    """Output `index` of a scan node (see the module docstring for the numbering)."""
    shape, dtype = output_like(node, index)
    return Tensor.make("scan_get", (node,), {"index": index}, shape, dtype)


def scan_node(body, init, xs, consts, length, reverse=False, bptt=0) -> Tensor:
    """The scan node of a traced body (gd.scan builds it; used again by the VJP)."""
    outs = list(body.outputs)
    dtype = next((t.dtype for t in outs if t.dtype in FLOAT_DTYPES), outs[0].dtype)
    attrs = {"body": body, "length": int(length), "reverse": bool(reverse),
             "bptt": int(bptt or 0)}
    return Tensor.make("scan", list(init) + list(xs) + list(consts), attrs, (), dtype)


def scan(fn, init, xs, reverse: bool = False, length: int | None = None,
         bptt: int | None = None):
    """Loop `fn` over the leading axis of xs, carrying state; the step is traced once.

    for t in range(T) (reversed with reverse=True): carry, y_t = fn(carry, [x[t] for x in xs])
    Returns (final carries, [ys stacked over t in time order]). T is static: the length of
    axis 0 of every x (or `length` when xs is empty). `bptt=k` cuts the gradient of the
    carry every k steps (truncated backpropagation through time).

    Example:
        >>> (total,), (running,) = gd.scan(lambda c, x: ([c[0] + x[0]], [c[0] + x[0]]),
        ...                                 [gd.constant(0.0)], [xs])
    """
    init = _as_list(init, "init")
    xs = _as_list(xs, "xs")
    T = _length(xs, length)
    if bptt is not None and (not isinstance(bptt, int) or bptt < 1):
        raise ValueError(f"scan: bptt must be an int >= 1, got {bptt!r}")
    x_like = [placeholder("x", x.shape[1:], x.dtype) for x in xs]
    body, consts, kept = trace(fn, init, x_like)
    node = scan_node(body, init, [xs[k] for k in kept], consts, T, reverse, bptt)
    nc = body.n_carry
    return ([scan_get(node, k) for k in range(nc)],
            [scan_get(node, nc + k) for k in range(body.n_y)])


def _length(xs, length) -> int:
    lengths = set()
    for x in xs:
        if x.ndim == 0 or not isinstance(x.shape[0], int):
            raise shape_error(f"scan: every x needs a static leading (time) axis, got shape "
                              f"{format_shape(x.shape)}")
        lengths.add(x.shape[0])
    if length is not None:
        lengths.add(int(length))
    if len(lengths) != 1:
        raise shape_error("scan: the xs disagree on the number of steps " +
                          (f"{sorted(lengths)}" if lengths else "(no xs: pass length=)"))
    T = lengths.pop()
    if T < 1:
        raise shape_error("scan: at least one step is needed")
    return T


def body_nodes(nodes) -> list:
    """Every node inside the bodies of the scans among `nodes` (nested scans included)."""
    out, stack, seen = [], [n for n in nodes if n.op == "scan"], set()
    while stack:
        body = stack.pop().attr("body")
        if id(body) in seen:
            continue
        seen.add(id(body))
        inner = toposort(body.outputs)
        out += inner
        stack += [n for n in inner if n.op == "scan"]
    return out


def history(node, k) -> Tensor:
    """The (T+1, ...) history of carry k of a scan node."""
    body = node.attr("body")
    return scan_get(node, body.n_carry + body.n_y + k)


# -- the backward pass -------------------------------------------------------------------------
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

    def __init__(self, body: Body, key: GradKey):
        like = [placeholder(f"{n}{k}", t.shape, t.dtype) for n, ts in
                (("c", body.carries), ("x", body.xs), ("k", body.consts)) for k, t in
                enumerate(ts)]
        nc, nx = body.n_carry, body.n_x
        c_t, x_t, k_ph = like[:nc], like[nc:nc + nx], like[nc + nx:]
        seed_nodes = [body.residuals(k2)[j] for k2, j in key.residuals]
        forward = body.apply(c_t, x_t, k_ph, seed_nodes)
        outs, seeded = forward[:len(body.outputs)], forward[len(body.outputs):]
        g_c = [placeholder(f"g_c{k}", c_t[k].shape, c_t[k].dtype) for k in key.carries]
        g_y = [placeholder(f"g_y{k}", outs[nc + k].shape, outs[nc + k].dtype) for k in key.ys]
        g_r = [placeholder(f"g_r{j}", t.shape, t.dtype) for j, t in enumerate(seeded)]
        acc = [placeholder(f"acc{j}", k_ph[j].shape, k_ph[j].dtype) for j in key.consts]
        seeds: dict = {}
        for node, g in zip([outs[k] for k in key.carries] + [outs[nc + k] for k in key.ys]
                           + seeded, g_c + g_y + g_r):
            if node.dtype in FLOAT_DTYPES:
                seeds[node] = seeds[node] + g if node in seeds else g
        targets = [c_t[k] for k in key.carries] + [x_t[k] for k in key.xs] + \
            [k_ph[j] for j in key.consts]
        cot = _backprop(seeds, targets) if seeds else {}
        mask = placeholder("mask", (), c_t[key.carries[0]].dtype) if key.bptt and \
            key.carries else None
        g_h = [placeholder(f"g_h{k}", c_t[k].shape, c_t[k].dtype) for k in key.carries] \
            if key.history else []
        new_c = []
        for i, k in enumerate(key.carries):
            g = cot.get(c_t[k])
            g = _zeros(c_t[k]) if g is None else (g * mask if mask is not None else g)
            new_c.append(g + g_h[i] if g_h else g)
        new_acc = [a if cot.get(k_ph[j]) is None else a + cot[k_ph[j]]
                   for a, j in zip(acc, key.consts)]
        g_x = [cot.get(x_t[k]) if cot.get(x_t[k]) is not None else _zeros(x_t[k])
               for k in key.xs]
        outputs = merge_unslices(new_c + new_acc + g_x)
        cot_ph = g_c + acc + g_y + g_r + g_h + ([mask] if mask is not None else [])
        outputs, residual_ph, self.sources, self.saved = _split_residuals(
            body, outputs, c_t, x_t, k_ph, cot_ph)
        self.carries = g_c + acc
        self.xs = c_t + x_t + g_y + g_r + g_h + residual_ph + ([mask] if mask is not None else [])
        self.consts = k_ph
        self.outputs = outputs


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
    step = _depends(order, c_t + x_t)
    cot = _depends(order, cot_ph)
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


def _vjp(cotangents, node):
    """Gradients of a scan's inputs: one reverse scan over the VJP of its body."""
    body, T = node.attr("body"), node.attr("length")
    reverse, bptt = node.attr("reverse"), node.attr("bptt")
    nc, nx, ny = body.n_carry, body.n_x, body.n_y
    needed = set(getattr(cotangents, "needed", range(len(node.inputs))))
    floats = tuple(k for k in range(nc) if body.carries[k].dtype in FLOAT_DTYPES)
    hist_cot = {i - nc - ny: g for i, g in cotangents.items()
                if isinstance(i, int) and i >= nc + ny}
    key = GradKey(
        carries=floats,
        xs=tuple(k for k in range(nx) if nc + k in needed
                 and body.xs[k].dtype in FLOAT_DTYPES),
        consts=tuple(j for j in range(body.n_const) if nc + nx + j in needed
                     and body.consts[j].dtype in FLOAT_DTYPES),
        ys=tuple(k for k in range(ny) if nc + k in cotangents),
        residuals=tuple(sorted((i[1:] for i in cotangents if isinstance(i, tuple)),
                               key=repr)),
        history=bool(hist_cot) and bool(floats), bptt=bptt if floats else 0)
    if not floats and not key.xs and not key.consts:
        return [None] * len(node.inputs)
    plan = body.backward(key)
    enter = (0, T) if not reverse else (1, T + 1)      # history rows of the carries entering
    leave = (1, T + 1) if not reverse else (0, T)      # ... and leaving each step
    end = T if not reverse else 0                      # history row of the final carry
    xs = [_rows(history(node, k), *enter) for k in range(nc)]
    xs += list(node.inputs[nc:nc + nx])
    xs += [cotangents[nc + k] for k in key.ys]
    xs += [cotangents[("residual",) + r] for r in key.residuals]
    hist_g = {k: hist_cot.get(k, _zeros(history(node, k))) for k in floats}
    if key.history:
        xs += [_rows(hist_g[k], *enter) for k in floats]
    for kind, k in plan.sources:
        xs.append(_rows(history(node, k), *leave) if kind == "carry" else
                  scan_get(node, nc + k) if kind == "y" else
                  scan_get(node, ("residual", key, k)))
    if key.bptt and floats:
        xs.append(constant(_bptt_mask(T, key.bptt, reverse), body.carries[floats[0]].dtype))
    init = []
    for k in floats:
        g = cotangents.get(k)
        if key.history:
            row = _rows(hist_g[k], end, end + 1).reshape(body.carries[k].shape)
            g = row if g is None else g + row
        init.append(_zeros(body.carries[k]) if g is None else g)
    init += [_zeros(body.consts[j]) for j in key.consts]
    consts = list(node.inputs[nc + nx:])

    def step(carries, xs_t):
        mapping = dict(zip(plan.carries, carries))
        mapping.update(zip(plan.xs, xs_t))
        mapping.update(zip(plan.consts, consts))
        out = substitute(plan.outputs, mapping)
        return out[:len(plan.carries)], out[len(plan.carries):]

    finals, gxs = scan(step, init, xs, reverse=not reverse)
    grads = [None] * len(node.inputs)
    for i, k in enumerate(floats):
        grads[k] = finals[i] if k in needed else None
    for i, j in enumerate(key.consts):
        grads[nc + nx + j] = finals[len(floats) + i]
    for i, k in enumerate(key.xs):
        grads[nc + k] = gxs[i]
    return grads


def _bptt_mask(T: int, k: int, reverse: bool) -> np.ndarray:
    """1 where the gradient of the carry entering step t flows, 0 at every k-th step run."""
    order = np.arange(T) if not reverse else T - 1 - np.arange(T)
    return np.where((order % k == 0) & (order > 0), 0.0, 1.0)


class OutputCotangents(dict):
    """Cotangents of the outputs of a multi-output node, by output index; autodiff fills it
    from the projections and sets `needed` (the input positions that need a gradient)."""

    needed: tuple = ()

    def add(self, index, g) -> None:
        """Accumulate the cotangent of output `index`."""
        self[index] = self[index] + g if index in self else g


# The VJP of scan differentiates its body, which is reverse mode itself. Ops may not import
# graphdl.autodiff (imports flow downwards), so autodiff hands its backprop over on import.
_BACKPROP = [None]


def use_backprop(fn) -> None:
    """Called by graphdl.autodiff: fn(seeds: {node: cotangent}, targets) -> {node: grad}."""
    _BACKPROP[0] = fn


def _backprop(seeds, targets) -> dict:
    if _BACKPROP[0] is None:
        raise RuntimeError("the gradient of a scan needs graphdl.autodiff (import graphdl)")
    return _BACKPROP[0](seeds, targets)


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
    if any(a[0][2] > b[0][1] for a, b in zip(bands, bands[1:])):
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
    order = _postorder(outputs)
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


__all__ = ["scan"]
