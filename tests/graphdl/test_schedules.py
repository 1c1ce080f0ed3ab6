"""Schedules against hand-computed closed forms and, when installed, torch.optim.lr_scheduler."""

import math

import numpy as np
import pytest

from graphdl import schedules as S

# ------------------------------------------------------------------- closed forms by hand


def test_step_and_multistep_by_hand():
    assert S.StepLR(0.1, step_size=2, gamma=0.5).values(5) == pytest.approx(
        [0.1, 0.1, 0.05, 0.05, 0.025])
    assert S.MultiStepLR(1.0, milestones=[2, 4], gamma=0.1).values(6) == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])


def test_exponential_by_hand():
    assert S.ExponentialLR(2.0, gamma=0.5).values(4) == pytest.approx([2, 1, 0.5, 0.25])


def test_polynomial_by_hand_including_end_lr():
    assert S.PolynomialLR(1.0, total_steps=4, power=2.0).values(6) == pytest.approx(
        [1, 0.5625, 0.25, 0.0625, 0, 0])
    # linear from 1.0 to 0.2 over 4 steps, then flat at end_lr
    assert S.PolynomialLR(1.0, total_steps=4, end_lr=0.2).values(6) == pytest.approx(
        [1, 0.8, 0.6, 0.4, 0.2, 0.2])


def test_cosine_by_hand_and_period():
    sched = S.CosineAnnealingLR(1.0, T_max=4, eta_min=0.2)
    half = 0.2 + 0.8 * (1 + math.cos(math.pi / 4)) / 2
    assert sched.values(5) == pytest.approx([1.0, half, 0.6, 0.2 + 0.8 - (half - 0.2), 0.2])
    assert sched(8) == pytest.approx(1.0)   # PyTorch's form rises again after T_max


def test_cyclic_triangular_by_hand():
    sched = S.CyclicLR(0.1, 1.0, step_size_up=2)
    assert sched.values(9) == pytest.approx([0.1, 0.55, 1, 0.55, 0.1, 0.55, 1, 0.55, 0.1])
    asym = S.CyclicLR(0.0, 1.0, step_size_up=1, step_size_down=3)
    assert asym.values(5) == pytest.approx([0, 1, 2 / 3, 1 / 3, 0])


def test_cyclic_triangular2_halves_each_cycle_and_exp_range():
    sched = S.CyclicLR(0.0, 1.0, step_size_up=2, mode="triangular2")
    peaks = [sched(2), sched(6), sched(10)]
    assert peaks == pytest.approx([1.0, 0.5, 0.25])
    exp = S.CyclicLR(0.0, 1.0, step_size_up=2, mode="exp_range", gamma=0.9)
    assert exp(2) == pytest.approx(0.9**2)
    assert exp(6) == pytest.approx(0.9**6)


def test_warmup_then_wrapped_schedule():
    sched = S.LinearWarmup(S.ExponentialLR(1.0, gamma=0.5), warmup_steps=4, start_factor=0.0)
    assert sched.values(7) == pytest.approx([0, 0.25, 0.5, 0.75, 1.0, 0.5, 0.25])
    plain = S.LinearWarmup(0.3, warmup_steps=3)   # default start factor 1/3
    assert plain.values(4) == pytest.approx([0.1, 0.1 + 0.2 / 3, 0.1 + 0.4 / 3, 0.3])


def test_constant_schedules():
    assert S.constant(0.01).values(3) == [0.01, 0.01, 0.01]
    assert S.ConstantLR(1.0, factor=0.5, total_iters=2).values(3) == pytest.approx(
        [0.5, 0.5, 1.0])


def test_reduce_on_plateau_patience_and_cooldown():
    sched = S.ReduceLROnPlateau(1.0, factor=0.5, patience=2)
    assert [sched.step(m) for m in [1, 1, 1, 1]] == pytest.approx([1, 1, 1, 0.5])
    assert sched(123) == 0.5
    cool = S.ReduceLROnPlateau(1.0, factor=0.5, patience=0, cooldown=1)
    assert [cool.step(m) for m in [1, 2, 2, 2]] == pytest.approx([1, 0.5, 0.5, 0.25])


