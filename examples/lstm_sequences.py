"""Classify scikit-learn's 8x8 digits with an LSTM that reads each image row by row.

Each image is a sequence of 8 steps of 8 features (its rows); gd.nn.LSTM runs them through a
scan (one compiled loop body, whatever the length), and a Dense layer classifies the last
hidden state (many-to-one). Needs scikit-learn: pip install "graphdl[examples]".

    python examples/lstm_sequences.py [--epochs 25] [--hidden 128] [--backend reference]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import graphdl as gd
from graphdl import nn
from graphdl.data import DataLoader, Standardizer, load_digits


class RowReader(nn.Module):
    """logits = Dense(h_T), h_T the LSTM's last hidden state over the rows of the image."""

    def __init__(self, features: int = 8, hidden: int = 64, classes: int = 10):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden)
        self.head = nn.Dense(hidden, classes)

    def forward(self, x, training: bool = False):
        _, (h_n, _) = self.lstm(x, training=training)        # h_n (layers, N, hidden)
        return self.head(h_n[-1], training=training)


def main(argv=None) -> float:
    """Train, print progress and the test accuracy; return the accuracy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--backend", default=None, help="llvm (default) or reference")
    parser.add_argument("--seed", type=int, default=0, help="weights, dropout, data order")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    gd.seed(args.seed)
    X_train, y_train, X_test, y_test = load_digits(test_size=0.2, seed=0, flatten=False)
    X_train, X_test = X_train[:, 0], X_test[:, 0]                  # (N, 8 rows, 8 columns)
    scaler = Standardizer(axis=(0, 1))                               # per column
    X_train = scaler.fit_transform(X_train).astype(np.float32)
    X_test = scaler.transform(X_test).astype(np.float32)

    model = RowReader(hidden=args.hidden)
    x = gd.input("x", (None, 8, 8))
    y = gd.input("y", (None,), dtype="int64")
    logits = model(x, training=True)
    loss = gd.losses.cross_entropy(logits, y)
    loader = DataLoader((X_train, y_train), batch_size=args.batch_size, seed=args.seed,
                        drop_last=True)                              # one batch size
    schedule = gd.schedules.CosineAnnealingLR(args.lr, T_max=args.epochs * len(loader))
    opt = gd.optim.Adam(lr=schedule, clip_norm=5.0)
    updates = opt.updates(loss, model.params()) + model.updates()
    if not args.quiet:
        print(model)
        print(f"{model.num_params()} parameters")

    start = time.perf_counter()
    step = gd.function([x, y], [loss], updates=updates, backend=args.backend)
    predict = gd.function([x], gd.argmax(model(x), axis=1), backend=args.backend)
    predict(X_test)                                 # compiles the predictor for this size
    compile_s = time.perf_counter() - start

    epoch_times = []
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        losses = [float(step(xb, yb)[0]) for xb, yb in loader]    # the first call compiles
        epoch_times.append(time.perf_counter() - t0)
        if not args.quiet and (epoch % 5 == 0 or epoch == 1):
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
    assert acc >= 0.93, f"test accuracy {acc:.3f} is below 0.93"
