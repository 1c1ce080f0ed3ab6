"""Kernels of the convolution and randomness primitives: unwindows (col2im), random_uniform.

`windows` needs no kernel (it is a View, loops.View.windows); convolution itself is views and
GEMM calls. Both kernels here are parallel over their outermost axis:

- unwindows clears its output rows, then adds every window element back at its place. Rows
  of the leading (batch, channel) axes never share an element, so a thread range owns whole
  rows; within a row the adds are sequential (windows overlap).
- random_uniform computes splitmix64 of (key, step, flat index) in wrapping i64 arithmetic,
  bit for bit what graphdl.ops.random.numpy_random_uniform computes with NumPy's uint64.

`KERNELS` maps an op name to its emitter, `emit(module, name, out, operands, node, label)`;
codegen/llvm/lower.py dispatches to it.
"""

from __future__ import annotations

import llvmlite.ir as ir

from graphdl.codegen.llvm.emit import F32, F64, I64
from graphdl.codegen.llvm.kernels import Kernel, KernelBuilder
from graphdl.codegen.llvm.loops import View, element_index, loop_nest
from graphdl.ops.random import GOLDEN, MIX1, MIX2


def _outer(shape):
    return tuple(shape) if shape else (1,)


def emit_unwindows(module, name, out: View, operands, node, label="") -> Kernel:
    """out = zeros; out[..., o*stride + k*dilation] += y[..., k, o] (col2im)."""
    (y,) = operands
    kernel, stride, dilation = node.attr("kernel"), node.attr("stride"), node.attr("dilation")
    lead = len(out.shape) - len(kernel)
    # the windows of `out` address, for each element of y, the element it is added to
    target = out.windows(kernel, stride, dilation)
    kb = KernelBuilder(module, name, [out, y], writes=[0], label=label)
    zero = ir.Constant(kb.pointers[0].type.pointee, 0.0)
    parallel = lead > 0 and out.shape[0] > 1
    begin = kb.begin if parallel else ir.Constant(I64, 0)

    def clear(idx):
        kb.store(0, element_index(kb.b, idx, out.strides, out.offset), zero)

    def add(idx):
        dst = element_index(kb.b, idx, target.strides, target.offset)
        v = kb.load(1, element_index(kb.b, idx, y.strides, y.offset))
        kb.store(0, dst, kb.b.fadd(kb.load(0, dst), v))

    out_shape, y_shape = _outer(out.shape), _outer(y.shape)
    loop_nest(kb.b, out_shape, begin, kb.end if parallel else ir.Constant(I64, out_shape[0]),
              clear, name="z")
    loop_nest(kb.b, y_shape, begin, kb.end if parallel else ir.Constant(I64, y_shape[0]),
              add)
    kb.finish()
    trips = out.shape[0] if parallel else 1
    return Kernel(name, trips, y.size + out.size, parallel=parallel, label=label)


def _signed(value: int) -> int:
    """A uint64 as the i64 constant with the same bits."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _mix64(b: ir.IRBuilder, z):
    """splitmix64's finalizer in wrapping i64 arithmetic (no nsw/nuw flags)."""
    for shift, mult in ((30, MIX1), (27, MIX2)):
        z = b.mul(b.xor(z, b.lshr(z, ir.Constant(I64, shift))), ir.Constant(I64, _signed(mult)))
    return b.xor(z, b.lshr(z, ir.Constant(I64, 31)))


def emit_random_uniform(module, name, out: View, operands, node, label="") -> Kernel:
    """out[i] = uniform(key, step, i) for the row-major flat index i (see ops/random.py)."""
    (step,) = operands
    kb = KernelBuilder(module, name, [out, step], writes=[0], label=label)
    b = kb.b
    golden = ir.Constant(I64, _signed(GOLDEN))
    s = kb.load(1, ir.Constant(I64, step.offset))
    base = _mix64(b, b.xor(ir.Constant(I64, _signed(node.attr("key"))),
                           _mix64(b, b.add(s, golden))))
    if out.dtype == "float32":
        ftype, shift, scale = F32, 40, 2.0 ** -24
    else:
        ftype, shift, scale = F64, 11, 2.0 ** -53
    size = out.size

    def body(idx):
        (i,) = idx
        z = _mix64(b, b.add(base, b.mul(b.add(i, ir.Constant(I64, 1)), golden)))
        u = b.fmul(b.uitofp(b.lshr(z, ir.Constant(I64, shift)), ftype),
                   ir.Constant(ftype, scale))
        kb.store(0, b.add(ir.Constant(I64, out.offset), i), u)

    if not out.is_contiguous:
        raise NotImplementedError("random_uniform writes a contiguous buffer")
    loop_nest(b, (size,), kb.begin, kb.end, body)
    kb.finish()
    return Kernel(name, size, size * 8, label=label)


KERNELS = {
    "unwindows": emit_unwindows,
    "random_uniform": emit_random_uniform,
}
