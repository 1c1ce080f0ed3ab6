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
from graphdl.codegen.llvm.gemm import _loop
from graphdl.codegen.llvm.kernels import Kernel, KernelBuilder
from graphdl.codegen.llvm.loops import View

I32 = ir.IntType(32)


def _for(bd, start, stop, step, tag, body):
    """for (i = start; i < stop; i += step) body(i), with gemm.py's loop builder."""
    with _loop(bd, start, stop, step, tag) as i:
        body(i)


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


DOT_MAX_N = 16          # at most this many columns of out: the dot-product kernel
DOT_MIN_K = 512         # and at least this long a contraction
DOT_CHUNK_BYTES = 2048  # per row of a and column of b: N columns of a chunk stay in L1


def _dot_shaped(out: View, a: View, b: View) -> bool:
    """A long, thin product the packed GEMM serves badly: out (M, N <= 16) = a (M, K) b (K, N)
    with K >= 512 and both operands contiguous along K (a convolution's weight gradient:
    a 16 x 9 result summed over 64 * 28 * 28 pixels). The GEMM would pad N to its register
    tile and pack B; dot products read both operands straight along K instead."""
    return (len(out.shape) == 2 and out.shape[1] <= DOT_MAX_N and a.shape[1] >= DOT_MIN_K
            and a.strides[1] == 1 and b.strides[0] == 1)


def emit_dot(module, name, out: View, a: View, b: View, label="") -> Kernel:
    """out = a @ b as M x N dot products of length K, vectorized along K.

    The parallel range is the rows of out. K is walked in chunks that keep a chunk of the
    row of a and the N columns of b in L2 (4096 float32); per row and chunk, N vector
    accumulators take one FMA each per loaded vector of a, then each adds its lanes into
    out[m, n]. The K % lanes tail is a scalar loop.
    """
    dtype = out.dtype
    ft = ir_type(dtype)
    lanes = 16 if dtype == "float32" else 8
    vec = ir.VectorType(ft, lanes)
    m_rows, k_len = a.shape
    n_cols = b.shape[1]
    chunk = DOT_CHUNK_BYTES // (4 if dtype == "float32" else 8)
    k_full = k_len - k_len % lanes
    kb = KernelBuilder(module, name, [out, a, b], writes=[0], label=label)
    bd = kb.b
    vname = "v%df%d" % (lanes, 32 if dtype == "float32" else 64)
    fma_name = "llvm.fma." + vname
    fma = module.globals.get(fma_name) or ir.Function(
        module, ir.FunctionType(vec, [vec] * 3), fma_name)
    accs = [bd.alloca(vec, name=f"acc{n}") for n in range(n_cols)]
    total = bd.alloca(ft, name="total")
    po, pa, pb = kb.pointers
    c = lambda v: ir.Constant(I64, v)  # noqa: E731
    zero_vec = ir.Constant(vec, [0.0] * lanes)

    def out_ptr(m, n):
        return bd.gep(po, [bd.add(c(out.offset + n * out.strides[1]),
                                  bd.mul(m, c(out.strides[0])))])

    def a_index(m, k):
        return bd.add(bd.add(c(a.offset), bd.mul(m, c(a.strides[0]))), k)

    def b_index(n, k):
        return bd.add(c(b.offset + n * b.strides[1]), k)

    def zero_row(m):
        for n in range(n_cols):
            bd.store(ir.Constant(ft, 0.0), out_ptr(m, n))

    _for(bd, kb.begin, kb.end, 1, "zero", zero_row)

    def chunk_body(k0):
        k1 = bd.add(k0, c(chunk))
        k1 = bd.select(bd.icmp_signed("<", k1, c(k_full)), k1, c(k_full))

        def row(m):
            for acc in accs:
                bd.store(zero_vec, acc)

            def step(k):
                va = bd.load(bd.bitcast(bd.gep(pa, [a_index(m, k)]), vec.as_pointer()),
                             align=4)
                for n, acc in enumerate(accs):
                    vb = bd.load(bd.bitcast(bd.gep(pb, [b_index(n, k)]), vec.as_pointer()),
                                 align=4)
                    bd.store(bd.call(fma, [va, vb, bd.load(acc)]), acc)

            _for(bd, k0, k1, lanes, "k", step)
            for n, acc in enumerate(accs):
                v = bd.load(acc)
                s = bd.extract_element(v, ir.Constant(ir.IntType(32), 0))
                for lane in range(1, lanes):
                    s = bd.fadd(s, bd.extract_element(v, ir.Constant(ir.IntType(32), lane)))
                p = out_ptr(m, n)
                bd.store(bd.fadd(bd.load(p), s), p)

        _for(bd, kb.begin, kb.end, 1, "m", row)

    _for(bd, c(0), c(k_full), chunk, "chunk", chunk_body)
    if k_full < k_len:
        def tail_row(m):
            for n in range(n_cols):
                bd.store(ir.Constant(ft, 0.0), total)

                def tail(k):
                    x = bd.load(bd.gep(pa, [a_index(m, k)]))
                    y = bd.load(bd.gep(pb, [b_index(n, k)]))
                    bd.store(bd.fadd(bd.load(total), bd.fmul(x, y)), total)

                _for(bd, c(k_full), c(k_len), 1, f"t{n}", tail)
                p = out_ptr(m, n)
                bd.store(bd.fadd(bd.load(p), bd.load(total)), p)

        _for(bd, kb.begin, kb.end, 1, "tail", tail_row)
    kb.finish()
    flops = 2 * m_rows * n_cols * k_len
    return Kernel(name, m_rows, flops // 8, label=label,
                  detail={"flops": flops, "blocks": m_rows, "kind": "dot"})


