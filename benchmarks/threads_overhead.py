"""Cost of one gd_parallel_for round trip, and the speedup of a compute-bound loop.

    python benchmarks/threads_overhead.py

1. Overhead: a JIT-compiled loop calls gd_parallel_for 10^4 times with an empty body
   (n = 2, grain = 1, so two chunks), timing each call with clock_gettime(CLOCK_MONOTONIC)
   in native code, so Python is not in the measurement. The same with a near-empty body that
   counts which thread ran each chunk shows how often a worker took part (with a body this
   short the caller usually steals chunk 1 before the worker has woken up). The fork-join
   latency proper is measured with two chunks that each busy-wait BUSY_NS, so that the
   worker must take one: median call time minus BUSY_NS.
2. Speedup: 10^7 iterations of a dependent chain of FMAs (no memory traffic), 1 vs 2 threads.
"""

from __future__ import annotations

import ctypes
import os
import statistics
import threading
import time

import numpy as np
from llvmlite import ir

from graphdl.codegen.llvm import jit, threads

I32 = ir.IntType(32)
I64 = ir.IntType(64)
F64 = ir.DoubleType()
I8P = ir.IntType(8).as_pointer()
VOID = ir.VoidType()
CLOCK_MONOTONIC = 1  # from linux/include/uapi/linux/time.h
TIMESPEC = ir.LiteralStructType([I64, I64])
CALLS = 10**4
COMPUTE_N = 10**7
FMA_CHAIN = 8
BUSY_NS = 20_000
COLD_BUSY_NS = 500_000
COLD_SLEEP_S = 0.005


def _counted_loop(b, fn, stop, body):
    """for i in range(stop): body(i); the builder ends after the loop."""
    entry = b.block
    head, loop, done = (fn.append_basic_block(s) for s in ("head", "loop", "done"))
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(I64)
    i.add_incoming(I64(0), entry)
    b.cbranch(b.icmp_signed("<", i, stop), loop, done)
    b.position_at_end(loop)
    body(i)
    i.add_incoming(b.add(i, I64(1)), b.block)
    b.branch(head)
    b.position_at_end(done)


def _emit_bodies(module):
    empty = ir.Function(module, threads.BODY_TYPE, "empty")
    ir.IRBuilder(empty.append_basic_block()).ret_void()

    # who(ctx = {caller tid, chunks by caller, chunks by a worker}, begin, end)
    who = ir.Function(module, threads.BODY_TYPE, "who")
    b = ir.IRBuilder(who.append_basic_block())
    self_id = ir.Function(module, ir.FunctionType(I64, []), "pthread_self")
    slots = b.bitcast(who.args[0], I64.as_pointer())
    on_worker = b.icmp_unsigned("!=", b.call(self_id, []), b.load(slots))
    counter = b.gep(slots, [b.add(I64(1), b.zext(on_worker, I64))])
    b.atomic_rmw("add", counter, I64(1), "monotonic")
    b.ret_void()

    # busy(ctx = i64* nanoseconds per iteration, begin, end): spin on the clock
    busy = ir.Function(module, threads.BODY_TYPE, "busy")
    ctx, begin, end = busy.args
    b = ir.IRBuilder(busy.append_basic_block())
    spin, done = busy.append_basic_block("spin"), busy.append_basic_block("done")
    span = b.mul(b.sub(end, begin), b.load(b.bitcast(ctx, I64.as_pointer())))
    deadline = b.add(_now(module, b), span)
    b.branch(spin)
    b.position_at_end(spin)
    b.cbranch(b.icmp_signed("<", _now(module, b), deadline), spin, done)
    b.position_at_end(done)
    b.ret_void()

    # compute(ctx = double* total, begin, end): a chain of FMAs per i, summed per chunk
    compute = ir.Function(module, threads.BODY_TYPE, "compute")
    ctx, begin, end = compute.args
    b = ir.IRBuilder(compute.append_basic_block())
    total = b.alloca(F64)
    b.store(F64(0.0), total)

    def step(i):
        x = b.sitofp(b.add(i, begin), F64)
        y = x
        for _ in range(FMA_CHAIN):
            product = b.fmul(y, F64(0.999999), flags=("contract",))
            y = b.fadd(product, F64(1e-3), flags=("contract",))  # contracted into one FMA
        b.store(b.fadd(b.load(total), y), total)

    _counted_loop(b, compute, b.sub(end, begin), step)
    b.atomic_rmw("fadd", b.bitcast(ctx, F64.as_pointer()), b.load(total), "monotonic")
    b.ret_void()
    return empty, who, busy, compute


