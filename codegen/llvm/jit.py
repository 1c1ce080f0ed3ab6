"""JIT compilation of an IR module into callable machine code.

A `Kernel` owns its execution engine: the machine code lives exactly as long as the Kernel
(no global lists of engines). `Kernel.address(name)` hands out a function's address for
ctypes. Object code can be saved and loaded back (the on-disk cache) without re-running
LLVM's optimizer.
"""

from __future__ import annotations

import ctypes
import threading

import llvmlite.binding as llvm

from graphdl.codegen.llvm import target

_ENGINE_LOCK = threading.Lock()


class Kernel:
    """Machine code of one module, with the engine that keeps it alive."""

    def __init__(self, engine, module_ref=None, object_code: bytes | None = None):
        self._engine = engine
        self._module = module_ref
        self.object_code = object_code

    def address(self, name: str) -> int:
        """The address of a compiled function."""
        addr = self._engine.get_function_address(name)
        if not addr:
            raise KeyError(f"no compiled function named {name!r}")
        return addr

    def cfunc(self, name: str, restype, *argtypes):
        """A ctypes function for a compiled function (the Kernel must outlive it)."""
        return ctypes.CFUNCTYPE(restype, *argtypes)(self.address(name))


def _empty_engine():
    backing = llvm.parse_assembly("")
    backing.triple = target.host()["triple"]
    return llvm.create_mcjit_compiler(backing, target.new_target_machine()), backing


def compile_ir(ir_text: str, optimize: bool = True, keep_object: bool = False) -> Kernel:
    """Parse, verify, optimize (O3 + vectorizers) and JIT-compile IR text."""
    mod = target.parse(ir_text)
    if optimize:
        target.optimize(mod)
    if keep_object:
        # Generate machine code once and load that object: adding the module to the engine
        # as well would run LLVM's code generator a second time (a third of compile time).
        with _ENGINE_LOCK:
            obj = target.target_machine().emit_object(mod)
        return load_object(obj)
    with _ENGINE_LOCK:
        engine, backing = _empty_engine()
        engine.add_module(mod)
        engine.finalize_object()
        engine.run_static_constructors()
    kernel = Kernel(engine, mod, None)
    kernel._backing = backing
    return kernel


def load_object(object_code: bytes) -> Kernel:
    """A Kernel from object code saved earlier (skips parsing and optimization)."""
    with _ENGINE_LOCK:
        engine, backing = _empty_engine()
        engine.add_object_file(llvm.ObjectFileRef.from_data(object_code))
        engine.finalize_object()
    kernel = Kernel(engine, None, object_code)
    kernel._backing = backing
    return kernel


def assembly(ir_text: str, optimize: bool = True) -> str:
    """The host assembly of IR text after optimization (to read what LLVM generated)."""
    mod = target.parse(ir_text)
    if optimize:
        target.optimize(mod)
    return target.target_machine().emit_assembly(mod)


def optimized_ir(ir_text: str) -> str:
    """The IR text after the O3 pipeline (to check that loops were vectorized)."""
    mod = target.parse(ir_text)
    target.optimize(mod)
    return str(mod)
