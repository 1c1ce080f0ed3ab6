"""W2 gemm, kernel level: graphdl's packed GEMM (codegen/llvm/gemm.py) beside numpy.matmul.

    python benchmarks/gemm_kernel.py [--sizes 256 1024 2048] [--runs 15] [--split m|n]

C = A @ B, square, float32; GFLOP/s = 2 N^3 / t with t the median of --runs timed runs, each
after 50 ms of untimed calls (a run repeats the call for about 20 ms, for N = 256). Columns:

- graphdl 1T: one call of gd_gemm_f32 on the whole product.
- graphdl 2T: the product split in two halves of rows (--split m) or columns (--split n),
  each with its own workspace. The main thread calls the ctypes function on its half; a
  second Python thread, inside one ctypes call for the whole run, spins on a flag and runs
  the other half each time the flag moves (as OpenBLAS's threads spin between calls).
- graphdl 2T sem: the same split, but the second thread sleeps on a semaphore and calls the
  ctypes function from Python each time: waking it costs tens of microseconds here, which
  shows at N = 256.
- numpy: numpy.matmul in this process, with the environment as it is (OpenBLAS threads at
  their default, 2 here), and numpy in a subprocess whose environment lacks
  OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE (these may be set on the shared machine and slow
  OpenBLAS down), with its default threads and, when threadpoolctl is installed, 1 thread.

The ratio columns divide graphdl by the faster of the two numpy figures of the same thread
count, so that graphdl is held against the stronger baseline. The contenders take turns run
by run (graphdl 1T, 2T, 2T sem, numpy, numpy clean, numpy clean 1T, then again), so that a
change in the load of the shared machine hits them alike; after numpy the benchmark waits
0.3 s for OpenBLAS's threads to stop spinning.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import pathlib
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from llvmlite import ir

from graphdl.codegen.llvm import gemm, jit, target

ARGTYPES = ([ctypes.c_int64] * 3 + [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64] * 2
            + [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p])
RUN_SECONDS = 0.02
# After a call, OpenBLAS's threads spin for a while (about 2^28 cycles) before they sleep;
# measured right after numpy, graphdl's second thread found its core taken.
SETTLE_SECONDS = 0.3
WARM_SECONDS = 0.05
UNSET = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def repeat_count(call) -> int:
    """Calls per timed run: enough for about RUN_SECONDS (after a warm-up call)."""
    call()
    start = time.perf_counter()
    call()
    return max(1, int(RUN_SECONDS / max(time.perf_counter() - start, 1e-7)))


def timed_run(call, repeat: int) -> float:
    """Seconds per call over one run of `repeat` calls, after WARM_SECONDS of untimed calls
    (an idle core took ~20 ms to come back to full speed: the first calls on two threads ran
    at half speed)."""
    start = time.perf_counter()
    while time.perf_counter() - start < WARM_SECONDS:
        call()
    start = time.perf_counter()
    for _ in range(repeat):
        call()
    return (time.perf_counter() - start) / repeat


def aligned_empty(elements: int, dtype) -> np.ndarray:
    """An uninitialized array whose data starts on a 64-byte boundary."""
    raw = np.empty(elements + 64, dtype)
    offset = (-raw.ctypes.data % 64) // raw.itemsize
    return raw[offset:offset + elements]


# The second thread of "graphdl 2T" waits for work by spinning on a flag in native code, as
# OpenBLAS's threads do, and calls gd_gemm_f32 from there: blocked on a semaphore or on the
# GIL, the thread took tens of microseconds to wake on this virtual machine, as long as half
# of an N = 256 product ("graphdl 2T sem" shows that variant).
SPIN_IR = """
define i32 @spin_while_equal(ptr %flag, i32 %value) nounwind {
entry:
  br label %loop
loop:
  %now = load atomic i32, ptr %flag acquire, align 4
  %same = icmp eq i32 %now, %value
  br i1 %same, label %wait, label %exit
wait:
  PAUSE
  br label %loop
exit:
  ret i32 %now
}

