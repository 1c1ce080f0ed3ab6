"""gd.optim against an independent NumPy transcription of torch.optim's update rules.

The reference below is written from the pseudo-code of the torch.optim documentation (and
torch.nn.utils.clip_grad_norm_ / clip_grad_value_); it shares no code with graphdl.optim.
Every case runs N compiled steps (reference backend, float64) and compares the parameter
trajectory, the losses and the final optimizer slots at rtol 1e-10.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphdl as gd

STEPS = 5
RTOL = 1e-10


# -- problems: a graph loss and its NumPy gradient ----------------------------------------
def _data(kind: str):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(8, 3))
    if kind == "quadratic":
        y = rng.normal(size=(8, 2))
    else:
        y = (rng.random((8, 2)) < 0.5).astype(np.float64)
    w0 = rng.normal(size=(3, 2))
    b0 = rng.normal(size=(2,)) * 0.1
    return x, y, [w0, b0]


def _graph_loss(kind: str, x, y, W, b):
    z = x @ W + b
    if kind == "quadratic":
        return ((z - y) ** 2).mean()
    return (gd.softplus(z) - y * z).mean()        # logistic regression, labels in {0, 1}


def _numpy_loss_and_grads(kind: str, x, y, params):
    w, b = params
    z = x @ w + b
    n = z.size
    if kind == "quadratic":
        r = z - y
        loss, dz = np.mean(r ** 2), 2.0 * r / n
    else:
        loss = np.mean(np.logaddexp(0.0, z) - y * z)
        dz = (1.0 / (1.0 + np.exp(-z)) - y) / n
    return loss, [x.T @ dz, dz.sum(axis=0)]


# -- the reference: torch.optim, transcribed step by step ---------------------------------
def ref_clip(grads, clip_norm=None, clip_value=None):
    if clip_norm is not None:
        total = np.sqrt(sum(float(np.sum(g * g)) for g in grads))
        coef = min(1.0, clip_norm / (total + 1e-6))
        grads = [g * coef for g in grads]
    if clip_value is not None:
        grads = [np.clip(g, -clip_value, clip_value) for g in grads]
    return grads


def ref_sgd(p, g, st, t, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
            maximize=False):
    g = -g if maximize else g
    if weight_decay != 0:
        g = g + weight_decay * p
    if momentum != 0:
        if t == 1:
            buf = g.copy()
        else:
            buf = momentum * st["momentum_buffer"] + (1 - dampening) * g
        st["momentum_buffer"] = buf
        g = g + momentum * buf if nesterov else buf
    return p - lr * g


def ref_rmsprop(p, g, st, t, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                centered=False, maximize=False):
    g = -g if maximize else g
    if weight_decay != 0:
        g = g + weight_decay * p
    v = alpha * st.get("square_avg", 0.0) + (1 - alpha) * g * g
    st["square_avg"] = v
    if centered:
        g_ave = alpha * st.get("grad_avg", 0.0) + (1 - alpha) * g
        st["grad_avg"] = g_ave
        v_tilde = v - g_ave ** 2
    else:
        v_tilde = v
    if momentum > 0:
        buf = momentum * st.get("momentum_buffer", 0.0) + g / (np.sqrt(v_tilde) + eps)
        st["momentum_buffer"] = buf
        return p - lr * buf
    return p - lr * g / (np.sqrt(v_tilde) + eps)


def ref_adadelta(p, g, st, t, lr, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False):
    g = -g if maximize else g
    if weight_decay != 0:
        g = g + weight_decay * p
    v = rho * st.get("square_avg", 0.0) + (1 - rho) * g * g
    u = st.get("acc_delta", 0.0)
    dx = np.sqrt(u + eps) / np.sqrt(v + eps) * g
    st["square_avg"] = v
    st["acc_delta"] = rho * u + (1 - rho) * dx * dx
    return p - lr * dx


def ref_adagrad(p, g, st, t, lr, lr_decay=0.0, weight_decay=0.0,
                initial_accumulator_value=0.0, eps=1e-10, maximize=False):
    g = -g if maximize else g
    if weight_decay != 0:
        g = g + weight_decay * p
    clr = lr / (1 + (t - 1) * lr_decay)
    s = st.get("sum", np.full_like(p, initial_accumulator_value)) + g * g
    st["sum"] = s
    return p - clr * g / (np.sqrt(s) + eps)


def ref_adam(p, g, st, t, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
             maximize=False, decoupled=False):
    b1, b2 = betas
    g = -g if maximize else g
    if decoupled:
        p = p * (1 - lr * weight_decay)
    elif weight_decay != 0:
        g = g + weight_decay * p
    m = b1 * st.get("exp_avg", 0.0) + (1 - b1) * g
    v = b2 * st.get("exp_avg_sq", 0.0) + (1 - b2) * g * g
    st["exp_avg"], st["exp_avg_sq"] = m, v
    m_hat = m / (1 - b1 ** t)
    if amsgrad:
        v = np.maximum(st.get("max_exp_avg_sq", 0.0), v)
        st["max_exp_avg_sq"] = v
    v_hat = v / (1 - b2 ** t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps)


def ref_adamw(p, g, st, t, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
              amsgrad=False, maximize=False):
    return ref_adam(p, g, st, t, lr, betas, eps, weight_decay, amsgrad, maximize,
                    decoupled=True)


REFERENCE = {"SGD": ref_sgd, "RMSProp": ref_rmsprop, "Adadelta": ref_adadelta,
             "Adagrad": ref_adagrad, "Adam": ref_adam, "AdamW": ref_adamw}
DEFAULT_LR = {"RMSProp": 0.01, "Adadelta": 1.0, "Adagrad": 0.01, "Adam": 1e-3, "AdamW": 1e-3}


def reference_run(name, options, problem, steps=STEPS):
    """Trajectory of params, losses and the final slots of the NumPy reference."""
    options = dict(options)
    clip = {k: options.pop(k) for k in ("clip_norm", "clip_value") if k in options}
    lr = options.pop("lr", DEFAULT_LR.get(name))
    x, y, params = _data(problem)
    slots = [{} for _ in params]
    trajectory, losses = [], []
    for k in range(steps):
        loss, grads = _numpy_loss_and_grads(problem, x, y, params)
        grads = ref_clip(grads, **clip)
        rate = lr(k) if callable(lr) else lr
        params = [REFERENCE[name](p, g, st, k + 1, rate, **options)
                  for p, g, st in zip(params, grads, slots)]
        trajectory.append([p.copy() for p in params])
        losses.append(loss)
    return trajectory, losses, slots


def graphdl_run(name, options, problem, steps=STEPS, dtype="float64"):
    """The same run as a compiled graphdl step; returns trajectory, losses, optimizer, params."""
    x_data, y_data, init = _data(problem)
    x = gd.input("x", (None, 3), dtype=dtype)
    y = gd.input("y", (None, 2), dtype=dtype)
    W = gd.param("W", init[0].astype(dtype))
    b = gd.param("b", init[1].astype(dtype))
    loss = _graph_loss(problem, x, y, W, b)
    opt = getattr(gd.optim, name)(**options)
    step = gd.function([x, y], [loss], updates=opt.updates(loss, [W, b]), backend="reference")
    trajectory, losses = [], []
    for _ in range(steps):
        (value,) = step(x_data.astype(dtype), y_data.astype(dtype))
        trajectory.append([W.value.copy(), b.value.copy()])
        losses.append(float(value))
    return trajectory, losses, opt, [W, b]


def _decay(k):
    return 0.05 * 0.7 ** k + 0.01 * (k % 2)


CASES = [
    ("SGD", {"lr": 0.1}, "quadratic"),
    ("SGD", {"lr": 0.1, "momentum": 0.9}, "quadratic"),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.3}, "logistic"),
    ("SGD", {"lr": 0.1, "momentum": 0.8, "nesterov": True}, "quadratic"),
    ("SGD", {"lr": 0.05, "momentum": 0.5, "weight_decay": 0.1}, "logistic"),
    ("SGD", {"lr": 0.1, "clip_norm": 0.3}, "quadratic"),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "clip_value": 0.05}, "quadratic"),
    ("SGD", {"lr": _decay, "momentum": 0.9, "dampening": 0.1}, "quadratic"),
    ("SGD", {"lr": 0.1, "maximize": True}, "logistic"),
    ("RMSProp", {}, "quadratic"),
    ("RMSProp", {"lr": 0.01, "centered": True}, "quadratic"),
    ("RMSProp", {"lr": 0.01, "momentum": 0.5, "alpha": 0.9}, "logistic"),
    ("RMSProp", {"lr": 0.02, "centered": True, "momentum": 0.7, "weight_decay": 0.1,
                 "eps": 1e-3}, "quadratic"),
    ("RMSProp", {"lr": _decay, "clip_norm": 0.2}, "logistic"),
    ("Adadelta", {}, "quadratic"),
    ("Adadelta", {"lr": 0.5, "rho": 0.5, "weight_decay": 0.2, "eps": 1e-4}, "logistic"),
    ("Adadelta", {"lr": _decay, "clip_value": 0.1}, "quadratic"),
    ("Adagrad", {}, "quadratic"),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.1, "initial_accumulator_value": 0.2}, "logistic"),
    ("Adagrad", {"lr": 0.1, "weight_decay": 0.1, "eps": 1e-3, "clip_norm": 0.5}, "quadratic"),
    ("Adagrad", {"lr": _decay, "lr_decay": 0.05}, "quadratic"),
    ("Adam", {}, "quadratic"),
    ("Adam", {"lr": 0.1, "betas": (0.8, 0.5), "amsgrad": True}, "quadratic"),
    ("Adam", {"lr": 0.05, "weight_decay": 0.1, "eps": 1e-3}, "logistic"),
    ("Adam", {"lr": 0.05, "clip_norm": 0.4, "clip_value": 0.1}, "quadratic"),
    ("Adam", {"lr": _decay, "amsgrad": True, "betas": (0.5, 0.6)}, "logistic"),
    ("Adam", {"lr": 0.05, "maximize": True}, "quadratic"),
    ("AdamW", {}, "quadratic"),
    ("AdamW", {"lr": 0.1, "weight_decay": 0.1, "amsgrad": True, "betas": (0.8, 0.5)},
     "logistic"),
    ("AdamW", {"lr": _decay, "weight_decay": 0.3, "clip_norm": 0.3}, "quadratic"),
]


def _case_id(case):
    name, options, problem = case
    text = ",".join(f"{k}={'sched' if callable(v) else v}" for k, v in options.items())
    return f"{name}[{text or 'defaults'}]-{problem}"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_steps_match_the_numpy_transcription_of_torch_optim(case):
    name, options, problem = case
    expected, expected_losses, expected_slots = reference_run(name, options, problem)
    got, losses, opt, params = graphdl_run(name, options, problem)
    for k in range(STEPS):
        for p_got, p_exp in zip(got[k], expected[k]):
            np.testing.assert_allclose(p_got, p_exp, rtol=RTOL, atol=1e-14,
                                       err_msg=f"step {k + 1}")
    np.testing.assert_allclose(losses, expected_losses, rtol=RTOL)
    for p, slots in zip(params, expected_slots):
        for slot_name, value in slots.items():
            np.testing.assert_allclose(opt.slot(p, slot_name).value, value, rtol=RTOL,
                                       atol=1e-14, err_msg=slot_name)
    assert opt.step_count == STEPS


def test_the_cases_exercise_clipping_and_amsgrad():
    """Guard the table's power: clipping and the amsgrad maximum actually bind."""
    x, y, params = _data("quadratic")
    _, grads = _numpy_loss_and_grads("quadratic", x, y, params)
    norm = np.sqrt(sum(np.sum(g * g) for g in grads))
    assert norm > 1.0 and max(np.abs(g).max() for g in grads) > 0.2
    options = next(o for n, o, _ in CASES if n == "Adam" and o.get("amsgrad"))
    _, _, slots = reference_run("Adam", options, "quadratic")
    assert np.any(slots[0]["max_exp_avg_sq"] > slots[0]["exp_avg_sq"])


