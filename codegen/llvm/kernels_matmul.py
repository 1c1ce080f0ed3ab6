"""The matmul kernel: batched calls of the packed GEMM (codegen/llvm/gemm.py) over views.

Operands are strided views, so `x @ W.T` and `x.T @ gy` in the backward pass reach the GEMM
as strides, never as copies. Batch dimensions that are contiguous with the rows of `a`
(a batch of row blocks times one matrix `b`) become one tall GEMM. The kernel's parallel
range is a set of column blocks of the output; each block uses its own slice of the GEMM
workspace, indexed by the block number, so concurrently running blocks never share one.
"""

from __future__ import annotations

import itertools

import llvmlite.ir as ir
import numpy as np

from graphdl.codegen.llvm.emit import I64, ir_type
from graphdl.codegen.llvm.kernels import Kernel, KernelBuilder
from graphdl.codegen.llvm.loops import View

I32 = ir.IntType(32)


def _gemm_function(module, dtype):
    from graphdl.codegen.llvm import runtime
    return runtime.declare_gemm(module, dtype)


def workspace_elements(dtype: str) -> int:
    """Scratch elements one GEMM call needs for its packed panels."""
    from graphdl.codegen.llvm import gemm
    return gemm.workspace_elements(dtype)


def _fold_batch(out: View, a: View, b: View):
    """(batch dims, rows) of a and out folded into one row dim when b has no batch."""
    nb = len(out.shape) - 2
    if nb == 0 or any(s != 0 for s in b.strides[:nb]):
        return None
    rows = int(np.prod(out.shape[:-1]))
    for view in (a, out):
        acc = view.strides[-2]
        for d, s in zip(reversed(view.shape[:-1]), reversed(view.strides[:-1])):
            if d != 1 and s != acc:
                return None
            acc *= d
    return rows


def emit_matmul(module, name, out: View, a: View, b: View, blocks: int, label="") -> Kernel:
    """out = a @ b with NumPy batch broadcasting; `blocks` column blocks run in parallel."""
    dtype = out.dtype
    a = a.broadcast(out.shape[:-2] + a.shape[-2:])
    b = b.broadcast(out.shape[:-2] + b.shape[-2:])
    n, k = a.shape[-2], a.shape[-1]
    m = b.shape[-1]
    ws_view = View(_WORK_SLOT[0], 0, (1,), (1,), dtype)
    kb = KernelBuilder(module, name, [out, a, b, ws_view], writes=[0, 3], label=label)
    gemm = _gemm_function(module, dtype)
    folded = _fold_batch(out, a, b)
    batches = [()] if folded else list(itertools.product(*(range(d) for d in
                                                          out.shape[:-2])))
    rows = folded or n
    ws = workspace_elements(dtype)
    width = -(-m // blocks) if blocks else m
    # Round column blocks to a multiple of 64 so that every block but the last stays on the
    # GEMM's register-tile grid.
    width = max(64, -(-width // 64) * 64)
    blocks = max(1, -(-m // width))
    b_ = kb.b

    def offset(view, batch):
        return view.offset + sum(i * s for i, s in zip(batch, view.strides))

    # for block in [begin, end): columns [block*width, min(m, (block+1)*width))
    pre = b_.block
    loop = b_.append_basic_block("blk.loop")
    after = b_.append_basic_block("blk.end")
    b_.cbranch(b_.icmp_signed("<", kb.begin, kb.end), loop, after)
    b_.position_at_end(loop)
    blk = b_.phi(I64)
    blk.add_incoming(kb.begin, pre)
    col0 = b_.mul(blk, ir.Constant(I64, width))
    col1 = b_.add(col0, ir.Constant(I64, width))
    col1 = b_.select(b_.icmp_signed("<", col1, ir.Constant(I64, m)), col1, ir.Constant(I64, m))
    ncols = b_.sub(col1, col0)
    work = b_.gep(kb.pointers[3], [b_.mul(blk, ir.Constant(I64, ws))])
    for batch in batches:
        a_ptr = b_.gep(kb.pointers[1], [ir.Constant(I64, offset(a, batch))])
        b_off = b_.add(ir.Constant(I64, offset(b, batch)),
                       b_.mul(col0, ir.Constant(I64, b.strides[-1])))
        c_off = b_.add(ir.Constant(I64, offset(out, batch)),
                       b_.mul(col0, ir.Constant(I64, out.strides[-1] or 1)))
        b_.call(gemm, [
            ir.Constant(I64, rows), ncols, ir.Constant(I64, k),
            a_ptr, ir.Constant(I64, a.strides[-2]), ir.Constant(I64, a.strides[-1]),
            b_.gep(kb.pointers[2], [b_off]), ir.Constant(I64, b.strides[-2]),
            ir.Constant(I64, b.strides[-1]),
            b_.gep(kb.pointers[0], [c_off]), ir.Constant(I64, out.strides[-2] or m),
            ir.Constant(I32, 0), work])
    nxt = b_.add(blk, ir.Constant(I64, 1))
    blk.add_incoming(nxt, b_.block)
    b_.cbranch(b_.icmp_signed("<", nxt, kb.end), loop, after)
    b_.position_at_end(after)
    kb.finish()
    flops = 2 * int(np.prod(out.shape)) * k
    itemsize = 4 if dtype == "float32" else 8
    return Kernel(name, blocks, flops // 8, label=label,
                  detail={"flops": flops, "blocks": blocks,
                          "workspace_bytes": ws * blocks * itemsize})


# The slot of the shared GEMM workspace; set by the lowering before kernels are emitted.
_WORK_SLOT = [0]


def set_workspace_slot(slot: int) -> None:
    """Tell the matmul emitter which argument slot holds the GEMM workspace."""
    _WORK_SLOT[0] = slot