SMALL_MACS = 1 << 18    # at most this many multiply-adds: a small product, not packed
SMALL_MAX_N = 256


def _small_shaped(out: View, a: View, b: View) -> bool:
    """A product small enough that the GEMM's packing costs more than the arithmetic (an MLP
    layer at batch 32: 32 x 64 x 128), with a row-major B and output to read and write as
    whole vectors."""
    if len(out.shape) != 2:
        return False
    (m, k), n = a.shape, b.shape[1]
    return (m * n * k <= SMALL_MACS and 0 < n <= SMALL_MAX_N and m > 0 and k > 0
            and (b.strides[1] == 1 or n == 1) and out.strides[1] in (1, 0)
            and out.dtype == a.dtype == b.dtype)


STREAM_MIN_N = 512          # at least this many columns of out
STREAM_MAX_K = 1024         # at most this long a contraction (a tile of B stays in L1/L2)
STREAM_MAX_A = 1 << 14      # at most this many elements of A (it stays in L1/L2 throughout)
STREAM_TILE_VECTORS = 4     # columns of a tile, in vectors


def _stream_shaped(out, a: View, b: View) -> bool:
    """A short, wide product: out (M, N >= 512) = a (M, K) b (K, N) with a small A and a
    row-major B (a convolution's forward, 32 x 144 times the 144 x 12544 im2col matrix, and
    its input gradient). Packing B would copy all of it for a reuse of only M rows; the
    unpacked kernel streams B once, tile by tile, against an A that stays in cache. `out`
    None: the row-major output the lowering would allocate."""
    if len(a.shape) != 2 or len(b.shape) != 2:
        return False
    (m, k), n = a.shape, b.shape[1]
    return (n >= STREAM_MIN_N and 0 < k <= STREAM_MAX_K and 0 < m and m * k <= STREAM_MAX_A
            and b.strides[1] == 1 and a.dtype == b.dtype
            and (out is None or (len(out.shape) == 2 and out.strides[1] == 1
                                 and out.dtype == a.dtype)))


