"""The packed GEMM kernel (codegen/llvm/gemm.py) against NumPy, over shapes, strides and dtypes."""

import ctypes
import re
import threading

import numpy as np
import pytest
from llvmlite import ir

from graphdl.codegen.llvm import gemm, jit, target

DTYPES = ("float32", "float64")
ARGTYPES = ([ctypes.c_int64] * 3 + [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64] * 2
            + [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p])
# Relative to sum_k |A[i,k]| |B[k,j]| + |C[i,j]|: a few ulps times log(K)-ish growth.
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}

# Compiled once per process (a compile takes ~0.4 s) and kept: the machine code must outlive
# every ctypes function made from it.
_KERNELS = {}


def _module(dtype):
    module = ir.Module(name=f"test_gemm_{dtype}")
    gemm.emit_gemm(module, dtype)
    return module


def compiled(dtype):
    """(ctypes function, 64-byte aligned workspace) for gd_gemm_<dtype>."""
    if dtype not in _KERNELS:
        kernel = jit.compile_ir(str(_module(dtype)))
        fn = kernel.cfunc(gemm._function_name(dtype), None, *ARGTYPES)
        _KERNELS[dtype] = (kernel, fn)
    return _KERNELS[dtype][1], aligned_empty(gemm.workspace_elements(dtype), dtype)


def aligned_empty(elements, dtype):
    raw = np.empty(elements + 64, dtype)
    offset = (-raw.ctypes.data % 64) // raw.itemsize
    return raw[offset:offset + elements]


