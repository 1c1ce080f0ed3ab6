"""A packed, register-blocked matrix multiply (GEMM) written as LLVM IR.

    C[i, j] = (accumulate ? C[i, j] : 0) + sum_k A[i, k] * B[k, j]

`emit_gemm(module, dtype)` adds the function

    void gd_gemm_f32(int64 M, int64 N, int64 K,
                     const float* A, int64 rsa, int64 csa,
                     const float* B, int64 rsb, int64 csb,
                     float* C, int64 ldc, int32 accumulate, float* work)

(`gd_gemm_f64` with double for "float64"), where A[i, k] = A[i*rsa + k*csa],
B[k, j] = B[k*rsb + j*csb] and C[i, j] = C[i*ldc + j]. The general strides let a caller pass
a transposed operand without copying it (gy @ W^T, x^T @ gy in a backward pass). `work` is
caller-provided scratch of at least `workspace_elements(dtype)` elements, 64-byte aligned;
the kernel allocates nothing and touches no global state, so threads may call it at once on
disjoint row or column ranges of C, each with its own `work`.

The algorithm is the Goto/BLIS loop nest (Goto & van de Geijn, "Anatomy of High-Performance
Matrix Multiplication", TOMS 2008; Van Zee & van de Geijn, "BLIS", TOMS 2015):

    for jc in 0..N step NC:                      B block  KC x NC   (packed, L3)
      for pc in 0..K step KC:
        pack B[pc:pc+kc, jc:jc+nc] into row panels of width NR
        for ic in 0..M step MC:                  A block  MC x KC   (L2)
          pack A[ic:ic+mc, pc:pc+kc] into column panels of height MR (or read it in place)
          for jr in 0..nc step NR:               B micro-panel KC x NR (L1/L2)
            for ir in 0..mc step MR:
              micro-kernel: C[MR x NR tile] (+)= A panel @ B panel

The micro-kernel keeps the MR x NR tile of C in MR * NR / lanes vector registers, loads NR
values of B per k as whole vectors, broadcasts one A value per row and issues `llvm.fma`.
Packed panels are zero-padded to MR rows, NR columns and a multiple of the k-unroll, so the
inner loop has no edge cases; partial tiles of C are written through masked loads and stores
(`llvm.masked.load` / `llvm.masked.store`). Kernels that use only the first 1..NR/lanes
vectors of a B panel serve a narrow right edge of C.

A is not always packed: whole MR-row tiles of a row-major A (csa = 1) are read in place, and
so are those of A^T (rsa = 1) when the B block is narrow (see _TILES for the measurements);
only a partial last tile is packed then.
"""

from __future__ import annotations

import contextlib
import dataclasses

from llvmlite import ir

from graphdl.codegen.llvm import target

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
PTR = ir.PointerType()

_SCALAR = {"float32": (ir.FloatType(), "f32", 4), "float64": (ir.DoubleType(), "f64", 8)}


@dataclasses.dataclass(frozen=True)
class _Blocking:
    """Register and cache blocking of one dtype on one vector width."""

    dtype: str
    lanes: int      # elements per vector register
    mr: int         # rows of the C tile (A values broadcast per k)
    nv: int         # vectors per row of the C tile: NR = nv * lanes
    kc: int         # depth of a packed block (a multiple of k_unroll)
    mc: int         # rows of a packed A block (a multiple of mr)
    nc: int         # columns of a packed B block (a multiple of nr)
    k_unroll: int   # k steps per trip of the micro-kernel loop
    rows_n: int     # read row-major A in place when the B block is at most this wide
    cols_n: int     # read A^T (rsa = 1) in place when the B block is at most this wide

    @property
    def nr(self) -> int:
        return self.nv * self.lanes


# Register tile, measured on the development machine (2 cores of a Xeon with AVX-512 and two
# FMA units per core, reported by LLVM as "rocketlake"; ~228 GFLOP/s float32 peak per core),
# single thread, GFLOP/s, median over 3 alternating rounds of the best of 5 runs, each tile
# at KC = 384 and MC ~ 192, A always packed (an MLP layer is M = batch 128):
#
#   MR x NR   256^3  1024^3  2048^3  128x784 @ 784x512  ... @ (B^T)  (A^T) 784x128 @ 128x512  N=10
#   8 x 48    210    204     202     192                185          212                    61
#   6 x 64    212    204     200     187                176          212                    47
#   12 x 32   206    202     200     184                177          211                    59
#   14 x 32   209    203     202     178                170          214                    59
#   4 x 96    204    199     198     188                175          210                    39
#   9 x 48    199    192     193     174                166          210                    55
#   numpy 1T  190    195     203     168                155          185                    84
#
# The square sizes tie within the noise of the shared machine; 8 x 48 (24 accumulators + 3 B
# vectors + 1 broadcast = 28 of the 32 zmm registers) wins on the MLP shapes and on a narrow
# N, and MR = 8 is a power of two, so packing row-major A transposes 8 x 8 blocks with no
# padding. Depth: KC = 256 / 384 / 512 measured within 2% of each other; 384 was best on the
# square sizes. float64 (8 x 24, AVX-512): 104 / 97 / 94 GFLOP/s at 256 / 1024 / 2048 with
# KC = 256 against numpy's 82 / 95 / 98 (6 x 32 and 14 x 16: 1-5% lower).
#
# Caches assumed (lscpu on the same machine: 48 KiB L1d and 2 MiB L2 per core, a large shared
# L3): the MC x KC A block (288 KiB f32, 192 KiB f64) stays in L2 while every KC x NR B
# micro-panel (72 KiB f32, 48 KiB f64) streams through L1/L2 once per A block, and the KC x NC
# B block (3.0 MiB f32, 2.0 MiB f64) is served from L3. NC = 1008 ... 4080 measured the same
# at N = 2048 (204 GFLOP/s), so NC is kept small: the workspace is per thread.
#
# Packing A costs ~0.4 cycles per element, against 2 N / 64 cycles of FMAs per element at
# peak, so for a narrow N it is as slow as the product. Reading whole MR-row tiles in place
# (float32 GFLOP/s, M = K = 512, while the machine was loaded by other jobs):
#
#   N                     16    48    96    144   288   | 256^3  1024^3  2048^3
#   row-major A packed    89    141   163   168   173   | 179    172     166
#   row-major A in place  141   182   182   184   181   | 187    174     166
#   A^T packed            54    104   134   150   167   | 158    175     168
#   A^T in place          107   177   178   175   177   | 182    145     87
#
# Row-major A in place is never slower (its MR rows are MR sequential streams), so it is
# always used; A^T in place strides by M per k and falls behind at large M, so it is used up
# to a B block of 4 NR columns.
_TILES = {
    # (vector bits, dtype): (MR, vectors per row, KC, MC, NC)
    (512, "float32"): (8, 3, 384, 192, 2016),
    (512, "float64"): (8, 3, 256, 96, 1008),
    # 16 vector registers: the 6 x 2-vector tile of the BLIS Haswell kernel (12 + 2 + 1).
    (256, "float32"): (6, 2, 256, 96, 2016),
    (256, "float64"): (6, 2, 256, 96, 1008),
    (128, "float32"): (6, 2, 256, 96, 2016),
    (128, "float64"): (6, 2, 256, 96, 1008),
}