def _now(module, b):
    """clock_gettime(CLOCK_MONOTONIC) in nanoseconds, emitted at the builder."""
    gettime = module.globals.get("clock_gettime") or ir.Function(
        module, ir.FunctionType(I32, [I32, TIMESPEC.as_pointer()]), "clock_gettime")
    entry = b.function.entry_basic_block
    with b.goto_block(entry):
        b.position_at_start(entry)
        spec = b.alloca(TIMESPEC)
    b.call(gettime, [I32(CLOCK_MONOTONIC), spec])
    seconds = b.load(b.gep(spec, [I32(0), I32(0)]))
    return b.add(b.mul(seconds, I64(10**9)), b.load(b.gep(spec, [I32(0), I32(1)])))


def _emit_timed_calls(module, fns, body):
    """timed_<body>(ctx, ns, calls): ns[k] = duration of gd_parallel_for(body, ctx, 2, 1)."""
    fn = ir.Function(module, ir.FunctionType(VOID, [I8P, I64.as_pointer(), I64]),
                     f"timed_{body.name}")
    ctx, ns, calls = fn.args
    b = ir.IRBuilder(fn.append_basic_block())

    def one_call(k):
        start = _now(module, b)
        b.call(fns.parallel_for, [body, ctx, I64(2), I64(1)])
        b.store(b.sub(_now(module, b), start), b.gep(ns, [k]))

    _counted_loop(b, fn, calls, one_call)
    b.ret_void()


def compile_benchmark():
    """The benchmark's kernel, compiled after the runtime has registered its symbols."""
    threads.runtime()
    module = ir.Module(name="threads_overhead")
    fns = threads.declare_runtime(module)
    empty, who, busy, _ = _emit_bodies(module)
    for body in (empty, who, busy):
        _emit_timed_calls(module, fns, body)
    return jit.compile_ir(str(module))


def overhead_us(kernel, name, ctx=None) -> float:
    """Median microseconds of one gd_parallel_for with body `name` (n = 2, grain = 1)."""
    timed = kernel.cfunc(f"timed_{name}", None, ctypes.c_void_p, ctypes.c_void_p,
                         ctypes.c_int64)
    ns = np.zeros(CALLS, np.int64)
    timed(ctx, ns.ctypes.data, 100)  # warm up: workers started and spinning
    timed(ctx, ns.ctypes.data, CALLS)
    return float(np.median(ns)) / 1e3


