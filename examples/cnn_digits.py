"""Train a small CNN (gd.nn: convolutions, batch norm, dropout) on scikit-learn's 8x8 digits.

The model is built twice from the same layers: its training form (batch statistics, dropout)
inside the compiled training step, whose updates are the optimizer's plus the layers' own
(batch-norm running statistics, the dropout step counter), and its eval form (running
statistics, no dropout) for the predictions. Needs scikit-learn: pip install "graphdl[examples]".

    python examples/cnn_digits.py [--epochs 15] [--backend reference] [--quiet]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import graphdl as gd
from graphdl import nn
from graphdl.data import DataLoader, Standardizer, load_digits


def build_model() -> nn.Sequential:
    """conv-bn-relu x2, pool, conv-bn-relu, pool, dropout, dense: (N, 1, 8, 8) -> (N, 10)."""
    return nn.Sequential(
        nn.Conv2D(1, 32, 3, padding=1), nn.BatchNorm(32), gd.relu,
        nn.Conv2D(32, 32, 3, padding=1), nn.BatchNorm(32), gd.relu,
        nn.MaxPool2D(2),                                               # 8x8 -> 4x4
        nn.Conv2D(32, 64, 3, padding=1), nn.BatchNorm(64), gd.relu,
        nn.MaxPool2D(2),                                               # 4x4 -> 2x2
        nn.Flatten(), nn.Dropout(0.3), nn.Dense(64 * 2 * 2, 10),
    )


def main(argv=None) -> float:
    """Train, print progress and the test accuracy; return the accuracy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--backend", default=None, help="llvm (default) or reference")
    parser.add_argument("--seed", type=int, default=0, help="weights, dropout, data order")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    gd.seed(args.seed)
    X_train, y_train, X_test, y_test = load_digits(test_size=0.2, seed=0, flatten=False)
    scaler = Standardizer(axis=(0, 2, 3))            # one mean and std for the channel
    X_train = scaler.fit_transform(X_train).astype(np.float32)
    X_test = scaler.transform(X_test).astype(np.float32)

    model = build_model()
    x = gd.input("x", (None, 1, 8, 8))
    y = gd.input("y", (None,), dtype="int64")
    loss = gd.losses.cross_entropy(model(x, training=True), y)    # the training form
    predicted = gd.argmax(model(x, training=False), axis=1)        # the eval form
    loader = DataLoader((X_train, y_train), batch_size=args.batch_size, seed=args.seed,
                        drop_last=True)                            # one batch size: one compile
    schedule = gd.schedules.CosineAnnealingLR(args.lr, T_max=args.epochs * len(loader))
    opt = gd.optim.Adam(lr=schedule)
    updates = opt.updates(loss, model.params()) + model.updates()
    if not args.quiet:
        print(model)
        print(f"{model.num_params()} parameters; layer updates: "
              f"{', '.join(var.name for var, _ in model.updates())}")

    start = time.perf_counter()
    step = gd.function([x, y], [loss], updates=updates, backend=args.backend)
    predict = gd.function([x], predicted, backend=args.backend)
    predict(X_test)                                 # compiles the predictor for this size
    compile_s = time.perf_counter() - start

    epoch_times = []
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        losses = [float(step(xb, yb)[0]) for xb, yb in loader]    # the first call compiles
        epoch_times.append(time.perf_counter() - t0)
        if not args.quiet:
            test_acc = np.mean(predict(X_test) == y_test)
            print(f"epoch {epoch:3d}  loss {np.mean(losses):.4f}  test acc {test_acc:.4f}  "
                  f"({epoch_times[-1]:.2f} s)")
    steady = np.median(epoch_times[1:]) if len(epoch_times) > 1 else epoch_times[0]

    accuracy = float(np.mean(predict(X_test) == y_test))
    print(f"backend {step.backend}: predictor compiled in {compile_s:.2f} s; first epoch "
          f"(compiles the training step) {epoch_times[0]:.2f} s, then {steady * 1000:.0f} ms "
          f"per epoch ({len(loader)} steps of {args.batch_size})")
    print(f"test accuracy: {accuracy:.4f} ({len(y_test)} held-out digits)")
    return accuracy


if __name__ == "__main__":
    acc = main()
    assert acc >= 0.97, f"test accuracy {acc:.3f} is below 0.97"
