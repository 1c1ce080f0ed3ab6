"""PyTensor (its default mode/backend): W1, W2, W3, W4 as pytensor.function, params as
shared variables, Adam / SGD-momentum written as update pairs with torch's formulas."""

from __future__ import annotations

import time

from . import common as C

WORKLOADS = ("W1", "W2", "W3", "W4")


def info():
    import pytensor
    return {"pytensor": pytensor.__version__,
            "mode": str(getattr(pytensor.config, "mode", "?")),
            "linker": str(getattr(pytensor.config, "linker", "?"))}


def _pt():
    import pytensor
    import pytensor.tensor as pt
    pytensor.config.floatX = "float32"
    return pytensor, pt


def train_function(workload):
    """(compiled step f(x, y) -> loss, x, y) for W3/W4."""
    import numpy as np
    pytensor, pt = _pt()
    if workload == "W3":
        params, xs, ys = C.w3_setup()
        def act(a):
            return pt.maximum(a, 0)
    else:
        params, xs, ys = C.w4_setup()
        act = pt.sigmoid
    x = pt.matrix("x", dtype="float32")
    y = pt.vector("y", dtype="int64")
    ps = [pytensor.shared(p.copy(), name=f"p{i}") for i, p in enumerate(params)]
    a = x
    n = len(ps) // 2
    for i in range(n):
        a = pt.dot(a, ps[2 * i]) + ps[2 * i + 1]
        if i < n - 1:
            a = act(a)
    logp = pt.special.log_softmax(a, axis=-1)
    loss = -pt.mean(logp[pt.arange(y.shape[0]), y])
    grads = pytensor.grad(loss, ps)
    updates = []
    f32 = np.float32
    if workload == "W3":
        h = C.ADAM
        t = pytensor.shared(f32(0), name="t")
        t1 = t + f32(1)
        updates.append((t, t1))
        bc1 = f32(1) - pt.pow(f32(h["beta1"]), t1)
        bc2 = f32(1) - pt.pow(f32(h["beta2"]), t1)
        for p, g in zip(ps, grads):
            m = pytensor.shared(np.zeros_like(p.get_value()))
            v = pytensor.shared(np.zeros_like(p.get_value()))
            m1 = f32(h["beta1"]) * m + f32(1 - h["beta1"]) * g
            v1 = f32(h["beta2"]) * v + f32(1 - h["beta2"]) * g * g
            p1 = p - (f32(h["lr"]) / bc1) * m1 / (pt.sqrt(v1) / pt.sqrt(bc2) + f32(h["eps"]))
            updates += [(m, m1), (v, v1), (p, p1.astype("float32"))]
    else:
        lr, mom = f32(C.SGD_W4["lr"]), f32(C.SGD_W4["momentum"])
        first = pytensor.shared(f32(1), name="first")
        updates.append((first, f32(0) * first))
        for p, g in zip(ps, grads):
            buf = pytensor.shared(np.zeros_like(p.get_value()))
            b1 = pt.switch(first > 0, g, mom * buf + g)
            updates += [(buf, b1.astype("float32")), (p, (p - lr * b1).astype("float32"))]
    f = pytensor.function([x, y], loss, updates=updates)
    return f, xs, ys


def w3_build(sw=None):
    _pt()
    if sw:
        sw.lap("import_s")
    f, xs, ys = train_function("W3")
    if sw:
        sw.lap("define_s")
    return (lambda: f(xs, ys)), (lambda: None)


def run(workload, repeat, min_time):
    pytensor, pt = _pt()
    if workload == "W1":
        xs = C.w1_data()
        start = time.perf_counter()
        x = pt.vector("x", dtype="float32")
        y = x * pt.sigmoid(x) + 0.5 * pt.tanh(x) - pt.softplus(x)
        fn = pytensor.function([x], y)
        out = fn(xs)
        compile_s = time.perf_counter() - start
        check = C.w1_check(xs, out)
        timing = C.measure(lambda: fn(xs), repeat=repeat, min_time=min_time)
        return {"timing": timing, "check": check, "compile_s": compile_s}
    if workload == "W2":
        sizes = {}
        for n in C.W2_SIZES:
            a, b = C.w2_data(n)
            start = time.perf_counter()
            ta, tb = pt.matrix("a", dtype="float32"), pt.matrix("b", dtype="float32")
            fn = pytensor.function([ta, tb], pt.dot(ta, tb))
            out = fn(a, b)
            compile_s = time.perf_counter() - start
            check = C.w2_check(a, b, out)
            timing = C.measure(lambda fn=fn, a=a, b=b: fn(a, b), repeat=repeat, min_time=min_time)
            sizes[str(n)] = {"timing": timing, "check": check, "compile_s": compile_s}
        return {"sizes": sizes}
    if workload in ("W3", "W4"):
        start = time.perf_counter()
        f, xs, ys = train_function(workload)
        losses = [float(f(xs, ys))]
        compile_s = time.perf_counter() - start
        losses.append(float(f(xs, ys)))
        timing = C.measure(lambda: f(xs, ys), repeat=repeat, min_time=min_time)
        return C.train_result(timing, losses, compile_s=compile_s)
    raise NotImplementedError(workload)
