"""Transcendental functions as branch-free polynomial IR that LLVM's loop vectorizer can widen.

A call to `llvm.exp.*` or `llvm.log.*` is scalarized into one libm call per vector lane
(STYLE.md section 6), so each function here is emitted as straight-line scalar IR: range
reduction, a polynomial, exponent bits put together with integer ops, and `select`s for the
special values. The only calls are intrinsics with native vector forms (`llvm.fmuladd`,
`llvm.fma`, `llvm.fabs`, `llvm.copysign`, `llvm.rint`, `llvm.floor`). No fast-math flags are
used: `nnan`/`ninf` would break the special values, and `contract`/`reassoc` would break the
error-free transformations in `emit_pow`; multiply-adds that may fuse are written as
`llvm.fmuladd`, which LLVM turns into one FMA where the CPU has it.

Every `emit_*` takes an `llvmlite.ir.IRBuilder` positioned inside a function and an
`ir.Value` of type float or double, and returns a value of the same type.

Algorithms (no code was copied; the polynomial coefficients are our own fits):
- exp: Cody-Waite reduction x = n*ln2 + r, |r| <= ln2/2, with ln2 split in two so that
  n*ln2_hi is exact (Cody & Waite, "Software Manual for the Elementary Functions", 1980, as
  in Cephes `exp`); e^r = 1 + r + r^2*G(r) with the rounding error of 1 + r recovered
  (Fast2Sum); then 2^n as two factors 2^(n>>1) * 2^(n - n>>1), so that a subnormal result
  is rounded once and overflow gives inf.
- expm1: (2^n - 1) + 2^n*r + 2^n*r^2*G(r), whose first two terms are exact before their one
  rounding, so expm1(x) = x near 0 (the reduction of fdlibm `s_expm1.c`, arranged anew).
- log, log1p: x = 2^k * m with m in [sqrt(1/2), sqrt(2)) taken from the exponent bits after
  adding an offset (the trick of musl's log), then log(m) = f - f^2/2 + s*(f^2/2 + R(s^2))
  with f = m - 1, s = f/(2 + f) (fdlibm `e_log.c`). log1p adds the rounding error of
  u = 1 + x as the first-order correction err/u (fdlibm `s_log1p.c`).
- tanh: a + a^3*P(a^2) for |x| < 0.625, else 1 - 2/(exp(2|x|) + 1) (the split of Cephes
  `tanhf`); odd by copysign.
- sigmoid, softplus: the stable forms of the interface; e = exp(-|x|) never overflows.
  softplus takes log1p(e) for e in [0, 1] as e + e^2*S(e), a polynomial, instead of
  the general log1p: its two divisions made the loop twice as slow.
- erf: |x| < 1: x + x*(E(x^2) - 1); 1 <= |x| < 4 (float) or 6 (double): 1 - exp(Q(|x|))
  with Q ~ log(erfc), the coefficients of Q chosen per interval with `select`, as SLEEF's
  `erf` selects coefficients per range; beyond that erf rounds to 1.
- pow: exp(b*log|a|) with the sign and special cases of C99 Annex F (what numpy.power
  does), decided in the operands' type. float32: the magnitude in double, with division-free
  polynomials of about 2^-36 accuracy, rounded once to float. float64: log as a double-double
  and exp of a double-double argument (the scheme of SLEEF's `pow` with its logk/expk,
  written anew), from Knuth's TwoSum and FMA products (Dekker's split on hosts without FMA).
Polynomials: Chebyshev fits from `mpmath.chebyfit(f, [lo, hi], N)` at 60 digits, on the
interval each table names, rounded to double (and by LLVM to float for float32).

Subnormals: inputs are handled everywhere (log scales them by 2^25 / 2^54 first). Results
in the subnormal range (exp, sigmoid, softplus, pow) are rounded to the subnormal grid once,
from a normal intermediate, so they are within about 1 subnormal ulp of the true value (an
exact tie such as pow(2^60, -2.5) = 2^-150 in float32 may round either way).

Measured maximum error in ulps, against references of higher precision: float32 against
float64 NumPy (math.erf / scipy for erf) over every float32 with 2^-12 <= |x| < 200 plus the
sweeps of tests/codegen/llvm/test_mathfuncs.py; float64 against np.longdouble NumPy (mpmath
for erf) over those sweeps plus 13M random arguments (1e5 for erf, 1.5M pairs for pow).
AVX-512 host with FMA, llvmlite 0.50 / LLVM 22:

    function    float32   float64
    exp          0.87      0.84
    expm1        1.34      1.76
    log          0.84      0.85
    log1p        0.86      0.85
    tanh         1.34      1.35
    sigmoid      2.40      2.42     (e/(1 + e): the errors of e, 1 + e and the division add)
    softplus     1.90      1.69
    erf          1.04      1.13
    pow          0.51      1.00
"""

from __future__ import annotations

from llvmlite import ir
import numpy as np

from graphdl.codegen.llvm import target

# ---------------------------------------------------------------------------------------------
# Constants. Each table is lowest degree first; "float" rows are fitted for float32 accuracy.

# ln2 = LN2_HI + LN2_LO, LN2_HI with enough trailing zero bits that n*LN2_HI is exact for
# every n the reductions produce (|n| <= 1077 for double, <= 150 for float).
_LN2_HI = {"double": float.fromhex("0x1.62e42fefa38p-1"), "float": float.fromhex("0x1.62e4p-1")}
_LN2_LO = {"double": float.fromhex("0x1.ef35793c7673p-45"),
           "float": float.fromhex("0x1.7f7d1cp-20")}
