"""gd.explain: the course's derivative identities, checked mathematically (sympy.simplify of
a difference, never a string comparison), and the formulas of tensors and gradients."""

from __future__ import annotations

import pytest
import sympy as sp

import graphdl as gd
from graphdl.explain import CAP, Explanation, _tree_size
from graphdl.ops import registry
from graphdl.ops.registry import X, Y
from graphdl.ops.stable import Sigmoid

SIGMA = 1 / (1 + sp.exp(-X))


def is_zero(expr) -> bool:
    return sp.simplify(expr) == 0


def braces_balanced(text: str) -> bool:
    """Unescaped { and } pair up, never closing before they open."""
    depth, k = 0, 0
    while k < len(text):
        if text[k] == "\\" and k + 1 < len(text) and text[k + 1] in "{}":
            k += 2
            continue
        depth += {"{": 1, "}": -1}.get(text[k], 0)
        if depth < 0:
            return False
        k += 1
    return depth == 0


ELEMENTWISE = [op for op in registry.all_ops() if op.kind == "elementwise"]
D_OUT_CLAIMS = [op for op in ELEMENTWISE if op.differentiable and op.d_out is not None]


# -- ops: the course's equations ------------------------------------------------------------
def test_sigmoid_derivative_is_sigma_times_one_minus_sigma_eq27():
    e = gd.explain(gd.sigmoid)
    assert is_zero(e.formula - SIGMA)                                   # eq. 26
    assert is_zero(e.derivative - SIGMA * (1 - SIGMA))                  # eq. 27
    assert is_zero(e.derivative_reuse - Y * (1 - Y))
    assert is_zero(e.derivative_reuse.subs(Y, e.formula) - SIGMA * (1 - SIGMA))
    assert e.sympy == e.derivative


def test_tanh_derivative_is_one_minus_tanh_squared_eq29():
    e = gd.explain(gd.tanh)
    assert is_zero(e.derivative - (1 - sp.tanh(X) ** 2))
    assert is_zero(e.derivative_reuse.subs(Y, e.formula) - (1 - sp.tanh(X) ** 2))
    exp_form = (sp.exp(X) - sp.exp(-X)) / (sp.exp(X) + sp.exp(-X))     # eq. 28
    assert any(is_zero(rhs - exp_form) for _, _, rhs in e.rows)
    assert is_zero((e.formula - (2 * SIGMA.subs(X, 2 * X) - 1)).rewrite(sp.exp))


def test_softplus_derivative_is_the_sigmoid_eq35():
    e = gd.explain(gd.softplus)
    assert e.derivative_as == "sigmoid"
    assert is_zero(e.derivative - 1 / (1 + sp.exp(-X)))
    assert e.derivative_reuse is None                                   # softplus has no d_out


def test_exp_is_its_own_derivative_and_reuses_its_output():
    e = gd.explain("exp")
    assert e.derivative_as == "exp"
    assert e.derivative_reuse == Y


@pytest.mark.parametrize("op", D_OUT_CLAIMS, ids=lambda o: o.name)
def test_every_d_out_claim_holds(op):
    f = op.formula
    assert is_zero(sp.diff(f, X) - op.d_out.subs(Y, f))
    assert gd.explain(op).derivative_reuse == op.d_out


@pytest.mark.parametrize("op", ELEMENTWISE, ids=lambda o: o.name)
def test_every_elementwise_op_explains_with_its_own_derivatives(op):
    e = gd.explain(op)
    assert e.formula == op.formula
    assert str(e) and e.text and "\n" not in e.text
    latex = e.latex()
    assert latex and braces_balanced(latex)
    assert e._repr_latex_().startswith("$$") and e._repr_latex_().endswith("$$")
    if not op.differentiable:
        assert e.derivative is None and "not differentiable" in str(e)
        return
    derivatives = e.derivative if op.arity > 1 else {str(op.symbols[0]): e.derivative}
    for s, d in zip(op.symbols, op.derivatives):
        assert is_zero(derivatives[str(s)] - d)
    if e.derivative_as is not None:
        assert is_zero(e.derivative - registry.get(e.derivative_as).formula)


def test_op_accepted_as_function_opdef_or_name():
    forms = [gd.explain(gd.sigmoid), gd.explain(registry.get("sigmoid")), gd.explain("sigmoid")]
    assert all(is_zero(f.derivative - forms[0].derivative) for f in forms)
    assert all(isinstance(f, Explanation) for f in forms)


def test_parameters_stay_symbolic():
    e = gd.explain(gd.leaky_relu)
    alpha = sp.Symbol("alpha", real=True)
    assert alpha in e.formula.free_symbols
    assert alpha in e.derivative.free_symbols
    assert "leaky_relu" in str(e)          # printed by its name, not as a subscript


