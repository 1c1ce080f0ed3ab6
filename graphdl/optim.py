"""Optimizers: update rules of `torch.optim`, built as graph ops (course section 3).

`opt.updates(loss, params)` differentiates `loss` with `gd.grad`, optionally clips the
gradients, and returns a `graphdl.function.Updates` list of (variable, new value) pairs: one
per param, one per optimizer slot (`gd.state` variables named like "W1.exp_avg") and one for
the step counter (an int64 `gd.state` scalar). Compiled with
`gd.function(..., updates=opt.updates(loss, params))`, one call runs forward, backward and
the update; all new values are computed from the values before the call.

Every rule follows the pseudo-code of `torch.optim` (version 2.x, `maximize` included, no
`foreach`/`fused` variants) operation for operation, so trajectories agree with PyTorch's to
rounding. Gradient clipping happens before the rule and before weight decay, in this order:
`clip_norm` scales all gradients by min(1, clip_norm / (||g||_2 + 1e-6)) with the norm taken
over every param given (`torch.nn.utils.clip_grad_norm_`), then `clip_value` clamps each
element to [-clip_value, clip_value] (`torch.nn.utils.clip_grad_value_`).

The learning rate is a number or a schedule: any callable of the 0-based step k returning a
float (see `gd.schedules`). A schedule's rate lives in a float64 `gd.state` scalar that a hook
of the returned `Updates` sets from the step counter before each call, so the k-th call uses
schedule(k) and the compiled graph never changes.

Scalar coefficients (bias corrections, scheduled rates) are computed in float64 and cast to
each param's dtype, as PyTorch does with its Python-float step sizes.

Example:
    >>> opt = gd.optim.Adam(lr=1e-3)
    >>> step = gd.function([x, y], [loss], updates=opt.updates(loss, [W, b]))
    >>> (l,) = step(xb, yb)
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from graphdl.autodiff import grad
from graphdl.errors import dtype_error
from graphdl.function import Updates
from graphdl.graph import Tensor, state
from graphdl.ops import cast, equal, maximum, minimum, sqrt, sum, where
from graphdl.shapes import FLOAT_DTYPES, promote

__all__ = ["SGD", "Adadelta", "Adagrad", "Adam", "AdamW", "Optimizer", "RMSProp", "RMSprop"]

# torch.nn.utils.clip_grad_norm_ adds this to the norm before dividing.
_CLIP_NORM_EPS = 1e-6


def _number(value, name: str, low: float = 0.0, high: float = math.inf,
            high_open: bool = False) -> float:
    """Check a hyperparameter as torch.optim does ("Invalid ..." ValueErrors)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not (low <= value <= high) or (high_open and value == high):
        upper = f"< {high}" if high_open else f"<= {high}"
        raise ValueError(f"Invalid {name}: {value!r} (must be >= {low} and {upper})")
    return value


def _clip_value(value, name: str):
    if value is None:
        return None
    value = _number(value, name)
    if value == 0:
        raise ValueError(f"{name} must be > 0 (or None for no clipping), got {value!r}")
    return value


def _coefficient(value, dtype: str):
    """A scalar coefficient in a param's dtype: Python numbers stay weakly typed."""
    return cast(value, dtype) if isinstance(value, Tensor) else value


@dataclass(frozen=True)
class _Step:
    """The scalars one update shares: counter before the call, t = counter + 1, lr."""

    count: Tensor      # int64, number of steps done before this call
    t: Tensor          # float64, the 1-based step number of this call
    first: Tensor      # bool, this is the first step (torch's "buffer is None")
    lr: object         # float, or a float64 scalar tensor (schedule or user state)


