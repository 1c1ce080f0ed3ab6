"""A fork-join thread pool written in LLVM IR, so that one native call can use every core.

The runtime is three C-callable functions, emitted with llvmlite's IR builder:

    void gd_parallel_for(void (*body)(i8* ctx, i64 begin, i64 end), i8* ctx, i64 n, i64 grain)
    void gd_set_num_threads(i32 n)      ; n counts the calling thread, 1 = no workers
    i32  gd_get_num_threads()

`gd_parallel_for` splits [0, n) into at most `num_threads` contiguous chunks of at least
`grain` iterations. The calling thread runs chunk 0 and then steals any chunk that no worker
has claimed yet (so a worker that is slow to wake never delays the loop), and returns when
every chunk is done. When n <= grain (or one chunk is all there is) the body runs inline with
no synchronization at all. One fork-join runs at a time: a caller that finds the pool busy
(another OS thread, or a body calling `gd_parallel_for` again) runs its whole loop inline.

Protocol (all shared state is LLVM atomics; each hot word sits on its own 64-byte line):
- `claim` (i64) = generation << 32 | nchunks << 16 | next chunk. A claim is a cmpxchg that
  checks the generation and the chunk count in the same word, so a worker that lags behind
  by a whole loop can never take a chunk of the next one. The task (body, ctx, n) is read
  after a successful claim (acquire), and the caller only rewrites it after every claimed
  chunk has been counted done, so the read always sees the task it claimed.
- `generation` (i32) is bumped (seq_cst) to publish a task; idle workers wait on it.
- `pending` (i32) counts chunks 1..nchunks-1 not done yet; the caller waits on it.
- Waiting spins for about SPIN_TICKS time-stamp-counter ticks with the x86 `pause`
  instruction, then sleeps with futex(FUTEX_WAIT_PRIVATE), so an idle pool uses no CPU. The
  sleeper count (workers) and the `caller_waiting` flag make the publisher issue
  FUTEX_WAKE only when someone may sleep; both sides use seq_cst (a Dekker pattern), and
  futex itself re-checks the word, so no wake-up is lost.
- Workers are started with pthread_create and stopped (and joined) by gd_set_num_threads
  under the same lock as gd_parallel_for. If a fork-join holds the lock (another thread, or
  a body calling gd_set_num_threads), the new count is only stored, and the next fork-join
  starts or stops workers to match it; so gd_set_num_threads never blocks.

The Python side, `Runtime`, compiles this once per process and registers the three symbols
with llvmlite, so that later modules `declare_runtime(module)` and call them directly.

    rt = threads.runtime()
    rt.set_num_threads(2)
    rt.parallel_for(body_address, ctx_address, 1_000_000, 4096)
"""

from __future__ import annotations

import atexit
import ctypes
import os
import threading
from dataclasses import dataclass

import llvmlite.binding as llvm
from llvmlite import ir

from graphdl.codegen.llvm import jit, target
from graphdl.errors import BackendUnavailable

# Upper bound on threads (workers + caller): sizes the static handle arrays and fits the
# 16-bit chunk fields of the claim word.
MAX_THREADS = 256
# About 100 us of spinning (the TSC ticks at 2.6 GHz on the dev machine) before a waiter
# sleeps. OpenMP runtimes spin far
# longer (KMP_BLOCKTIME defaults to 200 ms); we keep it short so that idle pools in several
# processes do not oversubscribe the cores.
SPIN_TICKS = 1 << 18
# From linux/include/uapi/linux/futex.h: FUTEX_WAIT | FUTEX_PRIVATE_FLAG, FUTEX_WAKE | ...
FUTEX_WAIT_PRIVATE = 128
FUTEX_WAKE_PRIVATE = 129
# SYS_futex from arch/x86/entry/syscalls/syscall_64.tbl and include/uapi/asm-generic/unistd.h.
_SYS_FUTEX = {"x86_64": 202, "aarch64": 98}
_INT_MAX = 2**31 - 1

PUBLIC = ("gd_parallel_for", "gd_set_num_threads", "gd_get_num_threads")
_AFTER_FORK = "gd_pool_after_fork_child"

_I8P = ir.IntType(8).as_pointer()
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_VOID = ir.VoidType()
BODY_TYPE = ir.FunctionType(_VOID, [_I8P, _I64, _I64])
_SLOT = ir.LiteralStructType([_I32, _I32])  # a worker's index and the generation it starts at