def test_reduce_on_plateau_threshold_mode_and_min_lr():
    sched = S.ReduceLROnPlateau(1.0, mode="max", patience=0, threshold=0.1)
    # 1.05 is not > 1.0 * 1.1: a bad epoch; 1.2 is an improvement
    assert [sched.step(m) for m in [1.0, 1.05, 1.2]] == pytest.approx([1, 0.1, 0.1])
    absolute = S.ReduceLROnPlateau(1.0, patience=0, threshold=0.5, threshold_mode="abs")
    assert [absolute.step(m) for m in [1.0, 0.6, 0.4]] == pytest.approx([1, 0.1, 0.1])
    floor = S.ReduceLROnPlateau(1.0, patience=0, min_lr=0.05)
    assert [floor.step(1.0) for _ in range(4)] == pytest.approx([1, 0.1, 0.05, 0.05])


def test_reduce_on_plateau_state_round_trip():
    a = S.ReduceLROnPlateau(1.0, patience=1)
    for m in [3, 2, 2]:
        a.step(m)
    b = S.ReduceLROnPlateau(1.0, patience=1)
    b.load_state_dict(a.state_dict())
    assert [a.step(m) for m in [2, 2, 2]] == [b.step(m) for m in [2, 2, 2]]


@pytest.mark.parametrize("make, message", [
    (lambda: S.StepLR(0.1, step_size=0), "step_size"),
    (lambda: S.StepLR(-0.1, step_size=1), "lr"),
    (lambda: S.MultiStepLR(0.1, [5, 2]), "increasing"),
    (lambda: S.CyclicLR(0.1, 1.0, 2, mode="sine"), "mode"),
    (lambda: S.ReduceLROnPlateau(0.1, factor=1.5), "factor"),
    (lambda: S.ReduceLROnPlateau(0.1, mode="up"), "mode"),
    (lambda: S.LinearWarmup(0.1, warmup_steps=3, start_factor=2.0), "start_factor"),
    (lambda: S.ExponentialLR(0.1, gamma=0.9)(-1), "0-based"),
    (lambda: S.ExponentialLR(0.1, gamma=0.9)(1.5), "0-based"),
])
def test_bad_arguments_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_every_public_name_is_documented():
    for name in S.__all__:
        assert getattr(S, name).__doc__, name


# ---------------------------------------------------------------------- LR range test


def test_lr_range_test_smoothing_by_hand():
    losses = iter([4.0, 2.0, 2.0])
    result = S.lr_range_test(lambda lr: next(losses), lr_min=1e-3, lr_max=1e-1,
                             num_steps=3, smooth=0.5)
    np.testing.assert_allclose(result.lrs, [1e-3, 1e-2, 1e-1])
    # avg: 2, 2, 2 -> bias-corrected 2/0.5, 2/0.75, 2/0.875
    np.testing.assert_allclose(result.losses, [4.0, 2 / 0.75, 2 / 0.875])
    np.testing.assert_allclose(result.raw_losses, [4, 2, 2])


def test_lr_range_test_suggests_steepest_descent():
    # loss falls fastest (against log lr) at lr = 1e-3, which lies on the grid (i = 30)
    result = S.lr_range_test(lambda lr: 1.0 - math.tanh(math.log10(lr) + 3.0), lr_min=1e-6,
                             lr_max=1.0, num_steps=61, smooth=0.0)
    assert not result.diverged and len(result.lrs) == 61
    assert result.suggestion == pytest.approx(1e-3)


def test_lr_range_test_stops_on_divergence_of_real_descent():
    state = {"w": 1.0}

    def train_step(lr):        # gradient descent on w^2 / 2: diverges for lr > 2
        state["w"] -= lr * state["w"]
        return state["w"] ** 2 + 1e-3

    result = S.lr_range_test(train_step, lr_max=1e3)
    assert result.diverged
    assert len(result.lrs) < 100
    assert 2.0 < result.lrs[-1] < 1e3
    assert 1e-3 < result.suggestion < 2.0
    assert np.all(np.diff(result.lrs) > 0)


def test_lr_range_test_stops_on_nan_and_plots(tmp_path):
    pytest.importorskip("matplotlib")
    calls = []

    def train_step(lr):
        calls.append(lr)
        return float("nan") if lr > 1e-2 else 1.0 / (1.0 + 1e4 * lr)

    result = S.lr_range_test(train_step, lr_min=1e-6, lr_max=1.0, num_steps=25)
    assert result.diverged and max(result.lrs) <= 1e-2 < calls[-1]
    path = tmp_path / "range.png"
    result.plot(path)
    assert path.stat().st_size > 1000


