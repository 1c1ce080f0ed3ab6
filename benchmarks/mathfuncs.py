"""Polynomial-IR math functions (codegen/llvm/mathfuncs.py) against NumPy, single thread.

For each function: milliseconds per call over N float32 values in [-4, 4] (the median of
R runs, since the machine may be shared), NumPy's time for the same result, their ratio,
and the throughput of the compiled kernel in GB/s (bytes read plus bytes written). log,
log1p and pow take |x| + tiny. erf is compared with scipy.special.erf when SciPy is present.

`--clock cpu` times with this thread's CPU time instead of the wall clock: on a loaded
machine it leaves out the time the thread waited for a core.

Run: python benchmarks/mathfuncs.py [--n 4194304] [--repeats 9] [--dtype float32]
                                    [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time

import numpy as np

from graphdl.codegen.llvm import jit, mathfuncs


def _numpy_erf():
    try:
        from scipy.special import erf
    except ImportError:
        return None
    return erf


def _cases(x: np.ndarray) -> list[tuple[str, tuple[np.ndarray, ...], object]]:
    """(function name, kernel inputs, NumPy callable giving the same result)."""
    eps = np.finfo(x.dtype).tiny
    positive = np.abs(x) + eps
    erf = _numpy_erf()
    return [
        ("exp", (x,), lambda: np.exp(x)),
        ("expm1", (x,), lambda: np.expm1(x)),
        ("log", (positive,), lambda: np.log(positive)),
        ("log1p", (positive,), lambda: np.log1p(positive)),
        ("tanh", (x,), lambda: np.tanh(x)),
        ("sigmoid", (x,), lambda: 1 / (1 + np.exp(-x))),
        ("softplus", (x,), lambda: np.logaddexp(0, x)),
        ("erf", (x,), (lambda: erf(x)) if erf is not None else None),
        ("pow", (positive, x), lambda: np.power(positive, x)),
    ]


def _compile(name: str, arity: int, dtype) -> tuple[object, object]:
    if arity == 1:
        text = mathfuncs.emit_unary_kernel(name, mathfuncs.UNARY[name], dtype)
    else:
        text = mathfuncs.emit_binary_kernel(name, mathfuncs.BINARY[name], dtype)
    kernel = jit.compile_ir(text)
    args = [ctypes.c_void_p] * (arity + 1) + [ctypes.c_int64]
    return kernel, kernel.cfunc(name, None, *args)


_CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def _median_ms(call, repeats: int, clock) -> float:
    call()                                       # warm up (page faults, caches)
    times = []
    for _ in range(repeats):
        start = clock()
        call()
        times.append(clock() - start)
    return statistics.median(times) * 1e3


def run(n: int, repeats: int, dtype, clock: str = "wall") -> list[dict]:
    """Time every function; returns one row per function."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-4, 4, n).astype(dtype)
    out = np.empty_like(x)
    rows = []
    for name, inputs, numpy_call in _cases(x):
        kernel, cfunc = _compile(name, len(inputs), dtype)
        pointers = [a.ctypes.data for a in inputs] + [out.ctypes.data]

        def call(cfunc=cfunc, pointers=pointers):
            cfunc(*pointers, n)

        ours = _median_ms(call, repeats, _CLOCKS[clock])
        theirs = (_median_ms(numpy_call, repeats, _CLOCKS[clock]) if numpy_call is not None
                  else float("nan"))
        moved = (len(inputs) + 1) * n * x.itemsize
        rows.append({"name": name, "ms": ours, "numpy_ms": theirs, "speedup": theirs / ours,
                     "gbs": moved / (ours * 1e-3) / 1e9})
        del kernel
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4_194_304)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--clock", default="wall", choices=sorted(_CLOCKS))
    options = parser.parse_args()
    rows = run(options.n, options.repeats, np.dtype(options.dtype), options.clock)
    print(f"{options.n} {options.dtype} values in [-4, 4], median of {options.repeats} runs "
          f"({options.clock} clock, one thread)")
    print(f"{'function':10s} {'graphdl ms':>11s} {'numpy ms':>10s} {'numpy/ours':>11s} "
          f"{'GB/s':>7s}")
    for row in rows:
        print(f"{row['name']:10s} {row['ms']:11.2f} {row['numpy_ms']:10.2f} "
              f"{row['speedup']:11.2f} {row['gbs']:7.2f}")


if __name__ == "__main__":
    main()