@dataclass(frozen=True)
class RuntimeFunctions:
    """The runtime's entry points as llvmlite functions of one module."""

    parallel_for: ir.Function
    set_num_threads: ir.Function
    get_num_threads: ir.Function


def declare_runtime(module: ir.Module) -> RuntimeFunctions:
    """Add (once) the external declarations of the runtime's entry points to `module`.

    For modules compiled after `runtime()` has registered the symbols:
        fns = declare_runtime(module)
        builder.call(fns.parallel_for, [body, ctx, n, grain])
    """
    def get(name, fnty):
        existing = module.globals.get(name)
        return existing if existing is not None else ir.Function(module, fnty, name)

    return RuntimeFunctions(
        parallel_for=get("gd_parallel_for",
                         ir.FunctionType(_VOID, [BODY_TYPE.as_pointer(), _I8P, _I64, _I64])),
        set_num_threads=get("gd_set_num_threads", ir.FunctionType(_VOID, [_I32])),
        get_num_threads=get("gd_get_num_threads", ir.FunctionType(_I32, [])),
    )


def emit_runtime(module: ir.Module) -> RuntimeFunctions:
    """Define the thread pool (its globals and functions) in `module`; idempotent.

    Each module that is compiled with it holds a separate pool, so normally only `Runtime`
    calls this and other modules use `declare_runtime`:
        module = ir.Module()
        emit_runtime(module)
        kernel = jit.compile_ir(str(module))
    """
    fns = declare_runtime(module)
    if not fns.parallel_for.is_declaration:
        return fns
    _PoolEmitter(module, fns).emit()
    return fns


def _arch() -> str:
    return target.host()["triple"].split("-")[0]


