"""One kernel per materialized node: loop nests over strided views, emitted with llvmlite.ir.

Every kernel is a function `void kN(i8* args, i64 begin, i64 end)` over a range of its
outermost loop, so the main function can run it directly or split it across threads. The
kernel loads its buffer pointers from the argument array and calls an always-inline body
whose pointer parameters are `noalias` where the buffers cannot overlap; inlining turns
that into alias scopes, which is what lets LLVM vectorize without runtime checks.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import llvmlite.ir as ir
import numpy as np
import sympy as sp

from graphdl.codegen.llvm import target
from graphdl.codegen.llvm.emit import F32, F64, FLAGS, I1, I8, I64, ScalarEmitter, ir_type
from graphdl.codegen.llvm.loops import View, collapse, element_index, loop_nest
from graphdl.ops.registry import I

I8P = I8.as_pointer()
KERNEL_TYPE = ir.FunctionType(ir.VoidType(), [I8P, I64, I64])   # (args as i8*, begin, end)


@dataclass
class Kernel:
    """A kernel function and how to call it: its trip count and per-iteration cost."""

    name: str
    trips: int                 # iterations of the outermost (splittable) loop
    work: int                  # rough element count, to decide on threading
    parallel: bool = True
    label: str = ""
    detail: dict = field(default_factory=dict)


class KernelBuilder:
    """Builds one kernel: a wrapper loading pointers and an inlined noalias body."""

    def __init__(self, module: ir.Module, name: str, views, writes, label=""):
        self.module = module
        self.name = name
        self.views = list(views)
        self.label = label
        ptr_types = [ir_type(v.dtype).as_pointer() for v in self.views]
        body_type = ir.FunctionType(ir.VoidType(), ptr_types + [I64, I64])
        self.body = ir.Function(module, body_type, name + ".body")
        self.body.linkage = "internal"
        self.body.attributes.add("alwaysinline")
        self.body.attributes.add("nounwind")
        written = {self.views[w].slot for w in writes}
        for k, (arg, view) in enumerate(zip(self.body.args[:-2], self.views)):
            overlapping = view.slot in written and k not in writes
            if not overlapping and sum(1 for w in writes if self.views[w].slot == view.slot) <= 1:
                arg.add_attribute("noalias")
        self.begin, self.end = self.body.args[-2], self.body.args[-1]
        self.pointers = list(self.body.args[:-2])
        self.b = ir.IRBuilder(self.body.append_basic_block("entry"))
        self._wrapper()

    def _wrapper(self):
        fn = ir.Function(self.module, KERNEL_TYPE, self.name)
        fn.attributes.add("nounwind")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        ctx, begin, end = fn.args
        args = b.bitcast(ctx, I8P.as_pointer())
        ptrs = []
        for v in self.views:
            raw = b.load(b.gep(args, [ir.Constant(I64, v.slot)]))
            ptrs.append(b.bitcast(raw, ir_type(v.dtype).as_pointer()))
        b.call(self.body, ptrs + [begin, end])
        b.ret_void()
        for f in (fn, self.body):
            f.attributes._known = f.attributes._known | {"\"prefer-vector-width\"=\"%s\""
                                                         % target.prefer_vector_width()}
            f.attributes.add("\"prefer-vector-width\"=\"%s\"" % target.prefer_vector_width())

    def load(self, k: int, index):
        """Load element `index` of view k."""
        return self.b.load(self.b.gep(self.pointers[k], [index]))

    def store(self, k: int, index, value):
        """Store a value (converted to view k's dtype) at element `index` of view k."""
        self.b.store(convert(self.b, value, self.views[k].dtype),
                     self.b.gep(self.pointers[k], [index]))

    def finish(self):
        self.b.ret_void()


def convert(b: ir.IRBuilder, value, dtype: str):
    """Convert an emitted value (i1, i8, i64, float, double) to a buffer dtype."""
    t = ir_type(dtype)
    if value.type == t:
        return value
    if value.type == I1:
        return b.zext(value, I8) if t == I8 else (
            b.zext(value, I64) if t == I64 else b.uitofp(value, t))
    if isinstance(value.type, ir.IntType):
        if t == I8:
            return b.zext(b.icmp_unsigned("!=", value, ir.Constant(value.type, 0)), I8)
        if isinstance(t, ir.IntType):
            return b.sext(value, t) if value.type.width < t.width else b.trunc(value, t)
        return b.sitofp(value, t) if value.type.width > 8 else b.uitofp(value, t)
    if t == I8:
        return b.zext(b.fcmp_unordered("!=", value, ir.Constant(value.type, 0.0)), I8)
    if t == I64:
        return b.fptosi(value, I64)
    if value.type == F32 and t == F64:
        return b.fpext(value, F64)
    return b.fptrunc(value, F32)


def compute_type(dtypes) -> ir.Type:
    """The float type arithmetic runs in: double if any float64 or int64 operand is involved."""
    return F64 if any(d in ("float64", "int64") for d in dtypes) else F32


# -- elementwise -----------------------------------------------------------------------------
def emit_elementwise(module, name, out: View, inputs, expr, label="") -> Kernel:
    """out[i] = expr(inputs[k][i]) over the output shape; inputs are Views or Python numbers.

    Numbers become IR constants of the kernel's type (never sympy Floats folded into the
    expression: sympy would turn x / 7 into x * 0.142857..., which is not x / 7 in floats).
    """
    return emit_elementwise_group(module, name, [(out, list(inputs), expr)], label)


def emit_elementwise_group(module, name, members, label="") -> Kernel:
    """Several elementwise computations of one shape in one loop: [(out, inputs, expr)].

    Member k may read what an earlier member wrote (the same View): it gets the value from
    the register instead of memory. The caller guarantees that every buffer written in the
    group is accessed through one and the same view (so iteration i touches only element i
    of it), which makes the fused loop compute what the separate loops did.
    """
    shape = members[0][0].shape
    views: list = []
    slots: dict = {}

    def slot_of(view):
        key = (view.slot, view.offset, view.strides, view.dtype)
        if key not in slots:
            slots[key] = len(views)
            views.append(view)
        return slots[key]

    plan = []
    for out, inputs, expr in members:
        out_k = slot_of(out)
        ins = [(I[k], slot_of(v.broadcast(shape)) if isinstance(v, View) else v)
               for k, v in enumerate(inputs)]
        plan.append((out_k, ins, expr))
    writes = sorted({p[0] for p in plan})
    # Loop in the order the first output is laid out (a gradient written through a pooling
    # window view has its window axes innermost in memory), then unroll a tiny innermost
    # axis into the body so the loop around it vectorizes with interleaved accesses.
    perm = sorted(range(len(shape)), key=lambda i: -abs(members[0][0].strides[i]))
    cshape, strides = collapse(tuple(shape[i] for i in perm),
                               [[v.strides[i] for i in perm] for v in views])
    unroll = cshape[-1] if len(cshape) > 1 and cshape[-1] <= 4 else 0
    kb = KernelBuilder(module, name, views, writes=writes, label=label)

    def body(idx):
        in_register: dict = {}
        for out_k, ins, expr in plan:
            dtypes = [views[out_k].dtype] + [views[v].dtype for _, v in ins if isinstance(v, int)]
            ftype = compute_type(dtypes)
            values = {}
            for sym, v in ins:
                if not isinstance(v, int):
                    values[sym] = ir.Constant(ftype, float(v))
                elif v in in_register:
                    values[sym] = in_register[v]
                else:
                    values[sym] = kb.load(v, element_index(kb.b, idx, strides[v],
                                                           views[v].offset))
            result = ScalarEmitter(kb.b, ftype, values).emit(expr)
            stored = convert(kb.b, result, views[out_k].dtype)
            kb.b.store(stored, kb.b.gep(kb.pointers[out_k], [
                element_index(kb.b, idx, strides[out_k], views[out_k].offset)]))
            in_register[out_k] = stored

    if unroll:
        loop_nest(kb.b, cshape[:-1], kb.begin, kb.end,
                  lambda idx: [body(list(idx) + [ir.Constant(I64, j)]) for j in range(unroll)])
    else:
        loop_nest(kb.b, cshape, kb.begin, kb.end, body)
    kb.finish()
    n_in = sum(1 for k in range(len(views)) if k not in writes)
    return Kernel(name, cshape[0], members[0][0].size * max(1, n_in + len(writes)),
                  label=label)


def emit_fill(module, name, out: View, value, label="") -> Kernel:
    """out[...] = value (a Python number)."""
    return emit_elementwise(module, name, out, [], sp.sympify(value), label=label)


# -- reductions ------------------------------------------------------------------------------
def emit_reduce(module, name, out: View, x, axes, kind: str, label="",
                producer=None) -> Kernel:
    """Sum or max over `axes` of x into out (out has x's shape with `axes` set to 1).

    x is a View, or with `producer=(inputs, expr)` the shape of an elementwise node that is
    never stored: each element is expr evaluated on the inputs (Views broadcast to that
    shape, or numbers) where the reduction reads it (softmax's exp(x - max), a pooling
    gradient's tie count).
    """
    shape_x = x.shape if isinstance(x, View) else tuple(x)
    keep_shape = tuple(1 if i in axes else d for i, d in enumerate(shape_x))
    out_b = View(out.slot, out.offset, keep_shape,
                 View.contiguous(0, keep_shape, out.dtype).strides, out.dtype)
    if producer is None:
        views = [out_b, x]
    else:
        p_inputs, p_expr = producer
        views = [out_b] + [v.broadcast(shape_x) for v in p_inputs if isinstance(v, View)]
        x = View(-1, 0, shape_x, (0,) * len(shape_x), out.dtype)     # its shape only
    kb = KernelBuilder(module, name, views, writes=[0], label=label)
    ftype = ir_type(out.dtype) if out.dtype in ("float32", "float64") else I64
    is_float = out.dtype in ("float32", "float64")
    identity = (ir.Constant(ftype, 0.0) if is_float else ir.Constant(I64, 0)) \
        if kind == "sum" else ir.Constant(ftype, float("-inf"))
    # Split the loop nest: parallel over a leading kept axis, accumulate in input order.
    inner_reduced = (x.ndim if hasattr(x, "ndim") else len(x.shape)) - 1 in axes
    shape = x.shape
    parallel = 0 not in axes and len(shape) > 0

    def combine(acc, v):
        if kind == "sum":
            if is_float:
                return kb.b.fadd(acc, v, flags=FLAGS + ("reassoc",))
            return kb.b.add(acc, v)
        take = kb.b.or_(kb.b.fcmp_ordered(">", v, acc), kb.b.fcmp_unordered("uno", v, v))
        return kb.b.select(take, v, acc)

    def load_x(idx):
        if producer is not None:
            return _evaluate(idx)
        v = kb.load(1, element_index(kb.b, idx, x.strides, x.offset))
        return convert(kb.b, v, out.dtype) if v.type != ftype else v

    def _evaluate(idx):
        p_inputs, p_expr = producer
        ctype = compute_type([out.dtype] + [v.dtype for v in p_inputs if isinstance(v, View)])
        values, k = {}, 1
        for j, v in enumerate(p_inputs):
            if isinstance(v, View):
                values[I[j]] = kb.load(k, element_index(kb.b, idx, views[k].strides,
                                                        views[k].offset))
                k += 1
            else:
                values[I[j]] = ir.Constant(ctype, float(v))
        return convert(kb.b, ScalarEmitter(kb.b, ctype, values).emit(p_expr), out.dtype)

    # Initialise the output rows this range owns, then accumulate.
    out_outer = [d for i, d in enumerate(keep_shape)]

    def init_body(idx):
        kb.store(0, element_index(kb.b, idx, out_b.strides, out.offset), identity)

    if parallel:
        loop_nest(kb.b, out_outer, kb.begin, kb.end, init_body, name="z")
    else:
        loop_nest(kb.b, out_outer, ir.Constant(I64, 0), ir.Constant(I64, out_outer[0]),
                  init_body, name="z")

    begin = kb.begin if parallel else ir.Constant(I64, 0)
    end = kb.end if parallel else ir.Constant(I64, shape[0])
    window = int(np.prod([shape[a] for a in axes], dtype=np.int64))
    if not inner_reduced and parallel and window <= 16:
        # Small reduced axes inside (a pooling window): per output element, the window's
        # values are combined in a register and stored once; the loop over the kept axes
        # vectorizes with interleaved loads (stride-2 columns of a 2x2 window).
        kept = [i for i in range(len(shape)) if i not in axes]
        reduced = [range(shape[a]) for a in axes]

        def window_body(idx):
            full = [None] * len(shape)
            for i, v in zip(kept, idx):
                full[i] = v
            acc = identity
            for combo in itertools.product(*reduced):
                for a, j in zip(axes, combo):
                    full[a] = ir.Constant(I64, j)
                acc = combine(acc, load_x(list(full)))
            oidx = [full[i] if i in kept else ir.Constant(I64, 0) for i in range(len(shape))]
            kb.store(0, element_index(kb.b, oidx, out_b.strides, out.offset), acc)

        loop_nest(kb.b, [shape[i] for i in kept], begin, end, window_body, name="w")
    elif inner_reduced and len(shape) >= 1:
        outer, inner = shape[:-1], shape[-1]

        def outer_body(idx):
            pre = kb.b.block
            loop = kb.b.append_basic_block("r.loop")
            after = kb.b.append_basic_block("r.end")
            kb.b.branch(loop)
            kb.b.position_at_end(loop)
            j = kb.b.phi(I64)
            acc = kb.b.phi(ftype)
            j.add_incoming(ir.Constant(I64, 0), pre)
            acc.add_incoming(identity, pre)
            v = load_x(list(idx) + [j])
            new = combine(acc, v)
            nxt = kb.b.add(j, ir.Constant(I64, 1))
            j.add_incoming(nxt, loop)
            acc.add_incoming(new, loop)
            kb.b.cbranch(kb.b.icmp_signed("<", nxt, ir.Constant(I64, inner)), loop, after)
            kb.b.position_at_end(after)
            oidx = element_index(kb.b, list(idx) + [ir.Constant(I64, 0)], out_b.strides,
                                 out.offset)
            kb.store(0, oidx, combine(kb.load(0, oidx), new))

        if outer:
            loop_nest(kb.b, outer, begin, end, outer_body, name="o")
        else:
            outer_body([])
    else:
        def body(idx):
            oidx = element_index(kb.b, idx, out_b.strides, out.offset)
            kb.store(0, oidx, combine(kb.load(0, oidx), load_x(idx)))

        loop_nest(kb.b, shape, begin, end, body)
    kb.finish()
    trips = shape[0] if parallel and shape else 1
    return Kernel(name, trips, x.size, parallel=parallel, label=label)


def emit_argmax(module, name, out: View, x: View, axis: int, label="",
                compare: View | None = None) -> Kernel:
    """Index of the first maximum along `axis` (NaN counts as the maximum, as NumPy).

    With `compare` (int64 labels shaped like the output), stores argmax != label instead:
    the per-sample 0/1 error.
    """
    perm = [i for i in range(len(x.shape)) if i != axis] + [axis]
    xt = x.transpose(perm)
    outer, n = xt.shape[:-1], xt.shape[-1]
    out_v = View(out.slot, out.offset, outer, View.contiguous(0, outer, out.dtype).strides,
                 out.dtype)
    views = [out_v, xt] + ([compare] if compare is not None else [])
    kb = KernelBuilder(module, name, views, writes=[0], label=label)
    ftype = ir_type(x.dtype)

    def argmax_at(idx):
        pre = kb.b.block
        first = kb.load(1, element_index(kb.b, list(idx) + [ir.Constant(I64, 0)],
                                         xt.strides, xt.offset))
        if n <= 1:
            return ir.Constant(I64, 0)
        loop = kb.b.append_basic_block("a.loop")
        after = kb.b.append_basic_block("a.end")
        kb.b.branch(loop)
        kb.b.position_at_end(loop)
        j, best, arg = kb.b.phi(I64), kb.b.phi(ftype), kb.b.phi(I64)
        for phi, init in ((j, ir.Constant(I64, 1)), (best, first), (arg, ir.Constant(I64, 0))):
            phi.add_incoming(init, pre)
        v = kb.load(1, element_index(kb.b, list(idx) + [j], xt.strides, xt.offset))
        best_is_nan = kb.b.fcmp_unordered("uno", best, best)
        better = kb.b.or_(kb.b.fcmp_ordered(">", v, best), kb.b.fcmp_unordered("uno", v, v))
        take = kb.b.and_(kb.b.not_(best_is_nan), better)
        new_best, new_arg = kb.b.select(take, v, best), kb.b.select(take, j, arg)
        nxt = kb.b.add(j, ir.Constant(I64, 1))
        for phi, value in ((j, nxt), (best, new_best), (arg, new_arg)):
            phi.add_incoming(value, loop)
        kb.b.cbranch(kb.b.icmp_signed("<", nxt, ir.Constant(I64, n)), loop, after)
        kb.b.position_at_end(after)
        return new_arg

    def body(idx):
        result = argmax_at(idx)
        if compare is not None:
            lab = kb.load(2, element_index(kb.b, idx, compare.strides, compare.offset))
            result = kb.b.icmp_signed("!=", result, lab)
        kb.store(0, element_index(kb.b, idx, out_v.strides, out.offset), result)

    loop_nest(kb.b, outer if outer else (1,), kb.begin, kb.end,
              body if outer else (lambda idx: body([])))
    kb.finish()
    return Kernel(name, outer[0] if outer else 1, x.size, label=label)
