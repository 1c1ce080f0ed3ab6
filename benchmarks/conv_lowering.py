"""Convolution on the llvm backend: packed GEMM (im2col) or a direct kernel?

gd.conv2d lowers to pad -> windows (a strided view) -> one im2col copy -> tensordot (one
packed GEMM over the whole batch). The alternative is a direct convolution: the same
windows view multiplied by the weights and summed over (C, kh, kw) in one fused reduction
loop, which copies nothing (graphdl's lowering evaluates the single-use product inside the
sum, so it is never stored). Both are written here in graphdl's own DSL and compiled by the
same backend; PyTorch's conv2d (oneDNN) is the outside reference when installed.

Shapes: W5's two convolutions (batch 64) and a wider layer. For each: the forward alone,
and the forward with the gradients of x and w (y, dL/dx, dL/dw for L = sum(y * r): a
training step's convolution work). Each figure
is the median of 7 repetitions, in one process, 2 threads.

    python benchmarks/conv_lowering.py
"""
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "frameworks"))

import common as C  # noqa: E402
import graphdl as gd  # noqa: E402

SHAPES = [  # (name, N, C, H, W, O, k)
    ("W5 conv1", 64, 1, 28, 28, 16, 3),
    ("W5 conv2", 64, 16, 14, 14, 32, 3),
    ("wide", 32, 64, 28, 28, 64, 3),
]


def direct_conv(x, w, pad):
    """sum_{c,kh,kw} windows(pad(x))[n, None, c, kh, kw, oh, ow] * w[None, o, c, kh, kw]."""
    k = w.shape[2]
    xp = gd.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)])
    cols = gd.windows(xp, (k, k))                                   # (N, C, k, k, OH, OW)
    n, c, _, _, oh, ow = cols.shape
    prod = gd.reshape(cols, (n, 1, c, k, k, oh, ow)) * gd.reshape(w, w.shape + (1, 1))
    return gd.sum(prod, axis=(2, 3, 4))


def build(kind, shape, grad):
    _, n, c, h, wd, o, k = shape
    x = gd.input("x", (n, c, h, wd))
    w = gd.input("w", (o, c, k, k))
    y = gd.conv2d(x, w, padding=k // 2) if kind == "gemm" else direct_conv(x, w, k // 2)
    if not grad:
        return gd.function([x, w], y, backend="llvm")
    r = gd.input("r", (n, o, h, wd))
    loss = gd.sum(y * r)
    gx, gw = gd.grad(loss, [x, w])
    return gd.function([x, w, r], [y, gx, gw], backend="llvm")


def torch_step(xs, ws, rs, grad):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(2)
    x, w, r = (torch.from_numpy(a) for a in (xs, ws, rs))
    pad = ws.shape[2] // 2
    if not grad:
        with torch.no_grad():
            return C.measure(lambda: torch.nn.functional.conv2d(x, w, padding=pad))
    x.requires_grad_(True)
    w.requires_grad_(True)

    def step():
        y = torch.nn.functional.conv2d(x, w, padding=pad)
        gx, gw = torch.autograd.grad(y, [x, w], r)
        return y, gx, gw
    return C.measure(step)


def main():
    rng = np.random.default_rng(0)
    print("conv2d lowering, llvm backend, 2 threads: median ms per call (ratio to GEMM)")
    print(f"{'shape':<10} {'pass':<10} {'GEMM':>8} {'direct':>8} {'direct/GEMM':>12} "
          f"{'torch':>8} {'GEMM/torch':>11}")
    for shape in SHAPES:
        name, n, c, h, wd, o, k = shape
        xs = rng.standard_normal((n, c, h, wd), dtype=np.float32)
        ws = rng.standard_normal((o, c, k, k), dtype=np.float32) * 0.1
        rs = rng.standard_normal((n, o, h, wd), dtype=np.float32)
        for grad in (False, True):
            args = [xs, ws, rs] if grad else [xs, ws]
            outs, times = {}, {}
            for kind in ("gemm", "direct"):
                f = build(kind, shape, grad)
                out = f(*args)
                outs[kind] = [np.asarray(a) for a in (out if isinstance(out, (list, tuple))
                                                      else [out])]
                times[kind] = C.measure(lambda f=f: f(*args))["median_s"] * 1e3
            for a, b in zip(outs["gemm"], outs["direct"]):
                scale = max(1.0, float(np.abs(a).max()))
                if not np.allclose(a, b, rtol=1e-3, atol=1e-4 * scale):
                    raise SystemExit(f"{name}: GEMM and direct results differ")
            t = torch_step(xs, ws, rs, grad)
            tms = t["median_s"] * 1e3 if t else float("nan")
            print(f"{name:<10} {('fwd+grad' if grad else 'forward'):<10} {times['gemm']:>8.3f} "
                  f"{times['direct']:>8.3f} {times['direct'] / times['gemm']:>12.2f} "
                  f"{tms:>8.3f} {times['gemm'] / tms:>11.2f}")


if __name__ == "__main__":
    main()
