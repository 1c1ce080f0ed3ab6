"""Build-time errors name the caller's file and line; call-time errors are ArgumentErrors."""

import numpy as np
import pytest

import graphdl as gd

THIS_FILE = __file__


def test_shape_error_names_the_callers_file_and_line():
    x = gd.input("x", (None, 3))
    W = gd.param("W", (4, 2))
    with pytest.raises(gd.ShapeError) as info:
        x @ W  # the line named in the message
    message = str(info.value)
    assert "(None, 3) @ (4, 2)" in message
    assert f"{THIS_FILE}:" in message
    assert "graphdl/ops" not in message


def test_broadcast_error_names_both_shapes():
    a = gd.input("a", (3, 4))
    b = gd.input("b", (5,))
    with pytest.raises(gd.ShapeError, match=r"\(3, 4\) and \(5,\)"):
        a + b


def test_shape_error_is_a_value_error_and_dtype_error_a_type_error():
    assert issubclass(gd.ShapeError, ValueError)
    assert issubclass(gd.DTypeError, TypeError)
    assert issubclass(gd.ArgumentError, ValueError)


def test_dtype_errors_at_build_time():
    x = gd.input("x", (3,))
    with pytest.raises(gd.DTypeError, match="condition must be bool"):
        gd.where(x, x, x)
    labels = gd.input("y", (3,), dtype="float32")
    with pytest.raises(gd.DTypeError, match="int64"):
        gd.one_hot(labels, 4)
    with pytest.raises(gd.DTypeError):
        gd.input("z", (3,), dtype="complex64")


def test_symbolic_batch_does_not_broadcast_against_a_number():
    x = gd.input("x", (None, 3))
    with pytest.raises(gd.ShapeError):
        x + gd.input("y", (5, 3))


def test_loss_must_be_scalar_for_grad():
    x = gd.input("x", (None, 3))
    with pytest.raises(gd.ShapeError, match="scalar loss"):
        gd.grad(x * 2, x)


@pytest.fixture
def f():
    x = gd.input("x", (None, 3))
    y = gd.input("y", (None,), dtype="int64")
    W = gd.param("W", np.ones((3, 4), np.float32))
    return gd.function([x, y], gd.losses.cross_entropy(x @ W, y))


def test_call_with_wrong_count(f):
    with pytest.raises(gd.ArgumentError, match="takes 2 array"):
        f(np.zeros((2, 3), np.float32))


def test_call_with_wrong_shape(f):
    with pytest.raises(gd.ArgumentError, match="expected shape"):
        f(np.zeros((2, 5), np.float32), np.zeros(2, np.int64))


def test_call_with_disagreeing_batch(f):
    with pytest.raises(gd.ArgumentError, match="dimension None"):
        f(np.zeros((2, 3), np.float32), np.zeros(3, np.int64))


def test_call_with_float64_for_float32_raises_unless_cast():
    x = gd.input("x", (None, 3))
    out = x * 2
    with pytest.raises(gd.ArgumentError, match="cast=True"):
        gd.function([x], out)(np.zeros((2, 3)))
    res = gd.function([x], out, cast=True)(np.ones((2, 3)))
    assert res.dtype == np.float32 and res[0, 0] == 2


def test_call_with_non_contiguous_array_raises(f):
    x = np.zeros((2, 6), np.float32)[:, ::2]
    with pytest.raises(gd.ArgumentError, match="C-contiguous"):
        f(x, np.zeros(2, np.int64))


def test_labels_out_of_range_raise(f):
    with pytest.raises(gd.ArgumentError, match="out of range"):
        f(np.zeros((2, 3), np.float32), np.array([0, 4]))


def test_int32_labels_are_widened_losslessly(f):
    out = f(np.zeros((2, 3), np.float32), np.array([0, 3], dtype=np.int32))
    np.testing.assert_allclose(out, np.log(4), rtol=1e-6)


def test_missing_input_is_reported_at_compile_time():
    x = gd.input("x", (3,))
    y = gd.input("y", (3,))
    with pytest.raises(gd.ArgumentError, match="'y'"):
        gd.function([x], x + y)


def test_unknown_backend_is_a_clear_error():
    x = gd.input("x", (3,))
    with pytest.raises(gd.ArgumentError, match="unknown backend"):
        gd.function([x], x, backend="tpu")
    with pytest.raises(gd.BackendUnavailable):
        gd.function([x], x, backend="cupy")


def test_symbolic_tensor_has_no_truth_value():
    x = gd.input("x", (3,))
    with pytest.raises(TypeError, match="gd.where"):
        if x > 0:
            pass
