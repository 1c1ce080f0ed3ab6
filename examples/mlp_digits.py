"""Train an MLP on scikit-learn's 8x8 digits and print its test accuracy.

The whole walk of a model through graphdl: declare inputs and params, build the loss, let
the optimizer derive the gradients (sympy) and the update, compile one training step, and
run it. Needs the examples extra (scikit-learn): pip install "graphdl[examples]".

    python examples/mlp_digits.py [--epochs 30] [--backend reference] [--quiet]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import graphdl as gd
from graphdl.data import DataLoader, Standardizer, load_digits


def build(hidden: int = 128, lr: float = 1e-3, weight_decay: float = 1e-4):
    """The model, its loss, and the optimizer's updates."""
    x = gd.input("x", (None, 64))
    y = gd.input("y", (None,), dtype="int64")
    W1 = gd.param("W1", (64, hidden), init=gd.init.he_uniform())
    b1 = gd.param("b1", (hidden,), init=gd.init.zeros())
    W2 = gd.param("W2", (hidden, 10), init=gd.init.xavier_uniform())
    b2 = gd.param("b2", (10,), init=gd.init.zeros())
    h = gd.relu(x @ W1 + b1)
    logits = h @ W2 + b2
    loss = gd.losses.cross_entropy(logits, y) + weight_decay * gd.regularizers.l2([W1, W2])
    opt = gd.optim.Adam(lr=lr)
    updates = opt.updates(loss, [W1, b1, W2, b2])
    return x, y, logits, loss, updates


def main(argv=None) -> float:
    """Train, print progress and the test accuracy; return the accuracy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backend", default=None, help="reference (default) or llvm")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    gd.seed(0)
    X_train, y_train, X_test, y_test = load_digits(test_size=0.2, seed=0)
    scaler = Standardizer()
    X_train = scaler.fit_transform(X_train)
    X_test = scaler.transform(X_test)

    x, y, logits, loss, updates = build()
    start = time.perf_counter()
    step = gd.function([x, y], [loss], updates=updates, backend=args.backend)
    predict = gd.function([x], gd.argmax(logits, axis=1), backend=args.backend)
    compile_s = time.perf_counter() - start

    loader = DataLoader((X_train, y_train), batch_size=args.batch_size, seed=0)
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        losses = [float(step(xb, yb)[0]) for xb, yb in loader]
        if not args.quiet and (epoch % 5 == 0 or epoch == 1):
            train_acc = np.mean(predict(X_train) == y_train)
            print(f"epoch {epoch:3d}  loss {np.mean(losses):.4f}  train acc {train_acc:.3f}")
    train_s = time.perf_counter() - start

    accuracy = float(np.mean(predict(X_test) == y_test))
    print(f"backend {step.backend}: compiled in {compile_s:.2f} s, trained {args.epochs} "
          f"epochs in {train_s:.2f} s")
    print(f"test accuracy: {accuracy:.4f} ({len(y_test)} held-out digits)")
    return accuracy


if __name__ == "__main__":
    acc = main()
    assert acc >= 0.95, f"test accuracy {acc:.3f} is below 0.95"