def _choose_blocking(dtype: str, vector_bits: int) -> _Blocking:
    """The blocking for a dtype on a vector width (512, 256 or 128 bits); see _TILES."""
    if dtype not in _SCALAR:
        raise ValueError(f"gemm supports float32 and float64, not {dtype!r}")
    lanes = vector_bits // (8 * _SCALAR[dtype][2])
    mr, nv, kc, mc, nc = _TILES[vector_bits, dtype]
    return _Blocking(dtype, lanes, mr, nv, kc, mc, nc, k_unroll=4, rows_n=1 << 62,
                     cols_n=4 * nv * lanes)


def _host_blocking(dtype: str) -> _Blocking:
    return _choose_blocking(dtype, target.vector_bits())


def blocking(dtype: str) -> dict:
    """The register and cache blocking used for `dtype` on this host.

    MR x NR is the register tile of C, KC the packed depth, MC x KC the packed A block and
    KC x NC the packed B block.

    >>> b = blocking("float32")
    >>> b["NR"] % 4 == 0 and b["MC"] % b["MR"] == 0
    True
    """
    b = _host_blocking(dtype)
    return {"MR": b.mr, "NR": b.nr, "KC": b.kc, "MC": b.mc, "NC": b.nc,
            "lanes": b.lanes, "k_unroll": b.k_unroll}


