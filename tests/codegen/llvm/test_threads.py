"""The IR thread pool: every index exactly once, inline paths, concurrency, fork, idle sleep.

A hang in native code cannot be interrupted, so every test runs under a faulthandler
watchdog that dumps the stacks and ends the process, and the fork checks run in a
subprocess with a timeout.
"""

import ctypes
import faulthandler
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from llvmlite import ir

from graphdl.codegen.llvm import jit, target, threads

GRAIN = 1000
I64 = ir.IntType(64)
I8P = ir.IntType(8).as_pointer()
WATCHDOG_S = 25
SUBPROCESS_TIMEOUT_S = 20


@pytest.fixture(autouse=True)
def watchdog():
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def runtime():
    rt = threads.runtime()
    before = rt.get_num_threads()
    yield rt
    rt.set_num_threads(before)


def _emit_fill(module):
    """fill(ctx, begin, end): for i in [begin, end): out[i] = 3 i + 1, counts[i] += 1
    (atomically), tids[i] = pthread_self(); ctx = {out, counts, tids} as three i64*."""
    fn = ir.Function(module, threads.BODY_TYPE, "fill")
    ctx, begin, end = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    self_id = ir.Function(module, ir.FunctionType(I64, []), "pthread_self")
    fields = b.bitcast(ctx, I64.as_pointer().as_pointer())
    out, counts, tids = (b.load(b.gep(fields, [ir.Constant(I64, k)])) for k in range(3))
    tid = b.call(self_id, [])
    entry = b.block
    head, body, done = (fn.append_basic_block(s) for s in ("head", "body", "done"))
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(I64)
    i.add_incoming(begin, entry)
    b.cbranch(b.icmp_signed("<", i, end), body, done)
    b.position_at_end(body)
    b.store(b.add(b.mul(i, I64(3)), I64(1)), b.gep(out, [i]))
    b.atomic_rmw("add", b.gep(counts, [i]), I64(1), "monotonic")
    b.store(tid, b.gep(tids, [i]))
    i.add_incoming(b.add(i, I64(1)), body)
    b.branch(head)
    b.position_at_end(done)
    b.ret_void()
    return fn


def _emit_nested(module, fill, parallel_for):
    """nested(ctx, begin, end): calls gd_parallel_for(fill, ctx shifted by begin, end - begin)
    from inside a body, which must run inline."""
    fn = ir.Function(module, threads.BODY_TYPE, "nested")
    ctx, begin, end = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    fields = b.bitcast(ctx, I64.as_pointer().as_pointer())
    inner = b.alloca(I64.as_pointer(), 3)
    for k in range(3):
        array = b.load(b.gep(fields, [I64(k)]))
        b.store(b.gep(array, [begin]), b.gep(inner, [I64(k)]))
    b.call(parallel_for, [fill, b.bitcast(inner, I8P), b.sub(end, begin), I64(1)])
    b.ret_void()
    return fn


@pytest.fixture(scope="module")
def kernels(runtime):
    module = ir.Module(name="test_threads")
    fns = threads.declare_runtime(module)
    fill = _emit_fill(module)
    nested = _emit_nested(module, fill, fns.parallel_for)
    for name, body in (("run_fill", fill), ("run_nested", nested)):
        fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [I8P, I64, I64]), name)
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        b.call(fns.parallel_for, [body, *fn.args])
        b.ret_void()
    _emit_repeat(module, fill, fns.parallel_for)
    _emit_set_inside(module, fns)
    kernel = jit.compile_ir(str(module))
    argtypes = (ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)
    return {"kernel": kernel, "fill": kernel.cfunc("run_fill", None, *argtypes),
            "nested": kernel.cfunc("run_nested", None, *argtypes),
            "repeat": kernel.cfunc("repeat_fill", None, *argtypes, ctypes.c_int64),
            "set_inside": kernel.cfunc("run_set_inside", None, ctypes.c_void_p),
            "fill_address": kernel.address("fill")}


def _emit_repeat(module, fill, parallel_for):
    """repeat_fill(ctx, n, grain, reps): reps fork-joins back to back, from native code."""
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [I8P, I64, I64, I64]),
                     "repeat_fill")
    ctx, n, grain, reps = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    entry = b.block
    head, body, done = (fn.append_basic_block(s) for s in ("head", "body", "done"))
    b.branch(head)
    b.position_at_end(head)
    r = b.phi(I64)
    r.add_incoming(I64(0), entry)
    b.cbranch(b.icmp_signed("<", r, reps), body, done)
    b.position_at_end(body)
    b.call(parallel_for, [fill, ctx, n, grain])
    r.add_incoming(b.add(r, I64(1)), body)
    b.branch(head)
    b.position_at_end(done)
    b.ret_void()


def _emit_set_inside(module, fns):
    """run_set_inside(ctx = i32* n): a parallel loop whose body calls gd_set_num_threads(n)."""
    i32 = ir.IntType(32)
    body = ir.Function(module, threads.BODY_TYPE, "set_inside")
    b = ir.IRBuilder(body.append_basic_block("entry"))
    b.call(fns.set_num_threads, [b.load(b.bitcast(body.args[0], i32.as_pointer()))])
    b.ret_void()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [I8P]), "run_set_inside")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    b.call(fns.parallel_for, [body, fn.args[0], I64(64), I64(1)])
    b.ret_void()


