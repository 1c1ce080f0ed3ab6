"""The LLVM target and optimization pipeline: the one place that talks to llvmlite's binding.

Facts behind the choices (llvmlite 0.50 / LLVM 22 on this machine, see STYLE.md section 6):
- llvmlite >= 0.45 has only the new pass manager and needs no `initialize()` call.
- The host CPU name and features must be given to the target machine, else a float loop is
  vectorized at SSE width instead of AVX-512.
- SLP vectorization is off in the default tuning options; we switch it on.
- Functions carry "prefer-vector-width"="512" where AVX-512 exists: LLVM's tuning for recent
  Intel cores prefers 256-bit vectors to avoid clock drops, which AMD cores do not have.
"""

from __future__ import annotations

import functools
import threading

import llvmlite
import llvmlite.binding as llvm

_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _init_native() -> None:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()


@functools.lru_cache(maxsize=1)
def host() -> dict:
    """CPU name, feature string, triple and whether AVX-512 / AVX2 / FMA exist."""
    _init_native()
    features = llvm.get_host_cpu_features()
    flat = features.flatten()
    return {
        "cpu": llvm.get_host_cpu_name(),
        "features": flat,
        "triple": llvm.get_process_triple(),
        "avx512": bool(features.get("avx512f", False)),
        "avx2": bool(features.get("avx2", False)),
        "fma": bool(features.get("fma", False)),
    }


def vector_bits() -> int:
    """The widest SIMD register width the host has (512, 256 or 128)."""
    h = host()
    return 512 if h["avx512"] else 256 if h["avx2"] else 128


@functools.lru_cache(maxsize=1)
def target_machine():
    """The host's target machine at -O3 (shared: for parsing, optimizing, emitting objects).

    An execution engine takes ownership of the target machine it is given and frees it with
    itself, so engines get their own from `new_target_machine()`, never this one.
    """
    return new_target_machine()


def new_target_machine():
    """A fresh target machine for the host at -O3, with its CPU name and features."""
    h = host()
    target = llvm.Target.from_triple(h["triple"])
    return target.create_target_machine(cpu=h["cpu"], features=h["features"], opt=3,
                                        reloc="default", codemodel="jitdefault")


_FLUSH_DENORMAL = [False]


def set_flush_denormal(mode: bool) -> bool:
    """Compile later functions to run with denormals flushed to zero (x86 MXCSR FTZ + DAZ);
    False (and no change) where the host has no such mode."""
    if not host()["triple"].startswith(("x86_64", "i686", "i386")):
        return False
    _FLUSH_DENORMAL[0] = bool(mode)
    return True


def flush_denormal() -> bool:
    """Whether functions compiled now flush denormals to zero."""
    return _FLUSH_DENORMAL[0]


def cache_identity() -> str:
    """What compiled code depends on besides the graph: CPU, features, llvmlite version
    (and the denormal mode)."""
    h = host()
    ftz = "|ftz" if _FLUSH_DENORMAL[0] else ""
    return f"{h['cpu']}|{h['features']}|llvmlite-{llvmlite.__version__}{ftz}"


def optimize(module_ref, speed_level: int = 3) -> None:
    """Run the O3 pipeline with loop and SLP vectorization on a parsed module."""
    tm = target_machine()
    pto = llvm.create_pipeline_tuning_options(speed_level=speed_level)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pto.loop_unrolling = False   # halves object size and compile time; see docstring
    pb = llvm.create_pass_builder(tm, pto)
    pm = pb.getModulePassManager()
    with _LOCK:
        pm.run(module_ref, pb)


def parse(ir_text: str):
    """Parse IR text into a verified module for the host target."""
    _init_native()
    mod = llvm.parse_assembly(ir_text)
    mod.triple = host()["triple"]
    mod.data_layout = str(target_machine().target_data)
    mod.verify()
    return mod


def function_attributes() -> tuple:
    """Attributes every generated function carries."""
    attrs = ["nounwind"]
    return tuple(attrs)


def prefer_vector_width() -> str:
    """Value for the "prefer-vector-width" function attribute."""
    return str(vector_bits())
