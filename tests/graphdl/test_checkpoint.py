"""gd.save / gd.load: round trips, clear errors, and resuming bit for bit in a fresh process."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import graphdl as gd
from graphdl.checkpoint import Checkpoint, load, save
from graphdl.train import EarlyStopping, Trainer

ROOT = pathlib.Path(__file__).resolve().parents[2]

# A training script, imported here and run again in a fresh interpreter: build() must make
# the same graph and initial values every time (gd.seed), as a user's script would.
RESUME_SCRIPT = textwrap.dedent('''
    import sys

    import numpy as np

    import graphdl as gd
    from graphdl.checkpoint import load
    from graphdl.train import EarlyStopping, Trainer


    def build():
        gd.seed(0)
        x = gd.input("x", (None, 2))
        y = gd.input("y", (None,), dtype="int64")
        W1 = gd.param("W1", (2, 16), init=gd.init.he_uniform())
        b1 = gd.param("b1", (16,), init=gd.init.zeros())
        W2 = gd.param("W2", (16, 2), init=gd.init.xavier_uniform())
        b2 = gd.param("b2", (2,), init=gd.init.zeros())
        logits = gd.relu(x @ W1 + b1) @ W2 + b2
        loss = gd.losses.cross_entropy(logits, y)
        optimizer = gd.optim.Adam(lr=gd.schedules.ExponentialLR(0.05, gamma=0.9))
        trainer = Trainer(loss, inputs=[x, y], optimizer=optimizer,
                          metrics={"acc": (gd.argmax(logits, 1), "accuracy")})
        return trainer, gd.data.moons(96, noise=0.2, seed=1)


    def validation(trainer):
        """A cheap stand-in for a validation set: one compiled function (the step) only."""
        return {"val_loss": float(np.mean(trainer.history.step_loss[-6:]))}


    def train(trainer, data, steps, seed=None):
        trainer.fit(data, steps=steps, batch_size=16, validation=validation, seed=seed,
                    early_stopping=EarlyStopping(patience=50), progress=False)


    def snapshot(trainer):
        arrays = {f"v/{v.op}/{v.name}": v.value for v in
                  trainer.params + trainer.state_variables()}
        arrays.update({f"h/{k}": np.asarray(v) for k, v in trainer.history.items()})
        arrays["step_loss"] = np.asarray(trainer.history.step_loss)
        arrays["position"] = np.array([trainer.epoch, trainer.step, trainer.batch_in_epoch])
        return arrays


    if __name__ == "__main__":
        checkpoint, steps, out = sys.argv[1:]
        trainer, data = build()
        load(checkpoint, trainer=trainer)
        train(trainer, data, int(steps))            # the data seed comes from the checkpoint
        np.savez(out, **snapshot(trainer))
''')


def _import(path):
    spec = importlib.util.spec_from_file_location("resume_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_resume_in_a_fresh_process_is_bit_for_bit(tmp_path):
    """N + M steps in one run == N steps, save, and M steps in a new interpreter."""
    script = tmp_path / "resume_model.py"
    script.write_text(RESUME_SCRIPT)
    model = _import(script)
    n_steps, m_steps = 8, 11        # 6 batches per epoch: stop mid-epoch, resume across two

    trainer, data = model.build()
    model.train(trainer, data, n_steps + m_steps, seed=5)
    expected = model.snapshot(trainer)

    trainer, data = model.build()
    model.train(trainer, data, n_steps, seed=5)
    assert (trainer.epoch, trainer.batch_in_epoch) == (1, 2)
    save(tmp_path / "run.npz", trainer=trainer)

    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "run.npz"),
                             str(m_steps), str(tmp_path / "resumed.npz")],
                            env=env, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "different training graph" not in result.stderr
    with np.load(tmp_path / "resumed.npz") as resumed:
        assert sorted(resumed.files) == sorted(expected)
        for key, value in expected.items():
            assert np.array_equal(resumed[key], value), key
    assert expected["position"].tolist() == [3, 19, 1]
    assert expected["v/state/Adam.step"] == n_steps + m_steps


def linear_model(names=("W", "b"), optimizer=None):
    gd.seed(0)
    x = gd.input("x", (None, 3))
    y = gd.input("y", (None, 1))
    W = gd.param(names[0], (3, 1), init=gd.init.normal())
    b = gd.param(names[1], (1,), init=gd.init.zeros())
    loss = gd.losses.mse(x @ W + b, y)
    opt = optimizer or gd.optim.SGD(lr=0.1, momentum=0.9)
    step = gd.function([x, y], loss, updates=opt.updates(loss, [W, b]), backend="reference")
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(8, 3)).astype(np.float32)
    ys = rng.normal(size=(8, 1)).astype(np.float32)
    return [W, b], opt, lambda: step(xs, ys)


def test_params_and_optimizer_round_trip(tmp_path):
    params, opt, step = linear_model()
    for _ in range(3):
        step()
    saved = {v: v.value.copy() for v in params + opt.state_variables()}
    path = save(tmp_path / "model.npz", params=params, optimizer=opt, extra={"note": "hi"})
    assert path == str(tmp_path / "model.npz")
    for _ in range(2):
        step()
    assert opt.step_count == 5
    ckpt = load(path, params=params, optimizer=opt)
    assert opt.step_count == 3
    assert all(np.array_equal(v.value, a) for v, a in saved.items())
    assert isinstance(ckpt, Checkpoint) and ckpt.extra == {"note": "hi"}
    assert set(ckpt.params) == {"W", "b"}
    assert set(ckpt.state) == {"W.momentum_buffer", "b.momentum_buffer", "SGD.step"}
    assert sorted(ckpt.restored) == sorted(f"{v.op}/{v.name}" for v in saved)


def test_checkpoint_file_is_plain_npz_keyed_by_name(tmp_path):
    params, opt, step = linear_model()
    step()
    save(tmp_path / "m.npz", params=params, optimizer=opt,
         extra={"mask": np.arange(3), "config": {"lr": 0.1}})
    with np.load(tmp_path / "m.npz", allow_pickle=False) as f:
        assert {"param/W", "param/b", "state/SGD.step", "extra/mask"} <= set(f.files)
        meta = json.loads(str(f["__graphdl__"]))
    assert meta["format"] == "graphdl-checkpoint" and meta["optimizer"]["step_count"] == 1
    assert meta["tensors"]["param/W"] == [[3, 1], "float32"]
    ckpt = load(tmp_path / "m.npz")                             # read only
    assert np.array_equal(ckpt.extra["mask"], np.arange(3))
    assert ckpt.extra["config"] == {"lr": 0.1}


def test_duplicate_names_are_refused(tmp_path):
    (W, _), _, _ = linear_model()
    (W2, _), _, _ = linear_model()
    with pytest.raises(ValueError, match="two different param tensors are named 'W'"):
        save(tmp_path / "dup.npz", params=[W, W2])


def test_mismatched_shapes_and_dtypes_change_nothing(tmp_path):
    params, _, _ = linear_model()
    save(tmp_path / "m.npz", params=params)
    gd.seed(1)
    W = gd.param("W", (4, 1), init=gd.init.normal())
    b = gd.param("b", (1,), init=gd.init.ones())
    with pytest.raises(gd.ShapeError, match=r"param/W: saved \(3, 1\) float32.*\(4, 1\)"):
        load(tmp_path / "m.npz", params=[b, W])
    assert b.value.tolist() == [1.0]                            # untouched
    b64 = gd.param("b", np.zeros(1))
    with pytest.raises(gd.ShapeError, match="float64"):
        load(tmp_path / "m.npz", params=[b64])


def test_missing_tensors_and_bad_files(tmp_path):
    params, _, _ = linear_model()
    save(tmp_path / "m.npz", params=params[:1])
    with pytest.raises(KeyError, match=r"no value for \['param/b'\]"):
        load(tmp_path / "m.npz", params=params)
    assert load(tmp_path / "m.npz", params=params, strict=False).restored == ["param/W"]
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load(tmp_path / "absent.npz")
    np.savez(tmp_path / "plain.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not a graphdl checkpoint"):
        load(tmp_path / "plain.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="not a readable"):
        load(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match="no state yet"):
        save(tmp_path / "x.npz", optimizer=gd.optim.Adam())
    with pytest.raises(ValueError, match="nothing to save"):
        save(tmp_path / "x.npz")


def _trainer(backend="reference"):
    gd.seed(0)
    x = gd.input("x", (None, 2))
    y = gd.input("y", (None,), dtype="int64")
    W = gd.param("W", (2, 2), init=gd.init.normal())
    b = gd.param("b", (2,), init=gd.init.zeros())
    loss = gd.losses.cross_entropy(x @ W + b, y)
    schedule = gd.schedules.ReduceLROnPlateau(0.5, patience=0, factor=0.5)
    return Trainer(loss, inputs=[x, y], optimizer=gd.optim.SGD(lr=schedule), backend=backend)


def test_checkpoint_each_epoch_and_resume_with_stateful_parts(tmp_path):
    """Early stopping, a plateau schedule, the data seed and gd.seed's generator resume."""
    X, y = gd.data.moons(40, noise=0.3, seed=2)
    curve = [1.0, 0.9, 0.95, 0.97, 0.99, 0.5]

    def validation(trainer):
        return {"val_loss": curve[trainer.epoch - 1]}

    def run(trainer, epochs, **kw):
        return trainer.fit((X, y), epochs=epochs, batch_size=16, validation=validation,
                           early_stopping=EarlyStopping(patience=3), progress=False, **kw)

    full = _trainer()
    run(full, 6, seed=4)
    assert full.epoch == 5 and full.early_stopping.best_epoch == 2

    half = _trainer()
    run(half, 3, seed=4, checkpoint=str(tmp_path / "e{epoch}.npz"))
    assert sorted(os.listdir(tmp_path)) == ["e1.npz", "e2.npz", "e3.npz"]
    np.random.default_rng(0)
    gd.seed(123)                                    # disturbed; the checkpoint restores it
    resumed = _trainer()
    gd.seed(99)
    ckpt = load(tmp_path / "e3.npz", trainer=resumed)
    assert (ckpt.epoch, resumed.epoch, resumed.seed) == (3, 3, 4)
    assert resumed.optimizer.lr.lr == half.optimizer.lr.lr
    assert gd.random.current_seed() == 0
    run(resumed, 3)
    assert resumed.epoch == 5 and resumed.early_stopping.stopped_epoch == 5
    assert resumed.history == full.history
    assert all(np.array_equal(p.value, q.value) for p, q in zip(resumed.params, full.params))


def test_loading_into_a_different_graph_warns(tmp_path):
    trainer = _trainer()
    save(tmp_path / "t.npz", trainer=trainer)
    gd.seed(0)
    x = gd.input("x", (None, 2))
    y = gd.input("y", (None,), dtype="int64")
    W = gd.param("W", (2, 2), init=gd.init.normal())
    b = gd.param("b", (2,), init=gd.init.zeros())
    other = Trainer(gd.losses.cross_entropy(gd.tanh(x @ W) + b, y), inputs=[x, y],
                    optimizer=gd.optim.SGD(lr=gd.schedules.ReduceLROnPlateau(0.5)),
                    backend="reference")
    with pytest.warns(UserWarning, match="different training graph"):
        load(tmp_path / "t.npz", trainer=other)
    save(tmp_path / "p.npz", params=[W])
    with pytest.raises(KeyError, match="no trainer state"):
        load(tmp_path / "p.npz", trainer=other)
