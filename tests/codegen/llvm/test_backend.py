"""The LLVM backend against the reference interpreter (the ground truth), op by op."""

import numpy as np
import pytest

import graphdl as gd

RNG = np.random.default_rng(11)


def _both(inputs, outputs, *arrays, updates=None, rtol=None, atol=None):
    """Run a graph on both backends and compare every output."""
    ref = gd.function(inputs, outputs, backend="reference")(*arrays)
    got = gd.function(inputs, outputs, backend="llvm")(*arrays)
    ref = ref if isinstance(ref, list) else [ref]
    got = got if isinstance(got, list) else [got]
    for r, g in zip(ref, got):
        assert r.shape == g.shape and r.dtype == g.dtype, (r.shape, g.shape, r.dtype, g.dtype)
        tol = rtol if rtol is not None else (1e-12 if r.dtype == np.float64 else 2e-6)
        np.testing.assert_allclose(g, r, rtol=tol, atol=atol if atol is not None else tol)
    return got


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matmul_with_transposed_and_batched_operands(dtype):
    a = gd.input("a", (None, 5, 7), dtype)
    b = gd.input("b", (7, 9), dtype)
    c = gd.input("c", (None, 9, 7), dtype)
    av = RNG.standard_normal((3, 5, 7)).astype(dtype)
    bv = RNG.standard_normal((7, 9)).astype(dtype)
    cv = RNG.standard_normal((3, 9, 7)).astype(dtype)
    _both([a, b, c], [a @ b, (a @ b).mT @ a, a @ c.mT, b.T @ b, a[:, 1:4, :] @ b], av, bv, cv,
          rtol=1e-5 if dtype == "float32" else 1e-11, atol=1e-5)


