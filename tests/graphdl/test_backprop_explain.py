"""gd.explain(loss, wrt=...) on layered models: the course's backpropagation equations
(section 6.2), checked mathematically with sympy (never by string match), and numerically
against the gradients gd.grad computes."""

from __future__ import annotations

import numpy as np
import sympy as sp

import graphdl as gd
from graphdl.explain import BATCH_SIZE, BackpropExplanation, Indicator, MaxOver, detect_layers
from graphdl.passes import optimize

# The course's notation, built here independently of graphdl: i over the batch, c over the
# outputs, j over hidden units, k over inputs; tensors as IndexedBase symbols.
i, c, j, k = (sp.Symbol(s, integer=True) for s in "icjk")
N = sp.Symbol("N", integer=True, positive=True)
x, y, h, yhat = (sp.IndexedBase(s) for s in ("x", "y", "h", "yhat"))
W1, b1, W2, b2 = (sp.IndexedBase(s) for s in ("W1", "b1", "W2", "b2"))
delta_o, delta_h = sp.IndexedBase("delta_o"), sp.IndexedBase("delta_h")
N_IN, N_HIDDEN, N_OUT = 64, 32, 10


def same(a, b) -> bool:
    return sp.simplify(a - b) == 0


def sigmoid_mlp(loss_kind="half_sse"):
    """The course's 2-layer MLP (eq. 38): h = sigma(x W1 + b1), yhat = sigma(h W2 + b2)."""
    xs = gd.input("x", (None, N_IN))
    ys = gd.input("y", (None, N_OUT))
    params = [gd.param("W1", (N_IN, N_HIDDEN)), gd.param("b1", (N_HIDDEN,)),
              gd.param("W2", (N_HIDDEN, N_OUT)), gd.param("b2", (N_OUT,))]
    hidden = gd.sigmoid(xs @ params[0] + params[1])
    out = gd.sigmoid(hidden @ params[2] + params[3])
    if loss_kind == "half_sse":
        loss = 0.5 * gd.sum((out - ys) ** 2)          # the course's L_i, summed over i
    else:
        loss = gd.losses.mse(out, ys)
    return loss, params


def test_output_delta_is_the_courses():
    loss, params = sigmoid_mlp()
    e = gd.explain(loss, wrt=params)
    assert isinstance(e, BackpropExplanation)
    o = e.layer("o")
    course = (yhat[i, c] - y[i, c]) * yhat[i, c] * (1 - yhat[i, c])
    assert same(o["delta"], course)
    assert o["delta_symbol"] == delta_o[i, c]
    assert same(o["dL_doutput"], yhat[i, c] - y[i, c])
    assert same(o["local"], yhat[i, c] * (1 - yhat[i, c]))      # sigma' reusing the output


def test_hidden_delta_sums_the_output_deltas_through_w():
    loss, params = sigmoid_mlp()
    hl = gd.explain(loss, wrt=params).layer("h")
    course = sp.Sum(delta_o[i, c] * W2[j, c], (c, 0, N_OUT - 1)) * h[i, j] * (1 - h[i, j])
    assert same(hl["delta"], course)
    assert hl["delta_symbol"] == delta_h[i, j]


def test_weight_gradients_are_delta_times_the_layer_input():
    loss, params = sigmoid_mlp()
    e = gd.explain(loss, wrt=params)
    o, hl = e.layer("o"), e.layer("h")
    assert same(o["gradients"]["W2"], sp.Sum(h[i, j] * delta_o[i, c], (i, 0, N - 1)))
    assert same(o["gradients"]["b2"], sp.Sum(delta_o[i, c], (i, 0, N - 1)))
    assert same(hl["gradients"]["W1"], sp.Sum(x[i, k] * delta_h[i, j], (i, 0, N - 1)))
    assert same(hl["gradients"]["b1"], sp.Sum(delta_h[i, j], (i, 0, N - 1)))
    assert o["gradient_indices"]["W2"] == (j, c) and hl["gradient_indices"]["W1"] == (k, j)
    assert e.ranges == {i: N, k: N_IN, j: N_HIDDEN, c: N_OUT}