class _PoolEmitter:
    """Emits the pool's globals and functions into one module (see the module docstring)."""

    def __init__(self, module: ir.Module, fns: RuntimeFunctions):
        arch = _arch()
        if arch not in _SYS_FUTEX:
            raise BackendUnavailable(f"the thread pool knows no futex syscall number for {arch}")
        self.module = module
        self.fns = fns
        self.sys_futex = _SYS_FUTEX[arch]
        self.is_x86 = arch == "x86_64"
        self._globals()
        self._externals()

    # -- declarations ---------------------------------------------------------------------

    def _global(self, name, typ, align=64):
        var = ir.GlobalVariable(self.module, typ, name)
        var.linkage = "internal"
        var.initializer = ir.Constant(typ, None)
        var.align = align
        return var

    def _globals(self):
        self.lock = self._global("gd_pool_lock", _I32)
        self.nthreads = self._global("gd_pool_nthreads", _I32)
        self.nthreads.initializer = _I32(1)
        self.nworkers = self._global("gd_pool_nworkers", _I32)
        self.generation = self._global("gd_pool_generation", _I32)
        self.sleepers = self._global("gd_pool_sleepers", _I32)
        self.claim = self._global("gd_pool_claim", _I64)
        self.pending = self._global("gd_pool_pending", _I32)
        self.caller_waiting = self._global("gd_pool_caller_waiting", _I32)
        # The task: written by the caller before `claim`, read by whoever claims a chunk.
        self.task_body = self._global("gd_pool_body", BODY_TYPE.as_pointer())
        self.task_ctx = self._global("gd_pool_ctx", _I8P, align=8)
        self.task_n = self._global("gd_pool_n", _I64, align=8)
        self.handles = self._global("gd_pool_handles", ir.ArrayType(_I64, MAX_THREADS))
        self.slots = self._global("gd_pool_slots", ir.ArrayType(_SLOT, MAX_THREADS))

    def _extern(self, name, fnty):
        existing = self.module.globals.get(name)
        return existing if existing is not None else ir.Function(self.module, fnty, name)

    def _externals(self):
        start_type = ir.FunctionType(_I8P, [_I8P])
        self.syscall = self._extern("syscall", ir.FunctionType(_I64, [_I64], var_arg=True))
        self.pthread_create = self._extern(
            "pthread_create",
            ir.FunctionType(_I32, [_I64.as_pointer(), _I8P, start_type.as_pointer(), _I8P]))
        self.pthread_join = self._extern(
            "pthread_join", ir.FunctionType(_I32, [_I64, _I8P.as_pointer()]))
        self.cycles = self._extern("llvm.readcyclecounter", ir.FunctionType(_I64, []))
        if self.is_x86:
            self.pause = self._extern("llvm.x86.sse2.pause", ir.FunctionType(_VOID, []))
        self.worker_type = start_type

    def _function(self, name, fnty):
        """An internal helper function, and a builder at its entry."""
        fn = ir.Function(self.module, fnty, name)
        fn.linkage = "internal"
        return fn, self._define(fn)

    @staticmethod
    def _define(fn):
        for attr in target.function_attributes():
            fn.attributes.add(attr)
        return ir.IRBuilder(fn.append_basic_block("entry"))

    # -- small IR helpers -----------------------------------------------------------------

    @staticmethod
    def _align(typ):
        return typ.width // 8 if isinstance(typ, ir.IntType) else 8  # pointers: 8 bytes

    def _load(self, b, ptr, ordering):
        return b.load_atomic(ptr, ordering, self._align(ptr.type.pointee))

    def _store(self, b, value, ptr, ordering):
        b.store_atomic(value, ptr, ordering, self._align(value.type))

    def _futex(self, b, word, op, value):
        """syscall(SYS_futex, word, op, value, NULL): FUTEX_WAIT sleeps while *word == value,
        FUTEX_WAKE wakes up to `value` waiters. The result is not needed: every caller
        re-checks the word afterwards."""
        b.call(self.syscall, [_I64(self.sys_futex), word, _I64(op), b.zext(value, _I64),
                              _I8P(None)])

    # -- functions ------------------------------------------------------------------------

    def emit(self):
        self.spin_while_eq = self._emit_spin_while_eq()
        self.run_chunks = self._emit_run_chunks()
        self.worker_main = self._emit_worker_main()
        self.resize = self._emit_resize()
        self.wait_pending = self._emit_wait_pending()
        self.fork_join = self._emit_fork_join()
        self._emit_parallel_for()
        self._emit_set_num_threads()
        self._emit_get_num_threads()
        self._emit_after_fork_child()

    def _emit_spin_while_eq(self):
        """i32 spin_while_eq(i32* word, i32 value): spin while *word == value, for at most
        SPIN_TICKS; returns the last value loaded (acquire)."""
        fn, b = self._function("gd_pool_spin_while_eq",
                               ir.FunctionType(_I32, [_I32.as_pointer(), _I32]))
        word, value = fn.args
        start = b.call(self.cycles, [])
        loop, body, done = (fn.append_basic_block(s) for s in ("loop", "body", "done"))
        b.branch(loop)
        b.position_at_end(loop)
        seen = self._load(b, word, "acquire")
        b.cbranch(b.icmp_unsigned("==", seen, value), body, done)
        b.position_at_end(body)
        if self.is_x86:
            b.call(self.pause, [])
        elapsed = b.sub(b.call(self.cycles, []), start)
        b.cbranch(b.icmp_unsigned("<", elapsed, _I64(SPIN_TICKS)), loop, done)
        b.position_at_end(done)
        b.ret(seen)
        return fn

    def _chunk_bounds(self, b, n, nchunks, k):
        """[begin, end) of chunk k when n iterations are split into nchunks near-equal parts."""
        base = b.udiv(n, nchunks)
        rem = b.urem(n, nchunks)
        before = b.select(b.icmp_unsigned("<", k, rem), k, rem)
        begin = b.add(b.mul(k, base), before)
        size = b.add(base, b.zext(b.icmp_unsigned("<", k, rem), _I64))
        return begin, b.add(begin, size)

    def _emit_run_chunks(self):
        """void run_chunks(i32 gen): claim and run chunks of generation gen until none is left."""
        fn, b = self._function("gd_pool_run_chunks", ir.FunctionType(_VOID, [_I32]))
        (gen,) = fn.args
        blocks = ("loop", "try", "run", "check_waiter", "wake", "done")
        loop, try_claim, run, check, wake, done = (fn.append_basic_block(s) for s in blocks)
        b.branch(loop)
        b.position_at_end(loop)
        word = self._load(b, self.claim, "monotonic")
        word_gen = b.trunc(b.lshr(word, _I64(32)), _I32)
        nchunks = b.and_(b.lshr(word, _I64(16)), _I64(0xFFFF))
        k = b.and_(word, _I64(0xFFFF))
        live = b.and_(b.icmp_unsigned("==", word_gen, gen), b.icmp_unsigned("<", k, nchunks))
        b.cbranch(live, try_claim, done)
        b.position_at_end(try_claim)
        result = b.cmpxchg(self.claim, word, b.add(word, _I64(1)), "acquire", "monotonic")
        b.cbranch(b.extract_value(result, 1), run, loop)
        b.position_at_end(run)
        body = self._load(b, self.task_body, "monotonic")
        ctx = self._load(b, self.task_ctx, "monotonic")
        n = self._load(b, self.task_n, "monotonic")
        begin, end = self._chunk_bounds(b, n, nchunks, k)
        b.call(body, [ctx, begin, end])
        left = b.atomic_rmw("sub", self.pending, _I32(1), "seq_cst")
        b.cbranch(b.icmp_unsigned("==", left, _I32(1)), check, loop)
        b.position_at_end(check)
        waiting = self._load(b, self.caller_waiting, "seq_cst")
        b.cbranch(b.icmp_unsigned("!=", waiting, _I32(0)), wake, loop)
        b.position_at_end(wake)
        self._futex(b, self.pending, FUTEX_WAKE_PRIVATE, _I32(1))
        b.branch(loop)
        b.position_at_end(done)
        b.ret_void()
        return fn

    def _emit_worker_main(self):
        """i8* worker_main(i8* slot): wait for a new generation, run its chunks, repeat;
        exit when the worker's index is no longer below nworkers."""
        fn, b = self._function("gd_pool_worker_main", self.worker_type)
        slot = b.bitcast(fn.args[0], _SLOT.as_pointer())
        index = b.load(b.gep(slot, [_I32(0), _I32(0)]))
        start_gen = b.load(b.gep(slot, [_I32(0), _I32(1)]))
        entry = b.block
        blocks = ("wait", "prepare_sleep", "sleep", "unsleep", "got", "run", "exit")
        wait, prepare, sleep, unsleep, got, run, exit_ = (fn.append_basic_block(s)
                                                          for s in blocks)
        b.branch(wait)
        b.position_at_end(wait)
        seen = b.phi(_I32)
        seen.add_incoming(start_gen, entry)
        now = b.call(self.spin_while_eq, [self.generation, seen])
        b.cbranch(b.icmp_unsigned("!=", now, seen), got, prepare)
        b.position_at_end(prepare)
        b.atomic_rmw("add", self.sleepers, _I32(1), "seq_cst")
        again = self._load(b, self.generation, "seq_cst")
        b.cbranch(b.icmp_unsigned("==", again, seen), sleep, unsleep)
        b.position_at_end(sleep)
        self._futex(b, self.generation, FUTEX_WAIT_PRIVATE, seen)
        b.branch(unsleep)
        b.position_at_end(unsleep)
        b.atomic_rmw("sub", self.sleepers, _I32(1), "seq_cst")
        seen.add_incoming(seen, unsleep)
        b.branch(wait)
        b.position_at_end(got)
        active = self._load(b, self.nworkers, "acquire")
        b.cbranch(b.icmp_signed(">=", index, active), exit_, run)
        b.position_at_end(run)
        b.call(self.run_chunks, [now])
        seen.add_incoming(now, run)
        b.branch(wait)
        b.position_at_end(exit_)
        b.ret(_I8P(None))
        return fn

    def _counted_loop(self, b, fn, start, stop, name):
        """Emit `for w in range(start, stop)`; returns (w, body block, exit block) with the
        builder positioned in the body. The caller branches from the body end to `latch`."""
        entry = b.block
        head, body, latch, exit_ = (fn.append_basic_block(f"{name}_{s}")
                                    for s in ("head", "body", "latch", "exit"))
        b.branch(head)
        b.position_at_end(head)
        w = b.phi(_I32)
        w.add_incoming(start, entry)
        b.cbranch(b.icmp_signed("<", w, stop), body, exit_)
        b.position_at_end(latch)
        w.add_incoming(b.add(w, _I32(1)), latch)
        b.branch(head)
        b.position_at_end(body)
        return w, latch, exit_

    def _emit_resize(self):
        """void resize(i32 workers): start or stop (and join) workers; the lock is held."""
        fn, b = self._function("gd_pool_resize", ir.FunctionType(_VOID, [_I32]))
        (wanted,) = fn.args
        old = self._load(b, self.nworkers, "monotonic")
        shrink, grow_check, grow, done = (fn.append_basic_block(s)
                                          for s in ("shrink", "grow_check", "grow", "done"))
        b.cbranch(b.icmp_signed("<", wanted, old), shrink, grow_check)

        b.position_at_end(shrink)
        self._store(b, wanted, self.nworkers, "release")
        gen = b.add(self._load(b, self.generation, "monotonic"), _I32(1))
        self._store(b, b.shl(b.zext(gen, _I64), _I64(32)), self.claim, "release")  # 0 chunks
        self._store(b, gen, self.generation, "seq_cst")
        self._futex(b, self.generation, FUTEX_WAKE_PRIVATE, _I32(_INT_MAX))
        w, latch, exit_ = self._counted_loop(b, fn, wanted, old, "join")
        handle = b.load(b.gep(self.handles, [_I32(0), w]))
        b.call(self.pthread_join, [handle, ir.Constant(_I8P.as_pointer(), None)])
        b.branch(latch)
        b.position_at_end(exit_)
        b.branch(done)

        b.position_at_end(grow_check)
        b.cbranch(b.icmp_signed(">", wanted, old), grow, done)
        b.position_at_end(grow)
        gen = self._load(b, self.generation, "monotonic")
        self._store(b, wanted, self.nworkers, "release")
        w, latch, exit_ = self._counted_loop(b, fn, old, wanted, "start")
        slot = b.gep(self.slots, [_I32(0), w])
        b.store(w, b.gep(slot, [_I32(0), _I32(0)]))
        b.store(gen, b.gep(slot, [_I32(0), _I32(1)]))
        rc = b.call(self.pthread_create, [b.gep(self.handles, [_I32(0), w]), _I8P(None),
                                          self.worker_main, b.bitcast(slot, _I8P)])
        with b.if_then(b.icmp_signed("!=", rc, _I32(0)), likely=False):
            # Out of threads: keep the workers that started and shrink the pool to them.
            self._store(b, w, self.nworkers, "release")
            self._store(b, b.add(w, _I32(1)), self.nthreads, "monotonic")
            b.branch(done)
        b.branch(latch)
        b.position_at_end(exit_)
        b.branch(done)
        b.position_at_end(done)
        b.ret_void()
        return fn

    def _emit_wait_pending(self):
        """void wait_pending(): return once pending == 0 (spin, then futex-sleep)."""
        fn, b = self._function("gd_pool_wait_pending", ir.FunctionType(_VOID, []))
        blocks = ("top", "spin", "slow", "slow_check", "sleep", "slow_done", "done")
        top, spin, slow, slow_check, sleep, slow_done, done = (fn.append_basic_block(s)
                                                               for s in blocks)
        b.branch(top)
        b.position_at_end(top)
        left = self._load(b, self.pending, "acquire")
        b.cbranch(b.icmp_unsigned("==", left, _I32(0)), done, spin)
        b.position_at_end(spin)
        now = b.call(self.spin_while_eq, [self.pending, left])
        b.cbranch(b.icmp_unsigned("!=", now, left), top, slow)  # progress: spin afresh
        b.position_at_end(slow)
        self._store(b, _I32(1), self.caller_waiting, "seq_cst")
        b.branch(slow_check)
        b.position_at_end(slow_check)
        left = self._load(b, self.pending, "seq_cst")
        b.cbranch(b.icmp_unsigned("==", left, _I32(0)), slow_done, sleep)
        b.position_at_end(sleep)
        self._futex(b, self.pending, FUTEX_WAIT_PRIVATE, left)
        b.branch(slow_check)
        b.position_at_end(slow_done)
        self._store(b, _I32(0), self.caller_waiting, "monotonic")
        b.branch(done)
        b.position_at_end(done)
        b.ret_void()
        return fn

    def _emit_fork_join(self):
        """void fork_join(body, ctx, n, nchunks): publish the task, run chunk 0, steal what
        is left, wait for the rest. The lock is held and 2 <= nchunks <= MAX_THREADS."""
        fnty = ir.FunctionType(_VOID, [BODY_TYPE.as_pointer(), _I8P, _I64, _I64])
        fn, b = self._function("gd_pool_fork_join", fnty)
        body, ctx, n, nchunks = fn.args
        self._store(b, body, self.task_body, "monotonic")
        self._store(b, ctx, self.task_ctx, "monotonic")
        self._store(b, n, self.task_n, "monotonic")
        helpers = b.trunc(b.sub(nchunks, _I64(1)), _I32)
        self._store(b, helpers, self.pending, "monotonic")
        gen = b.add(self._load(b, self.generation, "monotonic"), _I32(1))
        word = b.or_(b.shl(b.zext(gen, _I64), _I64(32)), b.shl(nchunks, _I64(16)))
        self._store(b, b.or_(word, _I64(1)), self.claim, "release")  # chunk 0 is ours
        self._store(b, gen, self.generation, "seq_cst")
        sleeping = self._load(b, self.sleepers, "seq_cst")
        with b.if_then(b.icmp_unsigned("!=", sleeping, _I32(0))):
            self._futex(b, self.generation, FUTEX_WAKE_PRIVATE, helpers)
        begin, end = self._chunk_bounds(b, n, nchunks, _I64(0))
        b.call(body, [ctx, begin, end])
        b.call(self.run_chunks, [gen])
        b.call(self.wait_pending, [])
        b.ret_void()
        return fn

    def _emit_parallel_for(self):
        fn = self.fns.parallel_for
        body, ctx, n, grain = fn.args
        b = self._define(fn)
        blocks = ("split", "try_lock", "locked", "resize", "go", "fork_join", "unlock_inline",
                  "inline", "done")
        split, try_lock, locked, resize, go, fork_join, unlock_inline, inline, done = (
            fn.append_basic_block(s) for s in blocks)
        b.cbranch(b.icmp_signed(">", n, _I64(0)), split, done)
        b.position_at_end(split)
        grain = b.select(b.icmp_signed("<", grain, _I64(1)), _I64(1), grain)
        most = b.sdiv(n, grain)

        def chunks():
            threads = b.sext(self._load(b, self.nthreads, "monotonic"), _I64)
            return threads, b.select(b.icmp_signed("<", threads, most), threads, most)

        _, nchunks = chunks()
        b.cbranch(b.icmp_signed(">", nchunks, _I64(1)), try_lock, inline)
        b.position_at_end(try_lock)
        result = b.cmpxchg(self.lock, _I32(0), _I32(1), "acquire", "monotonic")
        b.cbranch(b.extract_value(result, 1), locked, inline)  # busy or nested: run inline
        b.position_at_end(locked)
        threads, nchunks = chunks()  # again: gd_set_num_threads may have stored since
        workers = b.trunc(b.sub(threads, _I64(1)), _I32)
        active = self._load(b, self.nworkers, "monotonic")
        b.cbranch(b.icmp_signed("!=", active, workers), resize, go)
        b.position_at_end(resize)  # first call, or first call in a forked child
        b.call(self.resize, [workers])
        b.branch(go)
        b.position_at_end(go)
        b.cbranch(b.icmp_signed(">", nchunks, _I64(1)), fork_join, unlock_inline)
        b.position_at_end(fork_join)
        b.call(self.fork_join, [body, ctx, n, nchunks])
        self._store(b, _I32(0), self.lock, "release")
        b.ret_void()
        b.position_at_end(unlock_inline)
        self._store(b, _I32(0), self.lock, "release")
        b.branch(inline)
        b.position_at_end(inline)
        b.call(body, [ctx, _I64(0), n])
        b.branch(done)
        b.position_at_end(done)
        b.ret_void()

    def _emit_set_num_threads(self):
        fn = self.fns.set_num_threads
        (wanted,) = fn.args
        b = self._define(fn)
        wanted = b.select(b.icmp_signed("<", wanted, _I32(1)), _I32(1), wanted)
        wanted = b.select(b.icmp_signed(">", wanted, _I32(MAX_THREADS)),
                          _I32(MAX_THREADS), wanted)
        self._store(b, wanted, self.nthreads, "monotonic")
        locked, busy = fn.append_basic_block("locked"), fn.append_basic_block("busy")
        result = b.cmpxchg(self.lock, _I32(0), _I32(1), "acquire", "monotonic")
        b.cbranch(b.extract_value(result, 1), locked, busy)
        b.position_at_end(locked)
        latest = self._load(b, self.nthreads, "monotonic")  # a racing call may have stored
        b.call(self.resize, [b.sub(latest, _I32(1))])
        self._store(b, _I32(0), self.lock, "release")
        b.ret_void()
        b.position_at_end(busy)  # a fork-join is running: its next one resizes the pool
        b.ret_void()

    def _emit_get_num_threads(self):
        b = self._define(self.fns.get_num_threads)
        b.ret(self._load(b, self.nthreads, "monotonic"))

    def _emit_after_fork_child(self):
        """void gd_pool_after_fork_child(): a forked child has no workers; forget them (and a
        lock that another parent thread may have held), so they restart lazily."""
        b = self._define(ir.Function(self.module, ir.FunctionType(_VOID, []), _AFTER_FORK))
        for word in (self.nworkers, self.lock, self.sleepers, self.pending,
                     self.caller_waiting):
            self._store(b, _I32(0), word, "seq_cst")
        b.ret_void()