class Optimizer:
    """Base class: gradients, clipping, slots, step counter and learning-rate schedules.

    Formula: theta_t = rule(theta_{t-1}, clip(grad loss(theta_{t-1})), slots, lr(t - 1)).
    `lr` is a number, a callable schedule of the 0-based step, or a float scalar tensor (a
    `gd.state` the caller sets). Subclasses implement
    `_update(p, g, step) -> [(variable, new value), ...]`.

    Example:
        >>> opt = gd.optim.SGD(lr=0.1, momentum=0.9)
        >>> step = gd.function([x, y], [loss], updates=opt.updates(loss, [W, b]))
        >>> opt.step_count, opt.state_variables()
    """

    def __init__(self, lr, weight_decay=0.0, clip_norm=None, clip_value=None,
                 maximize=False):
        if isinstance(lr, Tensor):
            if lr.shape != () or lr.dtype not in FLOAT_DTYPES:
                raise dtype_error(f"a tensor lr must be a float scalar, got {lr!r}")
        elif not callable(lr):
            lr = _number(lr, "learning rate")
        self.lr = lr
        self.weight_decay = _number(weight_decay, "weight_decay value")
        self.clip_norm = _clip_value(clip_norm, "clip_norm")
        self.clip_value = _clip_value(clip_value, "clip_value")
        self.maximize = bool(maximize)
        self._slots: dict = {}
        self._counter = None
        self._lr_state = None

    # -- public ---------------------------------------------------------------------------
    def updates(self, loss, params) -> Updates:
        """The (variable, new value) pairs of one optimization step, as graph expressions.

        Calling it again (another loss, same params) reuses the slots and the counter.

        Example:
            >>> step = gd.function([x, y], [loss], updates=opt.updates(loss, [W, b]))
        """
        params = self._check_params(params)
        grads = self._clip(grad(loss, params))
        step = self._step_scalars()
        pairs = []
        for p, g in zip(params, grads):
            if self.maximize:
                g = -g
            pairs.extend(self._update(p, g, step))
        pairs.append((self._counter, step.count + 1))
        hooks = [self._set_scheduled_lr] if self._lr_state is not None else []
        return Updates(pairs, hooks)

    def state_variables(self) -> list:
        """Every slot (in creation order) and the step counter, for checkpoints.

        Example:
            >>> arrays = {v.name: v.value.copy() for v in opt.state_variables()}
        """
        out = list(self._slots.values())
        return out + ([self._counter] if self._counter is not None else [])

    def slot(self, param: Tensor, name: str) -> Tensor:
        """The state variable of one slot of one param ("exp_avg", "momentum_buffer", ...).

        Example:
            >>> opt.slot(W, "exp_avg").value
        """
        try:
            return self._slots[(param, name)]
        except KeyError:
            raise KeyError(f"{type(self).__name__} has no slot {name!r} for {param!r}; it has "
                           f"{sorted({n for _, n in self._slots})}") from None

    @property
    def step_count(self) -> int:
        """Steps taken so far (read from the counter state; 0 before the first)."""
        return 0 if self._counter is None else int(self._counter.value)

    def __repr__(self) -> str:
        names = [k for k in vars(self) if not k.startswith("_")]
        return f"{type(self).__name__}({', '.join(f'{k}={getattr(self, k)!r}' for k in names)})"

    # -- machinery ------------------------------------------------------------------------
    def _check_params(self, params) -> list:
        params = [params] if isinstance(params, Tensor) else list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}.updates got an empty list of params")
        for p in params:
            if not isinstance(p, Tensor) or p.op != "param":
                raise TypeError(f"{type(self).__name__} can only update gd.param tensors, got "
                                f"{p!r}")
            if p.dtype not in FLOAT_DTYPES:
                raise dtype_error(f"{type(self).__name__} can only update float params, "
                                  f"{p.name!r} is {p.dtype}")
        if len(set(params)) != len(params):
            raise ValueError("a param is listed twice in the optimizer's params")
        return params

    def _clip(self, grads) -> list:
        if self.clip_norm is not None:
            dtype = promote(*(g.dtype for g in grads))
            total = cast(sum(grads[0] * grads[0]), dtype)
            for g in grads[1:]:
                total = total + cast(sum(g * g), dtype)
            scale = minimum(self.clip_norm / (sqrt(total) + _CLIP_NORM_EPS), 1.0)
            grads = [g * cast(scale, g.dtype) for g in grads]
        if self.clip_value is not None:
            grads = [minimum(maximum(g, -self.clip_value), self.clip_value) for g in grads]
        return grads

    def _step_scalars(self) -> _Step:
        name = type(self).__name__
        if self._counter is None:
            self._counter = state(f"{name}.step", np.array(0, np.int64))
            if callable(self.lr) and not isinstance(self.lr, Tensor):
                self._lr_state = state(f"{name}.lr", np.array(0.0, np.float64))
        count = self._counter
        lr = self._lr_state if self._lr_state is not None else self.lr
        return _Step(count, cast(count + 1, "float64"), equal(count, 0), lr)

    def _set_scheduled_lr(self) -> None:
        self._lr_state.value = float(self.lr(self.step_count))

    def _slot(self, p: Tensor, name: str, fill: float = 0.0) -> Tensor:
        key = (p, name)
        if key not in self._slots:
            self._slots[key] = state(f"{p.name}.{name}",
                                     np.full(p.shape, fill, dtype=p.dtype))
        return self._slots[key]

    def _with_weight_decay(self, p: Tensor, g: Tensor) -> Tensor:
        """L2 weight decay added to the gradient: g + lambda theta (torch's weight_decay)."""
        return g + self.weight_decay * p if self.weight_decay else g

    def _update(self, p: Tensor, g: Tensor, step: _Step) -> list:
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, dampening and Nesterov.

    torch.optim.SGD, with g = grad + lambda theta (weight_decay):
        b_1 = g_1;  b_t = mu b_{t-1} + (1 - dampening) g_t            (momentum != 0)
        g = g + mu b_t (nesterov)  or  g = b_t
        theta <- theta - lr g
    Course: eqs. 12-14 are momentum 0. Eq. 15 writes v_t = beta v_{t-1} - eta g_t,
    theta += v_t: for a constant lr that is v_t = -lr b_t, the same trajectory (not with a
    schedule, where PyTorch applies the new lr to the whole buffer). Eq. 16 evaluates the
    gradient at the look-ahead point theta + beta v; PyTorch's g + mu b_t is the same method
    written in the shifted variable theta' = theta + beta v.

    Example:
        >>> opt = gd.optim.SGD(lr=0.1, momentum=0.9, nesterov=True)
        >>> step = gd.function([x, y], [loss], updates=opt.updates(loss, [W, b]))
    """

    def __init__(self, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                 clip_norm=None, clip_value=None, maximize=False):
        super().__init__(lr, weight_decay, clip_norm, clip_value, maximize)
        self.momentum = _number(momentum, "momentum value")
        self.dampening = _number(dampening, "dampening value")
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _update(self, p, g, step):
        lr = _coefficient(step.lr, p.dtype)
        g = self._with_weight_decay(p, g)
        if self.momentum == 0:
            return [(p, p - lr * g)]
        buf = self._slot(p, "momentum_buffer")
        new_buf = self.momentum * buf + (1 - self.dampening) * g
        if self.dampening != 0:   # b_1 = g_1 undamped; with dampening 0 mu * 0 + g is exact
            new_buf = where(step.first, g, new_buf)
        direction = g + self.momentum * new_buf if self.nesterov else new_buf
        return [(buf, new_buf), (p, p - lr * direction)]


class RMSProp(Optimizer):
    """RMSProp: divide by a running root mean square of the gradients.

    torch.optim.RMSprop, with g = grad + lambda theta:
        v_t = alpha v_{t-1} + (1 - alpha) g^2
        centered: m_t = alpha m_{t-1} + (1 - alpha) g;  v~ = v_t - m_t^2   else v~ = v_t
        momentum > 0: b_t = mu b_{t-1} + g / (sqrt(v~) + eps);  theta <- theta - lr b_t
        otherwise:    theta <- theta - lr g / (sqrt(v~) + eps)
    Course: eq. 17 is v_t (p = alpha); eq. 18 puts delta inside the root,
    eta / sqrt(delta + r); PyTorch (and this class) adds eps outside: sqrt(v) + eps.

    Example:
        >>> opt = gd.optim.RMSProp(lr=0.01, alpha=0.99, centered=True)
        >>> step = gd.function([x, y], [loss], updates=opt.updates(loss, [W, b]))
    """

    def __init__(self, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, clip_norm=None, clip_value=None, maximize=False):
        super().__init__(lr, weight_decay, clip_norm, clip_value, maximize)
        self.alpha = _number(alpha, "alpha value")
        self.eps = _number(eps, "epsilon value")
        self.momentum = _number(momentum, "momentum value")
        self.centered = bool(centered)

    def _update(self, p, g, step):
        lr = _coefficient(step.lr, p.dtype)
        g = self._with_weight_decay(p, g)
        square_avg = self._slot(p, "square_avg")
        new_square_avg = self.alpha * square_avg + (1 - self.alpha) * (g * g)
        pairs = [(square_avg, new_square_avg)]
        if self.centered:
            grad_avg = self._slot(p, "grad_avg")
            new_grad_avg = self.alpha * grad_avg + (1 - self.alpha) * g
            pairs.append((grad_avg, new_grad_avg))
            avg = sqrt(new_square_avg - new_grad_avg * new_grad_avg) + self.eps
        else:
            avg = sqrt(new_square_avg) + self.eps
        if self.momentum > 0:
            buf = self._slot(p, "momentum_buffer")
            new_buf = self.momentum * buf + g / avg
            return pairs + [(buf, new_buf), (p, p - lr * new_buf)]
        return pairs + [(p, p - lr * (g / avg))]


RMSprop = RMSProp   # PyTorch's spelling


class Adadelta(Optimizer):
    """Adadelta: steps in the units of the parameters, from running averages.

    torch.optim.Adadelta, with g = grad + lambda theta:
        v_t = rho v_{t-1} + (1 - rho) g^2
        Delta = sqrt(u_{t-1} + eps) / sqrt(v_t + eps) * g
        u_t = rho u_{t-1} + (1 - rho) Delta^2
        theta <- theta - lr Delta
    Course: eq. 19 (r = v, d = u, p = rho, delta = eps inside both roots) omits the factor g in
    Delta -- a typo: without it the step does not depend on the gradient's sign. PyTorch's
    extra lr (default 1.0) scales the step.

    Example:
        >>> opt = gd.optim.Adadelta(rho=0.9)
        >>> step = gd.function([x, y], [loss], updates=opt.updates(loss, [W, b]))
    """

    def __init__(self, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, clip_norm=None,
                 clip_value=None, maximize=False):
        super().__init__(lr, weight_decay, clip_norm, clip_value, maximize)
        self.rho = _number(rho, "rho value", high=1.0)
        self.eps = _number(eps, "epsilon value")

    def _update(self, p, g, step):
        lr = _coefficient(step.lr, p.dtype)
        g = self._with_weight_decay(p, g)
        square_avg = self._slot(p, "square_avg")
        acc_delta = self._slot(p, "acc_delta")
        new_square_avg = self.rho * square_avg + (1 - self.rho) * (g * g)
        delta = sqrt(acc_delta + self.eps) / sqrt(new_square_avg + self.eps) * g
        new_acc_delta = self.rho * acc_delta + (1 - self.rho) * (delta * delta)
        return [(square_avg, new_square_avg), (acc_delta, new_acc_delta),
                (p, p - lr * delta)]


class Adagrad(Optimizer):
    """Adagrad: divide by the root of the sum of all squared gradients so far.

    torch.optim.Adagrad, with g = grad + lambda theta:
        clr = lr / (1 + (t - 1) lr_decay)
        s_t = s_{t-1} + g^2            (s_0 = initial_accumulator_value)
        theta <- theta - clr g / (sqrt(s_t) + eps)
    Course: not among eqs. 12-24 (named in the learning-rate section); it is RMSProp
    (eq. 17) with a sum in place of the running average.

    Example:
        >>> opt = gd.optim.Adagrad(lr=0.01)
        >>> step = gd.function([x, y], [loss], updates=opt.updates(loss, [W, b]))
    """

    def __init__(self, lr=0.01, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 eps=1e-10, clip_norm=None, clip_value=None, maximize=False):
        super().__init__(lr, weight_decay, clip_norm, clip_value, maximize)
        self.lr_decay = _number(lr_decay, "lr_decay value")
        self.initial_accumulator_value = _number(initial_accumulator_value,
                                                 "initial_accumulator_value")
        self.eps = _number(eps, "epsilon value")

    def _update(self, p, g, step):
        clr = step.lr / (1 + (step.t - 1) * self.lr_decay) if self.lr_decay else step.lr
        clr = _coefficient(clr, p.dtype)
        g = self._with_weight_decay(p, g)
        total = self._slot(p, "sum", fill=self.initial_accumulator_value)
        new_total = total + g * g
        return [(total, new_total), (p, p - clr * (g / (sqrt(new_total) + self.eps)))]


class Adam(Optimizer):
    """Adam: bias-corrected running moments of the gradient and of its square.

    torch.optim.Adam, with g = grad + lambda theta (coupled L2 decay):
        m_t = beta1 m_{t-1} + (1 - beta1) g;   v_t = beta2 v_{t-1} + (1 - beta2) g^2
        amsgrad: v^max_t = max(v^max_{t-1}, v_t), used in place of v_t below
        theta <- theta - lr / (1 - beta1^t) * m_t / (sqrt(v_t) / sqrt(1 - beta2^t) + eps)
    Course: eqs. 20-22 are the moments and the bias corrections; eq. 23 puts delta inside
    the root, sqrt(m2^ + delta); PyTorch adds eps outside: sqrt(v^) + eps.

    Example:
        >>> opt = gd.optim.Adam(lr=1e-3, betas=(0.9, 0.999))
        >>> step = gd.function([x, y], [loss], updates=opt.updates(loss, [W, b]))
    """

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                 clip_norm=None, clip_value=None, maximize=False):
        super().__init__(lr, weight_decay, clip_norm, clip_value, maximize)
        beta1, beta2 = betas
        self.betas = (_number(beta1, "beta parameter at index 0", high=1.0, high_open=True),
                      _number(beta2, "beta parameter at index 1", high=1.0, high_open=True))
        self.eps = _number(eps, "epsilon value")
        self.amsgrad = bool(amsgrad)

    def _adam_pairs(self, p, g, step, start):
        """Moments and the new param value, from `start` (theta, or decayed theta)."""
        beta1, beta2 = self.betas
        exp_avg = self._slot(p, "exp_avg")
        exp_avg_sq = self._slot(p, "exp_avg_sq")
        new_exp_avg = beta1 * exp_avg + (1 - beta1) * g
        new_exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * (g * g)
        pairs = [(exp_avg, new_exp_avg), (exp_avg_sq, new_exp_avg_sq)]
        second = new_exp_avg_sq
        if self.amsgrad:
            max_sq = self._slot(p, "max_exp_avg_sq")
            second = maximum(max_sq, new_exp_avg_sq)
            pairs.append((max_sq, second))
        step_size = _coefficient(step.lr / (1 - beta1 ** step.t), p.dtype)
        correction2_sqrt = cast(sqrt(1 - beta2 ** step.t), p.dtype)
        denom = sqrt(second) / correction2_sqrt + self.eps
        return pairs + [(p, start - step_size * (new_exp_avg / denom))]

    def _update(self, p, g, step):
        return self._adam_pairs(p, self._with_weight_decay(p, g), step, p)


class AdamW(Adam):
    """AdamW: Adam with weight decay decoupled from the gradient.

    torch.optim.AdamW:
        theta <- theta (1 - lr lambda)          (lambda = weight_decay, default 1e-2)
        then the Adam step of the plain gradient (no lambda theta added to g)
    Course: eq. 24, theta <- theta - eta (m1^ / sqrt(m2^ + delta) + lambda theta), is the
    same rule with eps inside the root (as in eq. 23); PyTorch puts eps outside.

    Example:
        >>> opt = gd.optim.AdamW(lr=1e-3, weight_decay=1e-2)
        >>> step = gd.function([x, y], [loss], updates=opt.updates(loss, [W, b]))
    """

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, clip_norm=None, clip_value=None, maximize=False):
        super().__init__(lr, betas, eps, weight_decay, amsgrad, clip_norm, clip_value,
                         maximize)

    def _update(self, p, g, step):
        if not self.weight_decay:
            return self._adam_pairs(p, g, step, p)
        decayed = p * _coefficient(1 - step.lr * self.weight_decay, p.dtype)
        return self._adam_pairs(p, g, step, decayed)
