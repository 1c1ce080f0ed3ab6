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
  (shape (T, ...); see scan_grad.Backward). Backends compute only the outputs that are
  read.

Gradient (scan_grad.py): a scan in the other direction whose body is the VJP of this body.
It carries the cotangents of the carries and accumulates the consts' gradients as extra
carries; its xs are the carry history, the xs, the ys' cotangents and the per-step values
the forward scan saved (residuals: the forward intermediates the VJP reads, e.g. the gates
of an LSTM, so the backward step never recomputes the forward one). Gradients of scans are scans, so they can be
differentiated again. `bptt=k` truncates backpropagation through time: the gradient of a
carry is cut at every k-th step (counted in the order the steps run), as if the carry went
through stop_gradient there; the forward values are unchanged.
"""

from __future__ import annotations

import hashlib

import sympy as sp

from graphdl.errors import dtype_error, shape_error
from graphdl.graph import Tensor, as_tensor, constant, depends_on, toposort
from graphdl.graph import input as placeholder
from graphdl.ops.indexing import _slice
from graphdl.ops.registry import structured
from graphdl.ops.structured import broadcast_to
from graphdl.shapes import FLOAT_DTYPES, format_shape

PROJECTIONS = ("scan_get",)       # ops that select one output of a multi-output node
_INLINE_CONSTANT_SIZE = 16        # constants up to this size stay inside a body (interned)


# -- graph utilities ---------------------------------------------------------------------
def substitute(outputs, mapping: dict) -> list:
    """The graph of `outputs` rebuilt with the tensors of `mapping` replaced (same shapes and
    dtypes); unchanged subgraphs are the same nodes (hash-consing)."""
    memo = dict(mapping)
    for node in toposort(outputs, stop=memo):
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

    __slots__ = ("_backward", "carries", "consts", "digest", "outputs", "xs")

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

    def backward(self, key):
        """The backward step for one gradient configuration (a scan_grad.Backward for a
        scan_grad.GradKey), built once, then cached."""
        found = self._backward.get(key)
        if found is None:
            from graphdl.ops.scan_grad import Backward
            found = self._backward[key] = Backward(self, key)
        return found

    def residuals(self, key) -> tuple:
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
    if not outputs:
        raise ValueError("scan: the step has no carries and returns no ys: nothing to compute")
    order = toposort(outputs)
    inside = depends_on(order, carries + xs)
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
    used = {id(n) for n in toposort(body_outputs)}
    kept = [k for k, x in enumerate(xs) if id(x) in used]
    body = Body(carries, [xs[k] for k in kept], list(free.values()), body_outputs)
    return body, list(free), kept


# -- the node --------------------------------------------------------------------------------
def _scan_vjp(cotangents, node):
    from graphdl.ops.scan_grad import vjp  # the backward pass lives in scan_grad.py
    return vjp(cotangents, node)


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


__all__ = ["scan"]
