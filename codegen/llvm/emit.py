"""Emit LLVM IR for one scalar sympy expression at the current loop position.

`ScalarEmitter.emit(expr)` dispatches on the sympy class (walking the MRO) to `_emit_<Class>`;
an unknown class raises `UnsupportedExpr` — there is no silent fallback. The expression is
the stabilized form (graphdl.ops.stable), so `Sigmoid` and `Softplus` appear as functions.

Types: arithmetic is done in the kernel's float type (float or double). Booleans are i1
inside an expression and i8 in memory (NumPy's bool); int64 values are converted with
sitofp where arithmetic needs them.

Fast-math: float instructions carry `contract` only (FMA formation). Not `nnan`/`ninf`
(NaN and inf must come out as NumPy gives them, and the NaN guard relies on it), and not
`reassoc` here — reductions add `reassoc` on their accumulator alone, where it is needed
to vectorize (a float sum loop did not vectorize without it).
"""

from __future__ import annotations

import functools

import llvmlite.ir as ir
import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

from graphdl.errors import UnsupportedExpr
from graphdl.ops.stable import Sigmoid, Softplus

FLAGS = ("contract",)
F32, F64, I1, I8, I64 = ir.FloatType(), ir.DoubleType(), ir.IntType(1), ir.IntType(8), \
    ir.IntType(64)


def ir_type(dtype: str) -> ir.Type:
    """The LLVM type of an element of a buffer of this dtype."""
    return {"float32": F32, "float64": F64, "int64": I64, "bool": I8}[dtype]


def _math():
    from graphdl.codegen.llvm import mathfuncs
    return mathfuncs


