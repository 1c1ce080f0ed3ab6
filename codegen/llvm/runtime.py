"""The runtime library: GEMM kernels and the thread pool, compiled once per process.

Graph modules only *declare* `gd_gemm_f32`, `gd_gemm_f64` and `gd_parallel_for`; this
module compiles their definitions once (through the on-disk cache, so a later process loads
object code instead of running LLVM) and registers their addresses with
`llvmlite.binding.add_symbol`, where every later JIT module finds them. Like a libm or an
OpenMP runtime this is process-wide state, kept in one place.
"""

from __future__ import annotations

import os
import threading

import llvmlite.binding as llvm
import llvmlite.ir as ir

from graphdl.codegen.llvm import target

_STATE: dict = {"kernel": None, "pid": None}
_LOCK = threading.Lock()
GEMM_DTYPES = ("float32", "float64")


def _library_ir() -> str:
    from graphdl.codegen.llvm import gemm
    module = ir.Module(name="graphdl_runtime")
    module.triple = target.host()["triple"]
    for dtype in GEMM_DTYPES:
        gemm.emit_gemm(module, dtype)
    return str(module)


def ensure() -> None:
    """Compile (or load) the GEMM library and start the thread pool, once per process."""
    if _STATE["kernel"] is not None and _STATE["pid"] == os.getpid():
        return
    with _LOCK:
        if _STATE["kernel"] is not None:
            return
        from graphdl.codegen.llvm import cache
        kernel, _ = cache.compile_cached(_library_ir())
        for dtype in GEMM_DTYPES:
            name = gemm_name(dtype)
            llvm.add_symbol(name, kernel.address(name))
        _threads()             # starts the pool (and registers gd_parallel_for)
        _STATE["kernel"] = kernel
        _STATE["pid"] = os.getpid()


def _threads():
    from graphdl.codegen.llvm import threads
    return threads.runtime()


def gemm_name(dtype: str) -> str:
    """The symbol of the GEMM for a dtype."""
    return {"float32": "gd_gemm_f32", "float64": "gd_gemm_f64"}[dtype]


def declare_gemm(module: ir.Module, dtype: str) -> ir.Function:
    """Declare the runtime's GEMM in a graph module (its body lives in the runtime)."""
    name = gemm_name(dtype)
    try:
        return module.get_global(name)
    except KeyError:
        pass
    from graphdl.codegen.llvm import gemm
    scratch = ir.Module()
    fnty = gemm.emit_gemm(scratch, dtype).function_type
    return ir.Function(module, fnty, name)


def parallel_for_function():
    """A ctypes callable of gd_parallel_for(body address, ctx, n, grain)."""
    ensure()
    return _threads().parallel_for


def get_num_threads() -> int:
    """Threads the runtime uses for large kernels."""
    return _threads().get_num_threads()


def set_num_threads(n: int) -> None:
    """Set the number of threads (1 disables the pool)."""
    _threads().set_num_threads(n)
