"""Accuracy rewrites applied to every elementwise expression before a backend evaluates it.

The formulas in the op catalog are written as the course writes them (sigmoid is
1/(1 + exp(-x)), softplus is log(1 + exp(x))) because that is what `gd.explain` shows. Taken
literally in floating point some overflow: exp(x)/(exp(x) + 1), sympy's derivative of
softplus, is inf/inf = NaN at x = 100. `stabilize` rewrites such patterns into two functions
that every backend evaluates in a stable way:

- `Sigmoid(u)`: exp(k u) (1 + exp(u))^-m  ->  Sigmoid(u)^k Sigmoid(-u)^(m-k), 0 <= k <= m
  (the identities e^u / (1 + e^u) = sigma(u) and 1 / (1 + e^u) = sigma(-u));
- `Softplus(u)`: log(1 + exp(u)) -> Softplus(u) = max(u, 0) + log1p(exp(-|u|));
- exp(u) - 1 -> expm1(u) (accuracy near 0, after sympy.codegen.rewriting's expm1_opt).

Rules are a table of (name, function); each function returns a new expression or None.
"""

from __future__ import annotations

import functools

import sympy as sp
from sympy.codegen.cfunctions import expm1


class Sigmoid(sp.Function):
    """sigma(u) = 1 / (1 + exp(-u)), evaluated without overflow by every backend."""

    nargs = 1

    def fdiff(self, argindex=1):
        return self * (1 - self)

    def _eval_rewrite_as_exp(self, u, **kwargs):
        return 1 / (1 + sp.exp(-u))

    def _latex(self, printer):
        return r"\sigma\left(%s\right)" % printer._print(self.args[0])


class Softplus(sp.Function):
    """softplus(u) = log(1 + exp(u)), evaluated as max(u, 0) + log1p(exp(-|u|))."""

    nargs = 1

    def fdiff(self, argindex=1):
        return Sigmoid(self.args[0])

    def _eval_rewrite_as_exp(self, u, **kwargs):
        return sp.log(1 + sp.exp(u))


class StrongMul(sp.Function):
    """gy * d with a strong zero: 0 where gy == 0, even where d is infinite or NaN.

    Autodiff uses it for derivatives with a pole (log'(x) = 1/x): the unused branch of a
    `where` sends gy = 0, and 0 * inf would otherwise leak NaN into every gradient. A sympy
    Function (not a Piecewise over Eq(gy, 0)) so that sympy never tries to simplify it.
    """

    nargs = 2

    def fdiff(self, argindex=1):
        return self.args[1] if argindex == 1 else self.args[0]

    def _eval_rewrite_as_Mul(self, gy, d, **kwargs):
        return gy * d

    def _sympystr(self, printer):
        return "%s*(%s)" % (printer._print(self.args[0]), printer._print(self.args[1]))

    def _latex(self, printer):
        return r"%s \cdot \left(%s\right)" % (printer._print(self.args[0]),
                                               printer._print(self.args[1]))


def _exp_plus_one(base):
    """If base is 1 + exp(w), return w."""
    if isinstance(base, sp.Add) and len(base.args) == 2 and sp.S.One in base.args:
        other = base.args[1] if base.args[0] == 1 else base.args[0]
        if isinstance(other, sp.exp):
            return other.args[0]
    return None


def _rule_sigmoid(e):
    factors = list(e.args) if isinstance(e, sp.Mul) else [e]
    for i, f in enumerate(factors):
        if not (isinstance(f, sp.Pow) and f.exp.is_Integer and f.exp < 0):
            continue
        w = _exp_plus_one(f.base)
        if w is None:
            continue
        m = int(-f.exp)
        rest = factors[:i] + factors[i + 1:]
        k = 0
        for j, g in enumerate(rest):
            if isinstance(g, sp.exp):
                ratio = sp.simplify(g.args[0] / w)
                if ratio.is_Integer and 0 < ratio <= m:
                    k = int(ratio)
                    rest = rest[:j] + rest[j + 1:]
                    break
        return sp.Mul(*rest) * Sigmoid(w) ** k * Sigmoid(-w) ** (m - k)
    return None


def _rule_softplus(e):
    if isinstance(e, sp.log):
        w = _exp_plus_one(e.args[0])
        if w is not None:
            return Softplus(w)
    return None


def _rule_expm1(e):
    if not isinstance(e, sp.Add):
        return None
    for a in e.args:
        coeff, factor = a.as_coeff_Mul()
        if isinstance(factor, sp.exp) and -coeff in e.args:
            rest = list(e.args)
            rest.remove(a)
            rest.remove(-coeff)
            return sp.Add(coeff * expm1(factor.args[0]), *rest)
    return None


RULES = (
    ("exp(k*u) * (1 + exp(u))**-m -> sigmoid(u)**k * sigmoid(-u)**(m-k)", _rule_sigmoid),
    ("log(1 + exp(u)) -> softplus(u)", _rule_softplus),
    ("exp(u) - 1 -> expm1(u)", _rule_expm1),
)


def _apply_rules(e):
    for _name, rule in RULES:
        new = rule(e)
        if new is not None and new != e:
            return new
    return None


def _rewrite(e):
    # Rules are tried at a node before its children (a Mul must see exp(u) next to
    # (1 + exp(u))**-1 before the inner power is rewritten on its own), then again after.
    if e.is_Atom:
        return e
    new = _apply_rules(e)
    if new is not None:
        return _rewrite(new)
    args = tuple(_rewrite(a) for a in e.args)
    if args != e.args:
        # Rebuild without sympy's automatic simplification: it would cancel -y + (y + f)
        # to f, a finite number where the original gives NaN (y = inf).
        with sp.evaluate(False):
            e = e.func(*args)
        new = _apply_rules(e)
        if new is not None:
            return _rewrite(new)
    return e


@functools.lru_cache(maxsize=4096)
def stabilize(expr: sp.Expr) -> sp.Expr:
    """Rewrite an expression into a numerically stable form (see the module docstring)."""
    return _rewrite(expr)
