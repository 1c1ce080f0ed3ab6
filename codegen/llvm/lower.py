"""Lowering: a graph with concrete sizes -> one LLVM module and the plan to call it.

The walk (each step a plain function of the previous one's result):

1. `schedule`   order the nodes; an update that can be written in place is placed after
                every other reader of its variable.
2. `plan_views` give every node a View: inputs, outputs and variables are buffers the
                caller passes; transpose/broadcast/slice/reshape are views of their input
                (no copy); every other node is materialized into a buffer.
3. `plan_memory` liveness-based first-fit placement of the materialized buffers in one arena
                (peak bytes reported).
4. `emit`       one kernel per materialized node, and `gd_main(i8** args)` calling them in
                order (through the thread pool when a kernel is large enough).

An instrumented build (`instrument=True`, what gd.function(..., nan_guard=True) asks for)
writes no update in place and merges no loops, so every kernel computes exactly one node
and every variable is written only by the copies at the very end; the plan then lists, per
kernel, the node and the views of its output and inputs (`Plan.probes`), so graphdl.nanguard
can run the kernels one by one and check each result before anything is committed.

The argument array `args` holds one pointer per slot: the inputs, the outputs, every
param/state/constant buffer, the arena and the GEMM workspace.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import llvmlite.ir as ir
import networkx as nx
import numpy as np

from graphdl.codegen.llvm import kernels as K
from graphdl.codegen.llvm import kernels_conv as KC
from graphdl.codegen.llvm import kernels_index as KI
from graphdl.codegen.llvm import kernels_matmul as KM
from graphdl.codegen.llvm import target
from graphdl.codegen.llvm.loops import View
from graphdl.graph import toposort
from graphdl.ops.registry import I, is_elementwise, node_expr
from graphdl.ops.stable import stabilize
from graphdl.shapes import bind_dims

VIEW_OPS = ("reshape", "transpose", "broadcast_to", "slice", "stop_gradient",
            "windows")    # windows: sliding windows as strides (ops/conv.py)
ALIGN = 64
PARALLEL_MIN_WORK = 1 << 18     # ~20-50 us of work: below it a fork-join costs more than it saves


@dataclass(frozen=True)
class Scalar:
    """A value known when compiling (a one-element constant or a dim_size)."""

    value: float
    dtype: str


@dataclass(eq=False)
class Buffer:
    """A buffer that views point into: a caller slot or a region of the arena."""

    id: int
    kind: str                       # input | output | storage | arena
    nbytes: int
    node: object = None
    slot: int = -1
    offset: int = 0                 # bytes, for arena buffers


@dataclass
class Step:
    """One kernel to emit: what it computes and where."""

    kind: str                       # the node's op, or "copy" / "fill"
    node: object
    out: View
    inputs: list
    attrs: dict = field(default_factory=dict)


@dataclass
class Plan:
    """What the Executable needs to call the compiled module."""

    n_inputs: int
    output_shapes: list
    output_dtypes: list
    storage: list                   # storage arrays, in slot order after the outputs
    arena_bytes: int
    work_bytes: int
    label_checks: list              # (input index, upper bound) for label/index inputs
    kernels: list
    peak_bytes: int = 0
    inplace_updates: int = 0
    probes: list = field(default_factory=list)   # instrumented: (node, out, inputs) per kernel


class Lowering:
    """State of one lowering (one graph, one binding of the symbolic sizes)."""

    def __init__(self, inputs, outputs, updates, sizes, threads: int = 1,
                 instrument: bool = False):
        self.instrument = instrument
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.updates = list(updates)
        self.sizes = dict(sizes)
        self.threads = max(1, threads)
        self.buffers: list[Buffer] = []
        self.views: dict = {}
        self.steps: list[Step] = []
        self.root: dict = {}            # node -> Buffer its view points into
        self.storage_buffers: dict = {}
        self.label_checks: list = []
        self.inplace = 0

    # -- helpers -------------------------------------------------------------------------
    def shape(self, node) -> tuple:
        return bind_dims(node.shape, self.sizes)

    def new_buffer(self, kind, shape, dtype, node=None) -> Buffer:
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        buf = Buffer(len(self.buffers), kind, nbytes, node)
        self.buffers.append(buf)
        return buf

    def buffer_view(self, buf: Buffer, shape, dtype) -> View:
        return View.contiguous(buf.id, shape, dtype)

    # -- 1. schedule ---------------------------------------------------------------------
    def schedule(self) -> list:
        """Topological order with each in-place update after its variable's other readers."""
        values = self.outputs + [v for _, v in self.updates]
        nodes = toposort(values)
        g = nx.DiGraph()
        g.add_nodes_from(range(len(nodes)))
        index = {n: i for i, n in enumerate(nodes)}
        for n in nodes:
            for p in n.inputs:
                g.add_edge(index[p], index[n])
        readers, origin = self._readers(nodes)
        # Outputs and update values that are (views of) a variable are copied at the end,
        # after the kernels: such a variable must keep its old value until then.
        read_at_end = {origin[v] for v in values if v in origin}
        self.inplace_targets = {}
        for var, value in self.updates:
            if self.instrument or var in read_at_end or not self._inplace_candidate(var, value):
                continue
            u = index[value]
            others = [index[r] for r in readers.get(var, ()) if r is not value]
            if any(nx.has_path(g, u, r) for r in others):
                continue
            for r in others:
                g.add_edge(r, u)
            self.inplace_targets[value] = var
        # Among ready nodes, scalars first (step counters, bias corrections): then the big
        # elementwise loops that need them sit next to each other and share one loop.
        def priority(i):
            return (0 if not nodes[i].shape else 1, i)
        order = list(nx.lexicographical_topological_sort(g, key=priority))
        return [nodes[i] for i in order]

    def _readers(self, nodes) -> dict:
        """(var -> nodes reading it directly or through view ops, view node -> its var)."""
        origin = {}
        for n in nodes:
            if n.op in ("param", "state"):
                origin[n] = n
            elif n.op in VIEW_OPS and n.inputs[0] in origin:
                origin[n] = origin[n.inputs[0]]
        readers: dict = {}
        for n in nodes:
            for p in n.inputs:
                if p in origin and n.op not in VIEW_OPS:
                    readers.setdefault(origin[p], []).append(n)
        return readers, origin

    def _inplace_candidate(self, var, value) -> bool:
        if not is_elementwise(value) or value in self.outputs:
            return False
        if self.shape(value) != self.shape(var) or value.dtype != var.dtype:
            return False
        if sum(1 for _, v in self.updates if v is value) > 1:
            return False
        # Reading var at another index (broadcast) in the same kernel would read new values.
        return all(p is not var or self.shape(p) == self.shape(value) for p in value.inputs)

    # -- 2. views --------------------------------------------------------------------------
    def plan_views(self, order) -> None:
        for k, t in enumerate(self.inputs):
            buf = self.new_buffer("input", self.shape(t), t.dtype, t)
            buf.slot = k
            self._set(t, self.buffer_view(buf, self.shape(t), t.dtype), buf)
        out_taken = set()
        self.output_buffers = []
        for k, o in enumerate(self.outputs):
            buf = self.new_buffer("output", self.shape(o), o.dtype, o)
            buf.slot = len(self.inputs) + k
            self.output_buffers.append(buf)
        self.virtual = self._virtual_producers(order)
        for node in order:
            if node in self.views or node in self.virtual:
                continue
            if node.storage is not None:
                self._leaf(node)
            elif node.op == "dim_size":
                x = self.shape(node.inputs[0])
                self.views[node] = Scalar(float(np.prod([x[a] for a in node.attr("axes")])),
                                          node.dtype)
            elif node.op in VIEW_OPS and self._view(node):
                pass
            elif node.op in ("scan", "scan_get"):      # loops: codegen/llvm/scan.py
                from graphdl.codegen.llvm import scan
                scan.plan(self, node)
            elif not self._into_unwindows(node, out_taken):
                self._materialize(node, out_taken)
        self._finish_outputs(out_taken)
        self._finish_updates()

    fuse_reductions = True

    def _virtual_producers(self, order) -> set:
        """Elementwise nodes read only by one sum/max: never stored, the reduction evaluates
        their expression where it reads them (no buffer written and read back)."""
        if self.instrument or not self.fuse_reductions:
            self.consumers = {}
            return set()
        consumers: dict = {}
        for n in order:
            for p in set(n.inputs):
                consumers.setdefault(p, []).append(n)
        kept = set(self.outputs) | {v for _, v in self.updates} | {v for v, _ in self.updates}
        self.consumers = consumers
        # A producer is evaluated where its reduction runs, which the schedule may place
        # after an in-place update of a variable the producer reads: keep those stored.
        updated = set(getattr(self, "inplace_targets", {}).values())

        def reads_updated(n):
            for p in n.inputs:
                while p.op in VIEW_OPS and p.inputs:
                    p = p.inputs[0]
                if p in updated:
                    return True
            return False

        virtual = set()
        for n in order:
            users = consumers.get(n, [])
            if (is_elementwise(n) and n not in kept and len(users) == 1
                    and users[0].op in ("sum", "max") and users[0].inputs[0] is n
                    and n.storage is None and not reads_updated(n)):
                virtual.add(n)
        return virtual

    def _into_unwindows(self, node, out_taken) -> bool:
        """An elementwise node read only by an unwindows whose windows do not overlap (a
        max-pool gradient) is computed straight into the unwindows' buffer through its
        windows view: col2im becomes a zero fill of the uncovered elements (if any)."""
        users = self.consumers.get(node, [])
        if not is_elementwise(node) or len(users) != 1 or users[0].op != "unwindows":
            return False
        u = users[0]
        kept = set(self.outputs) | {v for _, v in self.updates} | {v for v, _ in self.updates}
        if node in kept or (u in kept and u not in self.outputs) or u.inputs[0] is not node \
                or u in out_taken:
            return False
        kernel, stride, dilation = u.attr("kernel"), u.attr("stride"), u.attr("dilation")
        u_shape = self.shape(u)
        spatial = u_shape[len(u_shape) - len(kernel):]
        out = self.shape(node)[len(u_shape):]
        covered = True
        for size, k, st, dl, o in zip(spatial, kernel, stride, dilation, out):
            hits = np.zeros(size, dtype=np.int64)
            for j in range(k):
                np.add.at(hits, np.arange(o) * st + j * dl, 1)
            if hits.max(initial=0) > 1:
                return False                   # overlapping windows add up: a real col2im
            covered &= bool(hits.min(initial=1) == 1)
        if u in self.outputs:
            buf = self.output_buffers[self.outputs.index(u)]
            out_taken.add(u)
        else:
            buf = self.new_buffer("arena", u_shape, u.dtype, u)
        u_view = self.buffer_view(buf, u_shape, u.dtype)
        self._set(u, u_view, buf)
        if not covered:
            self.steps.append(Step("fill", u, u_view, [], {"value": 0.0}))
        view = u_view.windows(kernel, stride, dilation)
        self._set(node, view, buf)
        self.steps.append(Step("elementwise", node, view, list(node.inputs)))
        return True

    def _set(self, node, view, buf):
        self.views[node] = view
        self.root[node] = buf

    def _leaf(self, node):
        if node.op == "constant" and node.storage.array.size == 1 and node.dtype != "bool":
            self.views[node] = Scalar(float(node.storage.array.reshape(())), node.dtype)
            return
        buf = self.storage_buffers.get(node)
        if buf is None:
            buf = self.new_buffer("storage", node.storage.array.shape, node.dtype, node)
            self.storage_buffers[node] = buf
        self._set(node, self.buffer_view(buf, self.shape(node), node.dtype), buf)

    def view_of(self, node) -> View:
        """The node's View, materializing a compile-time scalar into a buffer if needed.

        The node itself stays a Scalar: loops planned before this fill step read the
        number as an immediate (they run before the buffer is written)."""
        v = self.views[node]
        if isinstance(v, Scalar):
            filled = self.__dict__.setdefault("filled", {})
            if node not in filled:
                # one element in the node's own shape ((1, 1) stays (1, 1) for a matmul)
                shape = self.shape(node)
                buf = self.new_buffer("arena", shape, v.dtype)
                filled[node] = self.buffer_view(buf, shape, v.dtype)
                self.root[node] = buf
                self.steps.append(Step("fill", node, filled[node], [], {"value": v.value}))
            return filled[node]
        return v

    def _view(self, node) -> bool:
        """Make node a view of its input; False when it must be copied instead."""
        src = self.views[node.inputs[0]]
        shape = self.shape(node)
        if isinstance(src, Scalar):
            if node.op in ("reshape", "broadcast_to", "stop_gradient"):
                self.views[node] = src
                return True
            return False
        if node.op == "reshape":
            v = src.reshape(shape)
        elif node.op == "transpose":
            v = src.transpose(node.attr("perm"))
        elif node.op == "broadcast_to":
            v = src.broadcast(shape)
        elif node.op == "slice":
            v = src.slice(node.attr("spec"))
        elif node.op == "windows":
            v = src.windows(node.attr("kernel"), node.attr("stride"), node.attr("dilation"))
        else:
            v = src
        if v is None:
            return False
        self._set(node, v, self.root[node.inputs[0]])
        return True

    def _materialize(self, node, out_taken):
        shape = self.shape(node)
        if node in self.inplace_targets:
            var = self.inplace_targets[node]
            self._leaf(var)
            buf = self.root[var]
            self.inplace += 1
        elif node in self.outputs and node not in out_taken:
            buf = self.output_buffers[self.outputs.index(node)]
            out_taken.add(node)
        else:
            buf = self.new_buffer("arena", shape, node.dtype, node)
        view = self.buffer_view(buf, shape, node.dtype)
        if node.op in ("sum", "max") and node.inputs[0] in self.virtual:
            producer = node.inputs[0]
            self._set(node, view, buf)
            self.steps.append(Step(node.op, node, view, list(producer.inputs),
                                   {"producer": producer}))
            return
        if not is_elementwise(node):
            for x in node.inputs:        # structured kernels read memory, not immediates
                self.view_of(x)
        self._set(node, view, buf)
        if node.op == "concat":
            start, axis = 0, node.attr("axis")
            for x in node.inputs:
                n = self.shape(x)[axis]
                spec = tuple((start, start + n, 1) if d == axis else (0, None, 1)
                             for d in range(len(shape)))
                self.steps.append(Step("copy", node, view.slice(spec), [x]))
                start += n
        elif node.op == "tensordot":
            # One GEMM: a's free axes, the contracted axes and b's free axes each merge into
            # one dimension; an operand whose groups are not one stride chain is copied
            # (once per node: the forward and both VJPs of a convolution share the copy).
            k = node.attr("axes")
            a, b = node.inputs
            ops = []
            for x, groups in ((a, (a.ndim - k, k)), (b, (k, b.ndim - k))):
                v = self.view_of(x)
                ops.append(v if v.merge(groups) is not None else self._contiguous(x))
            fa, fb = a.ndim - k, b.ndim - k
            if buf.kind == "arena" and not self.instrument and KM.swap_cheaper(
                    ops[0].merge((fa, k)), ops[1].merge((k, fb))):
                # out^T = b^T a^T packs less (a weight gradient: 32 x 144 over K = 12544
                # packs the 32 columns of gy^T, not the 144 of cols^T): computed in a
                # (J..., I...) layout, the node is its transposed view, no copy.
                tview = self.buffer_view(buf, shape[fa:] + shape[:fa], node.dtype)
                self._set(node, tview.transpose(tuple(range(fb, fb + fa)) +
                                                tuple(range(fb))), buf)
                self.steps.append(Step("tensordot", node, tview, ops,
                                       {"axes": k, "swap": True}))
            else:
                self.steps.append(Step("tensordot", node, view, ops, {"axes": k}))
        elif node.op == "unslice":
            self.steps.append(Step("fill", node, view, [], {"value": 0.0}))
            self.steps.append(Step("copy", node, view.slice(node.attr("spec")),
                                   [node.inputs[0]]))
        else:
            kind = node.op if not is_elementwise(node) else "elementwise"
            self.steps.append(Step(kind, node, view, list(node.inputs)))

    def _contiguous(self, x) -> View:
        """A row-major copy of x's view (made once per node)."""
        copies = self.__dict__.setdefault("copies", {})
        if x not in copies:
            shape = self.shape(x)
            buf = self.new_buffer("arena", shape, x.dtype)
            copies[x] = self.buffer_view(buf, shape, x.dtype)
            self.steps.append(Step("copy", x, copies[x], [x]))
        return copies[x]

    def _finish_outputs(self, out_taken):
        for k, o in enumerate(self.outputs):
            buf = self.output_buffers[k]
            if self.root.get(o) is buf:
                continue
            view = self.buffer_view(buf, self.shape(o), o.dtype)
            self.steps.append(Step("copy", o, view, [o]))

    def _finish_updates(self):
        pending = []
        written = {self.root.get(var) for var, _ in self.updates}
        for var, value in self.updates:
            if value in self.inplace_targets or value is var:
                continue
            if var not in self.views:
                self._leaf(var)
            src = self.views[value]
            if isinstance(src, Scalar):
                src = value                 # the copy reads the number as an immediate
            elif self.root[value] in written:
                # the value lives in another updated variable: take it before any write
                buf = self.new_buffer("arena", self.shape(value), value.dtype)
                tmp = self.buffer_view(buf, self.shape(value), value.dtype)
                self.steps.append(Step("copy", value, tmp, [value]))
                src = tmp
            pending.append((var, src))
        for var, src in pending:
            self.steps.append(Step("copy", var, self.views[var], [src]))

    # -- 3. memory -----------------------------------------------------------------------
    def plan_memory(self) -> int:
        """Place arena buffers by liveness (first fit, 64-byte aligned); return peak bytes."""
        last_use, first_def = {}, {}
        run_end = self._loop_runs()
        for i, step in enumerate(self.steps):
            out_buf = self._buffer_of_view(step.out)
            first_def.setdefault(out_buf.id, i)
            last_use[out_buf.id] = max(last_use.get(out_buf.id, i), i)
            for x in step.inputs:
                buf = self._root_of(x)
                if buf is not None:
                    last_use[buf.id] = max(last_use.get(buf.id, i), run_end[i])
        arena = [b for b in self.buffers if b.kind == "arena" and b.id in first_def]
        arena.sort(key=lambda b: first_def[b.id])
        live: list = []          # (end step, offset, size)
        peak = 0
        for buf in arena:
            start = first_def[buf.id]
            live = [x for x in live if x[0] >= start]
            size = -(-max(buf.nbytes, 1) // ALIGN) * ALIGN
            offset = 0
            for _, off, sz in sorted(live, key=lambda x: x[1]):
                if offset + size <= off:
                    break
                offset = max(offset, off + sz)
            buf.offset = offset
            live.append((last_use[buf.id], offset, size))
            peak = max(peak, offset + size)
        return peak

    def _loop_runs(self) -> list:
        """Per step, the last step of its run of consecutive same-shape elementwise loops.

        group_steps merges such a run into one loop, which it can only do when no loop of
        the run writes over what an earlier one reads; so the buffers a run reads stay
        live until the run ends (else bias + ReLU after a GEMM would reuse the GEMM's bytes
        for the ReLU and run as two loops).
        """
        ends = list(range(len(self.steps)))
        if self.instrument:
            return ends
        start = 0
        for i, step in enumerate(self.steps):
            loop = step.kind in ("elementwise", "copy")
            if i > start and (not loop or step.out.shape != self.steps[start].out.shape
                              or i - start >= 8):
                start = i
            if not loop:
                start = i + 1
                continue
            for j in range(start, i + 1):
                ends[j] = i
        return ends

    def _buffer_of_view(self, view: View) -> Buffer:
        return self.buffers[view.slot]

    def _root_of(self, x):
        if isinstance(x, View):
            return self.buffers[x.slot]
        return self.root.get(x)

    # -- 4. emission ---------------------------------------------------------------------
    def assign_slots(self, arena_bytes):
        n_fixed = len(self.inputs) + len(self.outputs)
        storage = []
        for buf in self.buffers:
            if buf.kind == "storage":
                buf.slot = n_fixed + len(storage)
                storage.append(buf.node.storage.array)
        self.arena_slot = n_fixed + len(storage)
        self.work_slot = self.arena_slot + 1
        for buf in self.buffers:
            if buf.kind == "arena":
                buf.slot = self.arena_slot
        return storage

    def final_view(self, view: View) -> View:
        """A planning View (slot = buffer id) rewritten to (argument slot, element offset)."""
        buf = self.buffers[view.slot]
        extra = buf.offset // np.dtype(view.dtype).itemsize if buf.kind == "arena" else 0
        return View(buf.slot, view.offset + extra, view.shape, view.strides, view.dtype)

    def operand(self, x):
        """A step input as a final View or a Scalar's value."""
        v = x if isinstance(x, View) else self.views[x]
        if isinstance(v, Scalar):
            return v.value
        return self.final_view(v)


def lower(inputs, outputs, updates, sizes, threads: int = 1, instrument: bool = False):
    """Lower a graph for one binding of its symbolic sizes: returns (ir.Module, Plan).

    `instrument=True`: one kernel per step, no in-place updates, and `Plan.probes`.
    """
    low = Lowering(inputs, outputs, updates, sizes, threads, instrument)
    order = low.schedule()
    low.plan_views(order)
    peak = low.plan_memory()
    storage = low.assign_slots(peak)
    KM.set_workspace_slot(low.work_slot)
    module = ir.Module(name="graphdl")
    module.triple = target.host()["triple"]
    kernels = [emit_group(module, low, i, group) for i, group in enumerate(group_steps(low))]
    checks = _label_checks(low)
    emit_main(module, kernels, low.threads,
              [(slot, bound, low.buffers[slot].nbytes // 8) for slot, bound in checks])
    work = _workspace_bytes(kernels)
    plan = Plan(len(inputs), [low.shape(o) for o in outputs], [o.dtype for o in outputs],
                storage, peak, work, checks, kernels, peak, low.inplace)
    if instrument:
        plan.probes = [(step.node, low.final_view(step.out),
                        [low.operand(x) for x in step.inputs]) for step in low.steps]
    return module, plan


def _workspace_bytes(kernels) -> int:
    return max([k.detail.get("workspace_bytes", 0) for k in kernels] + [64])


def _label_checks(low) -> list:
    """Graph inputs used as labels/indices, with the bound they must stay below."""
    checks = []
    for step in low.steps:
        node = step.node
        if step.kind == "one_hot":
            bound, idx = node.attr("num_classes"), node.inputs[0]
        elif step.kind in ("gather", "scatter_add"):
            axis = node.attr("axis")
            bound = (low.shape(node.inputs[0])[axis] if step.kind == "gather"
                     else low.shape(node)[axis])
            idx = node.inputs[1]
        else:
            continue
        buf = low.root.get(idx)
        if buf is not None and buf.kind == "input":
            checks.append((buf.slot, int(bound)))
        elif buf is not None and buf.kind == "storage":
            values = buf.node.storage.array
            if values.size and (values.min() < 0 or values.max() >= bound):
                raise ValueError(f"{step.kind}: constant index out of range [0, {bound})")
    return checks


def _loop_member(low, step):
    """(out View, operands, expr) of a step that is one elementwise loop, else None."""
    if step.kind == "copy":
        return low.final_view(step.out), [low.operand(step.inputs[0])], I[0]
    if step.kind == "elementwise":
        return (low.final_view(step.out), [low.operand(x) for x in step.node.inputs],
                stabilize(node_expr(step.node)))
    return None


def _overlap(a: View, b: View) -> bool:
    if a.slot != b.slot:
        return False

    def extent(v):
        # bytes [first, last + 1); each view its own itemsize (one arena holds several
        # dtypes), negative strides reaching below the offset
        size = np.dtype(v.dtype).itemsize
        first = v.offset + sum((d - 1) * s for d, s in zip(v.shape, v.strides) if s < 0 < d)
        last = v.offset + sum((d - 1) * s for d, s in zip(v.shape, v.strides) if d > 0 < s)
        return first * size, (last + 1) * size
    (a0, a1), (b0, b1) = extent(a), extent(b)
    return a0 < b1 and b0 < a1


def _can_join(group, member) -> bool:
    """Whether an elementwise loop may join a group: same shape, and every buffer written
    in the group is only ever accessed through the view it is written with."""
    shape = group[0][0].shape
    if member[0].shape != shape or len(group) >= 8:
        return False
    members = group + [member]
    writes = [m[0] for m in members]
    reads = [v.broadcast(shape) for m in members for v in m[1] if isinstance(v, View)]
    for w in writes:
        for v in writes + reads:
            if _overlap(w, v) and (v.offset, v.strides, v.dtype) != (w.offset, w.strides,
                                                                     w.dtype):
                return False
    return True


LOOKBACK = 6      # how many earlier kernels an elementwise loop may be moved across


def _accesses(low, step, member):
    """(reads, writes) of a step as final Views (numbers and workspaces left out)."""
    if member is not None:
        return [v for v in member[1] if isinstance(v, View)], [member[0]]
    reads = []
    filled = getattr(low, "filled", {})
    for x in step.inputs:
        v = x if isinstance(x, View) else low.views.get(x)
        if isinstance(v, Scalar) and x in filled:      # a structured kernel reads the fill
            v = filled[x]
        if isinstance(v, View):
            reads.append(low.final_view(v))
    return reads, [low.final_view(step.out)]


def _independent(a, b) -> bool:
    """Whether two steps' (reads, writes) may be reordered: no write meets a read or write."""
    (ra, wa), (rb, wb) = a, b
    return not any(_overlap(w, v) for w in wa for v in rb + wb) and \
        not any(_overlap(w, v) for w in wb for v in ra)


def group_steps(low) -> list:
    """Steps in order, elementwise loops of one shape merged into groups.

    A loop joins the group it follows directly, or an earlier group within LOOKBACK kernels
    when it may be moved up across the kernels in between (no buffer conflicts): the Adam
    update of a weight then runs as one loop even when a small step-counter loop was
    scheduled between its parts. An instrumented build keeps every step its own kernel.
    """
    if low.instrument:
        return [[(step, None)] for step in low.steps]
    groups: list = []            # each: list of (step, member); accesses kept alongside
    accesses: list = []
    for step in low.steps:
        member = _loop_member(low, step)
        acc = _accesses(low, step, member)
        target = None
        if member is not None:
            for j in range(len(groups) - 1, max(-1, len(groups) - 1 - LOOKBACK), -1):
                group = groups[j]
                if group[0][1] is not None and _can_join([m for _, m in group], member):
                    target = j
                    break
                if not _independent(accesses[j], acc):
                    break
        if target is None:
            groups.append([(step, member)])
            accesses.append(acc)
        else:
            groups[target].append((step, member))
            reads, writes = accesses[target]
            accesses[target] = (reads + acc[0], writes + acc[1])
    return groups


def emit_group(module, low, i: int, group) -> K.Kernel:
    """Emit one kernel for a group of steps (one loop) or a single step."""
    if len(group) == 1:
        kernel = emit_step(module, low, i, group[0][0])
    else:
        label = "; ".join(f"{s.node.op} {s.node.site}" for s, _ in group)
        kernel = K.emit_elementwise_group(module, f"k{i}_group{len(group)}",
                                          [m for _, m in group], label)
    if all(s.kind != "scan" for s, _ in group):
        # The byte ranges the kernel writes (profile() restores them between repetitions:
        # with arena reuse a kernel may overwrite its own input, so it is not idempotent).
        kernel.detail["writes"] = [_extent(low.final_view(s.out)) for s, _ in group]
    return kernel


def _extent(view: View) -> tuple:
    """(slot, first byte, end byte) of the memory a view covers."""
    item = np.dtype(view.dtype).itemsize
    lo = view.offset + sum(min(0, (d - 1) * s) for d, s in zip(view.shape, view.strides))
    hi = view.offset + sum(max(0, (d - 1) * s) for d, s in zip(view.shape, view.strides)) + 1
    return (view.slot, lo * item, hi * item)


def emit_step(module, low: Lowering, i: int, step: Step) -> K.Kernel:
    """Emit the kernel of one step."""
    name = f"k{i}_{step.kind}"
    out = low.final_view(step.out)
    node = step.node
    label = f"{step.kind} {node.op} {node.site}" if node is not None else step.kind
    if step.kind == "fill":
        return K.emit_fill(module, name, out, step.attrs["value"], label)
    if step.kind == "copy":
        return K.emit_elementwise(module, name, out, [low.operand(step.inputs[0])], I[0],
                                  label)
    if step.kind == "elementwise":
        expr = stabilize(node_expr(node))
        return K.emit_elementwise(module, name, out, [low.operand(x) for x in node.inputs],
                                  expr, label)
    if step.kind == "scan":                           # loops: codegen/llvm/scan.py
        from graphdl.codegen.llvm import scan
        return scan.emit(module, low, i, step)
    if "producer" in step.attrs:            # sum/max of an elementwise node never stored
        producer = step.attrs["producer"]
        return K.emit_reduce(module, name, out, low.shape(producer), node.attr("axes"),
                             step.kind, label,
                             producer=([low.operand(x) for x in producer.inputs],
                                       stabilize(node_expr(producer))))
    ops = [low.operand(x) for x in node.inputs]
    ops = [x if isinstance(x, View) else low.final_view(low.view_of(n))
           for x, n in zip(ops, node.inputs)]
    if step.kind in ("sum", "max"):
        return K.emit_reduce(module, name, out, ops[0], node.attr("axes"), step.kind, label)
    if step.kind == "matmul":
        return KM.emit_matmul(module, name, out, ops[0], ops[1], low.threads, label)
    if step.kind == "tensordot":
        k = step.attrs["axes"]
        a, b = (low.operand(v) for v in step.inputs)
        a2, b2 = a.merge((a.ndim - k, k)), b.merge((k, b.ndim - k))
        if step.attrs.get("swap"):          # out (J, I) = b^T a^T
            return KM.emit_matmul(module, name, out.merge((b.ndim - k, a.ndim - k)),
                                  b2.transpose((1, 0)), a2.transpose((1, 0)), low.threads,
                                  label)
        return KM.emit_matmul(module, name, out.merge((a.ndim - k, b.ndim - k)), a2, b2,
                              low.threads, label)
    if step.kind == "argmax":
        return K.emit_argmax(module, name, out, ops[0], node.attr("axis"), label)
    if step.kind == "one_hot":
        return KI.emit_one_hot(module, name, out, ops[0], label)
    if step.kind == "gather":
        return KI.emit_gather(module, name, out, ops[0], ops[1], node.attr("axis"), label)
    if step.kind == "scatter_add":
        return KI.emit_scatter_add(module, name, out, ops[0], ops[1], node.attr("axis"), label)
    if step.kind == "zero_one":
        return K.emit_argmax(module, name, out, ops[0], 1, label, compare=ops[1])
    if step.kind in KC.KERNELS:     # unwindows, random_uniform (kernels_conv.py)
        return KC.KERNELS[step.kind](module, name, out, ops, node, label)
    if step.kind in VIEW_OPS:
        src = ops[0]
        if node.op == "reshape":
            # a non-contiguous source: write its elements in row-major order, which is
            # the reshaped tensor's order too
            out = View.contiguous(out.slot, src.shape, out.dtype, out.offset)
        else:
            src = View(src.slot, src.offset, *_view_shape(node, src), src.dtype)
        return K.emit_elementwise(module, name, out, [src], I[0], label)
    raise NotImplementedError(f"the llvm backend has no kernel for op {step.kind!r}")


def _view_shape(node, src: View):
    """(shape, strides) of a view op applied to a source view (for a materializing copy)."""
    v = {"transpose": lambda: src.transpose(node.attr("perm")),
         "slice": lambda: src.slice(node.attr("spec")),
         "stop_gradient": lambda: src,
         "windows": lambda: src.windows(node.attr("kernel"), node.attr("stride"),
                                        node.attr("dilation"))}[node.op]()
    return v.shape, v.strides


def emit_main(module, kernels, threads: int, checks=()) -> None:
    """`i32 gd_main(i8** args)`: check label ranges, then run the kernels in order.

    Returns 0, or 1 + the index of the first check (slot, bound, count) that failed, before
    any kernel ran: labels index memory, so they are checked in native code, up front.
    """
    i32 = ir.IntType(32)
    fn = ir.Function(module, ir.FunctionType(i32, [K.I8P.as_pointer()]), "gd_main")
    fn.attributes.add("nounwind")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    (args,) = fn.args
    for j, (slot, bound, count) in enumerate(checks):
        _emit_label_check(b, args, slot, bound, count, ir.Constant(i32, j + 1))
    saved = _enter_flush_mode(b, module) if target.flush_denormal() else None
    emit_kernel_calls(b, module, kernels, threads, b.bitcast(args, K.I8P))
    if saved is not None:
        _leave_flush_mode(b, module, saved)
    b.ret(ir.Constant(i32, 0))


MXCSR_FTZ_DAZ = 0x8040          # flush-to-zero (bit 15) and denormals-are-zero (bit 6)


def _mxcsr(module, name):
    fn = module.globals.get(name)
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [K.I8P]), name)
    return fn


def _enter_flush_mode(b, module):
    """Save this thread's MXCSR and set FTZ + DAZ; returns the slot holding the old value."""
    i32 = ir.IntType(32)
    saved, mode = b.alloca(i32), b.alloca(i32)
    b.call(_mxcsr(module, "llvm.x86.sse.stmxcsr"), [b.bitcast(saved, K.I8P)])
    b.store(b.or_(b.load(saved), ir.Constant(i32, MXCSR_FTZ_DAZ)), mode)
    b.call(_mxcsr(module, "llvm.x86.sse.ldmxcsr"), [b.bitcast(mode, K.I8P)])
    return saved


def _leave_flush_mode(b, module, saved):
    b.call(_mxcsr(module, "llvm.x86.sse.ldmxcsr"), [b.bitcast(saved, K.I8P)])


def _flushing(module, f):
    """`f` wrapped to run in flush-to-zero mode on whichever pool thread runs a chunk."""
    name = f.name + ".ftz"
    if name in module.globals:
        return module.globals[name]
    fn = ir.Function(module, K.KERNEL_TYPE, name)
    fn.attributes.add("nounwind")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    saved = _enter_flush_mode(b, module)
    b.call(f, list(fn.args))
    _leave_flush_mode(b, module, saved)
    b.ret_void()
    return fn


def emit_kernel_calls(b, module, kernels, threads: int, ctx) -> None:
    """Call each kernel over its whole range, through the thread pool when it is large."""
    pfor = _parallel_for(module) if threads > 1 else None
    for k in kernels:
        f = module.get_global(k.name)
        trips = ir.Constant(K.I64, k.trips)
        if pfor is not None and uses_threads(k, threads):
            if target.flush_denormal():         # workers have their own MXCSR
                f = _flushing(module, f)
            b.call(pfor, [f, ctx, trips, ir.Constant(K.I64, 1)])
        else:
            b.call(f, [ctx, ir.Constant(K.I64, 0), trips])


def _emit_label_check(b, args, slot, bound, count, fail_code):
    """Return fail_code from the function when any of `count` int64 labels is outside
    [0, bound) (one unsigned comparison catches negatives too)."""
    if count == 0:
        return
    ptr = b.bitcast(b.load(b.gep(args, [ir.Constant(K.I64, slot)])), K.I64.as_pointer())
    pre = b.block
    loop = b.append_basic_block(f"check{slot}.loop")
    cont = b.append_basic_block(f"check{slot}.next")
    bad = b.append_basic_block(f"check{slot}.bad")
    done = b.append_basic_block(f"check{slot}.done")
    b.branch(loop)
    b.position_at_end(loop)
    i = b.phi(K.I64)
    i.add_incoming(ir.Constant(K.I64, 0), pre)
    value = b.load(b.gep(ptr, [i]))
    b.cbranch(b.icmp_unsigned(">=", value, ir.Constant(K.I64, bound)), bad, cont)
    b.position_at_end(cont)
    nxt = b.add(i, ir.Constant(K.I64, 1))
    i.add_incoming(nxt, cont)
    b.cbranch(b.icmp_signed("<", nxt, ir.Constant(K.I64, count)), loop, done)
    b.position_at_end(bad)
    b.ret(fail_code)
    b.position_at_end(done)


def uses_threads(kernel, threads: int) -> bool:
    """Whether gd_main runs this kernel through the thread pool."""
    return (threads > 1 and kernel.parallel and kernel.trips > 1
            and kernel.work >= PARALLEL_MIN_WORK)


def _parallel_for(module):
    from graphdl.codegen.llvm import threads
    threads.declare_runtime(module)
    return module.get_global("gd_parallel_for")