def test_float32_params_stay_float32_and_follow_the_reference():
    got, _, opt, params = graphdl_run("Adam", {"lr": 0.05, "amsgrad": True}, "quadratic",
                                      dtype="float32")
    expected, _, _ = reference_run("Adam", {"lr": 0.05, "amsgrad": True}, "quadratic")
    assert all(p.value.dtype == np.float32 for p in params)
    assert opt.slot(params[0], "exp_avg").dtype == "float32"
    np.testing.assert_allclose(got[-1][0], expected[-1][0], rtol=1e-4, atol=1e-5)


# -- torch parity, when torch is importable -----------------------------------------------
def test_matches_torch_optim_when_torch_is_installed():
    torch = pytest.importorskip("torch")
    for name, options, problem in CASES:
        options = dict(options)
        clip_norm, clip_value = options.pop("clip_norm", None), options.pop("clip_value", None)
        lr = options.pop("lr", DEFAULT_LR.get(name))
        x, y, init = _data(problem)
        tx, ty = torch.tensor(x), torch.tensor(y)
        tw = [torch.tensor(p, requires_grad=True) for p in init]
        cls = {"RMSProp": torch.optim.RMSprop}.get(name, getattr(torch.optim, name, None))
        opt = cls(tw, lr=lr(0) if callable(lr) else lr, **options)
        got, _, _, _ = graphdl_run(name, dict(options, lr=lr, clip_norm=clip_norm,
                                              clip_value=clip_value), problem)
        for k in range(STEPS):
            for group in opt.param_groups:
                group["lr"] = lr(k) if callable(lr) else lr
            opt.zero_grad()
            z = tx @ tw[0] + tw[1]
            if problem == "quadratic":
                loss = ((z - ty) ** 2).mean()
            else:
                loss = (torch.nn.functional.softplus(z) - ty * z).mean()
            loss.backward()
            if clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(tw, clip_norm)
            if clip_value is not None:
                torch.nn.utils.clip_grad_value_(tw, clip_value)
            opt.step()
            for p_got, p_torch in zip(got[k], tw):
                np.testing.assert_allclose(p_got, p_torch.detach().numpy(), rtol=1e-9,
                                           atol=1e-12, err_msg=f"{name} {options} step {k}")