_LOG2E = 1.4426950408889634
_TWO_THIRDS_HI = float.fromhex("0x1.5555555555555p-1")    # 2/3 = HI + LO (double-double)
_TWO_THIRDS_LO = float.fromhex("0x1.5555555555555p-55")

# G(r) = (e^r - 1 - r) / r^2 on [-ln2/2, ln2/2]; N = 5 and 10 coefficients.
_EXP_G = {
    "float": (0.5, 0.1666657702559799, 0.041666554662050534, 0.008363173074513711,
              0.001392617611993558),
    "double": (0.5000000000000001, 0.16666666666666669, 0.041666666666624164,
               0.008333333333330065, 0.0013888888917196719, 0.00019841269863040545,
               2.4801521322368692e-05, 2.7557268480310024e-06, 2.7620075879983367e-07,
               2.5100375832561234e-08),
}
# L(z) = (2*atanh(s) - 2s) / s^3 with z = s^2 on [0, 0.0295] (|s| <= (sqrt2-1)/(sqrt2+1));
# R(z) = z*L(z) in the fdlibm form. N = 3 and 7.
_LOG_L = {
    "float": (0.6666668515877068, 0.3998873183116415, 0.2958215894676855),
    "double": (0.666666666666667, 0.3999999999989819, 0.28571428626570206,
               0.2222221103781659, 0.18182896183483085, 0.15331487235865734,
               0.14619343453512615),
}
# T(z) = (L(z) - 2/3) / z on [0, 0.0295], for the double-double log of pow. N = 8.
_LOG_T = (0.4, 0.2857142857142938, 0.2222222222164882, 0.1818181833699257,
          0.15384594791762352, 0.13334813971292003, 0.11705988156500907, 0.11725771221811145)
# S(1/2 + t) = (log1p(e) - e) / e^2 with e = 1/2 + t, t in [-1/2, 1/2], for softplus's
# log1p(exp(-|x|)); centred so that the Horner terms fall off. N = 10 and 21.
_LOG1P_UNIT_S = {
    "float": (-0.37813957086093075, 0.17922493897790284, -0.09322970891822155,
              0.051083038528451655, -0.02896400818693947, 0.01680165150955186,
              -0.009681858671931063, 0.005787683439985007, -0.004576878014833635,
              0.00280164199280335),
    "double": (-0.37813956756734246, 0.17922493693603628, -0.09323036636366504,
               0.05108344610565852, -0.02894318316522819, 0.01678874247000762,
               -0.009909900709018689, 0.005929012347899714, -0.00358566675681427,
               0.00218763196321537, -0.001344493715755721, 0.0008315234081490733,
               -0.0005169575993625731, 0.0003222161102992342, -0.00020204880268313708,
               0.00013056054379050492, -8.24550194446244e-05, 4.138249661375945e-05,
               -2.6208826056265817e-05, 3.590740235781667e-05, -2.2938856818471438e-05),
}
# For float32 pow, evaluated in double to about 2^-36 relative (enough for b*log|a| up to
# 104 to cost under 0.01 float ulp): P(f) = (log1p(f) - f + f^2/2) / f^3 on
# [-0.2930, 0.4143] (N = 12), and G as above with N = 7.
_POW32_LOG_P = (0.33333333337498894, -0.2500000026815962, 0.1999999784663688,
                -0.16666611564815056, 0.14285860596642924, -0.12503227218193996,
                0.11109494080389691, -0.099227216984229, 0.09030714415915853,
                -0.09110461354709624, 0.09038887963457927, -0.050071764653064676)
_POW32_EXP_G = (0.5, 0.16666666718997508, 0.041666666718980845, 0.008333298483754886,
                0.001388885404961482, 0.0001989927395864936, 2.4859578222625295e-05)
