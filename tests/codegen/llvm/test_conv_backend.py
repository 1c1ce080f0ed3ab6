"""The LLVM backend against the reference for convolution, pooling, norms and randomness.

windows is a strided view there (no copy), unwindows and random_uniform have kernels
(codegen/llvm/kernels_conv.py); conv, pooling and the norms are composites of those and
the existing primitives. Geometry is drawn by hypothesis; every output and gradient must
agree with the reference interpreter (random numbers bit for bit).
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphdl as gd

RNG = np.random.default_rng(17)
BUDGET = 50 if os.environ.get("GRAPHDL_SLOW") == "full" else 5


def _both(inputs, outputs, *arrays, tol=None, updates=None):
    ref = gd.function(inputs, outputs, backend="reference")(*arrays)
    got = gd.function(inputs, outputs, backend="llvm")(*arrays)
    for r, g in zip(ref, got):
        assert r.shape == g.shape and r.dtype == g.dtype, (r.shape, g.shape, r.dtype, g.dtype)
        t = tol if tol is not None else (1e-11 if r.dtype == np.float64 else 2e-5)
        np.testing.assert_allclose(g, r, rtol=t, atol=t)
    return got


@st.composite
def geometries(draw):
    d = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(d))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(d))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(d))
    spatial = tuple(dl * (k - 1) + 1 + draw(st.integers(0, 4))
                    for k, dl in zip(kernel, dilation))
    return d, kernel, stride, dilation, spatial, draw(st.sampled_from(["float32", "float64"]))


@settings(max_examples=BUDGET, deadline=None, suppress_health_check=list(HealthCheck))
@given(geometries())
def test_windows_and_unwindows_on_random_geometry(geometry):
    d, kernel, stride, dilation, spatial, dtype = geometry
    x = gd.input("x", (None, 2) + spatial, dtype)
    w = gd.windows(x, kernel, stride, dilation)
    back = gd.unwindows(w * 2.0, kernel, stride, dilation, x.shape)
    axes = tuple(range(2, 2 + d))
    xv = RNG.standard_normal((3, 2) + spatial).astype(dtype)
    _both([x], [w, back, w.max(axis=axes), w.reshape(-1, 2, int(np.prod(w.shape[2:])))], xv)


@settings(max_examples=max(3, BUDGET // 2), deadline=None,
          suppress_health_check=list(HealthCheck))
@given(geometries(), st.integers(1, 2), st.integers(0, 1))
def test_conv_and_gradients_on_random_geometry(geometry, groups, pad):
    _d, kernel, stride, dilation, spatial, dtype = geometry
    x = gd.input("x", (None, 2 * groups) + spatial, dtype)
    w = gd.input("w", (3 * groups, 2) + kernel, dtype)
    b = gd.input("b", (3 * groups,), dtype)
    y = gd.conv(x, w, b, stride=stride, padding=pad, dilation=dilation, groups=groups)
    arrays = [RNG.standard_normal((2,) + x.shape[1:]).astype(dtype),
              RNG.standard_normal(w.shape).astype(dtype), RNG.standard_normal(3 * groups)
              .astype(dtype)]
    _both([x, w, b], [y] + gd.grad((y * y).sum(), [x, w, b]), *arrays,
          tol=1e-10 if dtype == "float64" else 1e-3)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_conv_family_forward_and_gradients(dtype):
    x2 = gd.input("x2", (None, 4, 7, 6), dtype)
    x1 = gd.input("x1", (None, 4, 9), dtype)
    x3 = gd.input("x3", (None, 2, 4, 5, 4), dtype)
    w2 = gd.input("w2", (6, 2, 3, 2), dtype)
    wd = gd.input("wd", (8, 1, 3, 3), dtype)
    w1 = gd.input("w1", (4, 5, 3), dtype)
    w3 = gd.input("w3", (2, 3, 2, 2, 3), dtype)
    ins = [x2, x1, x3, w2, wd, w1, w3]
    ys = [gd.conv2d(x2, w2, groups=2, stride=(2, 1), padding="valid", dilation=(1, 2)),
          gd.conv2d(x2, wd, groups=4, padding=1),
          gd.conv_transpose1d(x1, w1, stride=2, padding=1, output_padding=1),
          gd.conv_transpose3d(x3, w3, stride=(1, 2, 1), padding=(0, 1, 1)),
          gd.conv1d(x1, gd.swapaxes(w1, 0, 1)[:, :, ::-1] * 1.0, padding="same")]
    loss = sum((y * y).sum() for y in ys)
    arrays = [RNG.standard_normal((3,) + t.shape[1:] if isinstance(t.shape[0], gd.Dim)
                                  else t.shape).astype(dtype) for t in ins]
    _both(ins, ys + gd.grad(loss, ins), *arrays,
          tol=1e-10 if dtype == "float64" else 2e-3)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pooling_forward_and_gradients(dtype):
    x = gd.input("x", (None, 3, 9, 8), dtype)
    x1 = gd.input("x1", (None, 2, 11), dtype)
    x3 = gd.input("x3", (None, 2, 5, 6, 5), dtype)
    ys = [gd.max_pool2d(x, 3, 2, 1, ceil_mode=True), gd.max_pool2d(x, (2, 3), dilation=2),
          gd.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
          gd.avg_pool1d(x1, 4, 3, 2), gd.max_pool1d(x1, 2),
          gd.max_pool3d(x3, 2, (1, 2, 2)), gd.avg_pool3d(x3, (2, 3, 2), padding=1),
          gd.global_avg_pool(x), gd.global_max_pool(x3)]
    loss = sum((y * y).sum() for y in ys)
    ins = [x, x1, x3]
    arrays = [RNG.standard_normal((2,) + t.shape[1:]).astype(dtype) for t in ins]
    _both(ins, ys + gd.grad(loss, ins), *arrays, tol=1e-10 if dtype == "float64" else 1e-4)


def test_norms_forward_gradients_and_running_statistics():
    x = gd.input("x", (None, 6, 4, 3), "float64")
    g = gd.input("g", (6,), "float64")
    b = gd.input("b", (6,), "float64")
    y_bn, updates = gd.batch_norm(x, g, b, gd.state("rm", np.zeros(6)),
                                  gd.state("rv", np.ones(6)))
    ys = [y_bn, gd.layer_norm(x, (4, 3)), gd.instance_norm(x, g, b), gd.group_norm(x, 3, g, b)]
    loss = sum((y * y * y).sum() for y in ys)
    arrays = [RNG.standard_normal((5, 6, 4, 3)), RNG.standard_normal(6),
              RNG.standard_normal(6)]
    _both([x, g, b], ys + gd.grad(loss, [x, g, b]) + [v for _, v in updates], *arrays,
          tol=1e-9)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_random_numbers_and_dropout_are_bit_identical(dtype):
    x = gd.input("x", (None, 4, 6, 6), dtype)
    w = gd.param("w", np.ones((5, 7), dtype))
    outs = [gd.random_uniform((None, 3, 5), step=9, seed=4, dtype=dtype),
            gd.dropout(x, 0.25, seed=1, step=3), gd.drop_connect(w, 0.5, seed=2, step=3),
            gd.spatial_dropout(x, 0.5, seed=5, step=1), gd.drop_block(x, 0.3, 3, seed=6,
                                                                      step=2)]
    xv = RNG.standard_normal((3, 4, 6, 6)).astype(dtype)
    ref = gd.function([x], outs, backend="reference")(xv)
    got = gd.function([x], outs, backend="llvm")(xv)
    for r, g in zip(ref, got):
        np.testing.assert_array_equal(r, g)
    noise = gd.gaussian_dropout(x, 0.3, seed=7, step=0)
    _both([x], [noise], xv, tol=1e-12 if dtype == "float64" else 1e-5)


def test_a_training_step_with_conv_pool_norm_and_dropout_matches_the_reference():
    def build():
        x = gd.input("x", (None, 1, 8, 8))
        y = gd.input("y", (None,), "int64")
        rng = np.random.default_rng(0)
        w = gd.param("w", (rng.standard_normal((4, 1, 3, 3)) * 0.3).astype(np.float32))
        w2 = gd.param("w2", (rng.standard_normal((16, 10)) * 0.3).astype(np.float32))
        h = gd.relu(gd.conv2d(x, w, padding=1))
        h, bn = gd.batch_norm(h, None, None, gd.state("rm", np.zeros(4, np.float32)),
                              gd.state("rv", np.ones(4, np.float32)))
        h = gd.max_pool2d(gd.dropout(h, 0.2, seed=0), 2)
        h = gd.avg_pool2d(h, 2).reshape(-1, 16)
        loss = gd.losses.cross_entropy(h @ w2, y)
        updates = gd.optim.SGD(lr=0.1).updates(loss, [w, w2]) + bn + gd.random_updates(loss)
        return x, y, w, loss, updates

    xv = np.random.default_rng(1).standard_normal((6, 1, 8, 8)).astype(np.float32)
    yv = np.arange(6) % 10
    results = []
    for backend in ("reference", "llvm"):
        x, y, w, loss, updates = build()
        step = gd.function([x, y], loss, updates=updates, backend=backend)
        gd.random_step().value = 0
        losses = [float(step(xv, yv)) for _ in range(3)]
        results.append((losses, w.value.copy()))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-4)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-4, atol=1e-5)


def test_large_unwindows_and_random_kernels_split_across_threads():
    before = gd.get_num_threads()
    gd.set_num_threads(3)
    try:
        x = gd.input("x", (None, 8, 40, 40))
        w = gd.windows(x, (3, 3), 1, 1)
        back = gd.unwindows(w * 1.5, (3, 3), 1, 1, x.shape)
        u = gd.random_uniform((None, 8, 40, 40), seed=2, step=1)
        xv = RNG.standard_normal((24, 8, 40, 40)).astype(np.float32)
        f = gd.function([x], [back, u], backend="llvm")
        from graphdl.codegen.llvm.lower import uses_threads
        kernels = f.program.for_sizes({"batch": 24}).plan.kernels
        threaded = {k.name.split("_", 1)[1] for k in kernels if uses_threads(k, 3)}
        assert {"unwindows", "random_uniform"} <= threaded, threaded
        ref = gd.function([x], [back, u], backend="reference")(xv)
        got = f(xv)
        np.testing.assert_allclose(got[0], ref[0], rtol=1e-6, atol=1e-5)
        np.testing.assert_array_equal(got[1], ref[1])
    finally:
        gd.set_num_threads(before)