@pytest.mark.parametrize("n", [1, 13, 64, 130])
def test_large_and_odd_matmul_shapes(n):
    a = gd.input("a", (None, 300))
    w = gd.param("w", RNG.standard_normal((300, 70)).astype(np.float32))
    _both([a], [a @ w, (a @ w).T @ a], RNG.standard_normal((n, 300)).astype(np.float32),
          rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("axis", [None, 0, 1, 2, (0, 2), (1, 2)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions(axis, keepdims):
    x = gd.input("x", (None, 6, 5), "float64")
    xv = RNG.standard_normal((4, 6, 5))
    _both([x], [x.sum(axis, keepdims), x.max(axis, keepdims), x.mean(axis, keepdims)], xv)


def test_reduction_of_a_transposed_view_and_bool_sum():
    x = gd.input("x", (4, 6), "float64")
    xv = RNG.standard_normal((4, 6))
    _both([x], [x.T.sum(axis=1), (x > 0).sum(axis=0), gd.argmax(x, 1), gd.argmax(x.T, 1)], xv)


def test_movement_ops():
    x = gd.input("x", (None, 4, 6), "float64")
    xv = RNG.standard_normal((3, 4, 6))
    outs = [x.T, x[:, ::2, 1:5], x[:, 3, ::-1], x.transpose(0, 2, 1).reshape(-1, 24),
            gd.concat([x, x * 2.0], axis=2), gd.broadcast_to(x[:, :1, :], (None, 4, 6)),
            x.reshape(-1, 24)[:, 5:]]
    _both([x], outs, xv)


def test_index_ops():
    x = gd.input("x", (None, 5), "float64")
    y = gd.input("y", (None,), "int64")
    z = gd.input("z", (None, 2), "int64")
    xv, yv, zv = RNG.standard_normal((6, 5)), RNG.integers(0, 5, 6), RNG.integers(0, 5, (6, 2))
    zv[0] = [3, 3]                                   # a repeated index accumulates
    outs = [gd.one_hot(y, 5), gd.take(x, y), gd.losses.zero_one(x, y, reduction="none"),
            gd.scatter_add(x[:, :2], z, 1, (None, 5)), gd.gather(x, z, 1)]
    _both([x, y, z], outs, xv, yv, zv)


def test_labels_out_of_range_raise_before_native_code():
    x = gd.input("x", (None, 3))
    y = gd.input("y", (None,), "int64")
    f = gd.function([x, y], gd.losses.cross_entropy(x, y), backend="llvm")
    with pytest.raises(gd.ArgumentError, match="out of range"):
        f(np.zeros((2, 3), np.float32), np.array([0, 3]))


def test_elementwise_with_broadcast_scalars_and_bools():
    x = gd.input("x", (None, 3), "float64")
    b = gd.param("b", RNG.standard_normal(3))
    xv = RNG.standard_normal((5, 3))
    outs = [x + b, x * 2.5 - b, gd.where(x > b, x, b * 0.5), x > 0, (x > 0).astype("float64"),
            gd.maximum(x, 0.0), gd.abs(x) ** 3, x / (b * b + 1.0), -x, gd.sqrt(gd.abs(x))]
    _both([x], outs, xv)


def test_updates_in_place_and_simultaneous():
    a = gd.state("a", np.array([1.0, 2.0]))
    b = gd.state("b", np.array([3.0, 4.0]))
    x = gd.input("x", (2,), "float64")
    f = gd.function([x], [a + b], updates=[(a, b), (b, a + x)], backend="llvm")
    f(np.array([10.0, 20.0]))
    np.testing.assert_array_equal(a.value, [3.0, 4.0])
    np.testing.assert_array_equal(b.value, [11.0, 22.0])


def test_sgd_step_matches_reference():
    def run(backend):
        gd.seed(0)
        x = gd.input("x", (None, 4), "float64")
        y = gd.input("y", (None,), "int64")
        W = gd.param("W", (4, 3), init=gd.init.normal(std=0.5), dtype="float64")
        b = gd.param("b", (3,), init=gd.init.zeros(), dtype="float64")
        loss = gd.losses.hinge(x @ W + b, y) + 0.01 * gd.regularizers.l2([W])
        step = gd.function([x, y], [loss], updates=gd.optim.SGD(lr=0.1, momentum=0.9)
                           .updates(loss, [W, b]), backend=backend)
        rng = np.random.default_rng(1)
        losses = [step(rng.standard_normal((8, 4)), rng.integers(0, 3, 8))[0]
                  for _ in range(5)]
        return losses, W.value.copy(), b.value.copy()

    ref, got = run("reference"), run("llvm")
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, rtol=1e-11, atol=1e-12)


def test_new_batch_size_compiles_once_and_is_cached():
    x = gd.input("x", (None, 3))
    f = gd.function([x], x * 2.0, backend="llvm")
    for n in (2, 5, 2, 5):
        assert f(np.ones((n, 3), np.float32)).shape == (n, 3)
    assert len(f.program.compiled) == 2


def test_fused_loop_is_vectorized_without_libm_calls():
    from graphdl.codegen.llvm import jit, target
    from graphdl.codegen.llvm.lower import lower
    from graphdl.passes import optimize
    x = gd.input("x", (None, 1024))
    (y,) = optimize([x * gd.sigmoid(x) + 0.5 * gd.tanh(x) - gd.softplus(x)])
    module, plan = lower([x], [y], [], {"batch": 64})
    assert len(plan.kernels) == 1                        # one fused loop
    text = jit.optimized_ir(str(module))
    width = target.vector_bits() // 32
    assert f"<{width} x float>" in text
    for libm in ("@expf", "@logf", "@tanhf", "@log1pf", "@llvm.exp.", "@llvm.log."):
        assert libm not in text


def test_calls_from_several_python_threads_agree():
    import threading
    x = gd.input("x", (None, 64))
    W = gd.param("W", RNG.standard_normal((64, 32)).astype(np.float32))
    f = gd.function([x], gd.tanh(x @ W).sum(axis=1))
    data = [RNG.standard_normal((16, 64)).astype(np.float32) for _ in range(4)]
    expected = [np.tanh(d @ W.value).sum(axis=1) for d in data]
    errors = []

    def work(k):
        for _ in range(50):
            got = f(data[k])
            if not np.allclose(got, expected[k], rtol=1e-4, atol=1e-4):
                errors.append(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_clear_cache_and_recompile_from_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHDL_CACHE_DIR", str(tmp_path))
    x = gd.input("x", (None, 3))
    f = gd.function([x], gd.exp(x) * 3.0)
    f(np.ones((2, 3), np.float32))
    assert f.program.history[-1]["cache_hit"] is False
    g = gd.function([x], gd.exp(x) * 3.0)
    g(np.ones((2, 3), np.float32))
    assert g.program.history[-1]["cache_hit"] is True
    assert gd.clear_cache() >= 1
    h = gd.function([x], gd.exp(x) * 3.0)
    h(np.ones((2, 3), np.float32))
    assert h.program.history[-1]["cache_hit"] is False


def test_one_element_constant_operand_of_matmul_keeps_its_shape():
    x = gd.input("x", (2, 1, 12))
    out = _both([x], [gd.matmul(gd.constant(np.full((1, 1), 2.0, np.float32)), x)],
                RNG.standard_normal((2, 1, 12)).astype(np.float32))
    assert out[0].shape == (2, 1, 12)