def emit_small_gemm(module, name, out: View, a: View, b: View, label="") -> Kernel:
    """out = a @ b for a small product (see _small_shaped): whole rows of out per register
    block, the parallel range the blocks of rows."""
    return _emit_unpacked(module, name, out, a, b, label, tile_vectors=None)


def emit_stream_gemm(module, name, out: View, a: View, b: View, label="") -> Kernel:
    """out = a @ b for a short, wide product (see _stream_shaped): the parallel range is
    tiles of STREAM_TILE_VECTORS vectors of columns; each tile runs every block of rows, so
    B is read from memory once and A from cache."""
    return _emit_unpacked(module, name, out, a, b, label, tile_vectors=STREAM_TILE_VECTORS)


def _emit_unpacked(module, name, out: View, a: View, b: View, label, tile_vectors) -> Kernel:
    """out = a @ b, register-blocked, nothing packed.

    A block of R rows and a tile of NV vectors of columns keeps R x NV vector accumulators
    (the last vector of the last tile masked); per k it loads the NV vectors of row k of B
    straight from B (row-major), broadcasts the R values a[r, k] (any strides) and issues
    R x NV FMAs. R is chosen so that the accumulators fit in the vector registers; a last
    block takes the M % R rows. tile_vectors None: one tile spans all N columns and the
    parallel range counts row blocks; else it counts tiles, each running all row blocks.
    """
    dtype = out.dtype
    ft = ir_type(dtype)
    lanes = 16 if dtype == "float32" else 8
    vec = ir.VectorType(ft, lanes)
    i1v = ir.VectorType(ir.IntType(1), lanes)
    (m_rows, k_len), n_cols = a.shape, b.shape[1]
    nv_all = -(-n_cols // lanes)
    nv = nv_all if tile_vectors is None else min(tile_vectors, nv_all)
    r_rows = max(1, min(8, 24 // nv))
    width = nv * lanes                              # columns of a full tile
    tiles = -(-n_cols // width)
    last_width = n_cols - (tiles - 1) * width
    blocks = -(-m_rows // r_rows)                   # blocks of rows; the last may be shorter
    tail = m_rows - (blocks - 1) * r_rows
    kb = KernelBuilder(module, name, [out, a, b], writes=[0], label=label)
    bd = kb.b
    opaque = ir.PointerType()
    vname = "v%df%d" % (lanes, 32 if dtype == "float32" else 64)

    def intrinsic(fname, fnty):
        return module.globals.get(fname) or ir.Function(module, fnty, fname)

    fma = intrinsic("llvm.fma." + vname, ir.FunctionType(vec, [vec] * 3))
    mload = intrinsic(f"llvm.masked.load.{vname}.p0",
                      ir.FunctionType(vec, [opaque, I32, i1v, vec]))
    mstore = intrinsic(f"llvm.masked.store.{vname}.p0",
                       ir.FunctionType(ir.VoidType(), [vec, opaque, I32, i1v]))
    c = lambda v: ir.Constant(I64, v)  # noqa: E731
    align = ir.Constant(I32, 4 if dtype == "float32" else 8)
    zero = ir.Constant(vec, [0.0] * lanes)
    po, pa, pb = kb.pointers
    with bd.goto_entry_block():         # in the entry block, so that they become registers
        accs = [[bd.alloca(vec) for _ in range(nv)] for _ in range(r_rows)]

    def vptr(base, index):
        return bd.bitcast(bd.gep(base, [index]), opaque)

    def block(row0, rows, col0, cols):
        """out[row0:row0+rows, col0:col0+cols] (rows and cols static)."""
        nvb = -(-cols // lanes)
        full = [(v + 1) * lanes <= cols for v in range(nvb)]
        masks = [ir.Constant(i1v, [int(v * lanes + t < cols) for t in range(lanes)])
                 for v in range(nvb)]
        for row in accs[:rows]:
            for acc in row[:nvb]:
                bd.store(zero, acc)

        def step(k):
            b_row = bd.add(bd.add(c(b.offset), col0), bd.mul(k, c(b.strides[0])))
            bvecs = []
            for v in range(nvb):
                at = bd.add(b_row, c(v * lanes))
                if full[v]:
                    bvecs.append(bd.load(bd.bitcast(bd.gep(pb, [at]), vec.as_pointer()),
                                         align=4))
                else:
                    bvecs.append(bd.call(mload, [vptr(pb, at), align, masks[v], zero]))
            a_col = bd.add(c(a.offset), bd.mul(k, c(a.strides[1])))
            for r in range(rows):
                x = bd.load(bd.gep(pa, [bd.add(a_col, bd.mul(bd.add(row0, c(r)),
                                                             c(a.strides[0])))]))
                splat = bd.shuffle_vector(
                    bd.insert_element(ir.Constant(vec, None), x, ir.Constant(I32, 0)),
                    ir.Constant(vec, None), ir.Constant(ir.VectorType(I32, lanes), [0] * lanes))
                for v in range(nvb):
                    bd.store(bd.call(fma, [splat, bvecs[v], bd.load(accs[r][v])]), accs[r][v])

        _for(bd, c(0), c(k_len), 1, "k", step)
        for r in range(rows):
            o_row = bd.add(bd.add(c(out.offset), col0),
                           bd.mul(bd.add(row0, c(r)), c(out.strides[0] or n_cols)))
            for v in range(nvb):
                at = bd.add(o_row, c(v * lanes))
                value = bd.load(accs[r][v])
                if full[v]:
                    bd.store(value, bd.bitcast(bd.gep(po, [at]), vec.as_pointer()), align=4)
                else:
                    bd.call(mstore, [value, vptr(po, at), align, masks[v]])

    def branch(flag, then_fn, else_fn):
        """then_fn() if flag else else_fn(); an else_fn of None emits no code."""
        if else_fn is None:
            with bd.if_then(flag):
                then_fn()
            return
        with bd.if_else(flag) as (then, otherwise):
            with then:
                then_fn()
            with otherwise:
                else_fn()

    def row_block(blk, col0, cols):
        row0 = bd.mul(blk, c(r_rows))
        branch(bd.icmp_signed("==", blk, c(blocks - 1)),
               lambda: block(row0, tail, col0, cols),
               (lambda: block(row0, r_rows, col0, cols)) if blocks > 1 else None)

    if tile_vectors is None:
        _for(bd, kb.begin, kb.end, 1, "blk", lambda blk: row_block(blk, c(0), n_cols))
        trips = blocks
    else:
        def tile(t):
            col0 = bd.mul(t, c(width))
            rows = lambda cols: _for(bd, c(0), c(blocks), 1, "blk",  # noqa: E731
                                     lambda blk: row_block(blk, col0, cols))
            if last_width == width:
                rows(width)
            else:
                branch(bd.icmp_signed("==", t, c(tiles - 1)), lambda: rows(last_width),
                       lambda: rows(width))
        _for(bd, kb.begin, kb.end, 1, "tile", tile)
        trips = tiles
    kb.finish()
    flops = 2 * m_rows * n_cols * k_len
    return Kernel(name, trips, flops // 8, label=label,
                  detail={"flops": flops, "blocks": trips,
                          "kind": "small" if tile_vectors is None else "stream"})


def emit_matmul(module, name, out: View, a: View, b: View, blocks: int, label="") -> Kernel:
    """out = a @ b with NumPy batch broadcasting; `blocks` column blocks run in parallel."""
    if _dot_shaped(out, a, b):
        return emit_dot(module, name, out, a, b, label)
    if _small_shaped(out, a, b):
        return emit_small_gemm(module, name, out, a, b, label)
    if _stream_shaped(out, a, b):
        return emit_stream_gemm(module, name, out, a, b, label)
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
    threads = blocks
    width = -(-m // blocks) if blocks else m
    # Round column blocks to a multiple of 64 so that every block but the last stays on the
    # GEMM's register-tile grid.
    width = max(64, -(-width // 64) * 64)
    blocks = max(1, -(-m // width))
    row_step = max(1, rows)
    mr = _mr(dtype)
    last = m - (blocks - 1) * width
    if threads > 1 and (blocks < threads or 2 * last < width) and rows >= threads * mr:
        # Too few or unequal column blocks (a weight gradient: 32 x 144 over a long K):
        # split the rows instead, on the register-tile grid.
        row_step = -(-rows // (threads * mr)) * mr
        width, blocks = m, 1
    row_blocks = -(-rows // row_step)
    col_blocks = blocks
    blocks = row_blocks * col_blocks
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
    const = lambda v: ir.Constant(I64, v)  # noqa: E731
    cb = b_.urem(blk, const(col_blocks))
    row0 = b_.mul(b_.udiv(blk, const(col_blocks)), const(row_step))
    row1 = b_.add(row0, const(row_step))
    nrows = b_.sub(b_.select(b_.icmp_signed("<", row1, const(rows)), row1, const(rows)), row0)
    col0 = b_.mul(cb, ir.Constant(I64, width))
    col1 = b_.add(col0, ir.Constant(I64, width))
    col1 = b_.select(b_.icmp_signed("<", col1, ir.Constant(I64, m)), col1, ir.Constant(I64, m))
    ncols = b_.sub(col1, col0)
    work = b_.gep(kb.pointers[3], [b_.mul(blk, ir.Constant(I64, ws))])
    for batch in batches:
        a_ptr = b_.gep(kb.pointers[1], [b_.add(const(offset(a, batch)),
                                               b_.mul(row0, const(a.strides[-2])))])
        b_off = b_.add(ir.Constant(I64, offset(b, batch)),
                       b_.mul(col0, ir.Constant(I64, b.strides[-1])))
        c_off = b_.add(b_.add(const(offset(out, batch)),
                              b_.mul(row0, const(out.strides[-2] or m))),
                       b_.mul(col0, ir.Constant(I64, out.strides[-1] or 1)))
        b_.call(gemm, [
            nrows, ncols, ir.Constant(I64, k),
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


def _packed_elements(a: View, b: View) -> int:
    """Elements the GEMM packs for a (M, K) @ b (K, N): all of B, and A unless its MR-row
    tiles are read in place (row-major A; A^T when N is at most 4 register tiles wide)."""
    from graphdl.codegen.llvm import gemm
    (m, k), n = a.shape, b.shape[1]
    nr = gemm.blocking(a.dtype)["NR"]
    in_place = a.strides[1] == 1 or (a.strides[0] == 1 and n <= 4 * nr)
    return k * n + (0 if in_place else m * k)


def swap_cheaper(a: View, b: View) -> bool:
    """Whether b^T a^T (the transposed product) packs clearly less than a @ b; a dot-shaped
    or stream-shaped product (see _dot_shaped, _stream_shaped) stays as it is."""
    m, n = a.shape[0], b.shape[1]
    if m * n == 0 or _dot_shaped(View(0, 0, (m, n), (n, 1), a.dtype), a, b) or \
            _stream_shaped(None, a, b):
        return False
    return 10 * _packed_elements(b.transpose((1, 0)), a.transpose((1, 0))) < \
        7 * _packed_elements(a, b)


def _mr(dtype: str) -> int:
    """Rows of the GEMM's register tile for dtype."""
    from graphdl.codegen.llvm import gemm
    return gemm.blocking(dtype)["MR"]


# The slot of the shared GEMM workspace; set by the lowering before kernels are emitted.
_WORK_SLOT = [0]


def set_workspace_slot(slot: int) -> None:
    """Tell the matmul emitter which argument slot holds the GEMM workspace."""
    _WORK_SLOT[0] = slot