# -- convergence ----------------------------------------------------------------------------
def _least_squares():
    rng = np.random.default_rng(3)
    a = np.hstack([rng.normal(size=(60, 3)), np.ones((60, 1))])
    target = a @ np.array([1.5, -2.0, 0.5, 0.3]) + 0.1 * rng.normal(size=60)
    solution = np.linalg.lstsq(a, target, rcond=None)[0]
    x = gd.input("a", (None, 4), dtype="float64")
    y = gd.input("t", (None,), dtype="float64")
    w = gd.param("w", np.zeros(4))
    loss = (((x @ w.reshape(4, 1)).reshape(-1) - y) ** 2).mean()
    return a, target, solution, x, y, w, loss


def test_full_batch_sgd_reaches_the_least_squares_solution():
    a, target, solution, x, y, w, loss = _least_squares()
    lr = 1.0 / np.linalg.eigvalsh(2.0 * a.T @ a / len(a)).max()
    step = gd.function([x, y], [loss], updates=gd.optim.SGD(lr).updates(loss, [w]))
    for _ in range(400):
        step(a, target)
    np.testing.assert_allclose(w.value, solution, atol=1e-4)


def test_adam_converges_on_least_squares():
    a, target, solution, x, y, w, loss = _least_squares()
    opt = gd.optim.Adam(lr=lambda k: 0.1 * 0.99 ** k)
    step = gd.function([x, y], [loss], updates=opt.updates(loss, [w]))
    for _ in range(600):
        step(a, target)
    np.testing.assert_allclose(w.value, solution, atol=1e-3)


