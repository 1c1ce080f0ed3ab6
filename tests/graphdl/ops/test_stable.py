"""The accuracy rewrites: equal to the formulas, and finite where the formulas overflow."""

import numpy as np
import pytest
import sympy as sp

import graphdl as gd
from graphdl.ops.registry import X
from graphdl.ops.stable import RULES, Sigmoid, Softplus, stabilize

EXTREMES = np.array([-1e4, -100.0, -30.0, -1.0, -1e-8, 0.0, 1e-8, 1.0, 30.0, 100.0, 1e4,
                     np.inf, -np.inf, np.nan])


@pytest.mark.parametrize("expr, expected", [
    (1 / (1 + sp.exp(-X)), Sigmoid(X)),
    (sp.exp(X) / (sp.exp(X) + 1), Sigmoid(X)),
    (X * sp.exp(-X) / (1 + sp.exp(-X)) ** 2, X * Sigmoid(X) * Sigmoid(-X)),
    (sp.log(1 + sp.exp(X)), Softplus(X)),
])
def test_rewrites_produce_the_stable_forms(expr, expected):
    assert stabilize(expr) == expected


@pytest.mark.parametrize("expr", [1 / (1 + sp.exp(-X)), sp.diff(sp.log(1 + sp.exp(X)), X),
                                  sp.diff(X / (1 + sp.exp(-X)), X), sp.exp(X) - 1,
                                  sp.log(1 + sp.exp(2 * X)) + sp.exp(X) - 1])
def test_rewrites_preserve_the_value(expr):
    stable = stabilize(expr).rewrite(sp.exp)
    from sympy.codegen.cfunctions import expm1
    stable = stable.replace(expm1, lambda u: sp.exp(u) - 1)
    assert sp.simplify(stable - expr) == 0


def test_every_rule_is_exercised():
    fired = set()
    samples = [1 / (1 + sp.exp(-X)), sp.log(1 + sp.exp(X)), sp.exp(X) - 1]
    for name, rule in RULES:
        for s in samples:
            if rule(s) is not None:
                fired.add(name)
    assert fired == {name for name, _ in RULES}


def _reference(name, x):
    """float64 closed forms written with NumPy, independent of graphdl."""
    with np.errstate(all="ignore"):
        sig = np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x))
                       / (1 + np.exp(-np.abs(x))))
        return {
            "sigmoid": (sig, sig * (1 - sig)),
            "softplus": (np.logaddexp(0, x), sig),
            "swish": (x * sig, sig + x * sig * (1 - sig)),
            "tanh": (np.tanh(x), 1 - np.tanh(x) ** 2),
            "elu": (np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
                    np.where(x > 0, 1.0, np.exp(np.minimum(x, 0)))),
        }[name]


@pytest.mark.parametrize("name", ["sigmoid", "softplus", "swish", "tanh", "elu"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_activations_and_derivatives_at_extremes(name, dtype):
    x = gd.input("x", (len(EXTREMES),), dtype)
    y = getattr(gd, name)(x)
    g = gd.grad(y.sum(), x)
    got_y, got_g = gd.function([x], [y, g])(EXTREMES.astype(dtype))
    want_y, want_g = _reference(name, EXTREMES)
    finite = np.isfinite(EXTREMES)
    rtol = 2e-6 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(got_y[finite], want_y[finite], rtol=rtol, atol=1e-30)
    # Derivatives reuse the output (sigma' = y (1 - y), as PyTorch's backward does), so in
    # the far right tail they are accurate in absolute, not relative, terms.
    atol = 1e-7 if dtype == "float32" else 1e-15
    np.testing.assert_allclose(got_g[finite], want_g[finite], rtol=rtol, atol=atol)
    assert np.isnan(got_y[-1]) and np.isnan(got_g[-1])           # NaN propagates
    np.testing.assert_equal(got_y[-3:-1], want_y[-3:-1])        # +-inf map as the limits
