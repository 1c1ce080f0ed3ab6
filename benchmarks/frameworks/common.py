"""Shared pieces of the benchmark children: timing, data, initial parameters, checks.

Everything here is NumPy only, so that a framework module can import it without importing
its framework (the W7 scripts time the framework's import themselves).
"""

from __future__ import annotations

import gc
import math
import os
import resource
import statistics
import time

import numpy as np

SEED = 0
W1_N = 4_194_304
W2_SIZES = (256, 1024, 2048)
W3_LAYERS = (784, 512, 512, 10)
W3_BATCH = 128
W4_LAYERS = (64, 128, 10)
W4_BATCH = 32
W5_BATCH = 64
W6_BATCH, W6_T, W6_IN, W6_HIDDEN = 64, 28, 28, 128
ADAM = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
SGD_W4 = {"lr": 0.1, "momentum": 0.9}
SGD_W5 = {"lr": 0.01, "momentum": 0.9}


# -- timing ------------------------------------------------------------------------------
def measure(call, sync=None, repeat=7, min_time=0.2, warmup=2, warmup_time=0.5):
    """Median seconds per call of `call()`.

    At least `warmup` untimed calls lasting at least `warmup_time` seconds, then a
    calibration that grows the number of calls per repetition until one takes >= min_time,
    then `repeat` timed repetitions of that many calls each (`sync()` once at the end of
    each, for asynchronous frameworks).
    """
    sync = sync or (lambda: None)
    start = time.perf_counter()
    done = 0
    while done < warmup or time.perf_counter() - start < warmup_time:
        call()
        done += 1
        if done % 16 == 0:
            sync()
    sync()
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            call()
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            break
        grow = math.ceil(n * 1.25 * min_time / max(elapsed, 1e-9))
        n = max(2 * n, grow) if elapsed < min_time / 100 else max(n + 1, grow)
    samples = []
    gc.collect()
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(n):
            call()
        sync()
        samples.append((time.perf_counter() - start) / n)
    return {"median_s": statistics.median(samples), "min_s": min(samples),
            "samples_s": samples, "calls_per_rep": n}


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Stopwatch:
    """t = Stopwatch(); ...; t.lap("import") -> seconds since the previous lap."""

    def __init__(self, start=None):
        self.start = self.last = start if start is not None else time.perf_counter()
        self.laps = {}

    def lap(self, name):
        now = time.perf_counter()
        self.laps[name] = now - self.last
        self.last = now
        return self.laps[name]

    def total(self):
        return time.perf_counter() - self.start


# -- data and initial values (identical for every framework) -----------------------------
def w1_data():
    rng = np.random.default_rng(SEED)
    return rng.uniform(-4.0, 4.0, W1_N).astype(np.float32)


def w1_check(x, y):
    """Max abs error of y against the float64 formula (softplus via logaddexp)."""
    x64 = x.astype(np.float64)
    ref = x64 / (1 + np.exp(-x64)) + 0.5 * np.tanh(x64) - np.logaddexp(0.0, x64)
    y = np.asarray(y)
    return {"max_abs_err": float(np.max(np.abs(y.astype(np.float64) - ref))),
            "dtype": str(y.dtype), "shape": list(y.shape)}


def w2_data(n):
    rng = np.random.default_rng(SEED + n)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    return a, b


def w2_check(a, b, c):
    """Max abs error of the first 64 rows, relative to the largest reference value."""
    c = np.asarray(c)
    rows = min(64, a.shape[0])
    ref = a[:rows].astype(np.float64) @ b.astype(np.float64)
    err = np.max(np.abs(c[:rows].astype(np.float64) - ref)) / np.max(np.abs(ref))
    return {"max_rel_err": float(err), "dtype": str(c.dtype), "shape": list(c.shape)}


def he_uniform(rng, fan_in, fan_out):
    bound = math.sqrt(6.0 / fan_in)
    return rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32)


def xavier_uniform(rng, fan_in, fan_out):
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32)


def mlp_params(layers, init):
    """[W1, b1, W2, b2, ...] with W of shape (fan_in, fan_out), b zeros."""
    rng = np.random.default_rng(SEED + 1)
    out = []
    for fan_in, fan_out in zip(layers[:-1], layers[1:]):
        out.append(init(rng, fan_in, fan_out))
        out.append(np.zeros(fan_out, np.float32))
    return out


def mlp_batch(layers, batch):
    rng = np.random.default_rng(SEED + 2)
    x = rng.standard_normal((batch, layers[0]), dtype=np.float32)
    y = rng.integers(0, layers[-1], batch).astype(np.int64)
    return x, y


def w3_setup():
    return mlp_params(W3_LAYERS, he_uniform), *mlp_batch(W3_LAYERS, W3_BATCH)


def w4_setup():
    return mlp_params(W4_LAYERS, xavier_uniform), *mlp_batch(W4_LAYERS, W4_BATCH)


def w5_setup():
    """CNN params in torch layouts (conv (out, in, 3, 3); dense (1568, 10) as x @ W)."""
    rng = np.random.default_rng(SEED + 1)
    def conv(out_c, in_c):
        return he_uniform(rng, in_c * 9, out_c).T.reshape(out_c, in_c, 3, 3).copy()
    params = [conv(16, 1), np.zeros(16, np.float32), conv(32, 16), np.zeros(32, np.float32),
              xavier_uniform(rng, 1568, 10), np.zeros(10, np.float32)]
    rng = np.random.default_rng(SEED + 2)
    x = rng.standard_normal((W5_BATCH, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, W5_BATCH).astype(np.int64)
    return params, x, y


def w6_setup():
    """LSTM params in torch's layout: W_ih (4H, I), W_hh (4H, H), b_ih, b_hh (4H,), gates
    i, f, g, o; then the dense layer (H, 10) as h @ W and its bias."""
    rng = np.random.default_rng(SEED + 1)
    h, i = W6_HIDDEN, W6_IN
    k = 1.0 / math.sqrt(h)
    def u(*shape):
        return rng.uniform(-k, k, shape).astype(np.float32)
    params = [u(4 * h, i), u(4 * h, h), u(4 * h), u(4 * h),
              xavier_uniform(rng, h, 10), np.zeros(10, np.float32)]
    rng = np.random.default_rng(SEED + 2)
    x = rng.standard_normal((W6_BATCH, W6_T, W6_IN), dtype=np.float32)
    y = rng.integers(0, 10, W6_BATCH).astype(np.int64)
    return params, x, y


def train_result(timing, losses, compile_s=None, extra=None):
    """The record of a training workload: per-step timing, the losses of the first calls
    (the same initial values and batch everywhere, so they should agree across
    frameworks), compile seconds and the process's peak RSS."""
    out = {"timing": timing, "losses": [float(v) for v in losses],
           "peak_rss_mib": peak_rss_mib()}
    if compile_s is not None:
        out["compile_s"] = compile_s
    if extra:
        out.update(extra)
    return out


def env_threads():
    keys = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "XLA_FLAGS",
            "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    return {k: os.environ.get(k) for k in keys}
