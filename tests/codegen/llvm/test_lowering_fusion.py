"""Lowering-level fusions: a reduction evaluating its single-use elementwise producer, an
elementwise node written straight into a non-overlapping col2im, bias + ReLU after a GEMM in
one loop. Each checks the kernels that were emitted AND the numbers against NumPy."""

import numpy as np
import pytest

import graphdl as gd


def _kernels(f, sizes=None):
    return [k.name.split("_", 1)[1] for k in f.program.for_sizes(sizes or {}).plan.kernels]


def test_sum_of_exp_never_stores_the_exp():
    x = gd.input("x", (64, 300), "float64")
    y = gd.log(gd.exp(x - 1.0).sum(axis=1))
    f = gd.function([x], [y])
    xv = np.random.default_rng(0).standard_normal((64, 300))
    np.testing.assert_allclose(f(xv)[0], np.log(np.exp(xv - 1.0).sum(axis=1)), rtol=1e-12)
    kinds = _kernels(f)
    assert kinds.count("elementwise") <= 1 and "sum" in kinds   # the log only


def test_max_of_a_product_fuses_and_keeps_nan():
    x = gd.input("x", (5, 7), "float64")
    f = gd.function([x], [(x * 2.0).max(axis=1)])
    xv = np.random.default_rng(1).standard_normal((5, 7))
    xv[2, 3] = np.nan
    (out,) = f(xv)
    ref = (xv * 2).max(axis=1)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_allclose(out[~np.isnan(ref)], ref[~np.isnan(ref)])
    assert _kernels(f) == ["max"]


@pytest.mark.parametrize("size,k,stride,pad", [(8, 2, 2, 0), (7, 2, 2, 0), (7, 2, 3, 0),
                                               (9, 3, 3, 1), (8, 3, 2, 1)])
def test_max_pool_gradient_against_numpy(size, k, stride, pad):
    rng = np.random.default_rng(2)
    xv = rng.standard_normal((2, 3, size, size))
    xv[0, 0, :2, :2] = 1.5                        # a tie: the gradient is shared
    x = gd.input("x", xv.shape, "float64")
    y = gd.max_pool2d(x, k, stride=stride, padding=pad)
    wv = rng.standard_normal(tuple(y.shape))
    (g,) = gd.grad((y * gd.constant(wv)).sum(), [x])
    f = gd.function([x], [y, g])
    yv, gv = f(xv)
    # independent loops: ties share the window's gradient equally
    xp = np.pad(xv, [(0, 0), (0, 0), (pad, pad), (pad, pad)], constant_values=-np.inf)
    ref_g = np.zeros_like(xp)
    o = yv.shape[-1]
    for n in range(2):
        for c in range(3):
            for i in range(o):
                for j in range(o):
                    win = xp[n, c, i * stride:i * stride + k, j * stride:j * stride + k]
                    assert yv[n, c, i, j] == win.max()
                    hit = win == win.max()
                    ref_g[n, c, i * stride:i * stride + k, j * stride:j * stride + k] += \
                        hit * wv[n, c, i, j] / hit.sum()
    np.testing.assert_allclose(gv, ref_g[:, :, pad:pad + size, pad:pad + size], rtol=1e-12)
    if stride >= k:       # windows do not overlap: no col2im kernel, no stored 0/1 mask
        assert "unwindows" not in _kernels(f)


def test_max_gradient_of_a_nan_window_is_nan():
    x = gd.input("x", (2, 3), "float64")
    (g,) = gd.grad(x.max(axis=1).sum(), [x])
    for backend in ("reference", "llvm"):
        (gv,) = gd.function([x], [g], backend=backend)(np.array([[1.0, np.nan, 0.0],
                                                                 [2.0, 2.0, 1.0]]))
        assert np.isnan(gv[0]).all()
        np.testing.assert_array_equal(gv[1], [0.5, 0.5, 0.0])