def test_structured_and_unknown_objects():
    assert "structured" in str(gd.explain("matmul"))
    with pytest.raises(TypeError):
        gd.explain(gd.softmax)             # a composite: no formula of its own
    with pytest.raises(KeyError):
        gd.explain("no_such_op")


# -- tensors and gradients --------------------------------------------------------------
def _scalar_sigmoid_loss():
    w, x, t = gd.input("w", ()), gd.input("x", ()), gd.input("t", ())
    loss = (gd.sigmoid(w * x) - t) ** 2
    return w, x, t, loss


def test_gradient_formula_equals_sympys_own_derivative():
    w, _, _, loss = _scalar_sigmoid_loss()
    e = gd.explain(gd.grad(loss, w))
    W, Xs, T = (e.symbols[n] for n in ("w", "x", "t"))
    expected = sp.diff((1 / (1 + sp.exp(-W * Xs)) - T) ** 2, W)
    assert not e.definitions
    assert is_zero(e.sympy - expected)
    assert braces_balanced(e.latex()) and e.latex()


def test_loss_with_wrt_lists_each_derivative():
    w, x, _, loss = _scalar_sigmoid_loss()
    e = gd.explain(loss, wrt=[w, x])
    W, Xs, T = (e.symbols[n] for n in ("w", "x", "t"))
    f = (1 / (1 + sp.exp(-W * Xs)) - T) ** 2
    assert is_zero(e.formula - f)
    assert is_zero(e.full(e.gradients["w"]) - sp.diff(f, W))
    assert is_zero(e.full(e.gradients["x"]) - sp.diff(f, Xs))
    assert isinstance(e.sympy, sp.Tuple) and len(e.sympy) == 2


def test_constants_become_exact_numbers():
    x = gd.input("x", (3,))
    e = gd.explain(x * 0.5 + 2.0 - gd.leaky_relu(x, 0.1))
    X3 = e.symbols["x"]
    relu_part = sp.Piecewise((X3, X3 > 0), (X3 / 10, True))
    assert e.sympy.atoms(sp.Float) == set()
    assert is_zero(e.sympy - (X3 / 2 + 2 - relu_part))


def test_stable_functions_print_in_exp_form():
    x = gd.input("x", (4,))
    node = gd.fused([x], Sigmoid(registry.I[0]), "float32")
    e = gd.explain(node)
    assert not e.sympy.has(Sigmoid)
    assert is_zero(e.sympy - 1 / (1 + sp.exp(-e.symbols["x"])))


def test_leaves_with_the_same_name_get_distinct_symbols():
    a, b = gd.input("x", ()), gd.input("x", ())
    e = gd.explain(a - b)
    assert len(e.symbols) == 2 and e.sympy != 0


def _mlp():
    x, y = gd.input("x", (None, 4)), gd.input("y", (None, 2))
    W1, b1 = gd.param("W1", (4, 3)), gd.param("b1", (3,))
    W2, b2 = gd.param("W2", (3, 2)), gd.param("b2", (2,))
    out = gd.sigmoid(gd.sigmoid(x @ W1 + b1) @ W2 + b2)
    return [W1, b1, W2, b2], ((out - y) ** 2).mean()


def test_two_layer_mlp_gradients_name_each_param():
    params, loss = _mlp()
    e = gd.explain(loss, wrt=params)
    text = str(e)
    assert braces_balanced(e.latex())
    for p in params:
        assert p.name in text
        symbol = e.symbols[p.name]
        assert symbol in e.full(e.gradients[p.name]).free_symbols
    assert "matmul" in e.text
    assert e._repr_html_().startswith("<pre")


def test_shared_nodes_are_named_once_past_the_cap():
    params, loss = _mlp()
    e = gd.explain(loss, wrt=params, cap=60)
    assert e.definitions                                # hidden activations named t1, t2...
    inline = gd.explain(loss, wrt=params, cap=10_000)
    assert not inline.definitions
    for name, g in e.gradients.items():
        assert e.full(g) == inline.gradients[name]      # same formula, only abbreviated


def test_deep_graph_stays_printable():
    x = gd.input("x", (None, 4))
    h = x
    weights = [gd.param(f"W{k}", (4, 4)) for k in range(25)]
    for W in weights:
        h = gd.tanh(h @ W + 0.5)
    loss = (h ** 2).sum()
    e = gd.explain(loss, wrt=weights[:1])
    assert e.definitions
    assert all(_tree_size(v, {}) <= 4 * CAP for v in e.definitions.values())
    assert braces_balanced(e.latex()) and len(str(e)) > 0