def default_num_threads() -> int:
    """OMP_NUM_THREADS when it is set to a number >= 1, else the CPUs this process may use.

        os.environ["OMP_NUM_THREADS"] = "2"
        default_num_threads()   # 2
    """
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if value.isdigit() and int(value) >= 1:
        return min(int(value), MAX_THREADS)
    return min(len(os.sched_getaffinity(0)), MAX_THREADS)


class Runtime:
    """The compiled pool, with its entry points registered for modules compiled later.

    Get it from `runtime()`: a second Runtime would be a second pool whose symbols replace
    the first one's for modules compiled afterwards.
    `parallel_for(body_address, ctx_address, n, grain)` calls gd_parallel_for from Python
    (ctypes releases the GIL for the call).

        rt = runtime()
        rt.set_num_threads(4)
        rt.parallel_for(body_address, ctx_address, n, grain)
    """

    def __init__(self, num_threads: int | None = None):
        # Through the on-disk cache: a later process loads the object code without even
        # building the IR.
        from graphdl.codegen.llvm import cache

        def build_ir():
            module = ir.Module(name="graphdl_threads")
            emit_runtime(module)
            return str(module)
        self._kernel, _ = cache.compile_keyed("thread-pool", build_ir)
        for name in PUBLIC:
            llvm.add_symbol(name, self._kernel.address(name))
        self.parallel_for = self._kernel.cfunc(
            "gd_parallel_for", None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
            ctypes.c_int64)
        self._set = self._kernel.cfunc("gd_set_num_threads", None, ctypes.c_int32)
        self._get = self._kernel.cfunc("gd_get_num_threads", ctypes.c_int32)
        self._reset_child = self._kernel.cfunc(_AFTER_FORK, None)
        self._pid = os.getpid()
        os.register_at_fork(after_in_child=self._after_fork_in_child)
        # Join the workers before the interpreter frees the JIT memory they run in.
        atexit.register(self._set, 1)
        self._set(num_threads or default_num_threads())

    def address(self, name: str) -> int:
        """The address of one of the runtime's functions (as registered with llvmlite)."""
        return self._kernel.address(name)

    def set_num_threads(self, n: int) -> None:
        """Use n threads (the caller and n - 1 workers) in later parallel loops."""
        self._check_fork()
        self._set(int(n))

    def get_num_threads(self) -> int:
        """The number of threads a parallel loop may use, the calling thread included."""
        self._check_fork()
        return self._get()

    def _after_fork_in_child(self) -> None:
        self._reset_child()
        self._pid = os.getpid()

    def _check_fork(self) -> None:
        # register_at_fork covers os.fork and multiprocessing; this covers other forks.
        if os.getpid() != self._pid:
            self._after_fork_in_child()


# One pool per process, like OpenMP's runtime: it owns OS threads and the process-wide
# symbols gd_parallel_for & co., so it is created lazily once and shared.
_RUNTIME: Runtime | None = None
_RUNTIME_LOCK = threading.Lock()


def runtime() -> Runtime:
    """The process's thread pool, compiled and registered on first use.

        rt = runtime()
        rt.get_num_threads()   # e.g. 2
    """
    global _RUNTIME
    with _RUNTIME_LOCK:
        if _RUNTIME is None:
            _RUNTIME = Runtime()
        return _RUNTIME