; Until *go < 0: wait for *go to change, run the product, publish the new value in *done.
define void @serve_gemm(ptr %go, ptr %done, i32 %start, i64 %M, i64 %N, i64 %K, ptr %A,
                        i64 %rsa, i64 %csa, ptr %B, i64 %rsb, i64 %csb, ptr %C, i64 %ldc,
                        i32 %accumulate, ptr %work) nounwind {
entry:
  br label %loop
loop:
  %last = phi i32 [ %start, %entry ], [ %now, %body ]
  %now = call i32 @spin_while_equal(ptr %go, i32 %last)
  %stop = icmp slt i32 %now, 0
  br i1 %stop, label %exit, label %body
body:
  call void @gd_gemm_f32(i64 %M, i64 %N, i64 %K, ptr %A, i64 %rsa, i64 %csa, ptr %B,
                         i64 %rsb, i64 %csb, ptr %C, i64 %ldc, i32 %accumulate, ptr %work)
  store atomic i32 %now, ptr %done release, align 4
  br label %loop
exit:
  ret void
}
"""


def _spin_ir() -> str:
    """SPIN_IR with the x86 pause hint where the host has it."""
    if target.host()["triple"].startswith(("x86_64", "i686", "i386")):
        return (SPIN_IR.replace("PAUSE", "call void @llvm.x86.sse2.pause()")
                + "declare void @llvm.x86.sse2.pause()\n")
    return SPIN_IR.replace("  PAUSE\n", "")


class GraphdlGemm:
    """gd_gemm_f32 compiled once, with a workspace per thread and a persistent worker thread
    that takes the second half of a product."""

    def __init__(self):
        module = ir.Module(name="gemm_bench")
        gemm.emit_gemm(module, "float32")
        self.kernel = jit.compile_ir(str(module) + _spin_ir())  # keeps the code alive
        self.fn = self.kernel.cfunc("gd_gemm_f32", None, *ARGTYPES)
        self.spin = self.kernel.cfunc("spin_while_equal", ctypes.c_int32, ctypes.c_void_p,
                                      ctypes.c_int32)
        self.serve = self.kernel.cfunc("serve_gemm", None, ctypes.c_void_p, ctypes.c_void_p,
                                       ctypes.c_int32, *ARGTYPES)
        self.works = [aligned_empty(gemm.workspace_elements("float32"), np.float32)
                      for _ in range(2)]
        self.flags = aligned_empty(32, np.int32)     # go at [0], done at [16]: two lines
        self.flags[:] = 0
        self._go = threading.Semaphore(0)
        self._done = threading.Semaphore(0)
        self._job = None
        self._worker = threading.Thread(target=self._serve, daemon=True)
        self._worker.start()

    def _serve(self):
        while True:
            self._go.acquire()
            if self._job is None:
                return
            self._job()
            self._done.release()

    def close(self):
        self._job = None
        self._go.release()
        self._worker.join()

    def args(self, a, b, c, rows: slice, cols: slice, work) -> tuple:
        """Arguments for C[rows, cols] = A[rows] @ B[:, cols] (all C-contiguous float32)."""
        m = rows.stop - rows.start
        n = cols.stop - cols.start
        k = a.shape[1]
        return (m, n, k, a[rows].ctypes.data, a.shape[1], 1,
                b[:, cols.start:].ctypes.data, b.shape[1], 1,
                c[rows, cols.start:].ctypes.data, c.shape[1], 0, work.ctypes.data)

    def one_thread(self, a, b, c):
        whole = self.args(a, b, c, slice(0, a.shape[0]), slice(0, b.shape[1]), self.works[0])
        return lambda: self.fn(*whole)

    def halves(self, a, b, c, split: str) -> tuple:
        """(this thread's arguments, the worker's) for the two halves of the product."""
        m, n = a.shape[0], b.shape[1]
        # halves on a tile boundary: MR rows, or one vector (lanes) of columns
        tile = gemm.blocking("float32")["MR" if split == "m" else "lanes"]
        half = -(-((m if split == "m" else n) // 2) // tile) * tile
        if split == "m":
            parts = [(slice(0, half), slice(0, n)), (slice(half, m), slice(0, n))]
        else:
            parts = [(slice(0, m), slice(0, half)), (slice(0, m), slice(half, n))]
        return (self.args(a, b, c, *parts[0], self.works[0]),
                self.args(a, b, c, *parts[1], self.works[1]))

    def two_threads(self, a, b, c, split: str):
        """One product on two threads; the worker sleeps on a semaphore between calls."""
        mine, theirs = self.halves(a, b, c, split)

        def call():
            self._job = lambda: self.fn(*theirs)
            self._go.release()
            self.fn(*mine)
            self._done.acquire()
        return call

    def two_threads_spinning(self, a, b, c, split: str):
        """One product on two threads; the worker spins in serve_gemm between calls."""
        return _SpinningPair(self, *self.halves(a, b, c, split))


class _SpinningPair:
    """Calls of one split product; `start` before a run of calls, `stop` after it.

    While spinning, the two threads are pinned to two CPUs: a spinning thread that the
    scheduler had put beside the other (it wakes a thread on the waker's CPU) held it for a
    whole time slice, 4 ms per call."""

    def __init__(self, g: GraphdlGemm, mine: tuple, theirs: tuple):
        self.g, self.mine, self.theirs = g, mine, theirs
        self.go = g.flags.ctypes.data
        self.done = g.flags[16:].ctypes.data
        self.seq = 0
        self.cpus = sorted(os.sched_getaffinity(0))

    def start(self):
        g = self.g
        g.flags[0] = g.flags[16] = self.seq = 0
        if len(self.cpus) >= 2:
            os.sched_setaffinity(0, {self.cpus[0]})
        g._job = self._serve
        g._go.release()

    def _serve(self):
        if len(self.cpus) >= 2:
            os.sched_setaffinity(0, {self.cpus[1]})
        self.g.serve(self.go, self.done, 0, *self.theirs)
        os.sched_setaffinity(0, self.cpus)

    def __call__(self):
        self.seq += 1
        self.g.flags[0] = self.seq
        self.g.fn(*self.mine)
        seen = self.seq - 1
        while seen != self.seq:
            seen = self.g.spin(self.done, seen)

    def stop(self):
        self.g.flags[0] = -1
        self.g._done.acquire()
        os.sched_setaffinity(0, self.cpus)


NUMPY_WORKER = r"""
import json, sys, time
import numpy as np
try:
    from threadpoolctl import threadpool_limits
except ImportError:
    threadpool_limits = None
RUN_SECONDS, WARM_SECONDS = float(sys.argv[1]), float(sys.argv[2])
rng = np.random.default_rng(0)
operands, repeats = {}, {}
def one_run(n):
    a, b = operands[n]
    if n not in repeats:
        np.matmul(a, b); t = time.perf_counter(); np.matmul(a, b)
        repeats[n] = max(1, int(RUN_SECONDS / max(time.perf_counter() - t, 1e-7)))
    t = time.perf_counter()
    while time.perf_counter() - t < WARM_SECONDS:
        np.matmul(a, b)
    t = time.perf_counter()
    for _ in range(repeats[n]):
        np.matmul(a, b)
    return (time.perf_counter() - t) / repeats[n]
for line in sys.stdin:
    n, threads = map(int, line.split())
    if n not in operands:
        operands[n] = (rng.standard_normal((n, n), dtype=np.float32),
                       rng.standard_normal((n, n), dtype=np.float32))
    if not threads:
        t = one_run(n)
    elif threadpool_limits is None:
        t = None
    else:
        with threadpool_limits(threads):
            t = one_run(n)
    print(json.dumps(t), flush=True)
"""


class NumpyElsewhere:
    """numpy.matmul timed in a subprocess whose environment lacks OPENBLAS_CORETYPE and
    OPENBLAS_L2_SIZE."""

    def __init__(self):
        env = {k: v for k, v in os.environ.items() if k not in UNSET}
        self.proc = subprocess.Popen([sys.executable, "-c", NUMPY_WORKER, str(RUN_SECONDS),
                                      str(WARM_SECONDS)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=env)

    def time_run(self, n: int, threads: int = 0):
        """Seconds per call in one run (None where a thread count cannot be set);
        threads=0: OpenBLAS's default."""
        self.proc.stdin.write(f"{n} {threads}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def gflops(n: int, seconds) -> float | None:
    return None if seconds is None else 2.0 * n ** 3 / seconds / 1e9


def check(a, b, c):
    expect = a.astype(np.float64) @ b.astype(np.float64)
    err = np.abs(c - expect).max() / (np.abs(a).max() * np.abs(b).max() * a.shape[1])
    if err > 1e-5:
        raise AssertionError(f"gd_gemm_f32 is wrong: relative error {err:.2e}")


COLUMNS = ("graphdl 1T", "graphdl 2T", "graphdl 2T sem", "numpy as-is", "numpy clean",
           "numpy clean 1T")


def measure(sizes, runs: int, split: str) -> dict:
    """{N: {column: median GFLOP/s}}. The contenders take turns run by run, so that a change
    in the machine's load hits them alike."""
    g = GraphdlGemm()
    other = NumpyElsewhere()
    rng = np.random.default_rng(0)
    result = {}
    for n in sizes:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        c = np.empty((n, n), np.float32)
        one, two = g.one_thread(a, b, c), g.two_threads(a, b, c, split)
        spinning = g.two_threads_spinning(a, b, c, split)
        one()
        check(a, b, c)
        c[:] = np.nan
        two()
        check(a, b, c)
        c[:] = np.nan
        spinning.start()
        spinning()
        spinning.stop()
        check(a, b, c)
        local = lambda a=a, b=b: np.matmul(a, b)
        spinning.start()
        repeats = {"graphdl 2T": repeat_count(spinning)}
        spinning.stop()
        repeats.update({"graphdl 1T": repeat_count(one), "graphdl 2T sem": repeat_count(two),
                        "numpy as-is": repeat_count(local)})
        runs_of = {col: [] for col in COLUMNS}
        for _ in range(runs):
            runs_of["graphdl 1T"].append(timed_run(one, repeats["graphdl 1T"]))
            spinning.start()
            runs_of["graphdl 2T"].append(timed_run(spinning, repeats["graphdl 2T"]))
            spinning.stop()
            runs_of["graphdl 2T sem"].append(timed_run(two, repeats["graphdl 2T sem"]))
            runs_of["numpy as-is"].append(timed_run(local, repeats["numpy as-is"]))
            time.sleep(SETTLE_SECONDS)
            runs_of["numpy clean"].append(other.time_run(n))
            time.sleep(SETTLE_SECONDS)
            runs_of["numpy clean 1T"].append(other.time_run(n, threads=1))
            time.sleep(SETTLE_SECONDS)
        result[n] = {col: (gflops(n, statistics.median(t)) if None not in t else None)
                     for col, t in runs_of.items()}
    g.close()
    other.close()
    return result


def print_table(result: dict, split: str) -> None:
    blk = gemm.blocking("float32")
    print(f"gd_gemm_f32: MR x NR = {blk['MR']} x {blk['NR']}, KC = {blk['KC']}, "
          f"MC = {blk['MC']}, NC = {blk['NC']}; 2T splits {split.upper()} in halves")
    env = {k: os.environ.get(k) for k in UNSET}
    print(f"environment: {', '.join(f'{k}={v}' for k, v in env.items())}")
    cols = COLUMNS
    head = f"{'N':>6} | " + " | ".join(f"{c:>14}" for c in cols)
    head += f" | {'2T / numpy':>10} | {'1T / numpy 1T':>13}"
    print(head)
    print("-" * len(head))
    fmt = lambda x: f"{x:14.1f}" if x is not None else f"{'-':>14}"
    for n, row in result.items():
        numpy2 = max(row["numpy as-is"], row["numpy clean"])
        ratio2 = row["graphdl 2T"] / numpy2
        ratio1 = (row["graphdl 1T"] / row["numpy clean 1T"]) if row["numpy clean 1T"] else None
        line = f"{n:>6} | " + " | ".join(fmt(row[c]) for c in cols)
        line += f" | {ratio2:10.2f} | " + (f"{ratio1:13.2f}" if ratio1 else f"{'-':>13}")
        print(line)
    print("GFLOP/s = 2 N^3 / t, medians. '2T / numpy' divides graphdl 2T (spinning worker) by "
          "the faster of numpy as-is and numpy clean (both on their default 2 threads); "
          "'1T / numpy 1T' divides graphdl 1T by numpy clean limited to 1 thread "
          "(threadpoolctl).")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 2048])
    parser.add_argument("--runs", type=int, default=15, help="timed runs per figure (>= 5)")
    parser.add_argument("--split", choices=("m", "n"), default="m")
    args = parser.parse_args(argv)
    print_table(measure(args.sizes, max(args.runs, 5), args.split), args.split)


if __name__ == "__main__":
    main()
