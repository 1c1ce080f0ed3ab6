"""Classification losses against NumPy closed forms (and PyTorch when installed)."""

import numpy as np
import pytest

import graphdl as gd

RNG = np.random.default_rng(3)


def _numpy_log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _numpy_multi_margin(s, y, margin):
    n, c = s.shape
    m = np.maximum(0, margin - s[np.arange(n), y][:, None] + s)
    m[np.arange(n), y] = 0
    return m.sum(axis=1) / c


@pytest.fixture
def data():
    return RNG.standard_normal((6, 4)), RNG.integers(0, 4, 6)


def test_cross_entropy_with_labels_and_probabilities(data):
    s, y = data
    logits = gd.input("s", (None, 4), "float64")
    labels = gd.input("y", (None,), "int64")
    probs = gd.input("p", (None, 4), "float64")
    p = np.eye(4)[y] * 0.7 + 0.075
    f = gd.function([logits, labels, probs],
                    [gd.losses.cross_entropy(logits, labels),
                     gd.losses.cross_entropy(logits, labels, reduction="none"),
                     gd.losses.cross_entropy(logits, probs, reduction="sum")])
    mean, per, total = f(s, y, p)
    lsm = _numpy_log_softmax(s)
    np.testing.assert_allclose(per, -lsm[np.arange(6), y], rtol=1e-12)
    np.testing.assert_allclose(mean, per.mean(), rtol=1e-12)
    np.testing.assert_allclose(total, -(p * lsm).sum(), rtol=1e-12)


def test_hinge_is_pytorchs_multi_margin(data):
    s, y = data
    scores = gd.input("s", (None, 4), "float64")
    labels = gd.input("y", (None,), "int64")
    out = gd.function([scores, labels], gd.losses.hinge(scores, labels, margin=0.5,
                                                        reduction="none"))(s, y)
    np.testing.assert_allclose(out, _numpy_multi_margin(s, y, 0.5), rtol=1e-12)


def test_zero_one_counts_errors():
    s = gd.input("s", (None, 3), "float64")
    y = gd.input("y", (None,), "int64")
    err = gd.function([s, y], gd.losses.zero_one(s, y))(
        np.array([[1.0, 0, 0], [0, 2, 0], [0, 0, 3], [5, 0, 0]]), np.array([0, 1, 0, 1]))
    assert err == 0.5


def test_bad_reduction_and_mismatched_shapes():
    p = gd.input("p", (None, 3))
    with pytest.raises(ValueError, match="reduction"):
        gd.losses.mse(p, p, reduction="avg")
    with pytest.raises(gd.ShapeError):
        gd.losses.mse(p, gd.input("t", (None, 1)))


def test_matches_pytorch_when_installed(data):
    torch = pytest.importorskip("torch")
    s, y = data
    ts = torch.tensor(s, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(ts, torch.tensor(y))
    ref.backward()
    logits = gd.input("s", (None, 4), "float64")
    labels = gd.input("y", (None,), "int64")
    loss = gd.losses.cross_entropy(logits, labels)
    val, g = gd.function([logits, labels], [loss, gd.grad(loss, logits)])(s, y)
    np.testing.assert_allclose(val, ref.item(), rtol=1e-10)
    np.testing.assert_allclose(g, ts.grad.numpy(), rtol=1e-10)
    ts.grad = None
    ref = torch.nn.functional.multi_margin_loss(ts, torch.tensor(y), margin=1.0)
    ref.backward()
    loss = gd.losses.hinge(logits, labels)
    val, g = gd.function([logits, labels], [loss, gd.grad(loss, logits)])(s, y)
    np.testing.assert_allclose(val, ref.item(), rtol=1e-10)
    np.testing.assert_allclose(g, ts.grad.numpy(), rtol=1e-10)