# P(z) = (tanh(a) - a) / a^3 with z = a^2 on [0, 0.625^2]. N = 6 and 12.
_TANH_SMALL = 0.625
_TANH_P = {
    "float": (-0.3333333317214036, 0.1333330355691574, -0.053959259577204544,
              0.02176891865102821, -0.008343945515839153, 0.002292744816178142),
    "double": (-0.3333333333333333, 0.13333333333333042, -0.05396825396789699,
               0.021869488519008305, -0.008863235103240878, 0.0035921217511549622,
               -0.0014557754120478055, 0.0005896606577757043, -0.0002375906496055562,
               9.257116129556769e-05, -3.12011014257974e-05, 6.485163482793113e-06),
}
# E(z) = erf(a) / a with z = a^2 on [0, 1]. N = 7 and 12.
_ERF_E = {
    "float": (1.1283791658483509, -0.37612626666720334, 0.11283594715160218,
              -0.026854212010626412, 0.005189087423433974, -0.000801686428716587,
              7.875875062685488e-05),
    "double": (1.1283791670955126, -0.37612638903183543, 0.11283791670945006,
               -0.02686617064323777, 0.0052239776071164225, -0.0008548325975389692,
               0.00012055294904839707, -1.492473690741966e-05, 1.6447424703317362e-06,
               -1.6208483801871705e-07, 1.3720064546777686e-08, -7.795898827002142e-10),
}
# Q(t) = log(erfc(lo + t)) on [lo, hi] per interval (lo, hi, coefficients); N = 10 and 14.
# Expanding at the left end keeps the leading terms of one sign where erfc is largest.
_ERFC_Q = {
    "float": (
        (1.0, 4.0, (-1.8496055015912543, -2.638968074695066, -0.8431008491405149,
                    -0.041590457217433416, 0.010104860316343365, -0.002081732082632244,
                    0.00033638592593612126, -3.8454642034861834e-05, 2.639243213456447e-06,
                    -7.582681969725275e-08)),
    ),
    "double": (
        (1.0, 2.0, (-1.8496055099332482, -2.638967514234782, -0.8431072563590984,
                    -0.04156109803067666, 0.010033825219546445, -0.001977901268147445,
                    0.00023731537377884036, 2.6304410357109378e-05, -2.722868164190077e-05,
                    9.738939844029725e-06, -2.233809812613662e-06, 3.086374978403856e-07,
                    -1.2921465395231146e-08, -1.9587891928865947e-09)),
        (2.0, 3.5, (-5.364941264616637, -4.418160805994474, -0.9237508418211846,
                    -0.016465118181460014, 0.0035707567457518865, -0.0007324015488387604,
                    0.00013531694602512742, -2.0724689629454064e-05, 1.982969590808848e-06,
                    1.666374424376691e-07, -1.4146175331042747e-07, 3.863770685302145e-08,
                    -6.0469567580579235e-09, 4.4330437826973837e-10)),
        (3.5, 6.0, (-14.112437402148174, -7.266099588365172, -0.9667530547426949,
                    -0.005225658217574581, 0.000873687303623516, -0.0001472977264517461,
                    2.4386320314209537e-05, -3.889580698105931e-06, 5.857856761910667e-07,
                    -8.097794881480851e-08, 9.81273207830787e-09, -9.63955742931606e-10,
                    6.676632722845604e-11, -2.38327819699808e-12)),
    ),
}

# Per-type facts: exp clamps (below LO the result is 0, above HI it is inf), the expm1 clamp
# (below it expm1 is -1), where erf is 1, and the scale that makes a subnormal log argument normal.
_FACTS = {
    "float": {"exp_lo": -104.0, "exp_hi": 89.0, "expm1_lo": -20.0, "erf_hi": 4.0,
              "sub_scale_bits": 25},
    "double": {"exp_lo": -746.0, "exp_hi": 710.0, "expm1_lo": -40.0, "erf_hi": 6.0,
               "sub_scale_bits": 54},
}


def _host_has_fma() -> bool:
    """Whether the host has a fused multiply-add (else pow's exact products use Dekker)."""
    return bool(target.host()["fma"])


# ---------------------------------------------------------------------------------------------
# Builder helpers


class _Math:
    """Typed arithmetic on one IRBuilder: constants, intrinsics, compares, bit casts."""

    def __init__(self, builder: ir.IRBuilder, ty: ir.Type):
        if not isinstance(ty, (ir.FloatType, ir.DoubleType)):
            raise TypeError(f"math functions take float or double values, not {ty}")
        self.b = builder
        self.ty = ty
        self.double = isinstance(ty, ir.DoubleType)
        self.key = "double" if self.double else "float"
        self.facts = _FACTS[self.key]
        self.ity = ir.IntType(64 if self.double else 32)
        self.mant = 52 if self.double else 23
        self.bias = 1023 if self.double else 127
        self.suffix = "f64" if self.double else "f32"

    # constants and intrinsics
    def c(self, value: float) -> ir.Constant:
        return ir.Constant(self.ty, value)

    def ic(self, value: int) -> ir.Constant:
        return ir.Constant(self.ity, value)

    def _call(self, name: str, *args: ir.Value) -> ir.Value:
        module = self.b.module
        full = f"llvm.{name}.{self.suffix}"
        fn = module.globals.get(full)
        if fn is None:
            fn = ir.Function(module, ir.FunctionType(self.ty, [self.ty] * len(args)), full)
        return self.b.call(fn, list(args))

    # arithmetic (no fast-math flags, see the module docstring)
    def add(self, a, b):
        return self.b.fadd(a, b)

    def sub(self, a, b):
        return self.b.fsub(a, b)

    def mul(self, a, b):
        return self.b.fmul(a, b)

    def div(self, a, b):
        return self.b.fdiv(a, b)

    def neg(self, a):
        return self.b.fneg(a)

    def fma(self, a, b, c):
        """a*b + c, fused where the CPU can (llvm.fmuladd)."""
        return self._call("fmuladd", a, b, c)

    def exact_fma(self, a, b, c):
        """a*b + c with one rounding (llvm.fma); only used when the host has an FMA."""
        return self._call("fma", a, b, c)

    def horner(self, x, coeffs):
        acc = self.c(coeffs[-1])
        for coeff in reversed(coeffs[:-1]):
            acc = self.fma(acc, x, self.c(coeff))
        return acc

    def fabs(self, a):
        return self._call("fabs", a)

    def copysign(self, magnitude, sign):
        return self._call("copysign", magnitude, sign)

    def rint(self, a):
        return self._call("rint", a)

    def floor(self, a):
        return self._call("floor", a)

    # comparisons are ordered: false when either side is NaN
    def cmp(self, op: str, a, b):
        return self.b.fcmp_ordered(op, a, b)

    def isnan(self, a):
        return self.b.fcmp_unordered("uno", a, a)

    def select(self, cond, a, b):
        return self.b.select(cond, a, b)

    def below(self, a, hi: float):
        """min(a, hi); NaN becomes hi, so the result is safe to convert to an integer."""
        return self.select(self.cmp("<", a, self.c(hi)), a, self.c(hi))

    def above(self, a, lo: float):
        """max(a, lo); NaN becomes lo."""
        return self.select(self.cmp(">", a, self.c(lo)), a, self.c(lo))

    # bits
    def bits(self, a):
        return self.b.bitcast(a, self.ity)

    def from_bits(self, i):
        return self.b.bitcast(i, self.ty)

    def pow2(self, n32):
        """2^n as a float from an i32 n in the normal exponent range."""
        biased = self.b.add(n32, ir.Constant(ir.IntType(32), self.bias))
        if self.double:
            biased = self.b.zext(biased, self.ity)
        return self.from_bits(self.b.shl(biased, self.ic(self.mant)))

    def to_i32(self, a):
        """An integral float to i32 (the value must be finite and small)."""
        return self.b.fptosi(a, ir.IntType(32))


