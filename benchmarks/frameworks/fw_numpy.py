"""NumPy: W1 as plain NumPy expressions, W2 np.matmul, W3/W4 a hand-written MLP
(forward, backward, optimizer) with preallocated buffers and in-place updates."""

from __future__ import annotations

import numpy as np

from . import common as C

WORKLOADS = ("W1", "W2", "W3", "W4")


def info():
    out = {"numpy": np.__version__}
    try:
        from threadpoolctl import threadpool_info
        out["blas"] = [{k: d.get(k) for k in ("internal_api", "version", "num_threads",
                                                "architecture", "threading_layer")}
                       for d in threadpool_info()]
    except Exception:                                   # noqa: BLE001
        pass
    return out


def w1_fn(x):
    # softplus in its usual stable form; np.logaddexp(0, x) is the same to float32 rounding
    # but about 8x slower here (no SIMD loop), which would make NumPy look worse than it is
    softplus = np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))
    return x / (1.0 + np.exp(-x)) + 0.5 * np.tanh(x) - softplus


class MLP:
    """Dense layers (activation on hidden layers), softmax cross-entropy (mean), in-place
    optimizer. act: 'relu' or 'sigmoid'; opt: 'adam' or 'sgd_momentum' (torch formulas)."""

    def __init__(self, params, batch, act, opt, hyper):
        self.p = [p.copy() for p in params]
        self.nl = len(params) // 2
        self.act, self.opt, self.h = act, opt, hyper
        self.g = [np.empty_like(p) for p in self.p]
        self.m = [np.zeros_like(p) for p in self.p]
        self.v = [np.zeros_like(p) for p in self.p]
        self.tmp = [np.empty_like(p) for p in self.p]
        self.t = 0
        self.rows = np.arange(batch)

    def step(self, x, y):
        p, g, nl = self.p, self.g, self.nl
        acts = [x]
        a = x
        for i in range(nl):
            z = a @ p[2 * i]
            z += p[2 * i + 1]
            if i < nl - 1:
                if self.act == "relu":
                    np.maximum(z, 0, out=z)
                else:
                    np.negative(z, out=z)
                    np.exp(z, out=z)
                    z += 1
                    np.reciprocal(z, out=z)
                acts.append(z)
            a = z
        logits = a
        m = logits.max(axis=1, keepdims=True)
        e = np.exp(logits - m)
        s = e.sum(axis=1, keepdims=True)
        loss = float(np.mean(np.log(s[:, 0]) + m[:, 0] - logits[self.rows, y]))
        d = e / s
        d[self.rows, y] -= 1
        d *= np.float32(1.0 / x.shape[0])
        for i in reversed(range(nl)):
            np.matmul(acts[i].T, d, out=g[2 * i])
            d.sum(axis=0, out=g[2 * i + 1])
            if i > 0:
                d = d @ p[2 * i].T
                h = acts[i]
                if self.act == "relu":
                    d *= h > 0
                else:
                    d *= h * (1 - h)
        self.update()
        return loss

    def update(self):
        self.t += 1
        hp = self.h
        if self.opt == "adam":
            b1, b2, lr, eps = hp["beta1"], hp["beta2"], hp["lr"], hp["eps"]
            bc1 = 1 - b1 ** self.t
            bc2 = 1 - b2 ** self.t
            step = np.float32(lr / bc1)
            sq = np.float32(1.0 / np.sqrt(bc2))
            for p, g, m, v, tmp in zip(self.p, self.g, self.m, self.v, self.tmp):
                m *= np.float32(b1)
                m += np.float32(1 - b1) * g
                v *= np.float32(b2)
                np.multiply(g, g, out=tmp)
                tmp *= np.float32(1 - b2)
                v += tmp
                np.sqrt(v, out=tmp)
                tmp *= sq
                tmp += np.float32(eps)
                np.divide(m, tmp, out=tmp)
                tmp *= step
                p -= tmp
        else:
            lr, mom = np.float32(hp["lr"]), np.float32(hp["momentum"])
            for p, g, buf, tmp in zip(self.p, self.g, self.m, self.tmp):
                if self.t == 1:
                    buf[...] = g
                else:
                    buf *= mom
                    buf += g
                np.multiply(buf, lr, out=tmp)
                p -= tmp


def run(workload, repeat, min_time):
    if workload == "W1":
        x = C.w1_data()
        timing = C.measure(lambda: w1_fn(x), repeat=repeat, min_time=min_time)
        return {"timing": timing, "check": C.w1_check(x, w1_fn(x))}
    if workload == "W2":
        sizes = {}
        for n in C.W2_SIZES:
            a, b = C.w2_data(n)
            timing = C.measure(lambda a=a, b=b: np.matmul(a, b), repeat=repeat, min_time=min_time)
            sizes[str(n)] = {"timing": timing, "check": C.w2_check(a, b, np.matmul(a, b))}
        return {"sizes": sizes}
    if workload in ("W3", "W4"):
        if workload == "W3":
            params, x, y = C.w3_setup()
            model = MLP(params, len(y), "relu", "adam", C.ADAM)
        else:
            params, x, y = C.w4_setup()
            model = MLP(params, len(y), "sigmoid", "sgd", C.SGD_W4)
        losses = [model.step(x, y), model.step(x, y)]
        timing = C.measure(lambda: model.step(x, y), repeat=repeat, min_time=min_time)
        return C.train_result(timing, losses)
    raise NotImplementedError(workload)
