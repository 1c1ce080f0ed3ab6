"""The runtime library: GEMM kernels and the thread pool, compiled once per process.

Graph modules only *declare* `gd_gemm_f32`, `gd_gemm_f64` and `gd_parallel_for`; this
module compiles their definitions once (through the on-disk cache, so a later process loads
object code instead of running LLVM) and registers their addresses with
`llvmlite.binding.add_symbol`, where every later JIT module finds them. Like a libm or an
OpenMP runtime this is process-wide state, kept in one place.
"""

from __future__ import annotations

import threading

import llvmlite.binding as llvm
import llvmlite.ir as ir

from graphdl.codegen.llvm import target

_KERNELS: dict = {}          # dtype -> Kernel holding that dtype's GEMM
_LOCK = threading.Lock()
GEMM_DTYPES = ("float32", "float64")


def _gemm_ir(dtype: str) -> str:
    from graphdl.codegen.llvm import gemm
    module = ir.Module(name=f"graphdl_gemm_{dtype}")
    module.triple = target.host()["triple"]
    gemm.emit_gemm(module, dtype)
    return str(module)


def ensure(dtypes=()) -> None:
    """Start the thread pool and compile (or load) the GEMM of each dtype asked for.

    Each dtype's GEMM is its own module, compiled the first time a graph needs it, so a
    float32 model never pays for the float64 kernel.
    """
    _threads()                 # starts the pool (and registers gd_parallel_for)
    missing = [d for d in dtypes if d not in _KERNELS]
    if not missing:
        return
    with _LOCK:
        from graphdl.codegen.llvm import cache
        for dtype in missing:
            if dtype in _KERNELS:
                continue
            kernel, _ = cache.compile_keyed(f"gemm-{dtype}", lambda d=dtype: _gemm_ir(d))
            name = gemm_name(dtype)
            llvm.add_symbol(name, kernel.address(name))
            _KERNELS[dtype] = kernel


def _ready() -> None:
    """The waiter of a runtime that needs nothing compiled."""


_ready.join = lambda: None
_READY = _ready


def ensure_async(dtypes=()):
    """Start the thread pool now and compile the GEMMs still missing in a background thread.

    Returns a function that waits for them (re-raising a failure). The caller runs the
    graph passes and the lowering (pure Python: llvmlite.ir builds IR without LLVM) while
    LLVM compiles the GEMM, which releases the GIL; it must call the waiter before its own
    first LLVM call (LLVM's global context is not thread-safe).
    """
    _threads()
    missing = [d for d in dtypes if d not in _KERNELS]
    if not missing:
        return _READY
    failure: list = []

    def work():
        try:
            ensure(missing)
        except BaseException as error:      # noqa: BLE001 - handed to the waiter
            failure.append(error)

    worker = threading.Thread(target=work, name="graphdl-runtime", daemon=True)
    worker.start()

    def wait():
        worker.join()
        if failure:
            raise failure[0]

    wait.join = worker.join         # wait without raising (cleanup after another error)
    return wait


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
    t = (ir.FloatType() if dtype == "float32" else ir.DoubleType()).as_pointer()
    i64, i32 = ir.IntType(64), ir.IntType(32)
    # void gd_gemm(M, N, K, A, rsa, csa, B, rsb, csb, C, ldc, accumulate, work): gemm.py
    fnty = ir.FunctionType(ir.VoidType(), [i64, i64, i64, t, i64, i64, t, i64, i64, t, i64,
                                           i32, t])
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