# ---------------------------------------------------------------------------------------------
# exp and expm1


def _exp_reduce(m: _Math, x):
    """n = rint(x/ln2) and r = x - n*ln2, with n*LN2_HI exact (Cody-Waite)."""
    n = m.rint(m.mul(x, m.c(_LOG2E)))
    minus_n = m.neg(n)
    r = m.fma(minus_n, m.c(_LN2_HI[m.key]), x)
    r = m.fma(minus_n, m.c(_LN2_LO[m.key]), r)
    return n, r


def _exp_poly_terms(m: _Math, r, table=None):
    """r^2*G(r), so that e^r - 1 = r + r^2*G(r) for |r| <= ln2/2."""
    return m.mul(m.mul(r, r), m.horner(r, table or _EXP_G[m.key]))


def _exp_poly(m: _Math, r, table=None):
    """e^r = t + ((r - (t - 1)) + r^2*G(r)) with t = 1 + r: the rounding error of 1 + r
    is recovered exactly (Fast2Sum, |r| < 1), leaving one rounding that matters."""
    one = m.c(1.0)
    t = m.add(one, r)
    return m.add(t, m.add(m.sub(r, m.sub(t, one)), _exp_poly_terms(m, r, table)))


def _scale(m: _Math, v, n):
    """v * 2^n as v * 2^(n>>1) * 2^(n - n>>1): no overflow of the exponent field, and one
    rounding when the result is subnormal. n is a float holding an integer."""
    n32 = m.to_i32(n)
    half = m.b.ashr(n32, ir.Constant(ir.IntType(32), 1))
    rest = m.b.sub(n32, half)
    return m.mul(m.mul(v, m.pow2(half)), m.pow2(rest))


def _exp_finite(m: _Math, x, table=None):
    """e^x for x already clamped to [exp_lo, exp_hi] (overflow to inf, underflow to 0)."""
    n, r = _exp_reduce(m, x)
    return _scale(m, _exp_poly(m, r, table), n)


def _exp(m: _Math, x, table=None):
    clamped = m.above(m.below(x, m.facts["exp_hi"]), m.facts["exp_lo"])
    return m.select(m.isnan(x), x, _exp_finite(m, clamped, table))


