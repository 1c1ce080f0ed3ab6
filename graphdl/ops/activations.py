"""Activation functions of the course (section 4), each one sympy formula.

Derivatives come from sympy.diff; `d_out` states the output-reuse form where the course
gives one, and tests/graphdl/ops/test_registry.py proves each claim. Kinks follow PyTorch:
relu'(0) = 0, leaky_relu'(0) = alpha.

The course writes leaky ReLU as max(alpha, x) (a typo); we follow the standard definition
max(alpha x, x) for 0 < alpha < 1, written as a Piecewise so that alpha > 1 is also correct.
"""

from __future__ import annotations

import sympy as sp

from graphdl.ops.registry import ALPHA, X, Y, elementwise

SIGMOID = elementwise(
    "sigmoid", 1 / (1 + sp.exp(-X)), d_out=Y * (1 - Y), result="float",
    doc="Logistic sigmoid (course eq. 26); sigma'(x) = sigma(x)(1 - sigma(x)) (eq. 27)")
TANH = elementwise(
    "tanh", sp.tanh(X), d_out=1 - Y ** 2, result="float",
    doc="Hyperbolic tangent (eq. 28); tanh'(x) = 1 - tanh(x)^2 (eq. 29)")
RELU = elementwise(
    "relu", sp.Piecewise((X, X > 0), (0, True)), d_out=sp.Piecewise((1, Y > 0), (0, True)),
    doc="Rectified linear unit max(0, x) (eq. 30); relu'(0) = 0 as in PyTorch")
LEAKY_RELU = elementwise(
    "leaky_relu", sp.Piecewise((X, X > 0), (ALPHA * X, True)), params=("alpha",),
    doc="Leaky ReLU: x for x > 0, alpha x otherwise (eq. 32, typo max(alpha, x) fixed)")
PRELU = elementwise(
    "prelu", sp.Piecewise((X, X > 0), (ALPHA * X, True)), symbols=(X, ALPHA),
    doc="Parametric ReLU: leaky ReLU whose slope alpha is a learnable tensor (broadcast)")
SOFTPLUS = elementwise(
    "softplus", sp.log(1 + sp.exp(X)), result="float",
    doc="Softplus log(1 + e^x) (eq. 34); its derivative is the sigmoid (eq. 35)")
SWISH = elementwise(
    "swish", X / (1 + sp.exp(-X)), result="float",
    doc="Swish (SiLU) x sigma(x) (eq. 36)")
ELU = elementwise(
    "elu", sp.Piecewise((X, X > 0), (ALPHA * (sp.exp(X) - 1), True)), params=("alpha",),
    result="float", doc="Exponential linear unit: x for x > 0, alpha (e^x - 1) otherwise")
