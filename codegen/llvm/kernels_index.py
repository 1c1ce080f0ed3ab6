"""Kernels that index with data: one_hot, gather, scatter_add.

Index ranges are checked before native code runs (labels from graph inputs are checked by
the Executable in Python; constants when compiling), so these kernels trust their indices.
"""

from __future__ import annotations

import llvmlite.ir as ir

from graphdl.codegen.llvm.emit import I64
from graphdl.codegen.llvm.kernels import Kernel, KernelBuilder
from graphdl.codegen.llvm.loops import View, element_index, loop_nest


def _outer(shape):
    return shape if shape else (1,)


def emit_one_hot(module, name, out: View, labels: View, label="") -> Kernel:
    """out[..., c] = (labels[...] == c)."""
    lab_strides = tuple(labels.strides) + (0,)
    kb = KernelBuilder(module, name, [out, labels], writes=[0], label=label)

    def body(idx):
        v = kb.load(1, element_index(kb.b, idx, lab_strides, labels.offset))
        hit = kb.b.icmp_signed("==", v, idx[-1])
        kb.store(0, element_index(kb.b, idx, out.strides, out.offset), hit)

    loop_nest(kb.b, _outer(out.shape), kb.begin, kb.end, body)
    kb.finish()
    return Kernel(name, _outer(out.shape)[0], out.size, label=label)


def _replace_axis(kb, idx, axis, value):
    return [value if d == axis else i for d, i in enumerate(idx)]


def emit_gather(module, name, out: View, x: View, index: View, axis: int, label="") -> Kernel:
    """out[idx] = x[idx with idx[axis] = index[idx]]."""
    kb = KernelBuilder(module, name, [out, x, index], writes=[0], label=label)

    def body(idx):
        j = kb.load(2, element_index(kb.b, idx, index.strides, index.offset))
        src = element_index(kb.b, _replace_axis(kb, idx, axis, j), x.strides, x.offset)
        kb.store(0, element_index(kb.b, idx, out.strides, out.offset), kb.load(1, src))

    loop_nest(kb.b, _outer(out.shape), kb.begin, kb.end, body)
    kb.finish()
    return Kernel(name, _outer(out.shape)[0], out.size, label=label)


def emit_scatter_add(module, name, out: View, updates: View, index: View, axis: int,
                     label="") -> Kernel:
    """out = zeros; out[idx with idx[axis] = index[idx]] += updates[idx] (sequential)."""
    kb = KernelBuilder(module, name, [out, updates, index], writes=[0], label=label)
    zero = ir.Constant(kb.pointers[0].type.pointee, 0.0)

    def clear(idx):
        kb.store(0, element_index(kb.b, idx, out.strides, out.offset), zero)

    loop_nest(kb.b, _outer(out.shape), ir.Constant(I64, 0),
              ir.Constant(I64, _outer(out.shape)[0]), clear, name="z")

    def body(idx):
        j = kb.load(2, element_index(kb.b, idx, index.strides, index.offset))
        dst = element_index(kb.b, _replace_axis(kb, idx, axis, j), out.strides, out.offset)
        v = kb.load(1, element_index(kb.b, idx, updates.strides, updates.offset))
        kb.store(0, dst, kb.b.fadd(kb.load(0, dst), v))

    shape = _outer(updates.shape)
    loop_nest(kb.b, shape, ir.Constant(I64, 0), ir.Constant(I64, shape[0]), body)
    kb.finish()
    return Kernel(name, 1, updates.size, parallel=False, label=label)
