"""Lowering of `scan` (graphdl/ops/scan.py): the body is compiled once and called T times.

Planning (`plan`, from Lowering.plan_views):

- the body graph (only the outputs someone reads: new carries, read ys, read residuals)
  goes through the pass pipeline and is lowered by its own `BodyLowering`: its own slots,
  its own arena. Per-step inputs keep the strides of the outer tensors (x[:, t, :] of a
  batch-first input is read in place, no transposed copy); loop constants likewise;
- the scan's outputs live in one block of the outer arena: the stacked ys and residuals,
  the carry histories (T+1 rows) when they are read, else two buffers per carry used in
  turn (ping-pong), and the body's arena;
- the initial carries are copied into place by ordinary copy steps, then one "scan" step.

Two rewrites of the body graph (llvm only) before it is lowered: C + A @ B becomes one GEMM
that adds into C (`matmul_acc`), and a carry updated that way (a gradient summed over the
steps) is read and written in place, with no second buffer and no extra pass.

Emission (`emit`): the body's kernels, an internal function `scanN.step(i8* args)` calling
them in order (through the thread pool when large), and the step's kernel `kI_scan`, which
fills the body's argument array once, then loops over t: points the x_t, carry and y_t
slots at row t of their buffers and calls `scanN.step`. The module holds one copy of the
body whatever T is, and a training step is still one native call.

When the rows of the batch never meet in the body (scan_split.py), `kI_scan` instead runs
`kI_scan.rows` through the thread pool: each thread runs all T steps on its own block of
rows, with private sums for the accumulating carries, added up after the loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import llvmlite.ir as ir
import numpy as np

from graphdl.codegen.llvm import kernels as K
from graphdl.codegen.llvm import kernels_matmul as KM
from graphdl.codegen.llvm.loops import View
from graphdl.codegen.llvm import target
from graphdl.codegen.llvm.lower import (ALIGN, Lowering, Step, _flushing, _label_checks,
                                        _parallel_for, emit_group, emit_kernel_calls,
                                        group_steps)
from graphdl.codegen.llvm.scan_split import row_split
from graphdl.graph import Tensor, toposort
from graphdl.ops.registry import I

KERNELS_PER_BODY = 100_000      # body kernels are named k{(n + 1) * this + j}_...: unique
MATMUL_ACC = "matmul_acc"       # C + A @ B inside a body (llvm only): one accumulating GEMM


def _accumulating_matmuls(outputs) -> list:
    """Rewrite add(C, matmul(A, B)) of 2-D operands, the matmul used nowhere else, as
    matmul_acc(C, A, B): the GEMM adds into C's buffer (beta = 1) instead of writing a
    temporary that a separate loop adds (a gradient accumulated over the steps, or the two
    products of x_t W_ih^T + h W_hh^T)."""
    order = toposort(outputs)
    users: dict = {}
    for n in order:
        for p in n.inputs:
            users[p] = users.get(p, 0) + 1
    keep = set(outputs)
    memo: dict = {}
    for n in order:
        new = n if not n.inputs else _rebuilt(n, [memo[p] for p in n.inputs])
        if n.op == "add" and n.ndim == 2:
            for (c, m), (c0, m0) in ((new.inputs, n.inputs), (new.inputs[::-1], n.inputs[::-1])):
                if m.op == "matmul" and m.ndim == 2 and users.get(m0) == 1 and m0 not in keep \
                        and c.shape == m.shape == n.shape and c.dtype == m.dtype == n.dtype:
                    new = Tensor.make(MATMUL_ACC, (c,) + m.inputs, {}, n.shape, n.dtype)
                    new.site = n.site
                    break
        memo[n] = new
    return [memo[o] for o in outputs]


def _rebuilt(node, inputs):
    if all(a is b for a, b in zip(inputs, node.inputs)):
        return node
    new = Tensor.make(node.op, inputs, dict(node.attrs), node.shape, node.dtype)
    new.site = node.site
    return new


class BodyLowering(Lowering):
    """The lowering of a scan body: inputs may be strided views of the outer buffers, and
    `matmul_acc` nodes (C + A @ B) run as one GEMM that adds into C's buffer; for the carries
    in `inplace` ({node: carry index}) that buffer is the carry itself (read and written in
    place, no second buffer)."""

    def __init__(self, inputs, outputs, sizes, threads, input_strides: dict, inplace: dict):
        super().__init__(inputs, outputs, [], sizes, threads)
        self.input_strides = input_strides
        self.inplace = inplace
        self.users: dict = {}
        for n in toposort(self.outputs):
            for p in n.inputs:
                self.users[p] = self.users.get(p, 0) + 1

    fuse_reductions = False          # body steps are analysed node by node (scan_split)

    def buffer_view(self, buf, shape, dtype) -> View:
        strides = self.input_strides.get(buf.node) if buf.kind == "input" else None
        if strides is not None:
            return View(buf.id, 0, tuple(shape), tuple(strides), dtype)
        return super().buffer_view(buf, shape, dtype)

    def _materialize(self, node, out_taken):
        if node.op != MATMUL_ACC:
            return super()._materialize(node, out_taken)
        init, a, b = node.inputs
        shape = self.shape(node)
        for x in (a, b):
            self.view_of(x)
        if node in self.inplace:
            buf = self.output_buffers[self.inplace[node]]
            out_taken.add(node)
        elif self._consumable(init, node):         # add into C's own buffer: no copy
            self._set(node, self.views[init], self.root[init])
            self.steps.append(Step(MATMUL_ACC, node, self.views[init], [init, a, b]))
            return
        elif node in self.outputs and node not in out_taken:
            buf = self.output_buffers[self.outputs.index(node)]
            out_taken.add(node)
        else:
            buf = self.new_buffer("arena", shape, node.dtype, node)
        view = self.buffer_view(buf, shape, node.dtype)
        self._set(node, view, buf)
        if node not in self.inplace:
            self.steps.append(Step("copy", node, view, [init]))
        self.steps.append(Step(MATMUL_ACC, node, view, [init, a, b]))

    def _consumable(self, init, node) -> bool:
        """Whether node may overwrite init's buffer: init is a materialized arena value
        (laid out as the node is), used by node alone and not an output."""
        buf, view = self.root.get(init), self.views.get(init)
        if buf is None or buf.kind != "arena" or buf.node is not init or \
                not isinstance(view, View):
            return False
        if init in self.outputs or self.users.get(init, 0) != 1:
            return False
        return view.is_contiguous and view.shape == self.shape(node)


@dataclass
class ScanPlan:
    """Everything the emitter needs about one planned scan."""

    node: object
    body: BodyLowering
    length: int
    reverse: bool
    block: object                       # the outer arena Buffer holding the outputs
    body_arena: list                    # byte offsets of the body's arena in the block, per chunk
    carries: list                       # per carry: ("history", V) ("inplace", V) ("pingpong", A, B)
    xs: list                            # planning Views of the stacked xs (outer)
    consts: list                        # planning Views of the consts (outer)
    rows: list                          # per extra body output: stacked View (T, ...)
    split: object = None                # RowSplit (scan_split.py) or None: one serial loop
    private: dict = field(default_factory=dict)   # accumulator k -> per chunk >= 1 carry
    storage: dict = field(default_factory=dict)   # body storage slot -> outer Buffer

    def final(self, carry) -> View:
        """The View holding a carry's value after the last step."""
        if carry[0] == "history":
            return _row(carry[1], 0 if self.reverse else self.length)
        if carry[0] == "inplace":
            return carry[1]
        return carry[1] if self.length % 2 == 0 else carry[2]


