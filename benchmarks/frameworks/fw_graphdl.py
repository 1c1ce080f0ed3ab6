"""graphdl: every workload as a gd.function; backend 'llvm' (or 'reference', chosen by the
harness). Compile time = gd.function(...) plus the first call (the llvm backend compiles
lazily on the first call); both are reported."""

from __future__ import annotations

import time

import numpy as np

from . import common as C

WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6")
BACKEND = "llvm"


def info():
    import llvmlite

    import graphdl as gd
    out = {"graphdl": getattr(gd, "__version__", "?"), "llvmlite": llvmlite.__version__,
           "backend": BACKEND}
    try:
        from graphdl.codegen.llvm import threads
        out["default_num_threads"] = threads.default_num_threads()
    except Exception as exc:                            # noqa: BLE001
        out["default_num_threads"] = f"? ({exc})"
    return out


def _compile(make, first_args):
    """(function, first output, {function_s, first_call_s, compile_s})."""
    start = time.perf_counter()
    f = make()
    built = time.perf_counter()
    out = f(*first_args)
    done = time.perf_counter()
    return f, out, {"function_s": built - start, "first_call_s": done - built,
                    "compile_s": done - start, "compile_report": compile_report(f)}


def compile_report(f):
    """The llvm backend's record of its compiles (stages, cache hit), when it keeps one."""
    history = getattr(getattr(f, "program", None), "history", None)
    if not history:
        return None
    keep = ("cache_hit", "passes_s", "lower_s", "llvm_s", "total_s", "kernels", "arena_bytes",
            "inplace_updates", "threads")
    return [{k: h[k] for k in keep if k in h} for h in history]