def test_lr_range_test_argument_errors():
    with pytest.raises(ValueError, match="lr_max"):
        S.lr_range_test(lambda lr: 1.0, lr_min=1.0, lr_max=0.1)
    with pytest.raises(ValueError, match="smooth"):
        S.lr_range_test(lambda lr: 1.0, smooth=1.0)


# ------------------------------------------------------------------ against PyTorch


def _torch_rates(make_scheduler, lr, steps):
    torch = pytest.importorskip("torch")
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=lr, momentum=0.9)
    scheduler = make_scheduler(torch.optim.lr_scheduler, opt)
    rates = []
    for _ in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize("ours, theirs", [
    (S.StepLR(0.1, step_size=3, gamma=0.5), lambda m, o: m.StepLR(o, step_size=3, gamma=0.5)),
    (S.MultiStepLR(0.1, [2, 7], gamma=0.3),
     lambda m, o: m.MultiStepLR(o, milestones=[2, 7], gamma=0.3)),
    (S.ExponentialLR(0.1, gamma=0.9), lambda m, o: m.ExponentialLR(o, gamma=0.9)),
    (S.PolynomialLR(0.1, total_steps=10, power=2.0),
     lambda m, o: m.PolynomialLR(o, total_iters=10, power=2.0)),
    (S.CosineAnnealingLR(0.1, T_max=7, eta_min=0.01),
     lambda m, o: m.CosineAnnealingLR(o, T_max=7, eta_min=0.01)),
    (S.CyclicLR(0.01, 0.1, step_size_up=3, step_size_down=2),
     lambda m, o: m.CyclicLR(o, 0.01, 0.1, step_size_up=3, step_size_down=2)),
    (S.CyclicLR(0.01, 0.1, step_size_up=3, mode="triangular2"),
     lambda m, o: m.CyclicLR(o, 0.01, 0.1, step_size_up=3, mode="triangular2")),
    (S.CyclicLR(0.01, 0.1, step_size_up=3, mode="exp_range", gamma=0.95),
     lambda m, o: m.CyclicLR(o, 0.01, 0.1, step_size_up=3, mode="exp_range", gamma=0.95)),
    (S.LinearWarmup(0.1, warmup_steps=5, start_factor=0.25),
     lambda m, o: m.LinearLR(o, start_factor=0.25, total_iters=5)),
    (S.ConstantLR(0.1, factor=0.5, total_iters=4),
     lambda m, o: m.ConstantLR(o, factor=0.5, total_iters=4)),
], ids=lambda v: type(v).__name__ if isinstance(v, S.Schedule) else "")
def test_matches_torch(ours, theirs):
    lr = getattr(ours, "lr", getattr(ours, "base_lr", None))
    if isinstance(ours, S.LinearWarmup):
        lr = ours.base(0)
    expected = _torch_rates(theirs, lr, 25)
    np.testing.assert_allclose(ours.values(25), expected, rtol=1e-6, atol=1e-12)


def test_reduce_on_plateau_matches_torch():
    torch = pytest.importorskip("torch")
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.1)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=0.5, patience=1, cooldown=1, threshold=0.01, min_lr=0.01)
    ours = S.ReduceLROnPlateau(0.1, factor=0.5, patience=1, cooldown=1, threshold=0.01,
                               min_lr=0.01)
    metrics = [1.0, 0.9, 0.95, 0.96, 0.899, 0.9, 0.9, 0.9, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6]
    for m in metrics:
        theirs.step(m)
        assert ours.step(m) == pytest.approx(opt.param_groups[0]["lr"])


def test_warmup_around_a_schedule_matches_torch_sequential():
    def make(m, o):
        warm = m.LinearLR(o, start_factor=0.25, total_iters=4)
        cosine = m.CosineAnnealingLR(o, T_max=6, eta_min=0.01)
        return m.SequentialLR(o, [warm, cosine], milestones=[4])

    expected = _torch_rates(make, 0.1, 16)
    ours = S.LinearWarmup(S.CosineAnnealingLR(0.1, T_max=6, eta_min=0.01), 4, start_factor=0.25)
    np.testing.assert_allclose(ours.values(16), expected, rtol=1e-6)