def call(fn, a, b, c, accumulate, work):
    """C (+)= A @ B for NumPy views: strides become element strides, C rows may be padded."""
    size = a.itemsize
    m, k = a.shape
    n = b.shape[1]
    assert c.strides[1] == size
    fn(m, n, k, a.ctypes.data, a.strides[0] // size, a.strides[1] // size,
       b.ctypes.data, b.strides[0] // size, b.strides[1] // size,
       c.ctypes.data, c.strides[0] // size, accumulate, work.ctypes.data)


def operand(rng, rows, cols, dtype, transposed):
    """A rows x cols matrix, stored row-major or as the transpose of a row-major array."""
    if transposed:
        return rng.standard_normal((cols, rows)).astype(dtype).T
    return rng.standard_normal((rows, cols)).astype(dtype)


def assert_close(c, a, b, c0, accumulate, dtype):
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    expect = a64 @ b64 + (c0 if accumulate else 0)
    bound = np.abs(a64) @ np.abs(b64) + (np.abs(c0) if accumulate else 0) + 1e-30
    err = np.abs(c - expect) / bound
    assert err.size == 0 or err.max() <= TOLERANCE[dtype], f"max relative error {err.max()}"


def _shapes(dtype):
    """Edge-case shapes derived from the host's blocking: 1, primes, MR/NR/KC +- 1; K a
    multiple of k_unroll (A read in place, unpacked) and not."""
    blk = gemm.blocking(dtype)
    mr, nr, kc, lanes = blk["MR"], blk["NR"], blk["KC"], blk["lanes"]
    return [
        (2 * mr + 3, 2 * nr + 5, 2 * kc + 8), (mr + 1, lanes + 2, 12), (5 * mr, 3 * nr + 1, kc + 4),
        (1, 1, 1), (2, 3, 5), (7, 11, 13), (mr, nr, 4), (mr + 1, nr + 1, 3),
        (mr - 1, nr - 1, 17), (3 * mr, 3 * nr, lanes), (2 * mr + 5, nr + lanes + 3, 31),
        (1, 4 * nr + 7, 9), (37, 1, 41), (mr, lanes - 1, kc + 1), (29, 2 * nr - 5, kc - 1),
        (53, 101, 2 * kc + 7), (5, nr // 2 + 1, 3), (blk["MC"] + 3, 19, 23), (3, 10, 64),
    ]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["nn", "tn", "nt", "tt"])
def test_matches_numpy_over_shapes_layouts_and_accumulate(dtype, layout):
    fn, work = compiled(dtype)
    rng = np.random.default_rng(abs(hash((dtype, layout))) % 2**32)
    for m, n, k in _shapes(dtype):
        a = operand(rng, m, k, dtype, layout[0] == "t")
        b = operand(rng, k, n, dtype, layout[1] == "t")
        for accumulate in (0, 1):
            c0 = rng.standard_normal((m, n)).astype(dtype)
            c = c0.copy()
            call(fn, a, b, c, accumulate, work)
            assert_close(c, a, b, c0, accumulate, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bits", [256, 128])
def test_blocking_for_narrower_vector_widths_is_correct(dtype, bits):
    """The AVX2 / SSE tiles, compiled here under another name (the host runs them too)."""
    key = (dtype, bits)
    if key not in _KERNELS:
        module = ir.Module(name=f"test_gemm_{dtype}_{bits}")
        blk = gemm._choose_blocking(dtype, bits)
        gemm._emit_gemm_with(module, blk, "gemm_narrow")
        text = str(module)
        kernel = jit.compile_ir(text)
        _KERNELS[key] = (kernel, kernel.cfunc("gemm_narrow", None, *ARGTYPES), blk, text)
    _, fn, blk, text = _KERNELS[key]
    assert f"<{blk.lanes} x " in text
    work = aligned_empty(gemm._workspace_layout(blk)[1], dtype)
    rng = np.random.default_rng(bits)
    for m, n, k in [(1, 1, 1), (blk.mr + 1, blk.nr + 3, 29), (25, 3 * blk.nr - 1, 300)]:
        for layout in ("nn", "tt"):
            a = operand(rng, m, k, dtype, layout[0] == "t")
            b = operand(rng, k, n, dtype, layout[1] == "t")
            c0 = rng.standard_normal((m, n)).astype(dtype)
            c = c0.copy()
            call(fn, a, b, c, 1, work)
            assert_close(c, a, b, c0, 1, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_wide_product_crosses_the_nc_block(dtype):
    fn, work = compiled(dtype)
    rng = np.random.default_rng(1)
    n = gemm.blocking(dtype)["NC"] + 21
    a, b = operand(rng, 3, 5, dtype, False), operand(rng, 5, n, dtype, True)
    c = np.full((3, n), np.nan, dtype)
    call(fn, a, b, c, 0, work)
    assert_close(c, a, b, None, 0, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_k_zero_zeroes_or_keeps_c(dtype):
    fn, work = compiled(dtype)
    a, b = np.empty((5, 0), dtype), np.empty((0, 7), dtype)
    c = np.full((5, 7), 3.0, dtype)
    call(fn, a, b, c, 1, work)
    assert (c == 3).all()
    call(fn, a, b, c, 0, work)
    assert (c == 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, n", [(0, 7), (5, 0), (0, 0)])
def test_empty_output_touches_nothing(dtype, m, n):
    fn, work = compiled(dtype)
    a, b = np.ones((m, 4), dtype), np.ones((4, n), dtype)
    sentinel = np.full((2, 8), 5.0, dtype)
    fn(m, n, 4, a.ctypes.data, 4, 1, b.ctypes.data, max(n, 1), 1, sentinel.ctypes.data, 8,
       0, work.ctypes.data)
    assert (sentinel == 5).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_padded_c_rows_and_general_strides(dtype):
    """C is a block of a larger array (ldc > N); A and B have no unit stride at all."""
    fn, work = compiled(dtype)
    rng = np.random.default_rng(2)
    big = rng.standard_normal((70, 90)).astype(dtype)
    a = rng.standard_normal((2 * 23, 3 * 40)).astype(dtype)[::2, ::3]      # 23 x 40
    b = rng.standard_normal((3 * 40, 2 * 45)).astype(dtype)[::3, ::2]      # 40 x 45
    before = big.copy()
    c = big[5:28, 7:52]
    call(fn, a, b, c, 1, work)
    assert_close(c, a, b, before[5:28, 7:52], 1, dtype)
    outside = np.ones(big.shape, bool)
    outside[5:28, 7:52] = False
    assert (big[outside] == before[outside]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_negative_strides(dtype):
    fn, work = compiled(dtype)
    rng = np.random.default_rng(5)
    a = rng.standard_normal((37, 64)).astype(dtype)[::-1]          # rsa < 0, csa = 1
    b = rng.standard_normal((64, 50)).astype(dtype)[::-1, ::-1]    # rsb < 0, csb < 0
    c = np.empty((37, 50), dtype)
    call(fn, a, b, c, 0, work)
    assert_close(c, a, b, None, 0, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gram_matrix_with_a_and_b_in_one_buffer(dtype):
    fn, work = compiled(dtype)
    x = np.random.default_rng(3).standard_normal((57, 33)).astype(dtype)
    c = np.empty((33, 33), dtype)
    call(fn, x.T, x, c, 0, work)
    assert_close(c, x.T, x, None, 0, dtype)


def test_threads_with_own_workspaces_compute_disjoint_halves():
    """Re-entrancy: two threads split the rows of one product, as the runtime does."""
    fn, _ = compiled("float32")
    rng = np.random.default_rng(4)
    a, b = operand(rng, 301, 257, "float32", False), operand(rng, 257, 190, "float32", True)
    c = np.full((301, 190), np.nan, np.float32)
    works = [aligned_empty(gemm.workspace_elements("float32"), np.float32) for _ in range(2)]
    halves = [slice(0, 150), slice(150, 301)]

    def run(h):
        for _ in range(20):
            call(fn, a[halves[h]], b, c[halves[h]], 0, works[h])

    threads = [threading.Thread(target=run, args=(h,)) for h in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert_close(c, a, b, None, 0, "float32")


@pytest.mark.parametrize("dtype", DTYPES)
def test_emit_is_idempotent_and_blocking_is_consistent(dtype):
    module = ir.Module()
    first = gemm.emit_gemm(module, dtype)
    assert gemm.emit_gemm(module, dtype) is first
    assert first.name == {"float32": "gd_gemm_f32", "float64": "gd_gemm_f64"}[dtype]
    other = gemm.emit_gemm(module, "float64" if dtype == "float32" else "float32")
    assert other.name != first.name
    target.parse(str(module))   # both in one module: shared intrinsic declarations verify
    blk = gemm.blocking(dtype)
    assert blk["NR"] % blk["lanes"] == 0 and blk["MC"] % blk["MR"] == 0
    assert blk["NC"] % blk["NR"] == 0 and blk["KC"] % blk["k_unroll"] == 0
    assert gemm.workspace_elements(dtype) >= blk["KC"] * (blk["NC"] + blk["MC"])


@pytest.mark.parametrize("dtype", DTYPES)
def test_ir_uses_vectors_fma_gep_and_the_attributes(dtype):
    text = str(_module(dtype))
    lanes = target.vector_bits() // (32 if dtype == "float32" else 64)
    scalar = "float" if dtype == "float32" else "double"
    assert f"<{lanes} x {scalar}>" in text
    assert re.search(r'@"?llvm\.fma\.v\d+f(32|64)', text) or not target.host()["fma"]
    assert "ptrtoint" not in text and "inttoptr" not in text
    for line in text.splitlines():
        if line.startswith("define"):
            assert "nounwind" in line
            assert ('"prefer-vector-width"="512"' in line) == (target.vector_bits() == 512)
    name = gemm._function_name(dtype)
    signature = next(line for line in text.splitlines()
                     if line.startswith("define") and re.search(rf'@"?{name}"?\(', line))
    assert signature.count("noalias") == 4
    target.parse(text)   # verifies


@pytest.mark.skipif(not target.host()["avx512"], reason="host has no AVX-512")
@pytest.mark.parametrize("dtype, suffix", [("float32", "ps"), ("float64", "pd")])
def test_micro_kernel_assembly_has_zmm_fmas(dtype, suffix):
    asm = jit.assembly(str(_module(dtype)))
    blk = gemm.blocking(dtype)
    name = f"{gemm._function_name(dtype)}.kernel.packed{blk['NR'] // blk['lanes']}"
    start = asm.index(f"{name}:")
    body = asm[start:asm.index(".Lfunc_end", start)]
    fmas = re.findall(rf"vfmadd\d+{suffix}\s+[^\n]*%zmm", body)
    # the unrolled k loop: MR x NR / lanes FMAs per k step, all on zmm registers
    assert len(fmas) >= blk["MR"] * blk["NR"] // blk["lanes"] * blk["k_unroll"]
    # the accumulators live in registers: no FMA reads or writes the stack
    assert not [line for line in fmas if "rsp" in line or "rbp" in line]
