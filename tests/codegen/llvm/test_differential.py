"""Differential fuzzing: random graphs and their gradients, LLVM against the reference.

Hypothesis builds a random program over a few inputs: elementwise ops (every registered
unary activation and the binary arithmetic, with broadcasting), reductions over random
axes, matmuls, transposes and slices; then the gradient of a weighted sum of its result
with respect to every input. Both backends run it; results must agree (NaN where NaN).
CI runs a fixed budget (50); GRAPHDL_SLOW=full runs 300 examples.
"""

import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphdl as gd

BUDGET = 300 if os.environ.get("GRAPHDL_SLOW") == "full" else 50
UNARY = ["exp", "log", "sqrt", "abs", "neg", "sigmoid", "tanh", "relu", "softplus", "swish"]
BINARY = ["add", "sub", "mul", "div", "maximum", "minimum"]


@st.composite
def programs(draw):
    dtype = draw(st.sampled_from(["float64", "float32"]))
    n, m = draw(st.integers(1, 5)), draw(st.integers(1, 6))
    shapes = [(n, m), (m,), (n, 1), (m, n)]
    steps = draw(st.lists(st.tuples(st.sampled_from(["unary", "binary", "reduce", "matmul",
                                                     "transpose", "slice", "leaky"]),
                                    st.integers(0, 100), st.integers(0, 100)),
                          min_size=1, max_size=7))
    seed = draw(st.integers(0, 2 ** 16))
    return dtype, shapes, steps, seed


def _build(dtype, shapes, steps):
    inputs = [gd.input(f"x{k}", s, dtype) for k, s in enumerate(shapes)]
    pool = list(inputs)
    for kind, a, b in steps:
        x = pool[a % len(pool)]
        y = pool[b % len(pool)]
        if kind == "unary":
            pool.append(gd.apply(UNARY[b % len(UNARY)], x))
        elif kind == "leaky":
            pool.append(gd.leaky_relu(x, 0.1) if b % 2 else gd.elu(x, 0.5))
        elif kind == "binary":
            try:
                pool.append(gd.apply(BINARY[b % len(BINARY)], x, y))
            except gd.ShapeError:
                continue
        elif kind == "reduce" and x.ndim:
            axis = b % x.ndim
            pool.append(x.sum(axis, keepdims=bool(a % 2)) if b % 3 else x.max(axis, True))
        elif kind == "matmul" and x.ndim == 2 and y.ndim == 2 and x.shape[1] == y.shape[0]:
            pool.append(x @ y)
        elif kind == "transpose" and x.ndim == 2:
            pool.append(x.T)
        elif kind == "slice" and x.ndim and x.shape[0] > 1:
            pool.append(x[1:] if b % 2 else x[::-1])
    return inputs, pool[-1]


@settings(max_examples=BUDGET, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(programs())
def test_random_graphs_and_gradients_agree(program):
    dtype, shapes, steps, seed = program
    inputs, out = _build(dtype, shapes, steps)
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s).astype(dtype) for s in shapes]
    weights = gd.constant(rng.standard_normal(tuple(out.shape)).astype(dtype))
    loss = (out * weights).sum()
    outputs = [out, loss] + gd.grad(loss, inputs)
    ref = gd.function(inputs, outputs, backend="reference")(*arrays)
    got = gd.function(inputs, outputs, backend="llvm")(*arrays)
    tol = 1e-9 if dtype == "float64" else 2e-4
    for r, g in zip(ref, got):
        assert r.shape == g.shape and r.dtype == g.dtype
        with np.errstate(all="ignore"):
            scale = np.nanmax(np.abs(np.where(np.isfinite(r), r, 0)), initial=1.0)
        np.testing.assert_allclose(g, r, rtol=tol, atol=tol * scale, equal_nan=True)


def test_a_one_element_constant_read_before_and_after_its_fill():
    # found by the full fuzzing budget: w is a number (an immediate) for the loss' product
    # but a buffer for the gradient's matmuls, filled after the loss was computed
    x, y = gd.input("x", (1, 1), "float64"), gd.input("y", (1, 1), "float64")
    w = gd.constant(np.array([[0.125734]]))
    loss = ((x @ y) * w).sum()
    gx, gy = gd.grad(loss, [x, y])
    xv, yv = np.array([[0.7]]), np.array([[-1.3]])
    lv, gxv, gyv = gd.function([x, y], [loss, gx, gy])(xv, yv)
    np.testing.assert_allclose(lv, 0.7 * -1.3 * 0.125734)
    np.testing.assert_allclose(gxv, [[-1.3 * 0.125734]])
    np.testing.assert_allclose(gyv, [[0.7 * 0.125734]])
