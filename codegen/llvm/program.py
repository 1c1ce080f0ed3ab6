"""The LLVM backend's Program: compile per binding of the symbolic sizes, cache, call.

`compile_program(inputs, outputs, updates)` returns a `Program` that compiles lazily: the
first call with a new batch size lowers the graph for those sizes (all loops get static
trip counts), JIT-compiles it, and keeps it; later calls with that size reuse it. One call
runs `gd_main` once: forward, backward and the in-place updates in a single native call.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import re
import threading
import time

import numpy as np

from graphdl.codegen.llvm import cache, jit, runtime, target
from graphdl.codegen.llvm.lower import lower
from graphdl.errors import ArgumentError
from graphdl.fingerprint import fingerprint

log = logging.getLogger("graphdl.llvm")
MAIN_TYPE = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p)
KERNEL_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)


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

    def bind(self, arrays) -> list:
        """Point the argument slots at the input arrays and at fresh output arrays."""
        plan, args = self.plan, self.args
        for k, a in enumerate(arrays):
            args[k] = _address(a)
        outs = [np.empty(s, dtype=d) for s, d in zip(plan.output_shapes, plan.output_dtypes)]
        for k, o in enumerate(outs):
            args[self.out_slot + k] = _address(o)
        return outs

    def run_kernel(self, kernel) -> None:
        """Run one kernel over its whole range, as gd_main would (threads included)."""
        from graphdl.codegen.llvm.lower import uses_threads
        address = self.kernel.address(kernel.name)
        if uses_threads(kernel, self.stats.get("threads", 1)):
            runtime.parallel_for_function()(address, self.args_ptr, kernel.trips, 1)
        else:
            KERNEL_TYPE(address)(self.args_ptr, 0, kernel.trips)

    def __call__(self, arrays):
        plan = self.plan
        outs = self.bind(arrays)
        status = self.main(self.args_ptr)
        if status:
            slot, bound = plan.label_checks[status - 1]
            labels = arrays[slot]
            bad = labels[(labels < 0) | (labels >= bound)].ravel()[0]
            raise ArgumentError(f"label/index {int(bad)} in input {slot} is out of range "
                                f"[0, {bound})")
        return outs


    def profile(self, arrays, repeat: int = 20) -> list:
        """Time each kernel alone (µs, median of `repeat`); variables are restored after.

        Returns dicts with the kernel's name, label (op and source line), threads used,
        work (elements or flops/8) and microseconds, slowest first.
        """
        from graphdl.codegen.llvm.lower import uses_threads
        saved = [a.copy() for a in self.plan.storage]
        self(arrays)                      # fill every intermediate buffer once, in order
        outs = self.bind(arrays)          # kept alive: the kernels write into them
        for array, old in zip(self.plan.storage, saved):
            np.copyto(array, old)
        rows = []
        threads = self.stats.get("threads", 1)
        for k in self.plan.kernels:
            parallel = uses_threads(k, threads)
            # Every repetition starts from the memory the kernel saw first: repeating an
            # update, or a kernel whose output reuses its input's arena bytes, would
            # otherwise drift the values (to denormals, even inf) and time something else.
            regions = [(int(self.args[slot]) + lo, hi - lo)
                       for slot, lo, hi in k.detail.get("writes", self._all_regions())]
            before = [ctypes.string_at(address, n) for address, n in regions]
            times = []
            for _ in range(repeat):
                for (address, n), data in zip(regions, before):
                    ctypes.memmove(address, data, n)
                t = time.perf_counter()
                self.run_kernel(k)
                times.append(time.perf_counter() - t)
            rows.append({"kernel": k.name, "label": k.label, "threads": threads if parallel
                         else 1, "work": k.work, "us": float(np.median(times) * 1e6)})
        for array, old in zip(self.plan.storage, saved):
            np.copyto(array, old)
        del outs
        return sorted(rows, key=lambda r: -r["us"])

    def _all_regions(self) -> list:
        """Every variable and the arena as (slot, 0, bytes): for kernels without `writes`."""
        first = self.plan.n_inputs + len(self.plan.output_shapes)
        regions = [(first + k, 0, a.nbytes) for k, a in enumerate(self.plan.storage)]
        return regions + [(first + len(self.plan.storage), 0, self.plan.arena_bytes)]


def _address(array: np.ndarray) -> int:
    """The address of a C-contiguous array's data. The buffer protocol is 3x faster than
    `array.ctypes.data` (0.26 vs 0.77 us, a tenth of a small model's step); read-only and
    empty arrays, which ctypes will not map, take the slow path."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(array))
    except (TypeError, ValueError, BufferError):
        return array.ctypes.data


def _aligned(array: np.ndarray) -> int:
    address = array.ctypes.data
    return address + (-address) % 64


class Program:
    """A graph compiled for the LLVM backend, specialized and cached per concrete size."""

    applies_updates = True

    def __init__(self, inputs, outputs, updates, skip_passes=frozenset(), instrument=False):
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.updates = tuple(updates)
        self.skip_passes = frozenset(skip_passes)
        self.instrument = instrument    # graphdl.nanguard's build: see lower.py
        self.compiled: dict = {}
        self.history: list = []
        self._last = None
        self._lock = threading.Lock()

    def for_sizes(self, sizes) -> Compiled:
        """The compiled code for one binding of the symbolic dimensions (compiled once)."""
        last = self._last
        if last is not None and last[0] == sizes:
            return last[1]
        key = tuple(sorted(sizes.items()))
        found = self.compiled.get(key)
        if found is None:
            with self._lock:
                found = self.compiled.get(key)
                if found is None:
                    found = self._compile(sizes)
                    self.compiled[key] = found
        self._last = (dict(sizes), found)
        return found

    def _matmul_dtypes(self) -> tuple:
        """The dtypes whose GEMM this graph (or its optimized form) may call."""
        from graphdl.graph import toposort
        from graphdl.ops.scan import body_nodes
        nodes = toposort(list(self.outputs) + [v for _, v in self.updates])
        nodes += body_nodes(nodes)              # the steps of loops (graphdl/ops/scan.py)
        return tuple(sorted({n.dtype for n in nodes if n.op in ("matmul", "tensordot")}))

    def _compile(self, sizes) -> Compiled:
        start = time.perf_counter()
        runtime_ready = runtime.ensure_async(self._matmul_dtypes())   # GEMMs: background
        threads = runtime.get_num_threads()
        extra = (f"{sorted(sizes.items())}|threads={threads}|skip={sorted(self.skip_passes)}"
                 f"|{cache.code_version()}|{target.cache_identity()}")
        digest, leaves = fingerprint(self.inputs, self.outputs, self.updates, extra)
        stats = {"sizes": dict(sizes), "threads": threads, "fingerprint": digest[:16]}
        # An instrumented plan holds graph nodes (its probes): never cached on disk.
        entry = None if self.instrument else cache.load_entry(digest)
        if entry is not None:
            runtime_ready()
            kernel = jit.load_object(entry[0])
            plan = _restore_plan(entry[1], leaves)
            stats.update(cache_hit=True, passes=[], lower_s=0.0, passes_s=0.0,
                         llvm_s=time.perf_counter() - start)
        else:
            try:
                kernel, plan = self._build(sizes, threads, stats, runtime_ready)
            finally:
                runtime_ready.join()    # never leave LLVM busy in the background
            if not self.instrument:
                cache.store_entry(digest, kernel.object_code, _portable_plan(plan, leaves))
            stats["cache_hit"] = False
        stats.update(kernels=len(plan.kernels), arena_bytes=plan.arena_bytes,
                     inplace_updates=plan.inplace_updates,
                     total_s=time.perf_counter() - start)
        reason = "first call" if not self.compiled else f"new sizes {dict(sizes)}"
        log.info("llvm compile (%s): %d kernels in %.3fs, cache %s", reason, len(plan.kernels),
                 stats["total_s"], "hit" if stats["cache_hit"] else "miss")
        self.history.append({"reason": reason, **stats})
        return Compiled(kernel, plan, stats)

    def _build(self, sizes, threads, stats, runtime_ready=None):
        from graphdl.passes import optimize
        t0 = time.perf_counter()
        report: list = []
        values = optimize(list(self.outputs) + [v for _, v in self.updates],
                          skip=self.skip_passes, report=report)
        outputs = values[:len(self.outputs)]
        updates = [(var, v) for (var, _), v in zip(self.updates, values[len(self.outputs):])]
        t1 = time.perf_counter()
        module, plan = lower(self.inputs, outputs, updates, sizes, threads, self.instrument)
        ir_text = str(module)
        if runtime_ready is not None:
            runtime_ready()         # no LLVM call before the runtime's compile is done
        t2 = time.perf_counter()
        kernel = jit.compile_ir(ir_text, keep_object=True)
        t3 = time.perf_counter()
        stats.update(passes=report, passes_s=t1 - t0, lower_s=t2 - t1, llvm_s=t3 - t2,
                     ir_lines=ir_text.count("\n"))
        return kernel, plan

    def run(self, arrays, sizes):
        """Run outputs and updates; returns (outputs, None): updates are applied in place."""
        return self.for_sizes(sizes)(arrays), None


def _portable_plan(plan, leaves):
    """The plan with storage arrays replaced by leaf indices (or values, for constants the
    passes created), so it can be stored and mapped onto another process's variables."""
    position = {id(leaf.storage.array): k for k, leaf in enumerate(leaves)}
    storage = [("leaf", position[id(a)]) if id(a) in position else ("value", a.copy())
               for a in plan.storage]
    # Source lines belong to the process that compiled: another script with the same graph
    # must not see them in its report.
    kernels = [dataclasses.replace(k, label=re.sub(r"\s*\S+:\d+", "", k.label))
               for k in plan.kernels]
    return dataclasses.replace(plan, storage=storage, kernels=kernels)


def _restore_plan(meta, leaves):
    storage = [leaves[ref].storage.array if kind == "leaf" else ref for kind, ref in meta.storage]
    return dataclasses.replace(meta, storage=storage)


def compile_program(inputs, outputs, updates, skip_passes=frozenset(),
                    instrument=False) -> Program:
    """The LLVM backend's compile step (lazy: machine code is made per concrete size).

    `instrument=True` makes the build graphdl.nanguard runs kernel by kernel (lower.py).
    """
    return Program(inputs, outputs, updates, skip_passes, instrument)
