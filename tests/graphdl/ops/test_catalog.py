"""The whole op catalog against central finite differences (float64, reference backend).

Every registered op must appear in ELEMENTWISE_DOMAINS/NON_DIFFERENTIABLE (elementwise) or
STRUCTURED_CASES (structured): a new op fails `test_every_op_is_covered` until it has a case.
"""

import numpy as np
import pytest

import graphdl as gd
from graphdl.ops import registry
from graphdl.ops.indexing import _slice, _slice_vjp

RNG = np.random.default_rng(1234)


def _away_from_zero(shape, margin=0.2):
    r = RNG.standard_normal(shape)
    return np.sign(r) * (margin + np.abs(r))


def _positive(shape):
    return 0.5 + np.abs(RNG.standard_normal(shape))


# How to sample each input of an elementwise op (kinks avoided by a margin).
ELEMENTWISE_DOMAINS = {
    "add": None, "sub": None, "mul": None, "neg": None, "exp": None, "abs": None,
    "maximum": None, "minimum": None, "sigmoid": None, "tanh": None, "relu": None,
    "leaky_relu": None, "prelu": None, "softplus": None, "swish": None, "elu": None,
    "div": (None, _away_from_zero),
    "pow": (_positive, None),
    "log": (_positive,),
    "sqrt": (_positive,),
    "where": ("bool", None, None),
    "cast": None,
}
PARAMS = {"leaky_relu": {"alpha": 0.1}, "elu": {"alpha": 0.7}}
NON_DIFFERENTIABLE = {"greater", "greater_equal", "less", "less_equal", "equal", "not_equal",
                      "logical_not", "logical_and", "logical_or", "argmax", "zero_one"}


def _weighted_sum(t):
    """A scalar that depends on every entry of t with a distinct weight."""
    weights = gd.constant(RNG.standard_normal(tuple(t.shape)))
    return (t * weights).sum()


def _elementwise_case(name):
    op = registry.get(name)
    domains = ELEMENTWISE_DOMAINS[name] or (None,) * op.arity
    shapes = [(3, 4), (4,), (3, 1)][:op.arity]
    inputs, feed, wrt = [], {}, []
    for k, (domain, shape) in enumerate(zip(domains, shapes)):
        dtype = "bool" if domain == "bool" else "float64"
        t = gd.input(f"a{k}", shape, dtype=dtype)
        if domain == "bool":
            feed[t] = RNG.standard_normal(shape) > 0
        else:
            feed[t] = (domain or _away_from_zero)(shape)
            wrt.append(t)
        inputs.append(t)
    if name == "cast":
        return gd.cast(gd.cast(inputs[0], "float32"), "float64"), feed, wrt
    return gd.apply(name, *inputs, **PARAMS.get(name, {})), feed, wrt


def _slice_node(a):
    return _slice(a, ((1, 3, 1), (3, None, -2)))


def _scan_case(x, h, w):
    """(final carry, stacked ys) of an RNN-like scan over x with carry h and weights w."""
    (last,), (ys,) = gd.scan(lambda c, xs: ([gd.tanh(c[0] @ w + xs[0])], [c[0] * xs[0]]),
                             [h], [x])
    return last, ys


# name -> (builder over float64 inputs, input shapes)
STRUCTURED_CASES = {
    "matmul": (lambda a, b: a @ b, [(2, 3, 4), (4, 5)]),
    "tensordot": (lambda a, b: gd.tensordot(a, b, ([1, 2], [2, 0])), [(2, 3, 4), (4, 5, 3)]),
    "sum": (lambda a: a.sum(axis=(0, 2), keepdims=True), [(2, 3, 4)]),
    "max": (lambda a: a.max(axis=1), [(3, 4)]),
    "dim_size": (lambda a: a * gd.dim_size(gd.reshape(a, (-1, 2)), 0), [(3, 4)]),
    "reshape": (lambda a: a.reshape(4, 3), [(3, 4)]),
    "transpose": (lambda a: a.transpose(2, 0, 1), [(2, 3, 4)]),
    "broadcast_to": (lambda a: gd.broadcast_to(a, (2, 3, 4)), [(3, 1)]),
    "slice": (_slice_node, [(3, 4)]),
    "unslice": (lambda a: _slice_vjp(a, _slice_node(gd.input("z", (3, 4),
                                                              "float64")))[0], [(2, 2)]),
    "concat": (lambda a, b: gd.concat([a, b], axis=1), [(3, 4), (3, 2)]),
    "gather": (lambda a: gd.gather(a, gd.constant(np.array([[2], [0], [3]])), 1), [(3, 4)]),
    "scatter_add": (lambda a: gd.scatter_add(a, gd.constant(np.array([[2, 2], [0, 1]])), 1,
                                             (2, 3)), [(2, 2)]),
    "one_hot": (lambda a: a * gd.one_hot(gd.constant(np.array([1, 0, 3])), 4, "float64"),
                [(3, 4)]),
    "stop_gradient": (lambda a: a * gd.stop_gradient(a), [(3, 4)]),
    # convolution and randomness primitives (graphdl/ops/conv.py, graphdl/ops/random.py)
    "windows": (lambda a: gd.windows(a, (3, 2), stride=(2, 1), dilation=(1, 2)),
                [(2, 3, 7, 6)]),
    "unwindows": (lambda a: gd.unwindows(a, (2, 3), (2, 1), (1, 1), (2, 5, 6)),
                  [(2, 2, 3, 2, 4)]),
    "random_uniform": (lambda a: a * gd.random_uniform((3, 4), step=5, seed=1,
                                                       dtype="float64"), [(3, 4)]),
    # loops (graphdl/ops/scan.py): the stacked ys, and a projection (the final carry)
    "scan": (lambda x, h, w: _scan_case(x, h, w)[1], [(4, 2, 3), (2, 3), (3, 3)]),
    "scan_get": (lambda x, h, w: _scan_case(x, h, w)[0], [(4, 2, 3), (2, 3), (3, 3)]),
}