def _workspace_layout(b: _Blocking) -> tuple[int, int]:
    """(offset of the packed A block, total elements) in the work buffer; B comes first."""
    per_line = 64 // _SCALAR[b.dtype][2]
    b_elems = b.kc * b.nc
    a_offset = -(-b_elems // per_line) * per_line
    return a_offset, a_offset + b.mc * b.kc


def workspace_elements(dtype: str) -> int:
    """Elements of scratch one `gd_gemm_*` call needs: the packed B block plus the A block.

    work = KC * NC (B, rounded up to a 64-byte line) + MC * KC (A)

    >>> n = workspace_elements("float32")
    >>> raw = np.empty(n + 16, np.float32)
    >>> work = raw[(-raw.ctypes.data % 64) // 4:][:n]     # 64-byte aligned, one per thread
    """
    return _workspace_layout(_host_blocking(dtype))[1]


# --------------------------------------------------------------------------------------------
# IR helpers


def _const(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def _decorate(fn: ir.Function) -> None:
    """Attributes every generated function carries (STYLE.md section 6)."""
    for attr in target.function_attributes():
        fn.attributes.add(attr)
    if target.vector_bits() == 512:
        # llvmlite's FunctionAttributes knows only bare keywords; a string attribute is
        # printed verbatim, so it goes in through set.add.
        set.add(fn.attributes, f'"prefer-vector-width"="{target.prefer_vector_width()}"')


def _declare(module: ir.Module, name: str, fnty: ir.FunctionType) -> ir.Function:
    if name in module.globals:
        return module.globals[name]
    return ir.Function(module, fnty, name)


@contextlib.contextmanager
def _loop(b: ir.IRBuilder, start, stop, step, name: str):
    """for (i = start; i < stop; i += step): yields i, leaves the builder after the loop."""
    pre = b.block
    head = b.append_basic_block(name + ".head")
    body = b.append_basic_block(name + ".body")
    done = b.append_basic_block(name + ".done")
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(I64, name=name)
    i.add_incoming(start, pre)
    b.cbranch(b.icmp_signed("<", i, stop), body, done)
    b.position_at_end(body)
    yield i
    i.add_incoming(b.add(i, step if isinstance(step, ir.Value) else _const(step)), b.block)
    b.branch(head)
    b.position_at_end(done)


def _smin(b: ir.IRBuilder, x, y):
    return b.select(b.icmp_signed("<", x, y), x, y)


def _round_up(b: ir.IRBuilder, x, multiple: int):
    return b.mul(b.sdiv(b.add(x, _const(multiple - 1)), _const(multiple)), _const(multiple))


def _even_step(b: ir.IRBuilder, total, limit: int, multiple: int):
    """The block size that splits `total` into ceil(total / limit) near-equal blocks, rounded
    up to `multiple` (so at most `limit` when `limit` is a multiple of it)."""
    blocks = b.sdiv(b.add(total, _const(limit - 1)), _const(limit))
    return _round_up(b, b.sdiv(b.add(total, b.sub(blocks, _const(1))), blocks), multiple)


def _flat(rows: list) -> list:
    return [x for row in rows for x in row]


def _gep(b: ir.IRBuilder, elem, ptr, index, name: str = ""):
    return b.gep(ptr, [index], source_etype=elem, name=name)


class _Emitter:
    """Emits the functions of one GEMM: packers, micro-kernels, driver."""

    # Prefetch the C tile at the start of a kernel (BLIS's kernels do): measured equal or up
    # to 10% faster (M = 512, N = 128, K = 10, where the C update dominates). A class
    # attribute so that an experiment can switch it off.
    prefetch_c = True

    def __init__(self, module: ir.Module, blk: _Blocking, name: str):
        self.module = module
        self.blk = blk
        self.name = name
        self.elem, self.suffix, self.size = _SCALAR[blk.dtype]
        self.vec = ir.VectorType(self.elem, blk.lanes)
        self.mask = ir.VectorType(I1, blk.lanes)
        vname = f"v{blk.lanes}{self.suffix}"
        fma = "llvm.fma" if target.host()["fma"] else "llvm.fmuladd"
        self.fma = _declare(module, f"{fma}.{vname}",
                            ir.FunctionType(self.vec, [self.vec] * 3))
        self.mload = _declare(module, f"llvm.masked.load.{vname}.p0",
                              ir.FunctionType(self.vec, [PTR, I32, self.mask, self.vec]))
        self.mstore = _declare(module, f"llvm.masked.store.{vname}.p0",
                               ir.FunctionType(ir.VoidType(), [self.vec, PTR, I32, self.mask]))
        self.memset = _declare(module, "llvm.memset.p0.i64",
                               ir.FunctionType(ir.VoidType(), [PTR, I8, I64, I1]))
        self.prefetch = _declare(module, "llvm.prefetch.p0",
                                 ir.FunctionType(ir.VoidType(), [PTR, I32, I32, I32]))

    def _function(self, suffix: str, args: list, names: list, linkage="internal"):
        fn = ir.Function(self.module, ir.FunctionType(ir.VoidType(), args), self.name + suffix)
        fn.linkage = linkage
        _decorate(fn)
        for arg, nm in zip(fn.args, names):
            arg.name = nm
            if isinstance(arg.type, ir.PointerType):
                arg.add_attribute("noalias")
                arg.add_attribute("captures(none)")
        return fn

    def _zero(self, b, ptr, elements):
        b.call(self.memset, [ptr, ir.Constant(I8, 0), b.mul(elements, _const(self.size)),
                             ir.Constant(I1, 0)])

    # ---------------------------------------------------------------- packing
    #
    # A panel holds kcp x MR values, A[i, k] at panel[k*MR + i]; a B panel kcp x NR values,
    # B[k, j] at panel[k*NR + j]. Whichever source stride is 1, the reads run along it; when
    # that is across the panel's rows, tiles are transposed in registers (below), because a
    # scalar strided copy cost 1.2 (A) and 2-8 (B) cycles per element on the development
    # machine, a visible share of an N = 256 product.

    def _lane_mask(self, first: int, count: int) -> ir.Constant:
        lanes = self.blk.lanes
        return ir.Constant(self.mask, [int(first <= t < first + count) for t in range(lanes)])

    def _transpose_blocks(self, b, rows: list, p: int) -> list:
        """Transpose every p x p block of lanes of p vectors (p a power of two <= lanes).

        out[r] lane g*p + q = rows[q] lane g*p + r. Each stage d swaps the off-diagonal
        d x d sub-blocks of every 2d x 2d block: one two-source shuffle per vector."""
        lanes = self.blk.lanes
        rows = list(rows)
        d = p // 2
        while d >= 1:
            lo_mask = [t if t & d == 0 else lanes + t - d for t in range(lanes)]
            hi_mask = [t + d if t & d == 0 else lanes + t for t in range(lanes)]
            lo_c = ir.Constant(ir.VectorType(I32, lanes), lo_mask)
            hi_c = ir.Constant(ir.VectorType(I32, lanes), hi_mask)
            for r in range(p):
                if r & d == 0:
                    x, y = rows[r], rows[r + d]
                    rows[r] = b.shuffle_vector(x, y, lo_c)
                    rows[r + d] = b.shuffle_vector(x, y, hi_c)
            d //= 2
        return rows

    def _load_rows(self, b, src, stride, count: int, pad: int) -> list:
        """`count` unaligned vectors src[t*stride ...], padded with zero vectors to `pad`."""
        zero = ir.Constant(self.vec, None)
        rows = [b.load(_gep(b, self.elem, src, b.mul(_const(t), stride)), typ=self.vec,
                       align=self.size) for t in range(count)]
        return rows + [zero] * (pad - count)

    def _copy_scalar(self, b, src, rs, cs, rows, cols, dst, ld, row0=None):
        """dst[r*ld + c] = src[r*rs + c*cs] for row0 <= r < rows, c < cols (any strides)."""
        elem = self.elem
        with _loop(b, row0 if row0 is not None else _const(0), rows, 1, "r") as r:
            s = _gep(b, elem, src, b.mul(r, rs))
            d = _gep(b, elem, dst, b.mul(r, _const(ld)))
            with _loop(b, _const(0), cols, 1, "c") as c:
                x = b.load(_gep(b, elem, s, b.mul(c, cs)), typ=elem)
                b.store(x, _gep(b, elem, d, c))

    def emit_pack_b(self) -> ir.Function:
        """pack_b(kc, kcp, nc, B, rsb, csb, dst): KC x NC block -> panels kcp x NR."""
        blk, elem, lanes = self.blk, self.elem, self.blk.lanes
        fn = self._function(".pack_b", [I64, I64, I64, PTR, I64, I64, PTR],
                            ["kc", "kcp", "nc", "src", "rs", "cs", "dst"])
        kc, kcp, nc, src, rs, cs, dst = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        nr = _const(blk.nr)
        n_full = b.mul(b.sdiv(nc, nr), nr)        # columns in whole panels
        self._zero_k_padding(b, dst, n_full, blk.nr, kc, kcp)
        with b.if_else(b.icmp_signed("==", cs, _const(1))) as (by_rows, other):
            # B row-major: NR / lanes vector copies per k. Panel outer: with k outer, the
            # stores went to panels KC * NR apart, one L1 set, and ran 2x slower.
            with by_rows, _loop(b, _const(0), n_full, blk.nr, "jp") as jp:
                origin = _gep(b, elem, src, jp)
                panel = _gep(b, elem, dst, b.mul(jp, kcp))
                with _loop(b, _const(0), kc, 1, "k") as k:
                    row = _gep(b, elem, origin, b.mul(k, rs))
                    out = _gep(b, elem, panel, b.mul(k, nr))
                    for v in range(blk.nv):
                        x = b.load(_gep(b, elem, row, _const(v * lanes)), typ=self.vec,
                                   align=self.size)
                        b.store(x, _gep(b, elem, out, _const(v * lanes)), align=64)
            with other, _loop(b, _const(0), n_full, blk.nr, "jp") as jp:
                panel = _gep(b, elem, dst, b.mul(jp, kcp))
                origin = _gep(b, elem, src, b.mul(jp, cs))
                with b.if_else(b.icmp_signed("==", rs, _const(1))) as (by_cols, general):
                    with by_cols:   # B^T: lanes x lanes tiles transposed in registers
                        self._pack_b_transposed(b, origin, cs, kc, panel)
                    with general:
                        self._copy_scalar(b, origin, rs, cs, kc, nr, panel, blk.nr)
        with b.if_then(b.icmp_signed("<", n_full, nc)):     # the last, partial panel
            panel = _gep(b, elem, dst, b.mul(n_full, kcp))
            self._zero(b, panel, b.mul(kcp, nr))
            self._copy_scalar(b, _gep(b, elem, src, b.mul(n_full, cs)), rs, cs, kc,
                              b.sub(nc, n_full), panel, blk.nr)
        b.ret_void()
        return fn

    def _zero_k_padding(self, b, dst, count, width: int, kc, kcp):
        """Zero rows kc..kcp of the whole panels (count / width of them, `width` wide): the
        kernels run to kcp, a multiple of k_unroll."""
        with b.if_then(b.icmp_signed("<", kc, kcp)), _loop(b, _const(0), count, width,
                                                            "zp") as first:
            at = b.add(b.mul(first, kcp), b.mul(kc, _const(width)))
            self._zero(b, _gep(b, self.elem, dst, at), b.mul(b.sub(kcp, kc), _const(width)))

    def _pack_b_transposed(self, b, origin, cs, kc, panel):
        """One B panel from B^T (rs = 1): lanes x lanes tiles, then the k remainder."""
        blk, elem, lanes = self.blk, self.elem, self.blk.lanes
        k_tiles = b.mul(b.sdiv(kc, _const(lanes)), _const(lanes))
        with _loop(b, _const(0), k_tiles, lanes, "k") as k:
            for v in range(blk.nv):
                tile = _gep(b, elem, origin, b.add(k, b.mul(_const(v * lanes), cs)))
                cols = self._transpose_blocks(b, self._load_rows(b, tile, cs, lanes, lanes),
                                              lanes)
                out = _gep(b, elem, panel, b.add(b.mul(k, _const(blk.nr)), _const(v * lanes)))
                for r in range(lanes):
                    b.store(cols[r], _gep(b, elem, out, _const(r * blk.nr)), align=64)
        self._copy_scalar(b, origin, _const(1), cs, kc, _const(blk.nr), panel, blk.nr,
                          row0=k_tiles)

    def emit_pack_a(self) -> ir.Function:
        """pack_a(mc, kc, kcp, A, rsa, csa, dst): MC x KC block -> panels kcp x MR
        (column k of a panel is MR contiguous values)."""
        blk, elem, lanes = self.blk, self.elem, self.blk.lanes
        fn = self._function(".pack_a", [I64, I64, I64, PTR, I64, I64, PTR],
                            ["mc", "kc", "kcp", "src", "rs", "cs", "dst"])
        mc, kc, kcp, src, rs, cs, dst = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        mr = _const(blk.mr)
        p = 1 << (blk.mr - 1).bit_length()      # MR rounded up to a power of two
        m_full = b.mul(b.sdiv(mc, mr), mr)       # rows in whole panels
        self._zero_k_padding(b, dst, m_full, blk.mr, kc, kcp)
        with b.if_else(b.icmp_signed("==", rs, _const(1))) as (by_cols, other):
            # A^T: column k of a panel is MR contiguous values (panel outer, as for B)
            with by_cols, _loop(b, _const(0), m_full, blk.mr, "ip") as ip:
                origin = _gep(b, elem, src, ip)
                panel = _gep(b, elem, dst, b.mul(ip, kcp))
                with _loop(b, _const(0), kc, 1, "k") as k:
                    self._copy_column(b, _gep(b, elem, origin, b.mul(k, cs)),
                                      _gep(b, elem, panel, b.mul(k, mr)))
            with other, _loop(b, _const(0), m_full, blk.mr, "ip") as ip:
                panel = _gep(b, elem, dst, b.mul(ip, kcp))
                origin = _gep(b, elem, src, b.mul(ip, rs))
                # panel[k*MR + i] = A[i*rs + k*cs]: the rows of the copy are k
                if p <= lanes:
                    with b.if_else(b.icmp_signed("==", cs, _const(1))) as (by_rows, general):
                        with by_rows:   # A row-major: MR x lanes tiles transposed
                            self._pack_a_row_major(b, origin, rs, kc, panel, p)
                        with general:
                            self._copy_scalar(b, origin, cs, rs, kc, mr, panel, blk.mr)
                else:
                    self._copy_scalar(b, origin, cs, rs, kc, mr, panel, blk.mr)
        with b.if_then(b.icmp_signed("<", m_full, mc)):     # the last, partial panel
            panel = _gep(b, elem, dst, b.mul(m_full, kcp))
            self._zero(b, panel, b.mul(kcp, mr))
            self._copy_scalar(b, _gep(b, elem, src, b.mul(m_full, rs)), cs, rs, kc,
                              b.sub(mc, m_full), panel, blk.mr)
        b.ret_void()
        return fn

    def _pack_a_row_major(self, b, origin, rs, kc, panel, p):
        """One A panel from row-major A (cs = 1): MR x lanes tiles, then the k remainder."""
        elem, lanes = self.elem, self.blk.lanes
        k_tiles = b.mul(b.sdiv(kc, _const(lanes)), _const(lanes))
        with _loop(b, _const(0), k_tiles, lanes, "k") as k:
            self._pack_a_tile(b, _gep(b, elem, origin, k), rs,
                              _gep(b, elem, panel, b.mul(k, _const(self.blk.mr))), p)
        self._copy_scalar(b, origin, _const(1), rs, kc, _const(self.blk.mr), panel,
                          self.blk.mr, row0=k_tiles)

    def _copy_column(self, b, src, dst):
        """dst[0:MR] = src[0:MR] through lane-masked vector loads and stores."""
        lanes, align = self.blk.lanes, ir.Constant(I32, self.size)
        for first in range(0, self.blk.mr, lanes):
            mask = self._lane_mask(0, min(lanes, self.blk.mr - first))
            x = b.call(self.mload, [_gep(b, self.elem, src, _const(first)), align, mask,
                                    ir.Constant(self.vec, None)])
            b.call(self.mstore, [x, _gep(b, self.elem, dst, _const(first)), align, mask])

    def _pack_a_tile(self, b, src, rs, out, p):
        """MR rows x `lanes` k values of row-major A -> out[k*MR + i].

        After transposing p x p blocks, vector r holds A[0:p, k = g*p + r] in lane group g;
        its first MR lanes go to out[(g*p + r)*MR] through a lane-masked store."""
        blk, lanes, align = self.blk, self.blk.lanes, ir.Constant(I32, self.size)
        cols = self._transpose_blocks(b, self._load_rows(b, src, rs, blk.mr, p), p)
        for g in range(lanes // p):
            mask = self._lane_mask(g * p, blk.mr)
            for r in range(p):
                at = _gep(b, self.elem, out, _const((g * p + r) * blk.mr - g * p))
                b.call(self.mstore, [cols[r], at, align, mask])

    # ---------------------------------------------------------------- micro-kernel

    def _splat(self, b, x):
        one = b.insert_element(ir.Constant(self.vec, None), x, ir.Constant(I32, 0))
        zeros = ir.Constant(ir.VectorType(I32, self.blk.lanes), [0] * self.blk.lanes)
        return b.shuffle_vector(one, ir.Constant(self.vec, None), zeros)

    def emit_micro_kernel(self, nv: int, a_mode: str) -> ir.Function:
        """kernel(kc, Ap, lda, Bp, C, ldc, m, n, beta): C[m x n] (+)= A tile @ B panel.

        A[i, k] of the MR x kc tile is read at Ap[k*MR + i] ("packed"), Ap[k*lda + i]
        ("cols": A^T read in place) or Ap[i*lda + k] ("rows": row-major A in place); B[k, j]
        at Bp[k*NR + j] (packed). Packed, kc is rounded up to k_unroll (the panels are
        zero-padded); in place, a one-step loop does the last kc % k_unroll steps (kc is an
        argument of an out-of-line function, so LLVM does not unroll that loop 3 times).
        m <= MR and n <= nv * lanes are the valid part of the tile; beta says whether C is
        added to (else overwritten). The kernel uses the first `nv` vectors of each B panel
        row, so a narrow right edge of C (N = 10 in a classifier layer) costs nv / NV of a
        full tile, not all of it."""
        blk = self.blk
        fn = self._function(f".kernel.{a_mode}{nv}",
                            [I64, PTR, I64, PTR, PTR, I64, I64, I64, I1],
                            ["kc", "ap", "lda", "bp", "c", "ldc", "m", "n", "beta"])
        # Out of line: each kernel is register-allocated on its own, not inside the driver's
        # loop nest, and shows in the assembly under its own name.
        fn.attributes.add("noinline")
        kc, ap, lda, bp, c, ldc, m, n, beta = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        edge = b.alloca(ir.ArrayType(self.elem, blk.mr * blk.nr), name="edge")
        edge.align = 64
        edge.type = PTR     # llvmlite gives an alloca a typed pointer; the IR has only ptr
        if self.prefetch_c:
            self._prefetch_tile(b, c, ldc, nv)
        # a_offset(k, u, i): where A[i, k + u] is, relative to the loop's A pointer
        if a_mode == "packed":      # the pointer advances MR per k
            a_step = _const(blk.mr)
            a_offset = lambda k, u, i: _const(u * blk.mr + i)
        elif a_mode == "cols":      # the pointer advances lda per k
            a_step = lda
            steps = [b.mul(_const(u), lda) for u in range(blk.k_unroll)]
            a_offset = lambda k, u, i: b.add(steps[u], _const(i))
        else:                       # rows: the pointer stays; row i starts at i*lda
            a_step = _const(0)
            starts = [b.mul(_const(i), lda) for i in range(blk.mr)]
            a_offset = lambda k, u, i: b.add(starts[i], b.add(k, _const(u)))
        zero = ir.Constant(self.vec, None)
        state = (_const(0), ap, bp, [[zero] * nv for _ in range(blk.mr)])
        if a_mode == "packed":      # panels are zero-padded to a multiple of k_unroll
            state = self._k_loop(b, state, _round_up(b, kc, blk.k_unroll), blk.k_unroll,
                                 a_step, a_offset, "k")
        else:                       # A in place: no padding, a one-step remainder loop
            k_main = b.mul(b.sdiv(kc, _const(blk.k_unroll)), _const(blk.k_unroll))
            state = self._k_loop(b, state, k_main, blk.k_unroll, a_step, a_offset, "k")
            state = self._k_loop(b, state, kc, 1, a_step, a_offset, "k.rest")
        self._store_tile(b, state[3], c, ldc, m, n, beta, edge)
        b.ret_void()
        return fn

    def _k_loop(self, b, state, stop, unroll: int, a_step, a_offset, name: str):
        """while k < stop: `unroll` rank-1 updates of the MR x nv vector accumulators, which
        stay in registers. state and the result: (k, A pointer, B pointer, accumulators)."""
        blk, elem = self.blk, self.elem
        pre = b.block
        head = b.append_basic_block(name + ".head")
        body = b.append_basic_block(name + ".body")
        done = b.append_basic_block(name + ".done")
        b.branch(head)
        b.position_at_end(head)
        k0, ap0, bp0, acc0 = state
        k = b.phi(I64, name)
        ap = b.phi(PTR, name + ".a")
        bp = b.phi(PTR, name + ".b")
        acc = [[b.phi(self.vec, f"{name}.c{i}.{v}") for v in range(len(row))]
               for i, row in enumerate(acc0)]
        for phi, value in zip([k, ap, bp, *_flat(acc)], [k0, ap0, bp0, *_flat(acc0)]):
            phi.add_incoming(value, pre)
        b.cbranch(b.icmp_signed("<", k, stop), body, done)
        b.position_at_end(body)
        cur = self._rank_updates(b, [list(row) for row in acc], bp, unroll,
                                 lambda u, i: b.load(_gep(b, elem, ap, a_offset(k, u, i)),
                                                     typ=elem, align=self.size))
        nexts = [b.add(k, _const(unroll)), _gep(b, elem, ap, b.mul(a_step, _const(unroll))),
                 _gep(b, elem, bp, _const(unroll * blk.nr))]
        for phi, value in zip([k, ap, bp, *_flat(acc)], nexts + _flat(cur)):
            phi.add_incoming(value, b.block)
        b.branch(head)
        b.position_at_end(done)
        return k, ap, bp, acc

    def _rank_updates(self, b, acc, bp, unroll: int, a_value):
        """`unroll` rank-1 updates acc[i][v] += A(u, i) * B panel row u, vector v."""
        blk, elem = self.blk, self.elem
        for u in range(unroll):
            bvec = [b.load(_gep(b, elem, bp, _const(u * blk.nr + v * blk.lanes)),
                           typ=self.vec, align=64) for v in range(len(acc[0]))]
            for i in range(blk.mr):
                a = self._splat(b, a_value(u, i))
                for v, bv in enumerate(bvec):
                    acc[i][v] = b.call(self.fma, [a, bv, acc[i][v]])
        return acc

    def _prefetch_tile(self, b, c, ldc, nv):
        """Ask for the C tile's lines before the k loop, so the update after it hits cache
        (as BLIS kernels do); rows past m are only prefetched, never read."""
        for i in range(self.blk.mr):
            row = _gep(b, self.elem, c, b.mul(_const(i), ldc))
            for j in sorted({0, nv * self.blk.lanes - 1}):
                b.call(self.prefetch, [_gep(b, self.elem, row, _const(j)),
                                       ir.Constant(I32, 1), ir.Constant(I32, 3),
                                       ir.Constant(I32, 1)])

    def _store_edge(self, b, acc, c, ldc, m, n, beta, tile):
        """A partial tile: the accumulators go through a stack tile to store_edge."""
        blk, elem = self.blk, self.elem
        for i, row in enumerate(acc):
            for v, x in enumerate(row):
                b.store(x, _gep(b, elem, tile, _const(i * blk.nr + v * blk.lanes)), align=64)
        b.call(self.store_edge, [tile, c, ldc, m, n, beta])

    def _store_tile(self, b, acc, c, ldc, m, n, beta, edge):
        """C tile (+)= accumulators: whole tiles with plain vector accesses, the rest (and
        all tiles of a narrow kernel) through store_edge."""
        blk, elem = self.blk, self.elem
        nv = len(acc[0])
        if nv < blk.nv:
            self._store_edge(b, acc, c, ldc, m, n, beta, edge)
            return
        full = b.and_(b.icmp_signed("==", m, _const(blk.mr)),
                      b.icmp_signed("==", n, _const(blk.nr)))
        with b.if_else(full) as (whole, partial):
            with whole, b.if_else(beta) as (add, overwrite):
                with add:
                    for i in range(blk.mr):
                        row = _gep(b, elem, c, b.mul(_const(i), ldc))
                        for v in range(nv):
                            p = _gep(b, elem, row, _const(v * blk.lanes))
                            old = b.load(p, typ=self.vec, align=self.size)
                            b.store(b.fadd(old, acc[i][v]), p, align=self.size)
                with overwrite:
                    for i in range(blk.mr):
                        row = _gep(b, elem, c, b.mul(_const(i), ldc))
                        for v in range(nv):
                            p = _gep(b, elem, row, _const(v * blk.lanes))
                            b.store(acc[i][v], p, align=self.size)
            with partial:
                self._store_edge(b, acc, c, ldc, m, n, beta, edge)

    def emit_store_edge(self) -> ir.Function:
        """store_edge(tile, C, ldc, m, n, beta): C[:m, :n] (+)= tile[:m, :n] (tile rows NR
        apart), through lane masks (j < n) per vector. Shared by the kernels and kept out of
        line: it runs once per partial tile, and inlined copies made the module twice as
        slow to optimize."""
        blk, elem, lanes = self.blk, self.elem, self.blk.lanes
        fn = self._function(".store_edge", [PTR, PTR, I64, I64, I64, I1],
                            ["tile", "c", "ldc", "m", "n", "beta"])
        fn.attributes.add("noinline")
        tile, c, ldc, m, n, beta = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        lane = ir.VectorType(I64, lanes)
        iota = ir.Constant(lane, list(range(lanes)))
        align = ir.Constant(I32, self.size)
        with _loop(b, _const(0), m, 1, "i") as i:
            row = _gep(b, elem, c, b.mul(i, ldc))
            src = _gep(b, elem, tile, b.mul(i, _const(blk.nr)))
            with _loop(b, _const(0), n, lanes, "j") as j:
                left = b.insert_element(ir.Constant(lane, None), b.sub(n, j),
                                        ir.Constant(I32, 0))
                left = b.shuffle_vector(left, ir.Constant(lane, None),
                                        ir.Constant(ir.VectorType(I32, lanes), [0] * lanes))
                mask = b.icmp_signed("<", iota, left)
                x = b.load(_gep(b, elem, src, j), typ=self.vec, align=64)
                p = _gep(b, elem, row, j)
                old = b.call(self.mload, [p, align, mask, ir.Constant(self.vec, None)])
                b.call(self.mstore, [b.select(beta, b.fadd(old, x), x), p, align, mask])
        b.ret_void()
        return fn

    # ---------------------------------------------------------------- driver

    def emit_driver(self, pack_a, pack_b, kernels) -> ir.Function:
        """The exported gd_gemm_*: empty cases, then the jc / pc / ic loops of the nest."""
        blk, elem = self.blk, self.elem
        fn = self._function("", [I64, I64, I64, PTR, I64, I64, PTR, I64, I64, PTR, I64, I32,
                                 PTR],
                            ["M", "N", "K", "A", "rsa", "csa", "B", "rsb", "csb", "C", "ldc",
                             "accumulate", "work"], linkage="external")
        M, N, K, A, rsa, csa, B, rsb, csb, C, ldc, accumulate, work = fn.args
        # A and B may be the same buffer (x^T @ x): noalias allows that, as neither is written.
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        overwrite = b.icmp_signed("==", accumulate, ir.Constant(I32, 0))
        self._emit_empty_cases(b, M, N, K, C, ldc, overwrite)
        a_offset, _ = _workspace_layout(blk)
        bp = work
        ap = _gep(b, elem, work, _const(a_offset))
        # Blocks of even size (K = 784 with KC = 384 -> 3 x 264, not 384 + 384 + 16): a thin
        # last block would run the kernel at a short, inefficient depth.
        nc_step = _even_step(b, N, blk.nc, blk.nr)
        mc_step = _even_step(b, M, blk.mc, blk.mr)
        kc_step = _even_step(b, K, blk.kc, blk.k_unroll)
        a_mode = self._choose_a_mode(b, nc_step, rsa, csa)
        with _loop(b, _const(0), N, nc_step, "jc") as jc:
            nc = _smin(b, b.sub(N, jc), nc_step)
            with _loop(b, _const(0), K, kc_step, "pc") as pc:
                kc = _smin(b, b.sub(K, pc), kc_step)
                kcp = _round_up(b, kc, blk.k_unroll)
                beta = b.or_(b.not_(overwrite), b.icmp_signed(">", pc, _const(0)))
                b_src = _gep(b, elem, B, b.add(b.mul(pc, rsb), b.mul(jc, csb)))
                b.call(pack_b, [kc, kcp, nc, b_src, rsb, csb, bp])
                with _loop(b, _const(0), M, mc_step, "ic") as ic:
                    mc = _smin(b, b.sub(M, ic), mc_step)
                    a_src = _gep(b, elem, A, b.add(b.mul(ic, rsa), b.mul(pc, csa)))
                    c_block = _gep(b, elem, C, b.add(b.mul(ic, ldc), jc))
                    self._emit_block_product(b, kernels, mc, nc, kc, kcp, ap, bp, c_block,
                                             ldc, beta, a_src, rsa, csa, a_mode, pack_a)
        b.ret_void()
        return fn

    def _choose_a_mode(self, b, nc_step, rsa, csa):
        """0: pack A; 1: read A^T (rsa = 1) in place; 2: read row-major A (csa = 1) in
        place, when the B block is narrow enough (see _TILES)."""
        one = _const(1)
        blk = self.blk
        cols = b.and_(b.icmp_signed("==", rsa, one),
                      b.icmp_signed("<=", nc_step, _const(blk.cols_n)))
        rows = b.and_(b.icmp_signed("==", csa, one),
                      b.icmp_signed("<=", nc_step, _const(blk.rows_n)))
        return b.select(cols, one, b.select(rows, _const(2), _const(0)))

    def _emit_empty_cases(self, b, M, N, K, C, ldc, overwrite):
        """M or N <= 0: return; K <= 0: C = 0 unless accumulating, then return."""
        nothing = b.or_(b.icmp_signed("<=", M, _const(0)), b.icmp_signed("<=", N, _const(0)))
        with b.if_then(nothing):
            b.ret_void()
        with b.if_then(b.icmp_signed("<=", K, _const(0))):
            with b.if_then(overwrite), _loop(b, _const(0), M, 1, "i") as i:
                self._zero(b, _gep(b, self.elem, C, b.mul(i, ldc)), N)
            b.ret_void()

    def _emit_block_product(self, b, kernels, mc, nc, kc, kcp, ap, bp, c_block, ldc, beta,
                            a_src, rsa, csa, a_mode, pack_a):
        """C block (mc x nc) (+)= A block @ packed B block, tile by tile. The B micro-panel
        is the outer loop: it is reused by every A tile of the block.

        a_mode 0: A was packed whole. 1 / 2: whole MR-row tiles read A in place (A^T or
        row-major A); only the last, partial tile is packed, so no kernel reads past row M."""
        blk, elem = self.blk, self.elem
        in_place = b.icmp_signed("!=", a_mode, _const(0))
        m_full = b.select(in_place, b.mul(b.sdiv(mc, _const(blk.mr)), _const(blk.mr)),
                          _const(0))
        b.call(pack_a, [b.sub(mc, m_full), kc, kcp, _gep(b, elem, a_src, b.mul(m_full, rsa)),
                        rsa, csa, ap])
        lda = b.select(b.icmp_signed("==", a_mode, _const(1)), csa, rsa)
        with _loop(b, _const(0), nc, blk.nr, "jr") as jr:
            b_panel = _gep(b, elem, bp, b.mul(jr, kcp))
            n = _smin(b, b.sub(nc, jr), _const(blk.nr))
            with _loop(b, _const(0), mc, blk.mr, "ir") as ir_:
                m = _smin(b, b.sub(mc, ir_), _const(blk.mr))
                direct = b.icmp_signed("<", ir_, m_full)
                packed_tile = _gep(b, elem, ap, b.mul(b.sub(ir_, m_full), kcp))
                a_tile = b.select(direct, _gep(b, elem, a_src, b.mul(ir_, rsa)), packed_tile)
                mode = b.select(direct, a_mode, _const(0))
                c_tile = _gep(b, elem, c_block, b.add(b.mul(ir_, ldc), jr))
                self._call_kernel(b, kernels, mode, n, [kc, a_tile, lda, b_panel, c_tile, ldc,
                                                        m, n, beta])

    def _call_kernel(self, b, kernels, mode, n, args):
        """Call kernels[mode][q - 1], q the number of vectors that covers n columns."""
        lanes = self.blk.lanes
        vectors = b.sdiv(b.add(n, _const(lanes - 1)), _const(lanes))
        key = b.add(b.mul(mode, _const(16)), vectors)
        done = b.append_basic_block("kernel.done")
        switch = b.switch(key, done)
        for mode_index, by_width in enumerate(kernels):
            for q, kernel in enumerate(by_width, start=1):
                case = b.append_basic_block(f"kernel.{mode_index}.{q}")
                switch.add_case(_const(16 * mode_index + q), case)
                b.position_at_end(case)
                b.call(kernel, args)
                b.branch(done)
        b.position_at_end(done)


def _function_name(dtype: str) -> str:
    return "gd_gemm_" + _SCALAR[dtype][1]


def _emit_gemm_with(module: ir.Module, blk: _Blocking, name: str) -> ir.Function:
    """Emit a GEMM with an explicit blocking under `name` (used by the blocking sweep)."""
    if name in module.globals:
        return module.globals[name]
    em = _Emitter(module, blk, name)
    em.store_edge = em.emit_store_edge()
    pack_a = em.emit_pack_a()
    pack_b = em.emit_pack_b()
    kernels = [[em.emit_micro_kernel(nv, mode) for nv in range(1, blk.nv + 1)]
               for mode in ("packed", "cols", "rows")]
    return em.emit_driver(pack_a, pack_b, kernels)


def emit_gemm(module: ir.Module, dtype: str) -> ir.Function:
    """Add `gd_gemm_f32` / `gd_gemm_f64` to `module` (once) and return it.

    C[i*ldc + j] = (accumulate ? C[i*ldc + j] : 0) + sum_k A[i*rsa + k*csa] * B[k*rsb + j*csb]

    >>> mod = ir.Module()
    >>> fn = emit_gemm(mod, "float32")
    >>> kernel = jit.compile_ir(str(mod))     # kernel.cfunc("gd_gemm_f32", None, ...)
    """
    return _emit_gemm_with(module, _host_blocking(dtype), _function_name(dtype))