def test_loops_after_a_gemm_share_one_loop_without_arena_conflicts():
    # z = x @ w + b is kept (two readers) and relu(z) goes on to a GEMM (an arena buffer):
    # the add and the ReLU must run as one loop, which needs the planner to keep the GEMM's
    # output alive across the run (else relu(z) would reuse its bytes).
    rng = np.random.default_rng(3)
    x = gd.input("x", (None, 64))
    w = gd.param("w", rng.standard_normal((64, 128)).astype("float32") * 0.1)
    b = gd.param("b", np.zeros(128, "float32"))
    v1 = gd.param("v1", rng.standard_normal((128, 4)).astype("float32"))
    v2 = gd.param("v2", rng.standard_normal((128, 4)).astype("float32"))
    z = x @ w + b
    out = gd.relu(z) @ v1 + gd.sigmoid(z) @ v2 + z.sum()
    f = gd.function([x], [out])
    xv = rng.standard_normal((256, 64)).astype("float32")
    zv = xv @ w.value + b.value
    ref = np.maximum(zv, 0) @ v1.value + 1 / (1 + np.exp(-zv)) @ v2.value + zv.sum()
    np.testing.assert_allclose(f(xv)[0], ref, rtol=1e-4, atol=1e-2)
    labels = [k.label for k in f.program.for_sizes({"batch": 256}).plan.kernels]
    assert any("add" in lab and "relu" in lab for lab in labels), labels


def test_relu_gradient_reuses_the_output():
    # relu'(x) = (relu(x) > 0): the pre-activation is not kept for the backward pass, so
    # bias + ReLU is one fused node and one loop
    rng = np.random.default_rng(5)
    x = gd.input("x", (None, 16), "float64")
    w = gd.param("w", rng.standard_normal((16, 8)))
    b = gd.param("b", rng.standard_normal(8))
    loss = (gd.relu(x @ w + b) ** 2).sum()
    gw, gb = gd.grad(loss, [w, b])
    f = gd.function([x], [gw, gb])
    xv = rng.standard_normal((32, 16))
    zv = xv @ w.value + b.value
    dz = 2 * np.maximum(zv, 0) * (zv > 0)
    gwv, gbv = f(xv)
    np.testing.assert_allclose(gwv, xv.T @ dz, rtol=1e-10)
    np.testing.assert_allclose(gbv, dz.sum(0), rtol=1e-10)
    labels = [k.label for k in f.program.for_sizes({"batch": 32}).plan.kernels]
    assert not any(lab.startswith("elementwise add") for lab in labels), labels


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_fused_reduction_reads_a_variable_before_its_in_place_update(dtype):
    # loss = sum(w * w) is a sum of a never-stored product of w, and w is updated in place
    # in the same call: the loss must be the one of the old w
    rng = np.random.default_rng(6)
    w0 = rng.standard_normal((64, 256)).astype(dtype)
    w = gd.param("w", w0.copy())
    x = gd.input("x", (64, 256), dtype)
    loss = (w * w).sum() + (x * w).sum()
    updates = gd.optim.SGD(lr=0.1).updates(loss, [w])
    f = gd.function([x], [loss], updates=updates)
    xv = rng.standard_normal((64, 256)).astype(dtype)
    for _ in range(3):
        old = w.value.copy()
        (lv,) = f(xv)
        np.testing.assert_allclose(lv, (old * old).sum() + (xv * old).sum(), rtol=1e-5)
        np.testing.assert_allclose(w.value, old - 0.1 * (2 * old + xv), rtol=1e-5, atol=1e-6)


def test_a_fused_reduction_scheduled_after_an_in_place_update_keeps_the_old_value():
    # updates w <- w / 2 (in place) and s <- sum(w * w, axis=1): simultaneous updates, so s
    # must see the old w although the schedule may run w's in-place update first
    w0 = np.random.default_rng(8).standard_normal((64, 512)).astype("float32")
    w = gd.param("w", w0.copy())
    s = gd.state("s", np.zeros(64, "float32"))
    f = gd.function([], [], updates=[(w, w * 0.5), (s, (w * w).sum(axis=1))])
    f()
    np.testing.assert_allclose(w.value, w0 * 0.5)
    np.testing.assert_allclose(s.value, (w0 * w0).sum(axis=1), rtol=1e-5)
