"""The output-reuse claims (`d_out`) of the elementwise catalog, proved numerically: at
sample points on both sides of every kink, d_out evaluated at y = f(x) equals the derivative
sympy derived from the formula (the derivative autodiff would otherwise use)."""

import pytest

from graphdl.ops import registry

CLAIMS = [op for op in registry.all_ops() if op.kind == "elementwise" and op.d_out is not None]
POINTS = [-3.5, -1.0, -0.25, 0.3, 1.0, 2.75]


def test_the_catalog_makes_output_reuse_claims():
    assert {op.name for op in CLAIMS} >= {"sigmoid", "tanh", "relu"}


@pytest.mark.parametrize("op", CLAIMS, ids=lambda op: op.name)
def test_d_out_equals_the_derivative(op):
    x = registry.X
    derivative = op.derivatives[0]
    for v in POINTS:
        y = float(op.formula.subs(x, v))
        claimed = float(op.d_out.subs({registry.Y: y, x: v}))
        assert claimed == pytest.approx(float(derivative.subs(x, v)), rel=1e-12, abs=1e-12)


def test_a_wrong_claim_would_be_caught():
    op = registry.get("tanh")
    wrong = 1 - registry.Y
    x = registry.X
    assert any(abs(float(wrong.subs(registry.Y, float(op.formula.subs(x, v))))
                   - float(op.derivatives[0].subs(x, v))) > 1e-6 for v in POINTS)
