"""tensordot on the llvm backend: one GEMM over merged axis groups, the transposed product
when it packs less, the dot-product kernel for long thin products, row-split threads; and
View.reshape without copies. Every result is compared with NumPy (an independent reference).
"""

import numpy as np
import pytest

import graphdl as gd
from graphdl.codegen.llvm.loops import View
from graphdl.errors import ShapeError


def _run(build, arrays, dtype, threads=2, backend="llvm"):
    before = gd.get_num_threads()
    gd.set_num_threads(threads)
    try:
        inputs = [gd.input(f"x{i}", a.shape, dtype) for i, a in enumerate(arrays)]
        y = build(*inputs)
        loss = (y * y).sum()
        grads = gd.grad(loss, inputs)
        f = gd.function(inputs, [y] + list(grads), backend=backend)
        return f(*arrays), f
    finally:
        gd.set_num_threads(before)


def _kinds(f, arrays):
    compiled = f.program.for_sizes({})
    return [k.detail.get("kind", k.name.split("_", 1)[1]) for k in compiled.plan.kernels]


CASES = [
    # (a shape, b shape, axes): plain, multi-axis, axis lists, thin-long (dot kernel, odd K
    # tail), weight-gradient shape (transposed product), wide forward shape (row split)
    ((3, 4, 5), (4, 5, 6), 2),
    ((7, 9), (9, 3, 2), 1),
    ((3, 4, 5), (6, 5, 4), ([1, 2], [2, 1])),
    ((16, 1000), (1000, 9), 1),
    ((5, 2003), (2003, 3), 1),
    ((32, 700), (700, 144), 1),
    ((24, 37), (37, 300), 1),
    ((4, 6), (5, 7), 0),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("a_shape,b_shape,axes", CASES)
def test_tensordot_matches_numpy(a_shape, b_shape, axes, dtype):
    rng = np.random.default_rng(0)
    a = rng.standard_normal(a_shape).astype(dtype)
    b = rng.standard_normal(b_shape).astype(dtype)
    (y, ga, gb), _ = _run(lambda x, w: gd.tensordot(x, w, axes), [a, b], dtype)
    ref = np.tensordot(a, b, axes)
    tol = dict(rtol=2e-4, atol=2e-3) if dtype == "float32" else dict(rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(y, ref, **tol)
    # d(sum y^2)/da = tensordot(2y, b) over b's free axes: checked through NumPy's einsum
    ax_a, ax_b = (list(range(a.ndim - axes, a.ndim)), list(range(axes))) \
        if isinstance(axes, int) else axes
    la = "abcdefgh"[:a.ndim]
    lb = list("ijklmnop"[:b.ndim])
    for i, j in zip(ax_a, ax_b):
        lb[j] = la[i]
    lb = "".join(lb)
    ly = "".join(c for c in la if c not in lb) + "".join(c for c in lb if c not in la)
    g = 2 * ref
    np.testing.assert_allclose(ga, np.einsum(f"{ly},{lb}->{la}", g, b), **tol)
    np.testing.assert_allclose(gb, np.einsum(f"{ly},{la}->{lb}", g, a), **tol)


def test_thin_long_product_uses_the_dot_kernel_and_one_thread_agrees():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((16, 5000)).astype("float32")
    b = rng.standard_normal((9, 5000)).astype("float32")
    results = []
    for threads in (1, 2):
        (y, _, _), f = _run(lambda x, w: gd.tensordot(x, w.T, 1), [a, b], "float32", threads)
        results.append(y)
    assert "dot" in _kinds(f, [a, b])
    np.testing.assert_allclose(results[0], a @ b.T, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(results[1], a @ b.T, rtol=1e-4, atol=1e-3)


def test_transposed_product_is_a_view_and_feeds_later_ops():
    # a weight-gradient shape: 32 x 144 summed over a long K with B = cols^T
    rng = np.random.default_rng(2)
    a = rng.standard_normal((32, 3000)).astype("float64")
    c = rng.standard_normal((144, 3000)).astype("float64")
    (y, _, _), f = _run(lambda x, w: gd.tensordot(x, w.T, 1).reshape(32, 16, 9) + 1.0,
                        [a, c], "float64")
    np.testing.assert_allclose(y, (a @ c.T).reshape(32, 16, 9) + 1.0, rtol=1e-10)


def test_symbolic_batch_in_contracted_and_free_groups():
    rng = np.random.default_rng(3)
    w = gd.param("w", rng.standard_normal((5, 6)))
    x = gd.input("x", (6, None, 7), "float64")
    y = gd.tensordot(w, x, 1)                      # (5, N, 7)
    z = gd.tensordot(y, x, ([1, 2], [1, 2]))       # contract the batch too: (5, 6)
    f = gd.function([x], [y, z])
    for n in (1, 4):
        xv = rng.standard_normal((6, n, 7))
        yv, zv = f(xv)
        np.testing.assert_allclose(yv, np.tensordot(w.value, xv, 1), rtol=1e-10)
        np.testing.assert_allclose(zv, np.tensordot(yv, xv, ([1, 2], [1, 2])), rtol=1e-10)


@pytest.mark.parametrize("axes", [3, ([0], [0, 1]), ([5], [0]), ([0, 0], [0, 1])])
def test_bad_axes_raise_shape_errors(axes):
    a, b = gd.input("a", (2, 3)), gd.input("b", (3, 4))
    with pytest.raises(ShapeError):
        gd.tensordot(a, b, axes)


def test_mismatched_contracted_axes_name_the_shapes():
    with pytest.raises(ShapeError, match=r"\(2, 3\)"):
        gd.tensordot(gd.input("a", (2, 3)), gd.input("b", (4, 4)), 1)


RESHAPES = [
    ((2, 3, 4), (1, 0, 2), (3, 2, 2, 2)),
    ((2, 3, 4), (1, 0, 2), (6, 4)),
    ((2, 3, 4), (0, 2, 1), (2, 12)),
    ((2, 3, 4, 5), (1, 0, 2, 3), (3, 2, 20)),
    ((2, 3, 4, 5), (1, 0, 2, 3), (3, 1, 2, 20, 1)),
    ((2, 1, 4, 5), (1, 0, 2, 3), (2, 20)),
    ((4, 6), (1, 0), (2, 3, 4)),
    ((4, 6), (1, 0), (24,)),
]


@pytest.mark.parametrize("shape,perm,new", RESHAPES)
def test_view_reshape_is_numpys_no_copy_reshape(shape, perm, new):
    base = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    t = base.transpose(perm)
    view = View.contiguous(0, shape, "float64").transpose(perm).reshape(new)
    try:
        expected_view = t.view()
        expected_view.shape = new                  # NumPy: possible without a copy?
        possible = True
    except AttributeError:
        possible = False
    assert (view is not None) == possible
    if view is not None:
        got = np.lib.stride_tricks.as_strided(base.ravel()[view.offset:], view.shape,
                                              [s * 8 for s in view.strides])
        np.testing.assert_array_equal(got, t.reshape(new))


# -- differential fuzzing: random tensordot geometry, llvm against NumPy ---------------------
import os  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

BUDGET = 200 if os.environ.get("GRAPHDL_SLOW") == "full" else 25


@st.composite
def tensordot_cases(draw):
    dims = st.sampled_from([0, 1, 2, 3, 5, 17, 40])
    free_a = draw(st.lists(dims, max_size=2))
    free_b = draw(st.lists(dims, max_size=2))
    k = draw(st.lists(dims, min_size=0, max_size=2))
    shape = draw(st.sampled_from(["any", "long K", "wide N"]))
    if shape == "long K" and len(k) == 1:             # the dot-product kernel
        k = [draw(st.sampled_from([513, 1000, 1601]))]
        free_b = free_b[:1]
    elif shape == "wide N":                           # the stream kernel (N >= 512)
        free_b = [draw(st.sampled_from([512, 700, 1031]))] + free_b[:1]
    perm_a = draw(st.permutations(range(len(free_a) + len(k))))
    perm_b = draw(st.permutations(range(len(k) + len(free_b))))
    transposed_b = draw(st.booleans())
    dtype = draw(st.sampled_from(["float32", "float64"]))
    return free_a, free_b, k, perm_a, perm_b, transposed_b, dtype


@settings(max_examples=BUDGET, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(tensordot_cases())
def test_random_tensordots_and_their_gradients_match_numpy(case):
    free_a, free_b, k, perm_a, perm_b, transposed_b, dtype = case
    rng = np.random.default_rng(7)
    a_shape = tuple(free_a + k)
    b_shape = tuple(k + free_b)
    # the operands arrive as arbitrary transposes (views) of stored arrays
    a_store = rng.standard_normal(tuple(a_shape[i] for i in perm_a)).astype(dtype)
    b_store = rng.standard_normal(tuple(reversed(b_shape)) if transposed_b else
                                  tuple(b_shape[i] for i in perm_b)).astype(dtype)
    inv_a = tuple(int(i) for i in np.argsort(perm_a))
    inv_b = tuple(reversed(range(len(b_shape)))) if transposed_b else \
        tuple(int(i) for i in np.argsort(perm_b))
    xa = gd.input("a", a_store.shape, dtype)
    xb = gd.input("b", b_store.shape, dtype)
    y = gd.tensordot(gd.transpose(xa, inv_a), gd.transpose(xb, inv_b), len(k))
    w = rng.standard_normal(tuple(free_a + free_b)).astype(dtype)
    ga, gb = gd.grad((y * gd.constant(w)).sum(), [xa, xb])
    f = gd.function([xa, xb], [y, ga, gb])
    yv, gav, gbv = f(a_store, b_store)
    a_val, b_val = a_store.transpose(inv_a), b_store.transpose(inv_b)
    ref = np.tensordot(a_val.astype(np.float64), b_val.astype(np.float64), len(k))
    scale = 1.0 + np.sqrt(max(1, int(np.prod(k))))
    tol = dict(rtol=1e-4, atol=1e-4 * scale) if dtype == "float32" else \
        dict(rtol=1e-10, atol=1e-10 * scale)
    np.testing.assert_allclose(yv, ref, **tol)
    ref_ga = np.tensordot(w.astype(np.float64), b_val.astype(np.float64),
                          (list(range(len(free_a), len(free_a) + len(free_b))),
                           list(range(len(k), len(k) + len(free_b)))))
    ref_gb = np.tensordot(a_val.astype(np.float64), w.astype(np.float64),
                          (list(range(len(free_a))), list(range(len(free_a)))))
    scale_g = 1.0 + np.sqrt(max(1, int(np.prod(free_a + free_b))))
    tol_g = dict(rtol=1e-4, atol=1e-4 * scale_g) if dtype == "float32" else \
        dict(rtol=1e-10, atol=1e-10 * scale_g)
    np.testing.assert_allclose(gav, ref_ga.transpose(perm_a), **tol_g)
    np.testing.assert_allclose(gbv, ref_gb.transpose(tuple(reversed(range(len(b_shape))))
                                                     if transposed_b else perm_b), **tol_g)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("m,k,n,a_transposed", [
    (32, 64, 128, False), (32, 128, 10, False), (128, 32, 10, True), (64, 32, 128, True),
    (1, 7, 1, False), (9, 5, 17, True), (23, 40, 33, False), (5, 3, 256, False)])
def test_small_products_without_packing_match_numpy(m, k, n, a_transposed, dtype):
    rng = np.random.default_rng(11)
    a_store = rng.standard_normal((k, m) if a_transposed else (m, k)).astype(dtype)
    bv = rng.standard_normal((k, n)).astype(dtype)
    xa, xb = gd.input("a", a_store.shape, dtype), gd.input("b", bv.shape, dtype)
    f = gd.function([xa, xb], [(xa.T if a_transposed else xa) @ xb])
    (y,) = f(a_store, bv)
    ref = (a_store.T if a_transposed else a_store).astype(np.float64) @ bv
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y, ref, **tol)
    assert "small" in _kinds(f, [a_store, bv])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("m,k,n,a_transposed,b_slice", [
    (32, 144, 1280, False, False),   # a convolution's forward: whole tiles
    (144, 32, 1000, True, False),    # its input gradient (A = W^T, column-major)
    (7, 3, 515, False, True),        # rows % R, a masked last vector, B a column slice
    (1, 1, 512, False, False),
    (25, 100, 1999, True, True)])
def test_wide_products_stream_b_without_packing(m, k, n, a_transposed, b_slice, threads,
                                                dtype):
    """Short, wide products (small A, row-major B, N >= 512) take the unpacked streaming
    kernel; every tile, row block, masked tail and offset is checked against NumPy."""
    rng = np.random.default_rng(12)
    a_store = rng.standard_normal((k, m) if a_transposed else (m, k)).astype(dtype)
    b_store = rng.standard_normal((k, n + 7 if b_slice else n)).astype(dtype)
    xa, xb = gd.input("a", a_store.shape, dtype), gd.input("b", b_store.shape, dtype)
    bv = xb[:, 3:3 + n] if b_slice else xb
    before = gd.get_num_threads()
    gd.set_num_threads(threads)
    try:
        f = gd.function([xa, xb], [(xa.T if a_transposed else xa) @ bv])
        (y,) = f(a_store, b_store)
    finally:
        gd.set_num_threads(before)
    b_ref = b_store[:, 3:3 + n] if b_slice else b_store
    ref = (a_store.T if a_transposed else a_store).astype(np.float64) @ b_ref
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y, ref, **tol)
    assert "stream" in _kinds(f, [a_store, b_store])


def test_convolution_forward_and_input_gradient_stream():
    """conv2d's forward (W @ im2col) and input gradient (W^T @ dY) are stream-shaped; the
    result and both gradients match the reference backend (float64)."""
    rng = np.random.default_rng(13)
    xv = rng.standard_normal((4, 3, 12, 12))
    wv = rng.standard_normal((8, 3, 3, 3))
    outs = {}
    for backend in ("reference", "llvm"):
        x, w = gd.input("x", xv.shape, "float64"), gd.input("w", wv.shape, "float64")
        y = gd.conv2d(x, w, padding=1)
        loss = (y * y).sum()
        f = gd.function([x, w], [y] + gd.grad(loss, [x, w]), backend=backend)
        outs[backend] = f(xv, wv)
        if backend == "llvm":
            assert _kinds(f, [xv, wv]).count("stream") >= 2
    for got, ref in zip(outs["llvm"], outs["reference"]):
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)