def _state(low) -> dict:
    found = getattr(low, "_scan_outputs", None)
    if found is None:
        found = low._scan_outputs = {}
    return found


def _reads(low, node) -> list:
    """The output indices of `node` that the lowered graph reads (through scan_get)."""
    values = list(low.outputs) + [v for _, v in low.updates]
    seen = []
    for n in toposort(values):
        if n.op == "scan_get" and n.inputs[0] is node and n.attr("index") not in seen:
            seen.append(n.attr("index"))
    return seen


def plan(low: Lowering, node) -> None:
    """Plan a scan node (its block and steps) or a scan_get (a view of that block)."""
    if node.op == "scan_get":
        views = _state(low)[node.inputs[0]]
        low._set(node, views[node.attr("index")], low.root[node.inputs[0]])
        return
    _plan_scan(low, node)


def _outer_view(low, x, shape) -> View:
    v = low.view_of(x)
    return v if tuple(v.shape) == tuple(shape) else v.broadcast(shape)


def _plan_scan(low, node) -> None:
    body = node.attr("body")
    T, reverse = node.attr("length"), node.attr("reverse")
    nc, nx, ny = body.n_carry, body.n_x, body.n_y
    reads = _reads(low, node)
    xs = [_outer_view(low, x, low.shape(x)) for x in node.inputs[nc:nc + nx]]
    consts = [_outer_view(low, x, low.shape(x)) for x in node.inputs[nc + nx:]]
    for x in node.inputs[:nc]:
        low.view_of(x)
    ys = [k for k in range(ny) if nc + k in reads]
    residuals = [i for i in reads if isinstance(i, tuple)]
    extra = [body.outputs[nc + k] for k in ys] + \
        [body.residuals(key)[j] for _, key, j in residuals]
    history = {k for k in range(nc) if nc + ny + k in reads}
    blow, split, peak = _lower_body(low, body, extra, xs, consts, history)
    modes = ["history" if k in history else "inplace" if k in set(blow.inplace.values())
             else "pingpong" for k in range(nc)]
    chunks = split.chunks if split is not None else 1
    layout = _Layout()
    carries = [layout.carry(modes[k], low.shape(c), c.dtype, T)
               for k, c in enumerate(body.carries)]
    private = {k: [layout.carry(modes[k], low.shape(body.carries[k]), body.carries[k].dtype,
                                T) for _ in range(chunks - 1)]
               for k in (split.accumulators if split is not None else ())}
    rows = [layout.add((T,) + low.shape(o), o.dtype) for o in extra]
    body_arena = [layout.reserve(peak) for _ in range(chunks)]
    block = low.new_buffer("arena", (layout.size // 8,), "int64", node)
    # the whole block, for liveness and overlap checks (int64: a nan_guard probe of the
    # scan step must not read its mixed contents as floats)
    whole = View.contiguous(block.id, (layout.size // 8,), "int64")
    low._set(node, whole, block)
    carries = [layout.placed(c, block.id) for c in carries]
    private = {k: [layout.placed(c, block.id) for c in cs] for k, cs in private.items()}
    rows = [layout.placed(("rows", r), block.id)[1] for r in rows]
    for k, c in enumerate(carries):      # the carry entering the first step
        target = _row(c[1], T if reverse else 0) if c[0] == "history" else c[1]
        low.steps.append(Step("copy", node.inputs[k], target, [node.inputs[k]]))
    sp = ScanPlan(node, blow, T, reverse, block, body_arena, carries, xs, consts, rows,
                  split, private)
    for buf in blow.buffers:             # constants inside the body: outer storage slots
        if buf.kind == "storage":
            outer = low.storage_buffers.get(buf.node)
            if outer is None:
                outer = low.new_buffer("storage", buf.node.storage.array.shape,
                                       buf.node.dtype, buf.node)
                low.storage_buffers[buf.node] = outer
            sp.storage[buf.slot] = outer
    low.steps.append(Step("scan", node, whole, list(node.inputs), {"scan": sp}))
    views = {k: sp.final(c) for k, c in enumerate(carries)}
    views.update({nc + ny + k: c[1] for k, c in enumerate(carries) if c[0] == "history"})
    views.update(zip([nc + k for k in ys] + residuals, rows))
    _state(low)[node] = views


def _lower_body(low, body, extra, xs, consts, history):
    """(BodyLowering, RowSplit or None, arena bytes) of a body computing its new carries
    and the `extra` outputs, optimized and rewritten for the llvm backend."""
    from graphdl.passes import fuse_elementwise, optimize
    nc = body.n_carry
    outputs = optimize(list(body.outputs[:nc]) + extra, skip={"fuse_elementwise"})
    outputs = fuse_elementwise(_accumulating_matmuls(outputs))
    strides = {ph: v.strides[1:] for ph, v in zip(body.xs, xs)}
    strides.update({ph: v.strides for ph, v in zip(body.consts, consts)})
    inplace = _inplace_carries(body, outputs, history)
    split = row_split(outputs, body, low.sizes, low.threads, history)
    sizes, threads = dict(low.sizes), low.threads
    if split is not None:                 # each thread runs the loop over its own rows
        sizes[split.dim], threads = split.rows, 1
    blow = BodyLowering(body.inputs, outputs, sizes, threads, strides, inplace)
    blow.plan_views(blow.schedule())
    peak = blow.plan_memory()
    blow.assign_slots(peak)
    if _label_checks(blow):
        raise NotImplementedError(
            "llvm backend: a scan body indexes with (one_hot/gather) values of the scan's "
            "inputs; do that outside the scan (e.g. one_hot the whole sequence first)")
    return blow, split, peak


def _inplace_carries(body, outputs, history) -> dict:
    """{matmul_acc node: carry k} for carries updated as C + A @ B that can stay in place:
    the node is carry k's new value (and no other output), and reads the carry's old value,
    which nothing else reads; and the carry's history is not kept."""
    users: dict = {}
    for n in toposort(outputs):
        for p in n.inputs:
            users[p] = users.get(p, 0) + 1
    out = {}
    for k, (c, o) in enumerate(zip(body.carries, outputs)):
        if o.op == MATMUL_ACC and o.inputs[0] is c and users.get(c) == 1 and \
                k not in history and outputs.count(o) == 1 and o not in out:
            out[o] = k
    return out


def _row(view: View, t: int) -> View:
    """Row t of a stacked view, as a view of the row's shape."""
    return View(view.slot, view.offset + t * view.strides[0], view.shape[1:],
                view.strides[1:], view.dtype)


class _Layout:
    """Regions of one block, each 64-byte aligned; views are made once the block exists."""

    def __init__(self):
        self.size = 0
        self.regions = []

    def reserve(self, nbytes: int) -> int:
        offset = self.size
        self.size += -(-max(int(nbytes), 1) // ALIGN) * ALIGN
        return offset

    def add(self, shape, dtype) -> int:
        offset = self.reserve(int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
        self.regions.append((offset, tuple(shape), dtype))
        return len(self.regions) - 1

    def carry(self, mode: str, shape, dtype, T: int) -> tuple:
        """The regions of one carry: (mode, region...) (see ScanPlan.carries)."""
        if mode == "history":
            return ("history", self.add((T + 1,) + tuple(shape), dtype))
        count = 1 if mode == "inplace" else 2
        return (mode,) + tuple(self.add(shape, dtype) for _ in range(count))

    def placed(self, regions: tuple, slot: int) -> tuple:
        """(kind, View...) for (kind, region...) once the block has its buffer id `slot`."""
        def view(region):
            offset, shape, dtype = self.regions[region]
            return View.contiguous(slot, shape, dtype, offset // np.dtype(dtype).itemsize)
        return (regions[0],) + tuple(view(r) for r in regions[1:])


# -- emission ---------------------------------------------------------------------------------
def emit(module, low: Lowering, i: int, step: Step) -> K.Kernel:
    """The kernel of a scan step: the body's kernels once, and a loop calling them T times
    (with a row split: a parallel loop over row blocks, each running the T steps)."""
    sp: ScanPlan = step.attrs["scan"]
    uid = getattr(module, "_graphdl_scans", 0)
    module._graphdl_scans = uid + 1
    blow = sp.body
    KM.set_workspace_slot(blow.work_slot)
    try:
        kernels = [_emit_body_group(module, blow, (uid + 1) * KERNELS_PER_BODY + j, group)
                   for j, group in enumerate(group_steps(blow))]
    finally:
        KM.set_workspace_slot(low.work_slot)
    step_fn = _emit_step_function(module, f"scan{uid}.step", kernels, blow.threads)
    ws = max([k.detail.get("workspace_bytes", 0) for k in kernels] + [0])
    ws = -(-ws // ALIGN) * ALIGN
    name = f"k{i}_scan"
    fn = ir.Function(module, K.KERNEL_TYPE, name)
    fn.attributes.add("nounwind")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    if sp.split is None:
        _emit_loop(b, fn.args[0], low, sp, step_fn, None, ws)
    else:
        _emit_split(module, b, fn.args[0], low, sp, step_fn, name, ws)
    b.ret_void()
    chunks = sp.split.chunks if sp.split is not None else 1
    work = sum(k.work for k in kernels) * sp.length * chunks
    label = (f"scan T={sp.length}{' reverse' if sp.reverse else ''}: {len(kernels)} body "
             f"kernels" + (f", {chunks} row blocks" if chunks > 1 else "") +
             f", {sp.node.site}")
    return K.Kernel(name, 1, work, parallel=False, label=label,
                    detail={"workspace_bytes": ws * chunks, "body_kernels": len(kernels),
                            "row_blocks": chunks})


def _emit_loop(b, ctx, low, sp, step_fn, chunk, ws):
    """The loop over the steps (for one row block `chunk`, an IR value, when split)."""
    args = b.bitcast(ctx, K.I8P.as_pointer())
    entry = b.function.entry_basic_block
    with b.goto_block(entry):
        b.position_at_start(entry)
        slots = b.alloca(K.I8P, size=ir.Constant(K.I64, sp.body.work_slot + 1),
                         name="body_args")
    _Emitter(b, low, sp, args, slots, chunk, ws).run(step_fn)


def _emit_split(module, b, ctx, low, sp, step_fn, name, ws):
    """Zero the private accumulators, run the row blocks in parallel, add them up."""
    split = sp.split
    extra = []
    for k, copies in sp.private.items():
        for j, c in enumerate(copies):
            for v in c[1:]:
                extra.append(K.emit_fill(module, f"{name}.zero{k}_{j}_{len(extra)}",
                                         low.final_view(v), 0.0, "scan: private sum"))
    _call_kernels(b, module, ctx, extra, low.threads)
    chunk_fn = ir.Function(module, K.KERNEL_TYPE, name + ".rows")
    chunk_fn.linkage = "internal"
    chunk_fn.attributes.add("nounwind")
    cb = ir.IRBuilder(chunk_fn.append_basic_block("entry"))
    c_ctx, begin, end = chunk_fn.args
    pre = cb.block
    loop, after = cb.append_basic_block("rows.loop"), cb.append_basic_block("rows.end")
    cb.cbranch(cb.icmp_signed("<", begin, end), loop, after)
    cb.position_at_end(loop)
    c = cb.phi(K.I64, name="block")
    c.add_incoming(begin, pre)
    _emit_loop(cb, c_ctx, low, sp, step_fn, c, ws)
    nxt = cb.add(c, ir.Constant(K.I64, 1))
    c.add_incoming(nxt, cb.block)
    cb.cbranch(cb.icmp_signed("<", nxt, end), loop, after)
    cb.position_at_end(after)
    cb.ret_void()
    pfor = _parallel_for(module)
    if target.flush_denormal():                 # pool threads have their own MXCSR
        chunk_fn = _flushing(module, chunk_fn)
    b.call(pfor, [chunk_fn, ctx, ir.Constant(K.I64, split.chunks), ir.Constant(K.I64, 1)])
    adds = []
    for k, copies in sp.private.items():
        total = low.final_view(sp.final(sp.carries[k]))
        for j, c in enumerate(copies):
            part = low.final_view(sp.final(c))
            adds.append(K.emit_elementwise(module, f"{name}.sum{k}_{j}", total, [total, part],
                                           I[0] + I[1], "scan: add the row blocks' sums"))
    _call_kernels(b, module, ctx, adds, low.threads)


def _call_kernels(b, module, ctx, kernels, threads):
    for k in kernels:
        b.call(module.get_global(k.name), [ctx, ir.Constant(K.I64, 0),
                                           ir.Constant(K.I64, k.trips)])


def _emit_body_group(module, blow, i, group) -> K.Kernel:
    step = group[0][0]
    if step.kind != MATMUL_ACC:
        return emit_group(module, blow, i, group)
    _, a, b = step.node.inputs
    label = f"{MATMUL_ACC} {step.node.site}"
    a_view, b_view = (blow.final_view(blow.view_of(x)).broadcast(blow.shape(x)) for x in (a, b))
    return emit_matmul_acc(module, f"k{i}_{MATMUL_ACC}", blow.final_view(step.out),
                           a_view, b_view, blow.threads, label)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def emit_matmul_acc(module, name, out: View, a: View, b: View, blocks: int,
                    label="") -> K.Kernel:
    """out += a @ b for 2-D views: the runtime GEMM with accumulate = 1, its columns split in
    `blocks` parallel blocks as kernels_matmul.emit_matmul does (each block its own
    workspace slice)."""
    n, k = a.shape
    m = b.shape[1]
    dtype = out.dtype
    ws_view = View(KM._WORK_SLOT[0], 0, (1,), (1,), dtype)
    kb = K.KernelBuilder(module, name, [out, a, b, ws_view], writes=[0, 3], label=label)
    gemm = KM._gemm_function(module, dtype)
    ws = KM.workspace_elements(dtype)
    # column blocks of a multiple of 64 (the GEMM's register-tile grid), as emit_matmul
    width = max(64, _ceil_div(_ceil_div(m, max(blocks, 1)), 64) * 64)
    blocks = max(1, _ceil_div(m, width))
    bb = kb.b
    i64 = lambda v: ir.Constant(K.I64, v)
    pre = bb.block
    loop, after = bb.append_basic_block("blk.loop"), bb.append_basic_block("blk.end")
    bb.cbranch(bb.icmp_signed("<", kb.begin, kb.end), loop, after)
    bb.position_at_end(loop)
    blk = bb.phi(K.I64)
    blk.add_incoming(kb.begin, pre)
    col0 = bb.mul(blk, i64(width))
    col1 = bb.add(col0, i64(width))
    col1 = bb.select(bb.icmp_signed("<", col1, i64(m)), col1, i64(m))
    bb.call(gemm, [
        i64(n), bb.sub(col1, col0), i64(k),
        bb.gep(kb.pointers[1], [i64(a.offset)]), i64(a.strides[0]), i64(a.strides[1]),
        bb.gep(kb.pointers[2], [bb.add(i64(b.offset), bb.mul(col0, i64(b.strides[1])))]),
        i64(b.strides[0]), i64(b.strides[1]),
        bb.gep(kb.pointers[0], [bb.add(i64(out.offset), bb.mul(col0, i64(out.strides[1] or 1)))]),
        i64(out.strides[0] or m), ir.Constant(ir.IntType(32), 1),
        bb.gep(kb.pointers[3], [bb.mul(blk, i64(ws))])])
    nxt = bb.add(blk, i64(1))
    blk.add_incoming(nxt, bb.block)
    bb.cbranch(bb.icmp_signed("<", nxt, kb.end), loop, after)
    bb.position_at_end(after)
    kb.finish()
    flops = 2 * n * m * k
    return K.Kernel(name, blocks, flops // 8, label=label,
                    detail={"flops": flops, "blocks": blocks,
                            "workspace_bytes": ws * blocks * np.dtype(dtype).itemsize})


def _emit_step_function(module, name, kernels, threads):
    """`void name(i8* args)`: the body's kernels in order (internal)."""
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [K.I8P]), name)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    (ctx,) = fn.args
    emit_kernel_calls(b, module, kernels, threads, ctx)
    b.ret_void()
    return fn


class _Emitter:
    """Fills the body's argument array and emits the loop over the steps; with a row split,
    for row block `chunk` (an IR value): row values shifted by chunk * rows, accumulators
    private to the block, its own arena and GEMM workspace."""

    def __init__(self, b, low, sp: ScanPlan, args, slots, chunk=None, ws=0):
        self.b, self.low, self.sp, self.args, self.slots = b, low, sp, args, slots
        self.chunk, self.ws = chunk, ws

    def outer_base(self, slot: int):
        return self.b.load(self.b.gep(self.args, [ir.Constant(K.I64, slot)]))

    def shift(self, view: View, axis: int, is_row: bool = True):
        """Elements from row 0 to this block's first row along `axis` (None: no split)."""
        if self.chunk is None or not is_row:
            return None
        step = self.sp.split.rows * view.strides[axis]
        return self.b.mul(self.chunk, ir.Constant(K.I64, step))

    def pointer(self, view: View, row=None, shift=None):
        """i8* to element 0 of an outer planning view (to row `row` along axis 0, moved by
        `shift` elements)."""
        final = self.low.final_view(view)
        size = np.dtype(view.dtype).itemsize
        offset = ir.Constant(K.I64, final.offset * size)
        if row is not None:
            offset = self.b.add(offset, self.b.mul(row, ir.Constant(K.I64,
                                                                    final.strides[0] * size)))
        if shift is not None:
            offset = self.b.add(offset, self.b.mul(shift, ir.Constant(K.I64, size)))
        return self.b.gep(self.outer_base(final.slot), [offset])

    def set_slot(self, slot: int, pointer) -> None:
        self.b.store(pointer, self.b.gep(self.slots, [ir.Constant(K.I64, slot)]))

    def carry_pointers(self, k, enter, leave, odd):
        """(in, out) pointers of carry k for this step (and row block)."""
        b, sp = self.b, self.sp
        options = [sp.carries[k]] + sp.private.get(k, [])
        row = self.chunk is not None and k not in sp.private
        chosen = []
        for c in options:
            if c[0] == "history":
                pair = (self.pointer(c[1], enter, self.shift(c[1], 1, row)),
                        self.pointer(c[1], leave, self.shift(c[1], 1, row)))
            elif c[0] == "inplace":
                p = self.pointer(c[1], None, self.shift(c[1], 0, row))
                pair = (p, p)
            else:
                sh = self.shift(c[1], 0, row)
                a, bb = self.pointer(c[1], None, sh), self.pointer(c[2], None, sh)
                pair = (b.select(odd, bb, a), b.select(odd, a, bb))
            chosen.append(pair)
        result = chosen[0]
        for j, pair in enumerate(chosen[1:], start=1):      # block j uses private copy j
            is_j = b.icmp_signed("==", self.chunk, ir.Constant(K.I64, j))
            result = (b.select(is_j, pair[0], result[0]), b.select(is_j, pair[1], result[1]))
        return result

    def run(self, step_fn) -> None:
        b, sp, blow = self.b, self.sp, self.sp.body
        body = sp.node.attr("body")
        nc, nx = body.n_carry, body.n_x
        n_in = len(blow.inputs)
        for j, view in enumerate(sp.consts):
            row = self.chunk is not None and sp.split.is_row(body.consts[j])
            self.set_slot(nc + nx + j, self.pointer(view, None, self.shift(view, 0, row)))
        for slot, outer in sp.storage.items():
            self.set_slot(slot, self.outer_base(outer.slot))
        block = self.low.final_view(View(sp.block.id, 0, (1,), (1,), "float64"))
        arena_offset = ir.Constant(K.I64, block.offset * 8 + sp.body_arena[0])
        work = self.outer_base(self.low.work_slot)
        if self.chunk is not None:
            stride = sp.body_arena[1] - sp.body_arena[0] if len(sp.body_arena) > 1 else 0
            arena_offset = b.add(arena_offset, b.mul(self.chunk, ir.Constant(K.I64, stride)))
            work = b.gep(work, [b.mul(self.chunk, ir.Constant(K.I64, self.ws))])
        self.set_slot(blow.arena_slot, b.gep(self.outer_base(block.slot), [arena_offset]))
        self.set_slot(blow.work_slot, work)
        T = sp.length
        pre = b.block
        loop = b.append_basic_block("scan.loop")
        after = b.append_basic_block("scan.end")
        b.branch(loop)
        b.position_at_end(loop)
        p = b.phi(K.I64, name="step")
        p.add_incoming(ir.Constant(K.I64, 0), pre)
        t = b.sub(ir.Constant(K.I64, T - 1), p) if sp.reverse else p
        one = ir.Constant(K.I64, 1)
        enter, leave = (b.add(t, one), t) if sp.reverse else (t, b.add(t, one))
        odd = b.trunc(b.and_(p, one), ir.IntType(1))
        for k in range(nc):
            p_in, p_out = self.carry_pointers(k, enter, leave, odd)
            self.set_slot(k, p_in)
            self.set_slot(n_in + k, p_out)
        for j, view in enumerate(sp.xs):
            row = self.chunk is not None and sp.split.is_row(body.xs[j])
            self.set_slot(nc + j, self.pointer(view, t, self.shift(view, 1, row)))
        for j, view in enumerate(sp.rows):
            self.set_slot(n_in + nc + j, self.pointer(view, t, self.shift(view, 1)))
        b.call(step_fn, [b.bitcast(self.slots, K.I8P)])
        nxt = b.add(p, one)
        p.add_incoming(nxt, b.block)
        b.cbranch(b.icmp_signed("<", nxt, ir.Constant(K.I64, T)), loop, after)
        b.position_at_end(after)
