"""JAX: every workload under jax.jit; training steps are one jitted function of
(params, optimizer state, x, y) with params and state donated; Adam and SGD-momentum are
written by hand with torch's formulas (optax is used for Adam when it is installed)."""

from __future__ import annotations

import time

from . import common as C

WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6")


def _jax():
    import jax
    jax.config.update("jax_platforms", "cpu")
    return jax


def info():
    jax = _jax()
    out = {"jax": jax.__version__, "devices": [str(d) for d in jax.devices()]}
    try:
        import optax
        out["optax"] = optax.__version__
    except ImportError:
        out["optax"] = None
    return out


def _adam(jax, jnp):
    h = C.ADAM
    try:
        import optax
    except ImportError:
        optax = None
    if optax is not None:
        tx = optax.adam(h["lr"], b1=h["beta1"], b2=h["beta2"], eps=h["eps"])
        return tx.init, lambda g, s, p: _apply_optax(tx, g, s, p)

    def init(params):
        zeros = [jnp.zeros_like(p) for p in params]
        return (jnp.zeros((), jnp.float32), zeros, [jnp.zeros_like(p) for p in params])

    def update(grads, state, params):
        t, ms, vs = state
        t = t + 1
        b1, b2 = h["beta1"], h["beta2"]
        bc1 = 1 - b1 ** t
        bc2 = 1 - b2 ** t
        ms = [b1 * m + (1 - b1) * g for m, g in zip(ms, grads)]
        vs = [b2 * v + (1 - b2) * g * g for v, g in zip(vs, grads)]
        params = [p - (h["lr"] / bc1) * m / (jnp.sqrt(v) / jnp.sqrt(bc2) + h["eps"])
                  for p, m, v in zip(params, ms, vs)]
        return params, (t, ms, vs)

    return init, update


def _apply_optax(tx, grads, state, params):
    import optax
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state


def _sgd_momentum(jnp, lr, momentum):
    def init(params):
        return (jnp.zeros((), jnp.float32), [jnp.zeros_like(p) for p in params])

    def update(grads, state, params):
        t, bufs = state
        # torch: the first step's buffer is the gradient itself
        bufs = [jnp.where(t == 0, g, momentum * b + g) for b, g in zip(bufs, grads)]
        return [p - lr * b for p, b in zip(params, bufs)], (t + 1, bufs)

    return init, update


def _xent(jax, jnp, logits, y):
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def train_step(jax, workload):
    """(call, sync, first-losses getter)."""
    import jax.numpy as jnp
    lax = jax.lax
    if workload in ("W3", "W4"):
        params, xs, ys = C.w3_setup() if workload == "W3" else C.w4_setup()
        act = jax.nn.relu if workload == "W3" else jax.nn.sigmoid

        def forward(ps, x):
            a = x
            n = len(ps) // 2
            for i in range(n):
                a = a @ ps[2 * i] + ps[2 * i + 1]
                if i < n - 1:
                    a = act(a)
            return a
        init, update = (_adam(jax, jnp) if workload == "W3"
                        else _sgd_momentum(jnp, C.SGD_W4["lr"], C.SGD_W4["momentum"]))
    elif workload == "W5":
        params, xs, ys = C.w5_setup()

        def pool(a):
            return lax.reduce_window(a, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

        def conv(a, w, b):
            out = lax.conv_general_dilated(a, w, (1, 1), ((1, 1), (1, 1)),
                                           dimension_numbers=("NCHW", "OIHW", "NCHW"))
            return out + b[None, :, None, None]

        def forward(ps, x):
            a = pool(jax.nn.relu(conv(x, ps[0], ps[1])))
            a = pool(jax.nn.relu(conv(a, ps[2], ps[3])))
            return a.reshape(a.shape[0], -1) @ ps[4] + ps[5]
        init, update = _sgd_momentum(jnp, C.SGD_W5["lr"], C.SGD_W5["momentum"])
    elif workload == "W6":
        params, xs, ys = C.w6_setup()
        hidden = C.W6_HIDDEN

        def forward(ps, x):
            w_ih, w_hh, b_ih, b_hh, w_fc, b_fc = ps
            xw = jnp.einsum("nti,gi->tng", x, w_ih) + (b_ih + b_hh)

            def cell(carry, xt):
                h, c = carry
                z = xt + h @ w_hh.T
                i, f, g, o = jnp.split(z, 4, axis=-1)
                c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
                h = jax.nn.sigmoid(o) * jnp.tanh(c)
                return (h, c), None

            zeros = jnp.zeros((x.shape[0], hidden), x.dtype)
            (h, _), _ = lax.scan(cell, (zeros, zeros), xw)
            return h @ w_fc + b_fc
        init, update = _adam(jax, jnp)
    else:
        raise NotImplementedError(workload)

    def loss_fn(ps, x, y):
        return _xent(jax, jnp, forward(ps, x), y)

    def step(ps, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(ps, x, y)
        ps, state = update(grads, state, ps)
        return ps, state, loss

    step = jax.jit(step, donate_argnums=(0, 1))
    ps = [jnp.asarray(p) for p in params]
    state = init(ps)
    x, y = jnp.asarray(xs), jnp.asarray(ys.astype("int32"))
    box = {"ps": ps, "state": state, "loss": None}

    def call():
        box["ps"], box["state"], box["loss"] = step(box["ps"], box["state"], x, y)

    def sync():
        jax.block_until_ready((box["ps"], box["loss"]))

    return call, sync, box


def w3_build(sw=None):
    jax = _jax()
    if sw:
        sw.lap("import_s")
    call, sync, _ = train_step(jax, "W3")
    if sw:
        sw.lap("define_s")
    return call, sync


def run(workload, repeat, min_time):
    jax = _jax()
    import jax.numpy as jnp
    import numpy as np
    if workload == "W1":
        xs = C.w1_data()
        x = jnp.asarray(xs)
        fn = jax.jit(lambda x: x * jax.nn.sigmoid(x) + 0.5 * jnp.tanh(x) - jax.nn.softplus(x))
        start = time.perf_counter()
        out = fn(x).block_until_ready()
        compile_s = time.perf_counter() - start
        check = C.w1_check(xs, np.asarray(out))
        box = {}

        def call():
            box["out"] = fn(x)
        timing = C.measure(call, lambda: box["out"].block_until_ready(), repeat=repeat,
                           min_time=min_time)
        return {"timing": timing, "check": check, "compile_s": compile_s}
    if workload == "W2":
        sizes = {}
        fn = jax.jit(jnp.matmul)
        for n in C.W2_SIZES:
            an, bn = C.w2_data(n)
            a, b = jnp.asarray(an), jnp.asarray(bn)
            start = time.perf_counter()
            out = fn(a, b).block_until_ready()
            compile_s = time.perf_counter() - start
            check = C.w2_check(an, bn, np.asarray(out))
            box = {}

            def call(box=box, a=a, b=b):
                box["out"] = fn(a, b)

            def sync(box=box):
                box["out"].block_until_ready()
            timing = C.measure(call, sync, repeat=repeat, min_time=min_time)
            sizes[str(n)] = {"timing": timing, "check": check, "compile_s": compile_s}
        return {"sizes": sizes}
    call, sync, box = train_step(jax, workload)
    start = time.perf_counter()
    call()
    sync()
    compile_s = time.perf_counter() - start
    losses = [float(box["loss"])]
    call()
    losses.append(float(box["loss"]))
    timing = C.measure(call, sync, repeat=repeat, min_time=min_time)
    return C.train_result(timing, losses, compile_s=compile_s)