def test_every_op_is_covered():
    covered = set(ELEMENTWISE_DOMAINS) | NON_DIFFERENTIABLE | set(STRUCTURED_CASES)
    names = {op.name for op in registry.all_ops()}
    assert names - covered == set(), "add a gradient-check case for these ops"
    assert covered - names == set(), "cases for ops that do not exist"


@pytest.mark.parametrize("name", sorted(ELEMENTWISE_DOMAINS))
def test_elementwise_gradient_matches_finite_differences(name):
    out, feed, wrt = _elementwise_case(name)
    loss = _weighted_sum(out)
    rtol, eps = (1e-4, 1e-2) if name == "cast" else (1e-6, 1e-6)
    report = gd.check_grad(loss, wrt, feed=feed, eps=eps, rtol=rtol, atol=1e-7)
    assert report, str(report)


@pytest.mark.parametrize("name", sorted(STRUCTURED_CASES))
def test_structured_gradient_matches_finite_differences(name):
    build, shapes = STRUCTURED_CASES[name]
    inputs = [gd.input(f"a{k}", s, dtype="float64") for k, s in enumerate(shapes)]
    feed = {t: RNG.standard_normal(t.shape) for t in inputs}
    loss = _weighted_sum(build(*inputs))
    if name == "stop_gradient":
        # d/da [a * stop(a)] = stop(a): half of what the un-stopped a*a would give.
        (g,) = gd.function(inputs, gd.grad(loss, inputs))(*feed.values())
        weights = [n for n in gd.Graph([loss]).nodes if n.op == "constant" and n.ndim][0]
        np.testing.assert_allclose(g, weights.value * feed[inputs[0]], rtol=1e-12)
        return
    report = gd.check_grad(loss, inputs, feed=feed, rtol=1e-6, atol=1e-7)
    assert report, str(report)


@pytest.mark.parametrize("name", sorted(NON_DIFFERENTIABLE - {"zero_one", "argmax"}))
def test_comparisons_are_bool_and_never_get_gradients(name):
    op = registry.get(name)
    dtype = "bool" if name.startswith("logical") else "float64"
    inputs = [gd.input(f"a{k}", (3,), dtype=dtype) for k in range(op.arity)]
    out = gd.apply(name, *inputs)
    assert out.dtype == "bool"
    x = gd.input("x", (3,), dtype="float64")
    loss = gd.where(gd.apply(name, *([x] * op.arity)) if dtype != "bool" else out, x, 2 * x)
    if dtype != "bool":
        g = gd.function([x], gd.grad(loss.sum(), x))(np.array([-1.0, 0.5, 2.0]))
        assert set(np.unique(g)) <= {1.0, 2.0}


def test_argmax_has_no_gradient_path_and_zero_one_raises():
    x = gd.input("x", (None, 3), dtype="float64")
    y = gd.input("y", (None,), dtype="int64")
    err = gd.losses.zero_one(x, y)
    with pytest.raises(gd.NotDifferentiableError, match="zero_one"):
        gd.grad(err, x)
    # argmax's output is int64, so nothing flows through it: the gradient is zero
    g = gd.grad((gd.cast(gd.argmax(x, 1), "float64") * x.sum(1)).sum(), x)
    out = gd.function([x], g)(np.array([[1.0, 3.0, 2.0]]))
    np.testing.assert_allclose(out, [[1.0, 1.0, 1.0]])