def test_forward_pass_is_eq38():
    loss, params = sigmoid_mlp()
    e = gd.explain(loss, wrt=params)
    net_o, net_h = sp.IndexedBase("net_o"), sp.IndexedBase("net_h")
    o, hl = e.layer("o"), e.layer("h")
    assert same(o["net"], sp.Sum(h[i, j] * W2[j, c], (j, 0, N_HIDDEN - 1)) + b2[c])
    assert same(hl["net"], sp.Sum(x[i, k] * W1[k, j], (k, 0, N_IN - 1)) + b1[j])
    assert same(o["output"], 1 / (1 + sp.exp(-net_o[i, c])))
    assert same(hl["output"], 1 / (1 + sp.exp(-net_h[i, j])))
    assert [d["name"] for d in e.layers] == ["h", "o"]


def test_chain_rule_rows_agree_with_the_derived_delta():
    loss, params = sigmoid_mlp()
    for layer in gd.explain(loss, wrt=params).layers:
        assert same(layer["delta"], layer["dL_doutput"] * layer["local"])


def test_mse_scales_the_output_delta_by_two_over_n_c():
    loss, params = sigmoid_mlp("mse")                 # mean over N*C elements
    o = gd.explain(loss, wrt=params).layer("o")
    course = (yhat[i, c] - y[i, c]) * yhat[i, c] * (1 - yhat[i, c])
    assert same(o["delta"], 2 * course / (N * N_OUT))


def test_text_and_latex_use_the_course_notation():
    loss, params = sigmoid_mlp()
    e = gd.explain(loss, wrt=params)
    text, latex = str(e), e.latex()
    for piece in ("δᵒ[i, c]", "δʰ[i, j]", "ŷ[i, c]", "netᵒ[i, c]", "c ∈ [0, 10)",
                  "j ∈ [0, 32)", "i ∈ [0, N)", "k ∈ [0, 64)"):
        assert piece in text, piece
    for piece in (r"{\delta^{o}}_{i,c}", r"{\hat{y}}_{i,c}", r"{net^{h}}_{i,j}",
                  r"\frac{\partial L}{\partial {net^{o}}_{i,c}}", r"h^{T} \delta^{o}"):
        assert piece in latex, piece
    layered = text[:text.index("whole tensors")]
    assert "fused" not in layered and "Composite" not in layered
    assert "<math" in e._repr_html_() and e._repr_latex_().startswith("$$")


def _evaluate(expr, e, values, n):
    """The number an element formula stands for: sums done for a batch of n, tensors read
    from `values`, deltas replaced by their own formulas, one-hot indicators and the
    (shift-invariant) max of log-softmax evaluated."""
    deltas = {str(layer["symbols"]["delta"]): layer for layer in e.layers}

    def element(t):
        name, at = str(t.base), tuple(int(v) for v in t.indices)
        if name in deltas:
            layer = deltas[name]
            inner = layer["delta"].xreplace(dict(zip(layer["indices"], at)))
            return sp.Float(_evaluate(inner, e, values, n))
        value = values[name][at]
        return sp.Integer(int(value)) if np.issubdtype(type(value), np.integer) \
            else sp.Float(float(value))

    expr = expr.xreplace({BATCH_SIZE: n}).doit()
    expr = expr.replace(lambda t: isinstance(t, MaxOver), lambda t: sp.Integer(0))
    expr = expr.replace(lambda t: isinstance(t, sp.Indexed), element)
    expr = expr.replace(lambda t: isinstance(t, Indicator),
                        lambda t: sp.Integer(int(t.args[0] == t.args[1])))
    return float(expr.doit())