def cold_latency_us(kernel, samples: int = 100) -> float:
    """Fork-join latency when the worker is asleep in futex (the loop before ended long ago):
    median time of gd_parallel_for over two COLD_BUSY_NS chunks, minus one chunk."""
    timed = kernel.cfunc("timed_busy", None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
    busy_ns = np.array([COLD_BUSY_NS], np.int64)
    ns = np.zeros(1, np.int64)
    times = []
    for _ in range(samples):
        time.sleep(COLD_SLEEP_S)  # far beyond the spin budget: the worker sleeps
        timed(busy_ns.ctypes.data, ns.ctypes.data, 1)
        times.append(int(ns[0]))
    return (statistics.median(times) - COLD_BUSY_NS) / 1e3


def _schedstat() -> dict[str, tuple[int, int]]:
    """Per thread of this process: (ns on a CPU, ns runnable but waiting for one)."""
    result = {}
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/schedstat") as f:
            on_cpu, waiting, _ = map(int, f.read().split())
        result[tid] = (on_cpu, waiting)
    return result


def compute_seconds(kernel, repeats: int = 21) -> dict[int, list[float]]:
    """Wall seconds of the FMA loop over COMPUTE_N iterations with 1 and 2 threads, the two
    interleaved so that both see the same background load. Also prints, from the kernel's
    schedstat, how the 2-thread runs' CPU time split between the threads and how long they
    waited for a CPU (other processes on a shared machine hide the speedup)."""
    rt = threads.runtime()
    total = np.zeros(1, np.float64)
    times = {1: [], 2: []}
    on_cpu, waiting = {}, 0
    for _ in range(repeats):
        for num_threads in times:
            rt.set_num_threads(num_threads)
            before = _schedstat()
            start = time.perf_counter()
            rt.parallel_for(kernel.address("compute"), total.ctypes.data, COMPUTE_N, 4096)
            times[num_threads].append(time.perf_counter() - start)
            if num_threads == 2:
                for tid, (cpu, wait) in _schedstat().items():
                    cpu0, wait0 = before.get(tid, (0, 0))
                    on_cpu[tid] = on_cpu.get(tid, 0) + cpu - cpu0
                    waiting += wait - wait0
    caller = str(threading.get_native_id())
    worker_cpu = sum(cpu for tid, cpu in on_cpu.items() if tid != caller)
    print(f"  2 threads: the worker ran {worker_cpu / sum(on_cpu.values()):.0%} of the CPU "
          f"time; runnable threads waited {waiting / 1e6:.0f} ms for a CPU in "
          f"{sum(times[2]) * 1e3:.0f} ms")
    return times


def main() -> None:
    rt = threads.runtime()
    kernel = compile_benchmark()
    print(f"default threads: {rt.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")
    for num_threads in (1, 2):
        rt.set_num_threads(num_threads)
        print(f"{num_threads} thread(s): empty body {overhead_us(kernel, 'empty'):.3f} us "
              f"median per gd_parallel_for over {CALLS} calls")
    rt.set_num_threads(2)
    caller = threading.get_ident()  # pthread_self() on POSIX
    slots = np.array([caller, 0, 0], np.uint64)
    median = overhead_us(kernel, "who", slots.ctypes.data)
    share = slots[2] / max(1, slots[1] + slots[2])
    print(f"2 threads: near-empty body {median:.3f} us; chunks run by the worker: {share:.1%}")
    busy_ns = np.array([BUSY_NS], np.int64)
    latency = overhead_us(kernel, "busy", busy_ns.ctypes.data) - BUSY_NS / 1e3
    print(f"2 threads: fork-join latency {latency:.3f} us (2 chunks of {BUSY_NS / 1e3:.0f} us"
          " busy-wait each, median time minus one chunk)")
    print(f"2 threads: fork-join latency from sleep {cold_latency_us(kernel):.1f} us (the same,"
          f" {COLD_SLEEP_S * 1e3:.0f} ms after the previous loop, with chunks of"
          f" {COLD_BUSY_NS / 1e3:.0f} us)")
    runs = compute_seconds(kernel)
    one, two = runs[1], runs[2]
    print(f"FMA loop, {COMPUTE_N:.0e} iterations x {FMA_CHAIN} FMAs: 1 thread "
          f"{statistics.median(one) * 1e3:.1f} ms (best {min(one) * 1e3:.1f}), 2 threads "
          f"{statistics.median(two) * 1e3:.1f} ms (best {min(two) * 1e3:.1f}); speedup "
          f"{statistics.median(one) / statistics.median(two):.2f}x median, "
          f"{min(one) / min(two):.2f}x best")


if __name__ == "__main__":
    main()