# -- state, in-place updates, schedules -------------------------------------------------------
def _tiny(name="W"):
    x = gd.input("x", (None, 3), dtype="float64")
    W = gd.param(name, np.ones((3, 2)))
    loss = ((x @ W - 1.0) ** 2).mean()
    data = np.random.default_rng(0).normal(size=(4, 3))
    return x, W, loss, data


def test_slots_and_counter_are_state_variables_that_persist_across_calls():
    x, W, loss, data = _tiny("W1")
    opt = gd.optim.Adam(lr=0.01, amsgrad=True)
    step = gd.function([x], [loss], updates=opt.updates(loss, [W]))
    variables = opt.state_variables()
    assert [v.name for v in variables] == ["W1.exp_avg", "W1.exp_avg_sq", "W1.max_exp_avg_sq",
                                           "Adam.step"]
    assert all(v.op == "state" for v in variables)
    step(data)
    first = opt.slot(W, "exp_avg").value.copy()
    step(data)
    assert opt.step_count == 2 and int(variables[-1].value) == 2
    assert not np.allclose(opt.slot(W, "exp_avg").value, first)
    # A second function from the same optimizer continues from the same slots and counter.
    again = gd.function([x], [loss], updates=opt.updates(loss, [W]))
    assert opt.state_variables() == variables
    again(data)
    assert opt.step_count == 3


def test_param_values_are_updated_in_place():
    x, W, loss, data = _tiny()
    buffer = W.value
    before = buffer.copy()
    opt = gd.optim.SGD(lr=0.1, momentum=0.9)
    step = gd.function([x], [loss], updates=opt.updates(loss, [W]))
    step(data)
    assert W.value is buffer
    assert not np.array_equal(buffer, before)
    slot = opt.slot(W, "momentum_buffer").value
    step(data)
    assert opt.slot(W, "momentum_buffer").value is slot