def test_formulas_evaluate_to_the_gradients_gd_grad_computes():
    """tanh hidden layer, linear output, cross-entropy: every dL/dparam element formula,
    evaluated with numbers, equals the gradient the graph computes."""
    rng = np.random.default_rng(0)
    xs = gd.input("x", (None, 3), dtype="float64")
    labels = gd.input("lab", (None,), dtype="int64")
    params = {"W1": gd.param("W1", rng.normal(size=(3, 4))), "b1": gd.param("b1", rng.normal(size=4)),
              "W2": gd.param("W2", rng.normal(size=(4, 2))), "b2": gd.param("b2", rng.normal(size=2))}
    hidden = gd.tanh(xs @ params["W1"] + params["b1"])
    logits = hidden @ params["W2"] + params["b2"]
    loss = gd.losses.cross_entropy(logits, labels)
    e = gd.explain(loss, wrt=list(params.values()))
    f = gd.function([xs, labels], [hidden, logits, *gd.grad(loss, list(params.values()))],
                    backend="reference")
    x_val, l_val = rng.normal(size=(2, 3)), np.array([1, 0])
    h_val, logit_val, *grads = f(x_val, l_val)
    values = {"x": x_val, "lab": l_val, "h": h_val, "net_o": logit_val,
              **{name: p.value for name, p in params.items()}}
    expected = dict(zip(params, grads))
    for layer in e.layers:
        for name, formula in layer["gradients"].items():
            index = layer["gradient_indices"][name]
            for at in np.ndindex(*expected[name].shape):
                got = _evaluate(formula.xreplace(dict(zip(index, at))), e, values, 2)
                assert np.isclose(got, expected[name][at], rtol=1e-9, atol=1e-12), (name, at)


def test_layers_are_matmul_bias_activation_chains():
    loss, _ = sigmoid_mlp()
    layers = detect_layers(loss)
    assert [(layer.name, layer.act.op, layer.weight.name, layer.bias.name) for layer in layers] \
        == [("h", "sigmoid", "W1", "b1"), ("o", "sigmoid", "W2", "b2")]


def test_three_layers_relu_tanh_name_each_delta():
    xs, ys = gd.input("x", (None, 5)), gd.input("y", (None, 2))
    Ws = [gd.param(f"W{n}", shape) for n, shape in ((1, (5, 4)), (2, (4, 3)), (3, (3, 2)))]
    h1 = gd.relu(xs @ Ws[0])
    h2 = gd.tanh(h1 @ Ws[1])
    loss = gd.losses.mse(h2 @ Ws[2], ys, reduction="sum")
    e = gd.explain(loss, wrt=Ws)
    assert [d["name"] for d in e.layers] == ["h1", "h2", "o"]
    o, l2 = e.layer("o"), e.layer("h2")
    a, b = l2["indices"]
    h2s, d2 = sp.IndexedBase("h2"), sp.IndexedBase("delta_h2")
    assert same(l2["local"], 1 - h2s[a, b] ** 2)                    # tanh' = 1 - y^2
    assert l2["delta_symbol"] == d2[a, b]
    assert o["activation"] is None and o["dL_doutput"] is None      # a linear output layer
    (cc,) = [s for s in o["indices"] if s != a]
    assert same(o["delta"], 2 * (sp.IndexedBase("net_o")[a, cc] - y[a, cc]))


def test_a_model_without_layers_gets_the_plain_explanation():
    w = gd.param("w", (3,))
    loss = gd.sum(gd.sigmoid(w) ** 2)
    e = gd.explain(loss, wrt=[w])
    assert not isinstance(e, BackpropExplanation) and e.gradients


def test_fused_nodes_print_their_formula():
    loss, params = sigmoid_mlp()
    optimized = optimize([loss, *gd.grad(loss, params)])
    assert any(n.op == "fused" for n in gd.Graph(optimized).nodes)
    for out in optimized:
        text = str(gd.explain(out))
        assert "fused" not in text and "Composite" not in text
