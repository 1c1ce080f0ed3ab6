"""Polynomial-IR math functions: accuracy in ulps over the whole float range, exact special
values, and loops that vectorize without libm calls.

References: float32 results against float64 NumPy (math.erf for erf), float64 results against
np.longdouble NumPy (mpmath for erf). An ulp is the spacing of the result's type at the
reference value (the subnormal spacing below the normal range); a result of inf where the
reference is finite counts as the value 2^(emax + 1).
"""

from __future__ import annotations

import ctypes
import functools
import math
import re

from llvmlite import ir
import numpy as np
import pytest

from graphdl.codegen.llvm import jit, mathfuncs, target

DTYPES = [np.float32, np.float64]
UNARY = sorted(mathfuncs.UNARY)
MAX_ULP = 4.0
LD = np.longdouble


def _ids(value):
    return value.__name__ if isinstance(value, type) else str(value)


@functools.cache
def _compiled(name: str, dtype: type):
    """A NumPy-callable for the loop kernel of one function (keeps its Kernel alive)."""
    arity = 1 if name in mathfuncs.UNARY else 2
    if arity == 1:
        text = mathfuncs.emit_unary_kernel(name, mathfuncs.UNARY[name], dtype)
    else:
        text = mathfuncs.emit_binary_kernel(name, mathfuncs.BINARY[name], dtype)
    kernel = jit.compile_ir(text)
    cfunc = kernel.cfunc(name, None, *[ctypes.c_void_p] * (arity + 1), ctypes.c_int64)

    def call(*inputs):
        inputs = [np.ascontiguousarray(x, dtype=dtype) for x in inputs]
        out = np.empty_like(inputs[0])
        cfunc(*[x.ctypes.data for x in inputs], out.ctypes.data, out.size)
        return out

    call.kernel = kernel
    call.text = text
    return call


def _wide(dtype):
    return np.float64 if dtype == np.float32 else LD


def ulp_error(result: np.ndarray, reference: np.ndarray, dtype) -> np.ndarray:
    """|result - reference| in ulps of dtype at the reference; inf for a wrong NaN/inf."""
    with np.errstate(all="ignore"):
        return _ulp_error(result, reference, dtype)


def _ulp_error(result, reference, dtype):
    info = np.finfo(dtype)
    precision, emin = info.nmant + 1, info.minexp
    wide = reference.dtype.type
    error = np.zeros(result.shape)
    result_nan, reference_nan = np.isnan(result), np.isnan(reference)
    error[result_nan != reference_nan] = np.inf
    limit = wide(2.0) ** info.maxexp * (1 - wide(2.0) ** -(precision + 1))   # rounds to inf
    overflows = ~reference_nan & (np.abs(reference) >= limit)
    error[overflows & (result.astype(wide) != np.sign(reference) * wide(np.inf))] = np.inf
    finite = ~reference_nan & ~overflows & ~result_nan
    ref = reference[finite]
    got = result[finite].astype(wide)
    got = np.where(np.isinf(got), np.sign(got) * wide(2.0) ** info.maxexp, got)
    exponent = np.maximum(np.frexp(ref)[1].astype(np.int64) - 1, emin)
    ulp = wide(2.0) ** (exponent - (precision - 1)).astype(wide)
    error[finite] = np.abs((got - ref) / ulp).astype(np.float64)
    return error


# ---------------------------------------------------------------------------------------------
# Inputs and references