class ScalarEmitter:
    """Emit IR for a sympy expression, given IR values for its free symbols.

    Example:
        >>> value = ScalarEmitter(builder, F32, {I[0]: x0}).emit(expr)
    """

    def __init__(self, builder: ir.IRBuilder, ftype: ir.Type, symbols: dict):
        self.b = builder
        self.ftype = ftype
        self.symbols = symbols
        self.cache: dict = {}

    # -- dispatch ------------------------------------------------------------------------
    def emit(self, e):
        """IR value of e: a float of the kernel's type, or an i1 for a boolean."""
        if e in self.cache:
            return self.cache[e]
        for cls in type(e).__mro__:
            method = getattr(self, "_emit_" + cls.__name__, None)
            if method is not None:
                value = method(e)
                self.cache[e] = value
                return value
        raise UnsupportedExpr(f"llvm emitter has no rule for {type(e).__name__}: {e}")

    def as_float(self, value):
        """Convert an emitted value (i1, i8, i64, float, double) to the kernel float type."""
        t = value.type
        if t == self.ftype:
            return value
        if isinstance(t, ir.IntType):
            if t.width in (1, 8):
                return self.b.uitofp(value, self.ftype)
            return self.b.sitofp(value, self.ftype)
        if t == F32 and self.ftype == F64:
            return self.b.fpext(value, F64)
        if t == F64 and self.ftype == F32:
            return self.b.fptrunc(value, F32)
        raise UnsupportedExpr(f"cannot convert {t} to {self.ftype}")

    def as_bool(self, value):
        """Convert an emitted value to i1 (nonzero is true)."""
        if value.type == I1:
            return value
        if isinstance(value.type, ir.IntType):
            return self.b.icmp_unsigned("!=", value, ir.Constant(value.type, 0))
        return self.b.fcmp_unordered("!=", value, ir.Constant(value.type, 0.0))

    def f(self, e):
        return self.as_float(self.emit(e))

    def const(self, x: float):
        return ir.Constant(self.ftype, float(x))

    # -- atoms ---------------------------------------------------------------------------
    def _emit_Symbol(self, e):
        try:
            return self.symbols[e]
        except KeyError:
            raise UnsupportedExpr(f"free symbol {e} has no value in this kernel")

    def _emit_Number(self, e):
        return self.const(float(e))

    def _emit_BooleanTrue(self, e):
        return ir.Constant(I1, 1)

    def _emit_BooleanFalse(self, e):
        return ir.Constant(I1, 0)

    def _emit_NaN(self, e):
        return self.const(float("nan"))

    def _emit_Infinity(self, e):
        return self.const(float("inf"))

    def _emit_NegativeInfinity(self, e):
        return self.const(float("-inf"))

    # -- arithmetic ----------------------------------------------------------------------
    def _emit_Add(self, e):
        terms = [self.f(a) for a in e.args]
        return functools.reduce(lambda x, y: self.b.fadd(x, y, flags=FLAGS), terms)

    def _emit_Mul(self, e):
        coeff, rest = e.as_coeff_Mul()
        if coeff == -1:
            return self.b.fneg(self.f(rest), flags=FLAGS)
        numer = [a for a in e.args if not (isinstance(a, sp.Pow) and a.exp.is_Number
                                           and a.exp < 0)]
        denom = [sp.Pow(a.base, -a.exp) for a in e.args if a not in numer]
        value = functools.reduce(lambda x, y: self.b.fmul(x, y, flags=FLAGS),
                                 [self.f(a) for a in numer]) if numer else self.const(1.0)
        if denom:
            d = functools.reduce(lambda x, y: self.b.fmul(x, y, flags=FLAGS),
                                 [self.f(a) for a in denom])
            value = self.b.fdiv(value, d, flags=FLAGS)
        return value

    def _emit_Pow(self, e):
        base, exp = e.args
        if exp.is_Integer:
            n = int(exp)
            if abs(n) <= 16:
                value = self._integer_power(self.f(base), abs(n))
                return self.b.fdiv(self.const(1.0), value, flags=FLAGS) if n < 0 else value
        if exp == sp.Rational(1, 2):
            return self._intrinsic("llvm.sqrt", self.f(base))
        if exp == sp.Rational(-1, 2):
            return self.b.fdiv(self.const(1.0), self._intrinsic("llvm.sqrt", self.f(base)),
                               flags=FLAGS)
        if base == sp.E:
            return _math().emit_exp(self.b, self.f(exp))
        return _math().emit_pow(self.b, self.f(base), self.f(exp))

    def _integer_power(self, x, n):
        if n == 0:
            return self.const(1.0)
        result, square = None, x
        while n:
            if n & 1:
                result = square if result is None else self.b.fmul(result, square, flags=FLAGS)
            n >>= 1
            if n:
                square = self.b.fmul(square, square, flags=FLAGS)
        return result

    # -- functions -----------------------------------------------------------------------
    def _intrinsic(self, name, *args):
        fn = self.b.module.declare_intrinsic(name, [self.ftype])
        return self.b.call(fn, list(args))

    def _emit_exp(self, e):
        return _math().emit_exp(self.b, self.f(e.args[0]))

    def _emit_log(self, e):
        if len(e.args) != 1:
            raise UnsupportedExpr(f"log with a base: {e}")
        return _math().emit_log(self.b, self.f(e.args[0]))

    def _emit_expm1(self, e):
        return _math().emit_expm1(self.b, self.f(e.args[0]))

    def _emit_log1p(self, e):
        return _math().emit_log1p(self.b, self.f(e.args[0]))

    def _emit_tanh(self, e):
        return _math().emit_tanh(self.b, self.f(e.args[0]))

    def _emit_Sigmoid(self, e):
        return _math().emit_sigmoid(self.b, self.f(e.args[0]))

    def _emit_Softplus(self, e):
        return _math().emit_softplus(self.b, self.f(e.args[0]))

    def _emit_StrongMul(self, e):
        gy, d = self.f(e.args[0]), self.f(e.args[1])
        zero = self.const(0.0)
        product = self.b.fmul(gy, d, flags=FLAGS)
        return self.b.select(self.b.fcmp_ordered("==", gy, zero), zero, product)

    def _emit_erf(self, e):
        return _math().emit_erf(self.b, self.f(e.args[0]))

    def _emit_Abs(self, e):
        return self._intrinsic("llvm.fabs", self.f(e.args[0]))

    def _emit_sign(self, e):
        x = self.f(e.args[0])
        pos = self.b.uitofp(self.b.fcmp_ordered(">", x, self.const(0.0)), self.ftype)
        neg = self.b.uitofp(self.b.fcmp_ordered("<", x, self.const(0.0)), self.ftype)
        value = self.b.fsub(pos, neg, flags=FLAGS)
        return self.b.select(self._isnan(x), x, value)   # sign(NaN) = NaN, as NumPy

    def _emit_Heaviside(self, e):
        x = self.f(e.args[0])
        half = self.const(float(e.args[1]) if len(e.args) > 1 else 0.5)
        value = self.b.select(self.b.fcmp_ordered(">", x, self.const(0.0)), self.const(1.0),
                              self.const(0.0))
        value = self.b.select(self.b.fcmp_ordered("==", x, self.const(0.0)), half, value)
        return self.b.select(self._isnan(x), x, value)

    def _isnan(self, x):
        return self.b.fcmp_unordered("uno", x, x)

    def _minmax(self, e, op):
        # NumPy's maximum/minimum propagate NaN from either side.
        args = [self.f(a) for a in e.args]
        value = args[0]
        for other in args[1:]:
            pick_value = self.b.or_(self.b.fcmp_ordered(op, value, other), self._isnan(value))
            value = self.b.select(pick_value, value, other)
        return value

    def _emit_Max(self, e):
        return self._minmax(e, ">")

    def _emit_Min(self, e):
        return self._minmax(e, "<")

    def _emit_Piecewise(self, e):
        # Evaluate branch values and conditions, then select from the last branch upwards.
        (last_value, _last_cond) = e.args[-1]
        value = self.f(last_value)
        for expr, cond in reversed(e.args[:-1]):
            value = self.b.select(self.as_bool(self.emit(cond)), self.f(expr), value)
        return value

    # -- logic ---------------------------------------------------------------------------
    _CMP = {"StrictGreaterThan": ">", "GreaterThan": ">=", "StrictLessThan": "<",
            "LessThan": "<=", "Equality": "=="}

    def _emit_Relational(self, e):
        op = self._CMP.get(type(e).__name__)
        lhs, rhs = self.emit(e.lhs), self.emit(e.rhs)
        if lhs.type == I64 and rhs.type == I64:      # exact integer comparison (labels)
            return self.b.icmp_signed("!=" if op is None else op, lhs, rhs)
        lhs, rhs = self.as_float(lhs), self.as_float(rhs)
        if type(e).__name__ == "Unequality":
            return self.b.fcmp_unordered("!=", lhs, rhs)   # NaN != x is true, as NumPy
        if op is None:
            raise UnsupportedExpr(f"llvm emitter has no rule for {type(e).__name__}: {e}")
        return self.b.fcmp_ordered(op, lhs, rhs)

    def _emit_And(self, e):
        return functools.reduce(self.b.and_, [self.as_bool(self.emit(a)) for a in e.args])

    def _emit_Or(self, e):
        return functools.reduce(self.b.or_, [self.as_bool(self.emit(a)) for a in e.args])

    def _emit_ITE(self, e):
        cond, then, other = (self.as_bool(self.emit(a)) for a in e.args)
        return self.b.select(cond, then, other)

    def _emit_Not(self, e):
        return self.b.not_(self.as_bool(self.emit(e.args[0])))
