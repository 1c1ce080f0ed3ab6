"""gd.set_flush_denormal: functions compiled in the mode flush denormal results (and inputs)
to zero on every thread that runs them, restore the caller's mode, and are cached apart."""

import numpy as np
import pytest

import graphdl as gd

TINY = np.float32(1e-39)           # a float32 denormal (smallest normal: 1.18e-38)


@pytest.fixture
def flushing():
    if not gd.set_flush_denormal(True):
        pytest.skip("this CPU has no flush-to-zero mode")
    yield
    gd.set_flush_denormal(False)


def _scale(n):
    x = gd.input("x", (n,))
    return gd.function([x], [x * 0.5])


def test_default_keeps_denormals():
    (y,) = _scale(8)(np.full(8, 1e-38, np.float32))
    assert (y > 0).all() and (y < 1.18e-38).all()


def test_flush_mode_zeroes_denormal_results_and_inputs(flushing):
    f = _scale(8)
    (y,) = f(np.full(8, 1e-38, np.float32))            # 5e-39: flushed result
    assert (y == 0).all()
    (z,) = f(np.full(8, TINY, np.float32))              # denormal input reads as 0
    assert (z == 0).all()
    (w,) = f(np.full(8, 3.0, np.float32))               # normal numbers are untouched
    np.testing.assert_array_equal(w, 1.5)


def test_flush_mode_holds_on_pool_threads(flushing):
    before = gd.get_num_threads()
    gd.set_num_threads(2)
    try:
        n = 1 << 20                                     # large: split across threads
        (y,) = _scale(n)(np.full(n, 1e-38, np.float32))
        assert (y == 0).all()
    finally:
        gd.set_num_threads(before)


def test_the_callers_mode_is_restored(flushing):
    _scale(4)(np.ones(4, np.float32))
    # NumPy in this thread still produces denormals after the call
    assert np.float32(1e-38) * np.float32(0.5) > 0


def test_mode_is_part_of_the_cache_key():
    x = np.full(4, 1e-38, np.float32)
    (a,) = _scale(4)(x)
    if not gd.set_flush_denormal(True):
        pytest.skip("this CPU has no flush-to-zero mode")
    try:
        (b,) = _scale(4)(x)
    finally:
        gd.set_flush_denormal(False)
    (c,) = _scale(4)(x)
    assert (a > 0).all() and (b == 0).all() and (c > 0).all()


def test_flush_mode_holds_in_a_recurrence_split_across_threads(flushing):
    # a carry halved at every step reaches the denormal range; its rows run on two threads
    before = gd.get_num_threads()
    gd.set_num_threads(2)
    try:
        n, t, k = 512, 40, 128
        h0 = gd.input("h0", (None, k))              # rows split along a symbolic batch
        xs = gd.input("xs", (t, None, k))
        w = gd.constant(np.eye(k, dtype=np.float32) * 0.5)
        (last,), _ = gd.scan(lambda c, x: ([gd.tanh(c[0] @ w + x[0])], []), [h0], [xs])
        f = gd.function([h0, xs], [last])
        (y,) = f(np.full((n, k), 1e-30, np.float32), np.zeros((t, n, k), np.float32))
        labels = [k.label for k in f.program.for_sizes({"batch": n}).plan.kernels]
        assert any("row blocks" in lab for lab in labels), labels
        assert (y == 0).all()                 # 1e-30 / 2^40 ~ 9e-43 unflushed
    finally:
        gd.set_num_threads(before)