class Buffers:
    def __init__(self, n):
        self.out = np.zeros(n, np.int64)
        self.counts = np.zeros(n, np.int64)
        self.tids = np.zeros(n, np.uint64)
        self.ctx = np.array([a.ctypes.data for a in (self.out, self.counts, self.tids)],
                            np.uint64)

    @property
    def address(self):
        return self.ctx.ctypes.data

    def assert_filled_once(self):
        n = len(self.out)
        np.testing.assert_array_equal(self.counts, np.ones(n, np.int64))
        np.testing.assert_array_equal(self.out, 3 * np.arange(n, dtype=np.int64) + 1)


@pytest.mark.parametrize("num_threads", [1, 2, 4])
@pytest.mark.parametrize("n", [0, 1, GRAIN - 1, GRAIN, 2 * GRAIN + 1, 10**6])
def test_every_index_runs_exactly_once(runtime, kernels, num_threads, n):
    runtime.set_num_threads(num_threads)
    assert runtime.get_num_threads() == num_threads
    for _ in range(3):  # also reuses the workers between loops
        buffers = Buffers(n)
        kernels["fill"](buffers.address, n, GRAIN)
        buffers.assert_filled_once()
        if n > 0:
            assert len(set(buffers.tids.tolist())) <= min(num_threads, max(1, n // GRAIN))
            # Chunks are contiguous and at least GRAIN long (or all of n when n < GRAIN).
            edges = np.flatnonzero(np.diff(buffers.tids)) + 1
            runs = np.diff(np.concatenate([[0], edges, [n]]))
            assert len(runs) <= num_threads and runs.min() >= min(n, GRAIN)


@pytest.mark.parametrize("n", [1, GRAIN - 1, GRAIN, 2 * GRAIN - 1])
def test_small_loops_run_on_the_calling_thread(runtime, kernels, n):
    runtime.set_num_threads(4)
    buffers = Buffers(n)
    kernels["fill"](buffers.address, n, GRAIN)
    buffers.assert_filled_once()
    assert set(buffers.tids.tolist()) == {threading.get_ident()}


def test_large_loops_use_a_worker(runtime, kernels):
    runtime.set_num_threads(2)
    deadline = time.monotonic() + 5  # on a busy machine the worker may miss many loops
    while time.monotonic() < deadline:
        buffers = Buffers(10**6)
        kernels["fill"](buffers.address, 10**6, GRAIN)
        buffers.assert_filled_once()
        if len(set(buffers.tids.tolist())) == 2:
            return
    pytest.fail("no worker ran a chunk of a 10^6-iteration loop in 5 s")


@pytest.mark.parametrize("num_threads", [2, 4])
@pytest.mark.parametrize("n", [2, 3, 64, 5000])
def test_back_to_back_fork_joins_count_every_index(runtime, kernels, num_threads, n):
    runtime.set_num_threads(num_threads)
    reps = 20_000 if n < 5000 else 200
    buffers = Buffers(n)
    kernels["repeat"](buffers.address, n, 1, reps)
    np.testing.assert_array_equal(buffers.counts, np.full(n, reps, np.int64))
    np.testing.assert_array_equal(buffers.out, 3 * np.arange(n, dtype=np.int64) + 1)


def test_set_num_threads_inside_a_body_does_not_block(runtime, kernels):
    runtime.set_num_threads(2)
    wanted = np.array([3], np.int32)
    kernels["set_inside"](wanted.ctypes.data)  # stored while busy, applied by the next loop
    assert runtime.get_num_threads() == 3
    buffers = Buffers(10**5)
    kernels["fill"](buffers.address, 10**5, GRAIN)
    buffers.assert_filled_once()


def test_one_thread_runs_no_worker(runtime, kernels):
    runtime.set_num_threads(4)
    warm_up = Buffers(10**5)
    kernels["fill"](warm_up.address, 10**5, 1)  # workers exist now
    runtime.set_num_threads(1)
    assert runtime.get_num_threads() == 1
    buffers = Buffers(10**6)
    kernels["fill"](buffers.address, 10**6, 1)
    buffers.assert_filled_once()
    assert set(buffers.tids.tolist()) == {threading.get_ident()}


def test_python_ctypes_entry_point(runtime, kernels):
    runtime.set_num_threads(2)
    buffers = Buffers(10**5)
    runtime.parallel_for(kernels["fill_address"], buffers.address, 10**5, GRAIN)
    buffers.assert_filled_once()


@pytest.mark.parametrize("num_threads", [2, 4])
def test_concurrent_callers_both_get_correct_results(runtime, kernels, num_threads):
    runtime.set_num_threads(num_threads)
    errors = []

    def work():
        try:
            for _ in range(10):  # ctypes releases the GIL, so the calls overlap
                buffers = Buffers(3 * 10**5)
                kernels["fill"](buffers.address, 3 * 10**5, GRAIN)
                buffers.assert_filled_once()
        except AssertionError as error:
            errors.append(error)

    callers = [threading.Thread(target=work) for _ in range(2)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert not errors


def test_nested_parallel_for_runs_inline(runtime, kernels):
    runtime.set_num_threads(2)
    n = 10**5
    buffers = Buffers(n)
    kernels["nested"](buffers.address, n, GRAIN)
    np.testing.assert_array_equal(buffers.counts, np.ones(n, np.int64))
    # Each outer chunk fills its slice with 3 j + 1 for j counted from the chunk's start.
    starts = np.flatnonzero(buffers.out == 1)
    assert starts[0] == 0 and 1 <= len(starts) <= 2
    chunk_of = np.searchsorted(starts, np.arange(n), side="right") - 1
    np.testing.assert_array_equal(buffers.out, 3 * (np.arange(n) - starts[chunk_of]) + 1)
    for start, stop in zip(starts, [*starts[1:], n], strict=True):  # the inner loop ran inline
        assert len(set(buffers.tids[start:stop].tolist())) == 1


def test_idle_workers_sleep(runtime, kernels):
    runtime.set_num_threads(4)
    buffers = Buffers(10**6)
    kernels["fill"](buffers.address, 10**6, GRAIN)
    wall, cpu = time.perf_counter(), time.process_time()
    time.sleep(0.5)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert wall >= 0.5
    assert cpu < 0.1, f"idle workers burned {cpu:.3f} s of CPU in {wall:.3f} s"


def _run_script(script, **env):
    environment = dict(os.environ, **env)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=environment,
                          capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


_FORK_SCRIPT = """
import os
import time

import numpy as np
from llvmlite import ir

from graphdl.codegen.llvm import jit, threads

I64 = ir.IntType(64)
rt = threads.runtime()
rt.set_num_threads(2)
module = ir.Module()
threads.declare_runtime(module)
body = ir.Function(module, threads.BODY_TYPE, "body")  # counts[i] += 1 for i in [begin, end)
ctx, begin, end = body.args
b = ir.IRBuilder(body.append_basic_block())
counts = b.bitcast(ctx, I64.as_pointer())
entry = b.block
head, loop, done = (body.append_basic_block() for _ in range(3))
b.branch(head)
b.position_at_end(head)
i = b.phi(I64)
i.add_incoming(begin, entry)
b.cbranch(b.icmp_signed("<", i, end), loop, done)
b.position_at_end(loop)
b.atomic_rmw("add", b.gep(counts, [i]), I64(1), "monotonic")
i.add_incoming(b.add(i, I64(1)), loop)
b.branch(head)
b.position_at_end(done)
b.ret_void()
kernel = jit.compile_ir(str(module))


def check():
    counts = np.zeros(10**6, np.int64)
    rt.parallel_for(kernel.address("body"), counts.ctypes.data, 10**6, 1000)
    assert (counts == 1).all()


check()  # the parent's workers exist now
pid = os.fork()
if pid == 0:
    try:
        alone = len(os.listdir("/proc/self/task"))  # fork copied only the calling thread
        check()  # the child starts its own worker
        check()
        started = len(os.listdir("/proc/self/task")) - alone
        code = 0 if started == 1 and rt.get_num_threads() == 2 else 3
    except BaseException:
        code = 2
    os._exit(code)
deadline = time.monotonic() + 10
status = None
while time.monotonic() < deadline and status is None:
    got, raw = os.waitpid(pid, os.WNOHANG)
    status = raw if got else None
    time.sleep(0.01)
if status is None:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise SystemExit("the forked child hung")
assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
check()  # the parent's pool still works
print("ok")
"""


def test_forked_child_runs_parallel_for_and_exits():
    assert _run_script(_FORK_SCRIPT).strip() == "ok"


def test_default_thread_count_comes_from_omp_num_threads():
    script = """
    from graphdl.codegen.llvm import threads
    print(threads.runtime().get_num_threads())
    """
    assert _run_script(script, OMP_NUM_THREADS="3").strip() == "3"


@pytest.mark.parametrize("value", ["", "0", "abc"])
def test_default_thread_count_falls_back_to_affinity(monkeypatch, value):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert threads.default_num_threads() == len(os.sched_getaffinity(0))


def test_runtime_ir_verifies_and_uses_atomics_futex_and_pause():
    module = ir.Module()
    threads.declare_runtime(module)  # declarations first: emit_runtime fills them in
    threads.emit_runtime(module)
    text = str(module)
    threads.emit_runtime(module)
    assert str(module) == text  # idempotent
    target.parse(text)  # verifies
    for piece in ("cmpxchg", "atomicrmw", "load atomic", "store atomic", "@syscall",
                  "@pthread_create", "define void @gd_parallel_for"):
        assert piece in text.replace('"', ""), piece
    if target.host()["triple"].startswith("x86_64"):
        assert "llvm.x86.sse2.pause" in text
