"""Choose the learning rate and hidden width of a digits MLP: k-fold cross-validation with
random search and Bayesian search (gd.select), then train the best configuration.

Each trial's score is the mean validation error over k folds (stratification is not needed
for the balanced digits, and equal fold sizes keep one compiled evaluation per model). The
learning rate is a runtime value (a `gd.state` scalar given as the optimizer's `lr=`), so
every trial with the same width reuses one compiled training step: `Trainer.reset()` puts
the initial parameters back between folds. Needs the examples extra (scikit-learn):
pip install "graphdl[examples]".

    python examples/model_selection.py [--trials 6] [--folds 3] [--epochs 4] [--backend llvm]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import graphdl as gd
from graphdl.data import Standardizer, load_digits
from graphdl.select import LogUniform, bayes_search, kfold, random_search
from graphdl.train import Trainer

WIDTHS = [16, 32, 64]


def build(hidden: int, backend=None):
    """A one-hidden-layer MLP trainer whose learning rate is the state variable `lr`."""
    gd.seed(hidden)     # one fixed initialization per width: trials differ only by config
    x = gd.input("x", (None, 64))
    y = gd.input("y", (None,), dtype="int64")
    W1 = gd.param("W1", (64, hidden), init=gd.init.he_uniform())
    b1 = gd.param("b1", (hidden,), init=gd.init.zeros())
    W2 = gd.param("W2", (hidden, 10), init=gd.init.xavier_uniform())
    b2 = gd.param("b2", (10,), init=gd.init.zeros())
    logits = gd.relu(x @ W1 + b1) @ W2 + b2
    loss = gd.losses.cross_entropy(logits, y) + 1e-4 * gd.regularizers.l2([W1, W2])
    lr = gd.state("lr", np.array(1e-3, np.float32))
    trainer = Trainer(loss, inputs=[x, y], optimizer=gd.optim.Adam(lr=lr), output=logits,
                      metrics={"acc": (gd.argmax(logits, 1), "accuracy")}, backend=backend)
    return trainer, lr


class CrossValidation:
    """The objective: config {"lr", "hidden"} -> mean k-fold validation error."""

    def __init__(self, X, y, folds: int, epochs: int, backend=None):
        n = len(y) - len(y) % folds          # equal folds: one evaluation batch size
        self.X, self.y = X[:n], y[:n]
        self.splits = kfold(n, k=folds, seed=0)
        self.epochs, self.backend = epochs, backend
        self.models: dict = {}

    def __call__(self, config: dict) -> float:
        hidden = int(config["hidden"])
        if hidden not in self.models:
            self.models[hidden] = build(hidden, self.backend)
        trainer, lr = self.models[hidden]
        errors = []
        for train_idx, val_idx in self.splits:
            trainer.reset()
            lr.value = config["lr"]
            trainer.fit((self.X[train_idx], self.y[train_idx]), epochs=self.epochs,
                        batch_size=64, drop_last=True, progress=False, seed=0)
            scores = trainer.evaluate(self.X[val_idx], self.y[val_idx], batch_size=len(val_idx))
            errors.append(1.0 - scores["acc"])
        return float(np.mean(errors))


def main(argv=None) -> float:
    """Search, print both trial tables and the best configuration; return test accuracy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6, help="trials per search")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per fold")
    parser.add_argument("--final-epochs", type=int, default=20)
    parser.add_argument("--backend", default=None, help="llvm (default) or reference")
    args = parser.parse_args(argv)

    X_train, y_train, X_test, y_test = load_digits(test_size=0.2, seed=0)
    scaler = Standardizer()
    X_train, X_test = scaler.fit_transform(X_train), scaler.transform(X_test)
    objective = CrossValidation(X_train, y_train, args.folds, args.epochs, args.backend)
    space = {"lr": LogUniform(1e-3, 1e-1), "hidden": WIDTHS}

    start = time.perf_counter()
    searches = {
        "random search": random_search(objective, space, n_trials=args.trials, seed=0),
        "Bayesian search": bayes_search(objective, space, n_trials=args.trials,
                                        n_initial=min(3, args.trials), seed=1),
    }
    for title, result in searches.items():
        print(f"\n{title} ({args.folds}-fold validation error, {args.epochs} epochs per fold)")
        print(result.table(sort=True))
        print(f"best: {result.best_config}  error {result.best_value:.4f}")
    print(f"\nsearched {2 * args.trials} configurations in {time.perf_counter() - start:.1f} s")

    best = min(searches.values(), key=lambda r: r.best_value)
    config = best.best_config
    trainer, lr = build(int(config["hidden"]), args.backend)
    lr.value = config["lr"]
    trainer.fit((X_train, y_train), epochs=args.final_epochs, batch_size=64, drop_last=True,
                progress=False)
    accuracy = trainer.evaluate(X_test, y_test, batch_size=len(y_test))["acc"]
    print(f"best configuration: lr={config['lr']:.4g}, hidden={config['hidden']} "
          f"(cv error {best.best_value:.4f}); test accuracy after {args.final_epochs} "
          f"epochs: {accuracy:.4f}")
    assert all(len(r.trials) == args.trials for r in searches.values())
    assert best.best_value < 0.15, f"best cross-validation error {best.best_value:.3f}"
    return accuracy


if __name__ == "__main__":
    acc = main()
    assert acc >= 0.93, f"test accuracy {acc:.3f} of the selected model is below 0.93"
