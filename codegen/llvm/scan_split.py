"""Row-parallel scans: when the rows of the batch never meet inside a scan's body, each thread
runs the whole loop over its own block of rows (one fork-join per scan, not one per kernel
and step).

`row_split(outputs, body, ...)` checks, on the optimized body graph, that with `dim` the
batch dimension:

- every value either has `dim` as its leading axis and row r of it depends only on rows r
  of the inputs ("row": elementwise ops with row-independent broadcasts, matmul of rows by a
  shared matrix, slices/transposes that keep axis 0, reductions over other axes, concat
  along other axes), or does not involve `dim` and depends on shared values only ("shared":
  weights and what is computed from them, recomputed by every thread);
- rows meet only in *accumulators*: a carry updated as acc + sum over rows (the weight
  gradients of a backward scan: acc + h^T @ g, acc + sum(g, axis=0)); each thread sums its
  rows into a private copy, started at zero (thread 0 at the real initial value), and the
  copies are added after the loop;
- the ys (and saved residuals) are row values, and every other carry too.

Anything else (a max over rows, a batch size used as a number, another loop inside) keeps
the scan serial; its kernels may still use threads one by one.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphdl.graph import toposort
from graphdl.ops.registry import I, is_elementwise, node_expr
from graphdl.shapes import Dim

MIN_ROWS = 8                # rows per block below which splitting is not worth a thread
CHUNKS_PER_THREAD = 1       # row blocks per thread (more: a late worker is less of a wait)
MIN_STEP_ELEMENTS = 1 << 15  # per-step values (elements) below which one thread is faster


@dataclass
class RowSplit:
    """How a scan's rows are divided: `chunks` blocks of `rows` rows of dimension `dim`."""

    dim: str
    chunks: int
    rows: int
    accumulators: frozenset      # carry indices summed over rows (private per chunk)

    def is_row(self, placeholder) -> bool:
        """Whether a body input is split by rows (its leading axis is `dim`)."""
        return _leading(placeholder, self.dim)


def _has_dim(shape, dim) -> bool:
    return any(isinstance(d, Dim) and d.name == dim for d in shape)


def _leading(t, dim) -> bool:
    return bool(t.shape) and isinstance(t.shape[0], Dim) and t.shape[0].name == dim and \
        not _has_dim(t.shape[1:], dim)


def _broadcast_ok(x, n) -> bool:
    """A shared input of an elementwise row node must not vary along the rows."""
    return x.ndim < n.ndim or (x.ndim == n.ndim and x.shape[0] == 1)


def _row_kind(n, kinds, dim):
    """The kind of a node with at least one row input: "row", "rowT", "sum" or None."""
    ins = [kinds[p] for p in n.inputs]
    op = n.op
    if is_elementwise(n):
        ok = _leading(n, dim) and all(k == "row" and _leading(p, dim) or
                                      k == "shared" and _broadcast_ok(p, n)
                                      for p, k in zip(n.inputs, ins))
        return "row" if ok else None
    if op == "matmul" and n.ndim == 2:
        if ins == ["row", "shared"]:
            return "row"
        if ins == ["rowT", "row"]:
            return "sum"
        return None
    if op == "matmul_acc" and n.ndim == 2:
        return "row" if ins == ["row", "row", "shared"] else None
    if op == "transpose" and ins == ["row"]:
        perm = n.attr("perm")
        if perm[0] == 0:
            return "row"
        return "rowT" if n.ndim == 2 else None
    if op in ("slice", "reshape", "broadcast_to", "stop_gradient") and ins == ["row"]:
        if op == "slice" and n.attr("spec")[0] != (0, None, 1):
            return None
        return "row" if _leading(n, dim) else None
    if op in ("sum", "max") and ins == ["row"]:
        axes = n.attr("axes")
        if 0 not in axes:
            return "row" if _leading(n, dim) else None
        return "sum" if op == "sum" and not _has_dim(n.shape, dim) else None
    if op == "concat" and set(ins) == {"row"} and n.attr("axis") != 0:
        return "row"
    return None


def _accumulates(n, kinds, carry) -> bool:
    """Whether n = carry + (a sum over rows), n being that carry's new value."""
    if n.op == "matmul_acc":
        return n.inputs[0] is carry and [kinds[p] for p in n.inputs[1:]] == ["rowT", "row"]
    if is_elementwise(n) and len(n.inputs) == 2 and node_expr(n) == I[0] + I[1]:
        a, b = n.inputs
        return (a is carry and kinds[b] == "sum") or (b is carry and kinds[a] == "sum")
    return False


def row_split(outputs, body, sizes: dict, threads: int, history=()) -> RowSplit | None:
    """How to run this body's rows in parallel, or None (see the module docstring)."""
    nc = body.n_carry
    dims = {c.shape[0].name for c in body.carries if c.shape and isinstance(c.shape[0], Dim)}
    if threads < 2 or len(dims) != 1:
        return None
    dim = dims.pop()
    n = sizes.get(dim, 0)
    chunks = threads * CHUNKS_PER_THREAD
    while chunks > 1 and (n % chunks or n // chunks < MIN_ROWS):
        chunks -= 1
    if chunks < 2:
        return None
    kinds: dict = {}
    users: dict = {}
    step_elements = 0
    placeholders = set(body.inputs)
    for node in toposort(outputs):
        for p in node.inputs:
            users[p] = users.get(p, 0) + 1
        if node in placeholders or node.is_leaf:
            kind = "row" if _leading(node, dim) else "shared"
            if kind == "shared" and _has_dim(node.shape, dim):
                return None
        elif all(kinds[p] == "shared" for p in node.inputs):
            if _has_dim(node.shape, dim):
                return None
            kind = "shared"
        else:
            kind = _row_kind(node, kinds, dim)
            if kind is None:
                kind = "acc" if any(_accumulates(node, kinds, c) for c in body.carries) else None
            if kind is None or node.op == "scan":
                return None
        kinds[node] = kind
        if kind == "row":
            step_elements += _elements(node, sizes)
    accumulators = set()
    for k, o in enumerate(outputs):
        kind = kinds[o]
        if k < nc and kind == "acc" and _accumulates(o, kinds, body.carries[k]) and \
                users.get(body.carries[k]) == 1 and k not in history:
            accumulators.add(k)
        elif kind != "row" or (k < nc and kinds[body.carries[k]] != "row"):
            return None
    for node, kind in kinds.items():             # partial sums feed accumulators only
        if kind in ("sum", "rowT", "acc") and node not in outputs and \
                kind != "rowT" and users.get(node, 0) != 1:
            return None
    if sum(1 for o in outputs if kinds[o] == "acc") != len(accumulators):
        return None
    if step_elements < MIN_STEP_ELEMENTS:
        return None
    return RowSplit(dim, chunks, n // chunks, frozenset(accumulators))


def _elements(node, sizes) -> int:
    count = 1
    for d in node.shape:
        count *= sizes[d.name] if isinstance(d, Dim) else d
    return count