def mlp_step(gd, params, act, opt):
    """The training step of an MLP as one gd.function (inputs x, y; output the loss)."""
    n_in, batch_out = params[0].shape[0], params[-1].shape[0]
    x = gd.input("x", (None, n_in))
    y = gd.input("y", (None,), dtype="int64")
    ps = [gd.param(f"{'W' if i % 2 == 0 else 'b'}{i // 2 + 1}", p.copy())
          for i, p in enumerate(params)]
    a = x
    for i in range(len(ps) // 2):
        a = a @ ps[2 * i] + ps[2 * i + 1]
        if i < len(ps) // 2 - 1:
            a = gd.relu(a) if act == "relu" else gd.sigmoid(a)
    loss = gd.losses.cross_entropy(a, y)
    if opt == "adam":
        h = C.ADAM
        optimizer = gd.optim.Adam(lr=h["lr"], betas=(h["beta1"], h["beta2"]), eps=h["eps"])
    else:
        optimizer = gd.optim.SGD(lr=C.SGD_W4["lr"], momentum=C.SGD_W4["momentum"])
    assert batch_out == 10
    return x, y, loss, optimizer.updates(loss, ps)


def w3_build(sw=None):
    """For W7: import graphdl, define W3, return (step, x, y, laps). `sw` is the script's
    Stopwatch, started before `import graphdl`."""
    import graphdl as gd
    if sw:
        sw.lap("import_s")
    params, xs, ys = C.w3_setup()
    x, y, loss, ups = mlp_step(gd, params, "relu", "adam")
    if sw:
        sw.lap("define_s")
    f = gd.function([x, y], [loss], updates=ups, backend=BACKEND)
    if sw:
        sw.lap("function_s")
    def step():
        return f(xs, ys)
    step.report = lambda: compile_report(f)
    return step, (lambda: None)


def run(workload, repeat, min_time):
    import numpy as np

    import graphdl as gd
    gd.seed(C.SEED)
    if workload == "W1":
        xs = C.w1_data()
        def make():
            x = gd.input("x", (None,))
            y = x * gd.sigmoid(x) + 0.5 * gd.tanh(x) - gd.softplus(x)
            return gd.function([x], y, backend=BACKEND)
        f, out, comp = _compile(make, [xs])
        check = C.w1_check(xs, out)
        timing = C.measure(lambda: f(xs), repeat=repeat, min_time=min_time)
        return {"timing": timing, "check": check, **comp}
    if workload == "W2":
        sizes = {}
        for n in C.W2_SIZES:
            a, b = C.w2_data(n)
            def make(n=n):
                ta, tb = gd.input("A", (n, n)), gd.input("B", (n, n))
                return gd.function([ta, tb], ta @ tb, backend=BACKEND)
            f, out, comp = _compile(make, [a, b])
            check = C.w2_check(a, b, out)
            timing = C.measure(lambda f=f, a=a, b=b: f(a, b), repeat=repeat, min_time=min_time)
            sizes[str(n)] = {"timing": timing, "check": check, **comp}
        return {"sizes": sizes}
    if workload in ("W3", "W4"):
        if workload == "W3":
            params, xs, ys = C.w3_setup()
            x, y, loss, ups = mlp_step(gd, params, "relu", "adam")
        else:
            params, xs, ys = C.w4_setup()
            x, y, loss, ups = mlp_step(gd, params, "sigmoid", "sgd")
        f, out, comp = _compile(
            lambda: gd.function([x, y], [loss], updates=ups, backend=BACKEND), [xs, ys])
        losses = [np.asarray(out[0]).item(), np.asarray(f(xs, ys)[0]).item()]
        timing = C.measure(lambda: f(xs, ys), repeat=repeat, min_time=min_time)
        return C.train_result(timing, losses, extra=comp)
    if workload in ("W5", "W6"):
        x, y, loss, ups, xs, ys = (cnn_step if workload == "W5" else lstm_step)(gd)
        f, out, comp = _compile(
            lambda: gd.function([x, y], [loss], updates=ups, backend=BACKEND), [xs, ys])
        losses = [np.asarray(out[0]).item(), np.asarray(f(xs, ys)[0]).item()]
        timing = C.measure(lambda: f(xs, ys), repeat=repeat, min_time=min_time)
        return C.train_result(timing, losses, extra=comp)
    raise NotImplementedError(workload)


def cnn_step(gd):
    """W5: conv3x3 16 pad 1, ReLU, maxpool 2, conv3x3 32 pad 1, ReLU, maxpool 2, flatten,
    dense 1568->10, cross-entropy, SGD momentum 0.9 lr 0.01 (gd.conv2d etc.)."""
    params, xs, ys = C.w5_setup()
    w1, b1, w2, b2, w3, b3 = [gd.param(f"p{k}", p.copy()) for k, p in enumerate(params)]
    x = gd.input("x", (None, 1, 28, 28))
    y = gd.input("y", (None,), dtype="int64")
    h = gd.max_pool2d(gd.relu(gd.conv2d(x, w1, b1, padding=1)), 2)
    h = gd.max_pool2d(gd.relu(gd.conv2d(h, w2, b2, padding=1)), 2)
    logits = h.reshape(-1, 1568) @ w3 + b3
    loss = gd.losses.cross_entropy(logits, y)
    opt = gd.optim.SGD(lr=C.SGD_W5["lr"], momentum=C.SGD_W5["momentum"])
    return x, y, loss, opt.updates(loss, [w1, b1, w2, b2, w3, b3]), xs, ys


def lstm_step(gd):
    """W6: one LSTM layer (T=28, input 28, hidden 128), last hidden -> dense 10,
    cross-entropy, Adam lr 1e-3 (gd.lstm: a scan whose body is compiled once)."""
    params, xs, ys = C.w6_setup()
    w_ih, w_hh, b_ih, b_hh, w, b = [gd.param(f"p{k}", p.copy()) for k, p in enumerate(params)]
    x = gd.input("x", (None, C.W6_T, C.W6_IN))
    y = gd.input("y", (None,), dtype="int64")
    _, (h_t, _) = gd.lstm(x, None, None, w_ih, w_hh, b_ih, b_hh)
    loss = gd.losses.cross_entropy(h_t @ w + b, y)
    h = C.ADAM
    opt = gd.optim.Adam(lr=h["lr"], betas=(h["beta1"], h["beta2"]), eps=h["eps"])
    return x, y, loss, opt.updates(loss, [w_ih, w_hh, b_ih, b_hh, w, b]), xs, ys
