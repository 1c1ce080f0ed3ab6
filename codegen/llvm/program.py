"""The LLVM backend's Program: compile per binding of the symbolic sizes, cache, call.

`compile_program(inputs, outputs, updates)` returns a `Program` that compiles lazily: the
first call with a new batch size lowers the graph for those sizes (all loops get static
trip counts), JIT-compiles it, and keeps it; later calls with that size reuse it. One call
runs `gd_main` once: forward, backward and the in-place updates in a single native call.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time

import numpy as np

from graphdl.codegen.llvm import cache, jit, runtime
from graphdl.codegen.llvm.lower import lower
from graphdl.errors import ArgumentError

log = logging.getLogger("graphdl.llvm")
MAIN_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class Compiled:
    """The machine code and call plan for one binding of the symbolic sizes."""

    def __init__(self, kernel, plan, stats):
        self.kernel = kernel
        self.plan = plan
        self.stats = stats
        self.main = MAIN_TYPE(kernel.address("gd_main"))
        n_in, n_out = plan.n_inputs, len(plan.output_shapes)
        n_slots = n_in + n_out + len(plan.storage) + 2
        self.args = np.zeros(n_slots, dtype=np.uintp)
        self.arena = np.empty(max(plan.arena_bytes, 64) // 8 + 8, dtype=np.float64)
        self.work = np.empty(plan.work_bytes // 8 + 8, dtype=np.float64)
        for k, array in enumerate(plan.storage):
            self.args[n_in + n_out + k] = array.ctypes.data
        self.args[n_in + n_out + len(plan.storage)] = _aligned(self.arena)
        self.args[n_in + n_out + len(plan.storage) + 1] = _aligned(self.work)
        self.args_ptr = self.args.ctypes.data
        self.out_slot = n_in

    def __call__(self, arrays):
        plan = self.plan
        for slot, bound in plan.label_checks:
            labels = arrays[slot]
            if labels.size and (labels.min() < 0 or labels.max() >= bound):
                bad = labels[(labels < 0) | (labels >= bound)].ravel()[0]
                raise ArgumentError(f"label/index {int(bad)} is out of range [0, {bound})")
        args = self.args
        for k, a in enumerate(arrays):
            args[k] = a.ctypes.data
        outs = [np.empty(s, dtype=d) for s, d in zip(plan.output_shapes, plan.output_dtypes)]
        for k, o in enumerate(outs):
            args[self.out_slot + k] = o.ctypes.data
        self.main(self.args_ptr)
        return outs


def _aligned(array: np.ndarray) -> int:
    address = array.ctypes.data
    return address + (-address) % 64


class Program:
    """A graph compiled for the LLVM backend, specialized and cached per concrete size."""

    applies_updates = True

    def __init__(self, inputs, outputs, updates):
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.updates = tuple(updates)
        self.compiled: dict = {}
        self.history: list = []
        self._lock = threading.Lock()

    def for_sizes(self, sizes) -> Compiled:
        """The compiled code for one binding of the symbolic dimensions (compiled once)."""
        key = tuple(sorted(sizes.items()))
        found = self.compiled.get(key)
        if found is None:
            with self._lock:
                found = self.compiled.get(key)
                if found is None:
                    found = self._compile(sizes)
                    self.compiled[key] = found
        return found

    def _compile(self, sizes) -> Compiled:
        start = time.perf_counter()
        runtime.ensure()
        threads = runtime.get_num_threads()
        module, plan = lower(self.inputs, self.outputs, self.updates, sizes, threads)
        lowered = time.perf_counter()
        kernel, hit = cache.compile_cached(str(module))
        done = time.perf_counter()
        stats = {"sizes": dict(sizes), "lower_s": lowered - start, "llvm_s": done - lowered,
                 "cache_hit": hit, "kernels": len(plan.kernels), "arena_bytes": plan.arena_bytes,
                 "inplace_updates": plan.inplace_updates, "threads": threads}
        reason = "first call" if not self.compiled else f"new sizes {dict(sizes)}"
        log.info("llvm compile (%s): %d kernels, lower %.3fs, llvm %.3fs, cache %s", reason,
                 len(plan.kernels), stats["lower_s"], stats["llvm_s"],
                 "hit" if hit else "miss")
        self.history.append({"reason": reason, **stats})
        return Compiled(kernel, plan, stats)

    def run(self, arrays, sizes):
        """Run outputs and updates; returns (outputs, None): updates are applied in place."""
        return self.for_sizes(sizes)(arrays), None


def compile_program(inputs, outputs, updates) -> Program:
    """The LLVM backend's compile step (lazy: machine code is made per concrete size)."""
    return Program(inputs, outputs, updates)