def test_a_schedule_sets_the_rate_of_each_call_without_recompiling():
    x, W, loss, data = _tiny()
    rates = [0.1, 0.05, 0.2, 0.0, 0.01]
    opt = gd.optim.SGD(lr=lambda k: rates[k])
    updates = opt.updates(loss, [W])
    assert isinstance(updates, gd.Updates) and len(updates.hooks) == 1
    step = gd.function([x], [loss], updates=updates)
    program = step.program
    for k, rate in enumerate(rates):
        before = W.value.copy()
        _, (gw, _) = _numpy_loss_and_grads("quadratic", data, np.ones((4, 2)),
                                           [before, np.zeros(2)])
        step(data)
        np.testing.assert_allclose(W.value, before - rate * gw, rtol=1e-12)
        assert step.program is program
    assert opt.step_count == len(rates)


def test_state_variables_restore_resumes_bit_for_bit():
    x, W, loss, data = _tiny()
    opt = gd.optim.RMSProp(lr=0.05, momentum=0.5, centered=True)
    step = gd.function([x], [loss], updates=opt.updates(loss, [W]))
    step(data)
    saved = [v.value.copy() for v in opt.state_variables()] + [W.value.copy()]
    step(data)
    step(data)
    after = W.value.copy()
    for v, value in zip(opt.state_variables() + [W], saved):
        v.value = value
    assert opt.step_count == 1
    step(data)
    step(data)
    np.testing.assert_array_equal(W.value, after)


def test_a_state_tensor_as_lr_is_read_at_each_call():
    x, W, loss, data = _tiny()
    rate = gd.state("rate", np.array(0.1))
    step = gd.function([x], [loss], updates=gd.optim.SGD(lr=rate).updates(loss, [W]))
    step(data)
    rate.value = 0.0
    before = W.value.copy()
    step(data)
    np.testing.assert_array_equal(W.value, before)


def test_constant_lr_adds_no_hooks():
    _, W, loss, _ = _tiny()
    assert gd.optim.Adam().updates(loss, [W]).hooks == []


# -- argument checks --------------------------------------------------------------------------
def test_empty_params_is_a_value_error():
    loss = _tiny()[2]
    with pytest.raises(ValueError, match="empty"):
        gd.optim.SGD(0.1).updates(loss, [])


def test_non_float_or_non_param_tensors_are_type_errors():
    x, W, loss, _ = _tiny()
    counts = gd.param("counts", np.zeros(3, np.int64))
    with pytest.raises(TypeError, match="float params"):
        gd.optim.Adam().updates(loss, [W, counts])
    with pytest.raises(TypeError, match="gd.param"):
        gd.optim.Adam().updates(loss, [x])
    with pytest.raises(TypeError, match="gd.param"):
        gd.optim.Adam().updates(loss, [W * 2])


@pytest.mark.parametrize("make", [
    lambda: gd.optim.SGD(-0.1),
    lambda: gd.optim.SGD(0.1, nesterov=True),
    lambda: gd.optim.SGD(0.1, momentum=0.9, dampening=0.1, nesterov=True),
    lambda: gd.optim.Adam(betas=(0.9, 1.0)),
    lambda: gd.optim.Adam(eps=-1.0),
    lambda: gd.optim.Adadelta(rho=1.5),
    lambda: gd.optim.RMSProp(alpha=-0.1),
    lambda: gd.optim.Adagrad(lr_decay=-1.0),
    lambda: gd.optim.AdamW(weight_decay=-0.1),
    lambda: gd.optim.SGD(0.1, clip_norm=0.0),
], ids=["lr", "nesterov-no-momentum", "nesterov-dampening", "beta1", "eps", "rho", "alpha",
        "lr_decay", "weight_decay", "clip_norm"])
def test_invalid_hyperparameters_raise_value_error(make):
    with pytest.raises(ValueError):
        make()


def test_pytorch_spelling_and_defaults():
    assert gd.optim.RMSprop is gd.optim.RMSProp
    adam, adamw = gd.optim.Adam(), gd.optim.AdamW()
    assert (adam.lr, adam.betas, adam.eps, adam.weight_decay) == (1e-3, (0.9, 0.999), 1e-8, 0)
    assert adamw.weight_decay == 1e-2
    assert gd.optim.Adadelta().lr == 1.0 and gd.optim.Adagrad().eps == 1e-10
    assert gd.optim.Adam().step_count == 0 and gd.optim.Adam().state_variables() == []