def emit_exp(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """e^x, overflowing to inf above ln(max float) and rounding to subnormals and then 0.

    Formula: exp(x) = 2^n * e^r, n = rint(x/ln2), r = x - n*ln2.
    Example:
        y = emit_exp(builder, x)       # x: float or double ir.Value
        emit_exp(builder, ir.Constant(ir.DoubleType(), 1.0))   # e
    """
    return _exp(_Math(builder, x.type), x)


def emit_expm1(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """e^x - 1, accurate near 0 (expm1(x) ~ x), -1 far below 0, inf on overflow.

    Formula: expm1(x) = (2^n - 1) + 2^n*r + 2^n*r^2*G(r), n = rint(x/ln2), r = x - n*ln2.
    Example:
        y = emit_expm1(builder, x)     # 1e-10 -> 1.00000000005e-10
    """
    m = _Math(builder, x.type)
    clamped = m.above(m.below(x, m.facts["exp_hi"]), m.facts["expm1_lo"])
    n, r = _exp_reduce(m, clamped)
    # 2^n overflows the exponent field only for n = emax + 1 (x within ln2/2 of overflow):
    # use 2^emax there and double the result, which is then far beyond the -1.
    emax = float(m.bias)
    top = m.cmp(">", n, m.c(emax))
    two_n = m.pow2(m.to_i32(m.select(top, m.c(emax), n)))
    # (2^n - 1) + 2^n*r is exact before its one rounding; 2^n*r^2*G(r) is the small term.
    result = m.fma(two_n, r, m.sub(two_n, m.c(1.0)))
    result = m.fma(two_n, _exp_poly_terms(m, r), result)
    result = m.mul(result, m.select(top, m.c(2.0), m.c(1.0)))
    result = m.copysign(result, x)       # expm1 has the sign of x; keeps -0
    return m.select(m.isnan(x), x, result)


# ---------------------------------------------------------------------------------------------
# log and log1p


def _log_split(m: _Math, x):
    """x = 2^k * (1 + f) with 1 + f in [sqrt(1/2), sqrt(2)): k as a float, and f (exact).

    Adding (bits(1) - bits(sqrt(1/2))) carries into the exponent exactly when the mantissa
    is at least sqrt(2)'s, as in musl's log."""
    one_bits = 0x3FF0000000000000 if m.double else 0x3F800000
    low_bits = 0x3FE6A09E667F3BCD if m.double else 0x3F3504F3     # bits of sqrt(1/2)
    ix = m.b.add(m.bits(x), m.ic(one_bits - low_bits))
    k = m.b.sub(m.b.ashr(ix, m.ic(m.mant)), m.ic(m.bias))
    if m.double:
        k = m.b.trunc(k, ir.IntType(32))
    mantissa = m.b.add(m.b.and_(ix, m.ic((1 << m.mant) - 1)), m.ic(low_bits))
    f = m.sub(m.from_bits(mantissa), m.c(1.0))
    return m.b.sitofp(k, m.ty), f


def _log_tail(m: _Math, k, f, correction):
    """k*ln2 + log(1 + f) + correction (fdlibm's arrangement of the terms)."""
    s = m.div(f, m.add(m.c(2.0), f))
    z = m.mul(s, s)
    r = m.mul(z, m.horner(z, _LOG_L[m.key]))
    hfsq = m.mul(m.mul(m.c(0.5), f), f)
    low = m.fma(k, m.c(_LN2_LO[m.key]), correction)
    low = m.fma(s, m.add(hfsq, r), low)
    return m.fma(k, m.c(_LN2_HI[m.key]), m.sub(f, m.sub(hfsq, low)))


def _log_positive(m: _Math, x):
    """log(x) for finite x > 0, subnormals included (scaled into the normal range)."""
    bits = m.facts["sub_scale_bits"]
    tiny = m.cmp("<", x, m.c(np.finfo(np.float64 if m.double else np.float32).tiny))
    x = m.select(tiny, m.mul(x, m.c(2.0 ** bits)), x)
    k, f = _log_split(m, x)
    k = m.select(tiny, m.sub(k, m.c(float(bits))), k)
    return _log_tail(m, k, f, m.c(0.0))


def emit_log(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """Natural logarithm: log(0) = -inf, log(x < 0) = NaN, log(inf) = inf.

    Formula: log(x) = k*ln2 + log(1 + f), x = 2^k*(1 + f), 1 + f in [sqrt(1/2), sqrt(2)).
    Example:
        y = emit_log(builder, x)       # x: float or double ir.Value
        emit_log(builder, ir.Constant(ir.FloatType(), 1.0))   # 0
    """
    m = _Math(builder, x.type)
    result = _log_positive(m, x)
    result = m.select(m.cmp("==", x, m.c(float("inf"))), x, result)
    result = m.select(m.cmp("==", x, m.c(0.0)), m.c(float("-inf")), result)
    invalid = m.b.or_(m.isnan(x), m.cmp("<", x, m.c(0.0)))
    return m.select(invalid, m.c(float("nan")), result)


def _log1p_core(m: _Math, x):
    """log(1 + x) for finite x > -1: log(u) for u = fl(1 + x), plus err/u where
    err = (1 + x) - u is exact (Fast2Sum with the larger operand first)."""
    one = m.c(1.0)
    u = m.add(one, x)
    err_small = m.sub(x, m.sub(u, one))
    err_large = m.sub(one, m.sub(u, x))
    err = m.select(m.cmp("<=", m.fabs(x), one), err_small, err_large)
    k, f = _log_split(m, u)
    return _log_tail(m, k, f, m.div(err, u))


def emit_log1p(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """log(1 + x), accurate near 0 (log1p(x) ~ x): -inf at -1, NaN below -1, inf at inf.

    Formula: log1p(x) = log(u) + ((1 + x) - u)/u with u = fl(1 + x).
    Example:
        y = emit_log1p(builder, x)     # 1e-10 -> 9.9999999995e-11
    """
    m = _Math(builder, x.type)
    result = m.copysign(_log1p_core(m, x), x)     # same sign as x; keeps -0
    result = m.select(m.cmp("==", x, m.c(float("inf"))), x, result)
    result = m.select(m.cmp("==", x, m.c(-1.0)), m.c(float("-inf")), result)
    invalid = m.b.or_(m.isnan(x), m.cmp("<", x, m.c(-1.0)))
    return m.select(invalid, m.c(float("nan")), result)


# ---------------------------------------------------------------------------------------------
# tanh, sigmoid, softplus, erf


def emit_tanh(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """Hyperbolic tangent: odd, tanh(x) ~ x near 0, saturating to +-1.

    Formula: |x| < 0.625: x + x^3*P(x^2); else sign(x) * (1 - e^2)/(1 + e^2) with
    e = exp(-|x|) (e^2 <= 0.29 there: no cancellation), the same e as sigmoid's and
    softplus', so LLVM computes one exponential for all three of one x (x sigma(x) +
    tanh(x) - softplus(x) is three functions and one exp).
    Example:
        y = emit_tanh(builder, x)      # x: float or double ir.Value
        emit_tanh(builder, ir.Constant(ir.FloatType(), 20.0))  # 1.0
    """
    m = _Math(builder, x.type)
    a = m.fabs(x)
    z = m.mul(a, a)
    small = m.fma(m.mul(a, z), m.horner(z, _TANH_P[m.key]), a)
    e = _exp(m, m.neg(a))                       # 0 for large |x|: the result is then 1
    e2 = m.mul(e, e)
    large = m.div(m.sub(m.c(1.0), e2), m.add(m.c(1.0), e2))
    result = m.select(m.cmp("<", a, m.c(_TANH_SMALL)), small, large)
    return m.copysign(result, x)                # NaN stays NaN (from exp)


def emit_sigmoid(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """Logistic sigmoid without overflow and with full relative accuracy in both tails.

    Formula: e = exp(-|x|); x >= 0: 1/(1 + e), else e/(1 + e).
    Example:
        y = emit_sigmoid(builder, x)   # x: float or double ir.Value
        emit_sigmoid(builder, ir.Constant(ir.DoubleType(), -800.0))  # 0.0
    """
    m = _Math(builder, x.type)
    e = _exp(m, m.neg(m.fabs(x)))
    numerator = m.select(m.cmp(">=", x, m.c(0.0)), m.c(1.0), e)
    return m.div(numerator, m.add(m.c(1.0), e))     # NaN: e is NaN


def emit_softplus(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """log(1 + e^x) without overflow: softplus(inf) = inf, softplus(-inf) = 0.

    Formula: softplus(x) = max(x, 0) + log1p(e), e = exp(-|x|), log1p(e) = e + e^2*S(e).
    Example:
        y = emit_softplus(builder, x)  # x: float or double ir.Value
        emit_softplus(builder, ir.Constant(ir.FloatType(), 0.0))   # log 2
    """
    m = _Math(builder, x.type)
    e = _exp(m, m.neg(m.fabs(x)))                 # in [0, 1]
    positive = m.select(m.cmp(">", x, m.c(0.0)), x, m.c(0.0))
    centred = m.sub(e, m.c(0.5))
    tail = m.fma(m.mul(e, e), m.horner(centred, _LOG1P_UNIT_S[m.key]), e)   # log1p(e)
    result = m.add(positive, tail)
    return m.select(m.isnan(x), x, result)


def _erfc_log(m: _Math, a):
    """Q(a) ~ log(erfc(a)) for a in [1, erf_hi], coefficients selected per interval."""
    pieces = _ERFC_Q[m.key]
    start = m.c(pieces[0][0])
    coeffs = [m.c(c) for c in pieces[0][2]]
    for lo, _, table in pieces[1:]:
        upper = m.cmp(">=", a, m.c(lo))
        start = m.select(upper, m.c(lo), start)
        coeffs = [m.select(upper, m.c(c), old) for c, old in zip(table, coeffs)]
    t = m.sub(a, start)
    acc = coeffs[-1]
    for coeff in reversed(coeffs[:-1]):
        acc = m.fma(acc, t, coeff)
    return acc


def emit_erf(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """The error function: odd, erf(x) ~ 2x/sqrt(pi) near 0, +-1 in the tails.

    Formula: |x| < 1: x + x*(E(x^2) - 1); else sign(x) * (1 - exp(Q(|x|))), Q ~ log(erfc).
    Example:
        y = emit_erf(builder, x)       # x: float or double ir.Value
        emit_erf(builder, ir.Constant(ir.DoubleType(), 10.0))  # 1.0
    """
    m = _Math(builder, x.type)
    a = m.fabs(x)
    e_minus_one = (_ERF_E[m.key][0] - 1.0,) + _ERF_E[m.key][1:]
    small = m.fma(a, m.horner(m.mul(a, a), e_minus_one), a)     # a + a*(E - 1): 1 rounding
    tail = m.above(m.below(a, m.facts["erf_hi"]), 1.0)      # NaN -> erf_hi, finite
    large = m.sub(m.c(1.0), _exp_finite(m, _erfc_log(m, tail)))
    result = m.copysign(m.select(m.cmp("<", a, m.c(1.0)), small, large), x)
    return m.select(m.isnan(x), x, result)


# ---------------------------------------------------------------------------------------------
# pow: double-double arithmetic (Knuth TwoSum, FMA or Dekker products)


class _DD:
    """Error-free transformations; a double-double is a pair (hi, lo) with |lo| <= ulp(hi)/2."""

    def __init__(self, m: _Math):
        self.m = m
        self.fma = _host_has_fma()

    def two_sum(self, a, b):
        m = self.m
        s = m.add(a, b)
        bb = m.sub(s, a)
        return s, m.add(m.sub(a, m.sub(s, bb)), m.sub(b, bb))

    def fast_two_sum(self, a, b):
        """Needs |a| >= |b| (or a = 0)."""
        m = self.m
        s = m.add(a, b)
        return s, m.sub(b, m.sub(s, a))

    def _split(self, a):
        """Dekker's split of a into 26 + 26 bits."""
        m = self.m
        c = m.mul(m.c(134217729.0), a)          # 2^27 + 1
        hi = m.sub(c, m.sub(c, a))
        return hi, m.sub(a, hi)

    def two_prod(self, a, b):
        m = self.m
        p = m.mul(a, b)
        if self.fma:
            return p, m.exact_fma(a, b, m.neg(p))
        ah, al = self._split(a)
        bh, bl = self._split(b)
        err = m.sub(m.mul(ah, bh), p)
        err = m.add(err, m.mul(ah, bl))
        err = m.add(err, m.mul(al, bh))
        return p, m.add(err, m.mul(al, bl))

    def add(self, x, y):
        s, e = self.two_sum(x[0], y[0])
        e = self.m.add(e, self.m.add(x[1], y[1]))
        return self.fast_two_sum(s, e)

    def mul(self, x, y):
        m = self.m
        p, e = self.two_prod(x[0], y[0])
        e = m.add(e, m.add(m.mul(x[0], y[1]), m.mul(x[1], y[0])))
        return self.fast_two_sum(p, e)

    def mul_d(self, x, b):
        p, e = self.two_prod(x[0], b)
        return self.fast_two_sum(p, self.m.fma(x[1], b, e))


def _log_dd(dd: _DD, x):
    """log(x) as a double-double for finite x > 0: k*ln2 + 2*atanh(s), s = f/(2 + f),
    2*atanh(s) = 2s + s^3*(2/3 + s^2*T(s^2)), with s, s^2, s^3 and the sums in double-double."""
    m = dd.m
    tiny = m.cmp("<", x, m.c(np.finfo(np.float64).tiny))
    x = m.select(tiny, m.mul(x, m.c(2.0 ** 54)), x)
    k, f = _log_split(m, x)
    k = m.select(tiny, m.sub(k, m.c(54.0)), k)
    d_hi, d_lo = dd.fast_two_sum(m.c(2.0), f)             # 2 + f exactly
    s_hi = m.div(f, d_hi)
    product, product_err = dd.two_prod(s_hi, d_hi)
    remainder = m.sub(m.sub(f, product), product_err)     # f - s_hi*d_hi, f - product exact
    s_lo = m.div(m.sub(remainder, m.mul(s_hi, d_lo)), d_hi)
    s = (s_hi, s_lo)
    z = dd.mul(s, s)
    w = m.mul(z[0], m.horner(z[0], _LOG_T))
    inner_hi, inner_lo = dd.fast_two_sum(m.c(_TWO_THIRDS_HI), w)
    inner = (inner_hi, m.add(inner_lo, m.c(_TWO_THIRDS_LO)))
    tail = dd.mul(dd.mul(z, s), inner)
    log_m = dd.add((m.add(s_hi, s_hi), m.add(s_lo, s_lo)), tail)
    k_ln2 = dd.fast_two_sum(m.mul(k, m.c(_LN2_HI["double"])),
                            m.mul(k, m.c(_LN2_LO["double"])))
    return dd.add(k_ln2, log_m)


def _exp_dd(dd: _DD, y):
    """e^(hi + lo) for a double-double argument: lo joins the reduced argument r."""
    m = dd.m
    hi = m.above(m.below(y[0], m.facts["exp_hi"]), m.facts["exp_lo"])
    n, r = _exp_reduce(m, hi)
    r = m.add(r, y[1])
    return _scale(m, _exp_poly(m, r), n)


def _pow_magnitude_double(m: _Math, a_abs, b):
    """|a|^b for double a_abs > 0 and b finite, through a double-double log and exp, and
    b*log|a| rounded (which may overflow: the caller then selects 0 or inf)."""
    dd = _DD(m)
    log_a = _log_dd(dd, a_abs)
    return _exp_dd(dd, dd.mul_d(log_a, b)), m.mul(log_a[0], b)


def _pow_magnitude_float(m: _Math, a_abs, b):
    """|a|^b for float a_abs > 0 and b finite, evaluated in double:
    log|a| = k*ln2 + f - f^2/2 + f^3*P(f), then exp of b*log|a|, rounded once to float."""
    wide = _Math(m.b, ir.DoubleType())
    k, f = _log_split(wide, m.b.fpext(a_abs, wide.ty))       # float subnormals: normal here
    f2 = wide.mul(f, f)
    log_m = wide.fma(wide.mul(f2, f), wide.horner(f, _POW32_LOG_P), wide.mul(wide.c(-0.5), f2))
    log_a = wide.fma(k, wide.c(_LN2_HI["double"]),
                     wide.fma(k, wide.c(_LN2_LO["double"]), wide.add(f, log_m)))
    y = wide.mul(m.b.fpext(b, wide.ty), log_a)
    magnitude = _exp_finite(wide, wide.above(wide.below(y, 710.0), -746.0), _POW32_EXP_G)
    return m.b.fptrunc(magnitude, m.ty), m.b.fptrunc(y, m.ty)


def _pow(m: _Math, a, b):
    """pow with C99 Annex F special cases around the magnitude exp(b*log|a|)."""
    inf, one, zero = m.c(float("inf")), m.c(1.0), m.c(0.0)
    a_abs, b_abs = m.fabs(a), m.fabs(b)
    a_regular = m.b.and_(m.cmp("<", a_abs, inf), m.cmp(">", a_abs, zero))
    b_finite = m.cmp("<", b_abs, inf)
    a_safe = m.select(a_regular, a_abs, one)
    b_safe = m.select(b_finite, b, zero)
    magnitude_of = _pow_magnitude_double if m.double else _pow_magnitude_float
    magnitude, y_rough = magnitude_of(m, a_safe, b_safe)
    # Exponent out of range, or |a| in {0, inf}, or b = +-inf: the magnitude is 0 or inf.
    extreme = m.b.or_(m.b.not_(a_regular), m.b.not_(b_finite))
    extreme = m.b.or_(extreme, m.cmp(">", m.fabs(y_rough), m.c(1000.0)))
    grows = m.b.xor(m.cmp(">", b, zero), m.cmp("<", a_abs, one))
    magnitude = m.select(extreme, m.select(grows, inf, zero), magnitude)
    magnitude = m.select(m.cmp("==", a_abs, one), one, magnitude)
    # Sign: negative base (or -0) to an odd integer power.
    b_integer = m.cmp("==", m.floor(b), b)
    half = m.mul(b, m.c(0.5))
    b_odd = m.b.and_(b_integer, m.cmp("!=", m.floor(half), half))
    negative_base = m.b.icmp_signed("<", m.bits(a), m.ic(0))
    result = m.select(m.b.and_(negative_base, b_odd), m.neg(magnitude), magnitude)
    # NaN: finite negative base to a finite non-integer power, or a NaN operand.
    invalid = m.b.and_(m.b.and_(m.cmp("<", a, zero), m.cmp(">", a, m.neg(inf))),
                       m.b.and_(b_finite, m.b.not_(b_integer)))
    invalid = m.b.or_(invalid, m.b.or_(m.isnan(a), m.isnan(b)))
    result = m.select(invalid, m.c(float("nan")), result)
    exact_one = m.b.or_(m.cmp("==", b, zero), m.cmp("==", a, one))
    return m.select(exact_one, one, result)


def emit_pow(builder: ir.IRBuilder, a: ir.Value, b: ir.Value) -> ir.Value:
    """a**b with the special cases of C pow / numpy.power (negative a with integer b, 0, inf,
    NaN). The float32 magnitude is computed in double; float64 through a double-double log
    and exp. The special cases are decided in the operands' own type.

    Formula: pow(a, b) = sign * exp(b*log|a|), sign = -1 iff a < 0 (or -0) and b odd.
    Example:
        y = emit_pow(builder, a, b)    # a, b: ir.Values of one float type
        emit_pow(builder, ir.Constant(ir.DoubleType(), -2.0), ir.Constant(ir.DoubleType(), 3.0))
    """
    if a.type != b.type:
        raise TypeError(f"pow operands differ in type: {a.type} and {b.type}")
    return _pow(_Math(builder, a.type), a, b)


# ---------------------------------------------------------------------------------------------
# Loop kernels for tests and benchmarks


_IR_TYPES = {np.dtype(np.float32): ir.FloatType(), np.dtype(np.float64): ir.DoubleType()}


def _elementwise_kernel(name: str, fn, dtype, arity: int) -> str:
    ty = _IR_TYPES[np.dtype(dtype)]
    i64 = ir.IntType(64)
    module = ir.Module(name=name)
    args = [ty.as_pointer()] * (arity + 1) + [i64]
    func = ir.Function(module, ir.FunctionType(ir.VoidType(), args), name)
    for attribute in target.function_attributes():
        func.attributes.add(attribute)
    # llvmlite's FunctionAttributes only knows enum attributes; a string attribute is
    # added to the underlying set and printed as is.
    set.add(func.attributes, f'"prefer-vector-width"="{target.prefer_vector_width()}"')
    *pointers, n = func.args
    for pointer in pointers:
        pointer.add_attribute("noalias")
    entry = func.append_basic_block("entry")
    loop = func.append_basic_block("loop")
    done = func.append_basic_block("done")
    builder = ir.IRBuilder(entry)
    builder.cbranch(builder.icmp_signed(">", n, ir.Constant(i64, 0)), loop, done)
    builder.position_at_end(loop)
    i = builder.phi(i64)
    i.add_incoming(ir.Constant(i64, 0), entry)
    inputs = [builder.load(builder.gep(p, [i])) for p in pointers[:arity]]
    builder.store(fn(builder, *inputs), builder.gep(pointers[arity], [i]))
    following = builder.add(i, ir.Constant(i64, 1))
    i.add_incoming(following, loop)
    builder.cbranch(builder.icmp_signed("<", following, n), loop, done)
    builder.position_at_end(done)
    builder.ret_void()
    return str(module)


def emit_unary_kernel(name: str, fn, dtype) -> str:
    """IR text of `void name(T* noalias x, T* noalias y, i64 n)`: y[i] = fn(builder, x[i]).

    Formula: y = fn(x) elementwise, T = float for float32, double for float64.
    Example:
        text = emit_unary_kernel("exp_f32", emit_exp, np.float32)
        kernel = jit.compile_ir(text)
        f = kernel.cfunc("exp_f32", None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
    """
    return _elementwise_kernel(name, fn, dtype, 1)


def emit_binary_kernel(name: str, fn, dtype) -> str:
    """IR text of `void name(T* a, T* b, T* y, i64 n)` (all noalias): y[i] = fn(a[i], b[i]).

    Formula: y = fn(a, b) elementwise.
    Example:
        text = emit_binary_kernel("pow_f64", emit_pow, np.float64)
        kernel = jit.compile_ir(text)
        f = kernel.cfunc("pow_f64", None, *[ctypes.c_void_p] * 3, ctypes.c_int64)
    """
    return _elementwise_kernel(name, fn, dtype, 2)


UNARY = {
    "exp": emit_exp, "expm1": emit_expm1, "log": emit_log, "log1p": emit_log1p,
    "tanh": emit_tanh, "sigmoid": emit_sigmoid, "softplus": emit_softplus, "erf": emit_erf,
}
BINARY = {"pow": emit_pow}