def _bit_sweep(dtype, count: int) -> np.ndarray:
    """count values spaced uniformly in the bit pattern over [0, inf], and their negatives."""
    if dtype == np.float32:
        bits = np.linspace(0, 0x7F800000, count // 2).astype(np.uint32)
    else:
        bits = np.linspace(0, float(0x7FF0000000000000), count // 2).astype(np.uint64)
    positive = bits.view(dtype)
    return np.concatenate([positive, -positive])


# Where each function does something interesting, (lo, hi) for float32 and float64.
_DENSE = {
    "exp": ((-105.0, 90.0), (-750.0, 712.0)),
    "expm1": ((-20.0, 90.0), (-40.0, 712.0)),
    "log": ((0.0, 4.0), (0.0, 4.0)),
    "log1p": ((-1.0, 4.0), (-1.0, 4.0)),
    "tanh": ((-10.0, 10.0), (-20.0, 20.0)),
    "sigmoid": ((-105.0, 20.0), (-750.0, 40.0)),
    "softplus": ((-105.0, 20.0), (-750.0, 40.0)),
    "erf": ((-4.5, 4.5), (-6.5, 6.5)),
}


def _inputs(name: str, dtype) -> np.ndarray:
    info = np.finfo(dtype)
    count = 1 << 20 if dtype == np.float32 else 1 << 18
    lo, hi = _DENSE[name][dtype == np.float64]
    tiny = np.geomspace(info.smallest_subnormal, 1.0, 1 << 16)
    near_one = 1 + np.linspace(-0.3, 0.45, 1 << 16)
    parts = [_bit_sweep(dtype, count), np.linspace(lo, hi, count // 2), tiny, -tiny, near_one]
    return np.concatenate(parts).astype(dtype)


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


_math_erf = np.frompyfunc(math.erf, 1, 1)


def _erf_reference(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.float64:                    # float32 inputs, double reference
        return _math_erf(x).astype(np.float64)
    import mpmath  # a sympy dependency

    with mpmath.workdps(40):
        return np.array([LD(str(mpmath.erf(mpmath.mpf(float(v))))) for v in x], dtype=LD)


REFERENCE = {
    "exp": np.exp,
    "expm1": np.expm1,
    "log": np.log,
    "log1p": np.log1p,
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "softplus": lambda x: np.logaddexp(x.dtype.type(0), x),
    "erf": _erf_reference,
}


def measure(name: str, dtype) -> tuple[float, float]:
    """(max ulp error, input where it occurs) of one function over its test inputs."""
    x = _inputs(name, dtype)
    if name == "erf" and dtype == np.float64:          # mpmath is slow: a fixed subsample
        x = np.random.default_rng(1).choice(x, 12_000, replace=False)
    with np.errstate(all="ignore"):
        result = _compiled(name, dtype)(x)
        reference = REFERENCE[name](x.astype(_wide(dtype)))
    error = ulp_error(result, reference, dtype)
    worst = int(np.argmax(error))
    return float(error[worst]), float(x[worst])


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("name", UNARY)
def test_max_ulp_error_over_the_float_range(name, dtype):
    error, where = measure(name, dtype)
    assert error <= MAX_ULP, f"{name} {dtype.__name__}: {error:.2f} ulp at x = {where!r}"


# ---------------------------------------------------------------------------------------------
# Special values: exact, sign of zero included


def _special_cases(name: str, dtype) -> list[tuple[float, float]]:
    info = np.finfo(dtype)
    big, sub, inf, nan = float(info.max), float(info.smallest_subnormal), math.inf, math.nan
    common = [(nan, nan)]
    table = {
        "exp": [(0.0, 1.0), (-0.0, 1.0), (inf, inf), (-inf, 0.0), (big, inf), (-big, 0.0),
                (sub, 1.0), (-sub, 1.0)],
        "expm1": [(0.0, 0.0), (-0.0, -0.0), (inf, inf), (-inf, -1.0), (big, inf),
                  (-big, -1.0), (sub, sub), (-sub, -sub)],
        "log": [(0.0, -inf), (-0.0, -inf), (1.0, 0.0), (inf, inf), (-inf, nan), (-1.0, nan),
                (-sub, nan), (-big, nan)],
        "log1p": [(0.0, 0.0), (-0.0, -0.0), (-1.0, -inf), (inf, inf), (-inf, nan), (-2.0, nan),
                  (-big, nan), (sub, sub), (-sub, -sub)],
        "tanh": [(0.0, 0.0), (-0.0, -0.0), (inf, 1.0), (-inf, -1.0), (big, 1.0), (-big, -1.0),
                 (sub, sub), (-sub, -sub), (30.0, 1.0), (-30.0, -1.0)],
        "sigmoid": [(0.0, 0.5), (-0.0, 0.5), (inf, 1.0), (-inf, 0.0), (big, 1.0),
                    (-big, 0.0), (sub, 0.5), (-sub, 0.5), (800.0, 1.0), (-800.0, 0.0)],
        "softplus": [(inf, inf), (-inf, 0.0), (big, big), (-big, 0.0), (100.0, 100.0),
                     (-800.0, 0.0), (0.0, math.log(2.0))],
        "erf": [(0.0, 0.0), (-0.0, -0.0), (inf, 1.0), (-inf, -1.0), (big, 1.0), (-big, -1.0),
                (10.0, 1.0), (-10.0, -1.0)],
    }
    return common + table[name]


def _assert_identical(result, expected, inputs, label):
    result, expected = np.asarray(result), np.asarray(expected)
    same = (result == expected) & (np.signbit(result) == np.signbit(expected))
    same |= np.isnan(result) & np.isnan(expected)
    bad = [(x, r, e) for x, r, e, ok in zip(inputs, result, expected, same) if not ok]
    assert not bad, f"{label}: (input, got, expected) {bad}"


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("name", UNARY)
def test_special_values_are_exact(name, dtype):
    cases = _special_cases(name, dtype)
    x = np.array([c[0] for c in cases], dtype=dtype)
    expected = np.array([c[1] for c in cases], dtype=dtype)
    _assert_identical(_compiled(name, dtype)(x), expected, x, f"{name} {dtype.__name__}")


def _around(values, dtype, steps=3) -> np.ndarray:
    """Each value rounded to dtype and its neighbours up to `steps` ulps away."""
    out = []
    with np.errstate(over="ignore"):
        return np.array(_neighbours(values, dtype, steps, out), dtype=dtype)


def _neighbours(values, dtype, steps, out):
    for value in values:
        v = dtype(value)
        out.append(v)
        up = down = v
        for _ in range(steps):
            up, down = np.nextafter(up, dtype(np.inf)), np.nextafter(down, dtype(-np.inf))
            out += [up, down]
    return out


def _thresholds(name: str, dtype) -> np.ndarray:
    """Inputs where the result crosses overflow, the subnormal range or underflow to 0."""
    info, wide = np.finfo(dtype), _wide(dtype)
    log_max = np.log(wide(info.max))
    log_tiny = np.log(wide(info.tiny))
    log_sub = np.log(wide(info.smallest_subnormal))
    log_half_sub = np.log(wide(info.smallest_subnormal) / 2)
    table = {
        "exp": [log_max, log_tiny, log_sub, log_half_sub],
        "expm1": [log_max, -np.log(wide(2.0)) * (info.nmant + 2)],
        "log": [info.tiny, info.smallest_subnormal, info.max, 1.0],
        "log1p": [-1.0 + info.eps, info.eps, info.max],
        "tanh": [mathfuncs._TANH_SMALL, np.arctanh(1 - wide(info.epsneg) / 2)],
        "sigmoid": [-log_max, log_tiny, log_sub, log_half_sub],
        "softplus": [log_tiny, log_sub, log_half_sub],
        "erf": [1.0, 2.0, 3.5, 4.0, 6.0],
    }
    values = table[name]
    return _around(values + [-v for v in values], dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("name", UNARY)
def test_thresholds_within_max_ulp(name, dtype):
    x = _thresholds(name, dtype)
    with np.errstate(all="ignore"):
        result = _compiled(name, dtype)(x)
        reference = REFERENCE[name](x.astype(_wide(dtype)))
    error = ulp_error(result, reference, dtype)
    worst = int(np.argmax(error))
    assert error[worst] <= MAX_ULP, (
        f"{name} {dtype.__name__}: {error[worst]:.2f} ulp at x = {x[worst]!r}: "
        f"got {result[worst]!r}, reference {reference[worst]!r}")


def test_odd_functions_are_odd_and_identity_near_zero():
    for dtype in DTYPES:
        info = np.finfo(dtype)     # below eps/4 the x^2 and x/2 terms are under half an ulp
        x = np.geomspace(info.smallest_subnormal, info.eps / 4, 2000).astype(dtype)
        for name in ("tanh", "expm1", "log1p"):
            f = _compiled(name, dtype)
            np.testing.assert_array_equal(f(x), x, err_msg=f"{name} {dtype.__name__}")
            np.testing.assert_array_equal(f(-x), -x, err_msg=f"{name} {dtype.__name__}")
        y = np.linspace(-7, 7, 1001).astype(dtype)
        for name in ("tanh", "erf"):
            f = _compiled(name, dtype)
            np.testing.assert_array_equal(f(-y), -f(y), err_msg=f"{name} {dtype.__name__}")


# ---------------------------------------------------------------------------------------------
# pow


def _pow_operands(dtype, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Bases over the whole range (both signs) with exponents putting |b*log|a|| up to
    just past overflow, a quarter of them integers; and bases near 1 with large exponents."""
    rng = np.random.default_rng(0)
    decades = 38 if dtype == np.float32 else 308
    a = 10.0 ** rng.uniform(-decades - 6, decades, count) * rng.choice([-1, 1], count)
    log_a = np.log(np.abs(a))
    log_a[log_a == 0] = 1
    reach = 110 if dtype == np.float32 else 800
    b = rng.uniform(-reach, reach, count) / log_a
    b[: count // 4] = np.round(b[: count // 4])
    near = slice(count // 2, count // 2 + count // 8)
    a[near] = rng.uniform(0.5, 2.0, count // 8)
    b[near] = rng.uniform(-3000, 3000, count // 8)
    return a.astype(dtype), b.astype(dtype)


def measure_pow(dtype) -> tuple[float, tuple[float, float]]:
    a, b = _pow_operands(dtype, 1 << 18)
    with np.errstate(all="ignore"):
        result = _compiled("pow", dtype)(a, b)
        reference = np.power(a.astype(_wide(dtype)), b.astype(_wide(dtype)))
    error = ulp_error(result, reference, dtype)
    worst = int(np.argmax(error))
    return float(error[worst]), (float(a[worst]), float(b[worst]))


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_pow_max_ulp_error(dtype):
    error, where = measure_pow(dtype)
    assert error <= MAX_ULP, f"pow {dtype.__name__}: {error:.2f} ulp at (a, b) = {where}"


def _pow_grid(dtype) -> tuple[np.ndarray, np.ndarray]:
    info = np.finfo(dtype)
    values = [0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 3.0, -3.0, 2.5, -2.5, 1e-3, 1e3,
              np.inf, -np.inf, np.nan, info.tiny, info.smallest_subnormal, info.max, -info.max,
              2.0 ** 60, -(2.0 ** 60) + 1 if dtype == np.float64 else 2.0 ** 30 + 128]
    grid = np.array(values, dtype=dtype)
    a, b = np.meshgrid(grid, grid)
    return a.ravel(), b.ravel()


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_pow_special_cases_match_numpy(dtype):
    """0, inf, NaN, +-1 and negative bases with integer / non-integer exponents (C99 F.10.4.4)."""
    a, b = _pow_grid(dtype)
    with np.errstate(all="ignore"):
        result = _compiled("pow", dtype)(a, b)
        expected = np.power(a, b)
        error = ulp_error(result, np.power(a.astype(_wide(dtype)), b.astype(_wide(dtype))), dtype)
    def special(v):
        return ~np.isfinite(v) | (v == 0) | (np.abs(v) == 1)

    # Special operands have exact results; others (2^60 ** -2.5 = half the smallest
    # subnormal, say) are held to the ulp bound.
    exact = special(a) | special(b) | np.isnan(expected)
    _assert_identical(result[exact], expected[exact], list(zip(a[exact], b[exact])),
                      f"pow {dtype.__name__}")
    assert error.max() <= MAX_ULP


def test_pow_without_hardware_fma_uses_dekker_products(monkeypatch):
    monkeypatch.setattr(mathfuncs, "_host_has_fma", lambda: False)
    text = mathfuncs.emit_binary_kernel("pow_dekker", mathfuncs.emit_pow, np.float64)
    assert "llvm.fma." not in text
    kernel = jit.compile_ir(text)
    cfunc = kernel.cfunc("pow_dekker", None, *[ctypes.c_void_p] * 3, ctypes.c_int64)
    a, b = _pow_operands(np.float64, 1 << 14)
    out = np.empty_like(a)
    cfunc(a.ctypes.data, b.ctypes.data, out.ctypes.data, out.size)
    with np.errstate(all="ignore"):
        error = ulp_error(out, np.power(a.astype(LD), b.astype(LD)), np.float64)
    assert error.max() <= MAX_ULP


# ---------------------------------------------------------------------------------------------
# Vectorization and the interface


def _vector_width(dtype) -> int:
    return target.vector_bits() // (32 if dtype == np.float32 else 64)


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("name", UNARY + sorted(mathfuncs.BINARY))
def test_loop_vectorizes_without_libm_calls(name, dtype):
    text = _compiled(name, dtype).text
    target.parse(text).verify()
    optimized = jit.optimized_ir(text)
    called = set(re.findall(r"call [^@\n]*@\"?([\w.$]+)", optimized))
    assert called and all(c.startswith("llvm.") for c in called), called
    assert not called & {"expf", "exp", "logf", "log", "tanhf", "tanh", "powf", "pow",
                         "erff", "erf", "log1pf", "log1p", "expm1f", "expm1"}
    scalar = "float" if dtype == np.float32 else "double"
    widths = {int(w) for w in re.findall(rf"<(\d+) x {scalar}>", optimized)}
    assert widths and max(widths) >= 4, f"{name} {dtype.__name__} did not vectorize"
    # float32 pow computes in double, so it runs at the double width.
    expected = _vector_width(np.float64 if name == "pow" else dtype)
    if target.host()["avx512"] or target.host()["avx2"]:
        assert expected in widths, f"{name} {dtype.__name__}: widths {widths}"


def test_emitters_return_the_argument_type_and_reject_integers():
    module = ir.Module()
    for ty in (ir.FloatType(), ir.DoubleType()):
        func = ir.Function(module, ir.FunctionType(ty, [ty, ty]), f"f_{ty}")
        builder = ir.IRBuilder(func.append_basic_block())
        x, y = func.args
        for emit in mathfuncs.UNARY.values():
            assert emit(builder, x).type == ty
        assert mathfuncs.emit_pow(builder, x, y).type == ty
        builder.ret(x)
    func = ir.Function(module, ir.FunctionType(ir.IntType(32), [ir.IntType(32)]), "g")
    builder = ir.IRBuilder(func.append_basic_block())
    with pytest.raises(TypeError):
        mathfuncs.emit_exp(builder, func.args[0])
    with pytest.raises(TypeError):
        mathfuncs.emit_pow(builder, ir.Constant(ir.FloatType(), 1.0),
                           ir.Constant(ir.DoubleType(), 1.0))
