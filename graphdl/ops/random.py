"""Counter-based randomness and the dropout family.

`random_uniform(shape, step, seed)` is a structured op whose element at row-major flat
index i is a pure function of (key, step, i), so every backend computes the same bits:

    key  = mix64(mix64(seed) ^ (stream * GOLDEN))           (at build time, in Python)
    base = mix64(key ^ mix64(step + GOLDEN))                  (once per call)
    z_i  = mix64(base + (i + 1) * GOLDEN)                     (splitmix64's i-th output)
    u_i  = (z_i >> 40) * 2**-24   (float32)   or   (z_i >> 11) * 2**-53   (float64)

with mix64 the splitmix64 finalizer (Steele, Lea and Flood, "Fast splittable pseudorandom
number generators", OOPSLA 2014; constants from Vigna's splitmix64.c) in wrapping uint64
arithmetic. The conversion to [0, 1) is exact, so masks are bit-identical across backends.

Conventions:
- `seed=None` takes the seed set by `set_seed` (gd.seed calls it) and a fresh *stream*
  number per call, so two dropout layers of one model draw different masks; streams (and
  the shared step counter) restart at 0 on each `set_seed`, so rebuilding a model after
  gd.seed(n) gives the same masks. An explicit `seed=` uses stream 0: the mask is then a
  function of (seed, step, index) only.
- `step` is an int64 scalar tensor that must advance between training calls. By default
  every random op reads `random_step()`, one state scalar shared by the whole process (any
  training function that applies its update advances it); `random_updates(outputs)` gives
  the update pair (random_step, random_step + 1) to pass to gd.function, so each call of a
  training step draws new masks. A constant int or an int64 input may be given instead.
- `training=False` makes every dropout variant the identity.
"""

from __future__ import annotations

import numpy as np

from graphdl.errors import dtype_error, shape_error
from graphdl.graph import Tensor, as_tensor, constant, state, toposort
from graphdl.ops.conv import _ints, pad, windows
from graphdl.ops.elementwise import apply, cast
from graphdl.ops.registry import structured
from graphdl.ops.structured import dim_size, max, reshape, sum
from graphdl.shapes import FLOAT_DTYPES, as_dtype, as_shape, format_shape

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15       # 2**64 / golden ratio: splitmix64's increment
MIX1 = 0xBF58476D1CE4E5B9         # splitmix64 finalizer multipliers (Vigna, splitmix64.c)
MIX2 = 0x94D049BB133111EB

_SEED = {"seed": 0, "streams": 0, "step": None}


def mix64(z: int) -> int:
    """The splitmix64 finalizer on a Python int (wrapping uint64 arithmetic)."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * MIX1) & MASK64
    z = ((z ^ (z >> 27)) * MIX2) & MASK64
    return z ^ (z >> 31)


def stream_key(seed: int, stream: int) -> int:
    """The 64-bit key of one random stream: mix64(mix64(seed) ^ stream * GOLDEN)."""
    return mix64(mix64(seed) ^ ((stream * GOLDEN) & MASK64))


def set_seed(n: int) -> None:
    """Seed the counter-based streams (gd.seed calls this): restart the stream count and
    set the shared step counter back to 0, so a rebuilt model draws the same masks again.

    Example:
        >>> graphdl.ops.random.set_seed(0)
    """
    _SEED["seed"] = int(n)
    _SEED["streams"] = 0
    if _SEED["step"] is not None:
        _SEED["step"].value = np.array(0, dtype=np.int64)


def random_step() -> Tensor:
    """The shared int64 step counter that random ops read by default (a state scalar).

    Example:
        >>> step = gd.random_step(); step.value
    """
    if _SEED["step"] is None:
        _SEED["step"] = state("random_step", np.array(0, dtype=np.int64))
    return _SEED["step"]


def random_updates(outputs) -> list:
    """(step, step + 1) for every state step counter the random ops of `outputs` read.

    Pass them to gd.function with the other updates so each call draws new masks.

    Example:
        >>> step = gd.function([x, y], [loss], updates=opt.updates(loss, params)
        ...                    + gd.random_updates([loss]))
    """
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    steps = []
    for node in toposort(outputs):
        if node.op == "random_uniform":
            s = node.inputs[0]
            if s.op == "state" and s not in steps:
                steps.append(s)
    return [(s, apply("add", s, 1)) for s in steps]


def _step_tensor(step) -> Tensor:
    if step is None:
        return random_step()
    step = as_tensor(step) if not isinstance(step, (int, np.integer)) else \
        constant(int(step), "int64")
    if step.dtype != "int64" or step.shape != ():
        raise dtype_error(f"the random step must be an int64 scalar, got {step!r}")
    return step


def _key(seed) -> int:
    if seed is not None:
        return stream_key(int(seed), 0)
    stream = _SEED["streams"]
    _SEED["streams"] += 1
    return stream_key(_SEED["seed"], stream + 1)


RANDOM_UNIFORM = structured(
    "random_uniform", vjp=lambda gy, node: (None,),
    doc="Counter-based uniform numbers in [0, 1) from (seed, step, element index)")


def random_uniform(shape, step=None, seed=None, dtype="float32") -> Tensor:
    """Uniform numbers in [0, 1): u[i] = splitmix64(key(seed, stream), step, i) (see module).

    The same (seed, step) gives the same numbers on every backend; `step` defaults to the
    shared counter `random_step()`; `seed=None` uses gd.seed's seed and a new stream.

    Example:
        >>> u = gd.random_uniform((None, 10))
        >>> mask = u >= 0.5
    """
    shape = as_shape(shape)
    dtype = as_dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        raise dtype_error(f"random_uniform makes floats, not {dtype}")
    key = _key(seed)
    return Tensor.make("random_uniform", (_step_tensor(step),), {"key": key, "shape": shape},
                       shape, dtype)


def numpy_random_uniform(key: int, step: int, size: int, dtype: str) -> np.ndarray:
    """The NumPy meaning of random_uniform: `size` numbers of stream `key` at `step`."""
    base = np.uint64(mix64(key ^ mix64((int(step) + GOLDEN) & MASK64)))
    with np.errstate(over="ignore"):
        z = base + (np.arange(1, size + 1, dtype=np.uint64) * np.uint64(GOLDEN))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
        z = z ^ (z >> np.uint64(31))
    if dtype == "float32":
        return (z >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)
    return (z >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)


# -- the dropout family ------------------------------------------------------------------------
def _check_p(p, what) -> float:
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{what}: p must be in [0, 1], got {p}")
    return p


def _float(x, what):
    x = as_tensor(x)
    if x.dtype not in FLOAT_DTYPES:
        raise dtype_error(f"{what} needs a float tensor, got {x.dtype}")
    return x


def _keep(x, u, p):
    """x / (1 - p) where u >= p (kept), else 0."""
    return apply("where", apply("greater_equal", u, p), x * (1.0 / (1.0 - p)), 0.0)


def dropout(x, p: float = 0.5, training: bool = True, seed=None, step=None) -> Tensor:
    """Inverted dropout: y = x / (1 - p) where u >= p, else 0, u ~ U[0, 1) counter-based.

    The identity when training is False; the mask depends only on (seed, step, index), so
    it is the same on every backend (see the module docstring for seed and step).

    Example:
        >>> h = gd.dropout(h, 0.5, training=True)
    """
    x = _float(x, "dropout")
    p = _check_p(p, "dropout")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    return _keep(x, random_uniform(x.shape, step, seed, x.dtype), p)


def drop_connect(w, p: float = 0.5, training: bool = True, seed=None, step=None) -> Tensor:
    """DropConnect: drop weights (not activations), w / (1 - p) where u >= p, else 0.

    One mask per call of the compiled function, shared by the whole batch.

    Example:
        >>> y = x @ gd.drop_connect(W, 0.5, training=True)
    """
    return dropout(w, p, training, seed, step)


_COS_TERMS = 12   # Taylor terms of cos on [-pi, pi]: pi**24 / 24! < 1e-11


def _cos_2pi(u):
    """cos(2 pi u) for u in [0, 1) as a polynomial (the ops have no cos): -cos(2 pi (u - 1/2))."""
    t = (u - 0.5) * (2.0 * np.pi)
    s = t * t
    coeffs = [(-1) ** k / float(np.prod(np.arange(1, 2 * k + 1), dtype=np.float64))
              for k in range(_COS_TERMS)]
    acc = s * coeffs[-1] + coeffs[-2]
    for c in reversed(coeffs[:-2]):
        acc = acc * s + c
    return -acc


def gaussian_dropout(x, p: float = 0.5, training: bool = True, seed=None,
                     step=None) -> Tensor:
    """Multiplicative Gaussian noise: y = x * (1 + sqrt(p / (1 - p)) * z), z ~ N(0, 1).

    z comes from two counter-based uniforms by Box-Muller,
    z = sqrt(-2 log(1 - u1)) * cos(2 pi u2); the identity when training is False.

    Example:
        >>> h = gd.gaussian_dropout(h, 0.3)
    """
    x = _float(x, "gaussian_dropout")
    p = _check_p(p, "gaussian_dropout")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        raise ValueError("gaussian_dropout: p = 1 gives infinite noise")
    u = random_uniform((2,) + tuple(x.shape), step, seed, x.dtype)
    u1, u2 = u[0], u[1]
    z = apply("sqrt", -2.0 * apply("log", 1.0 - u1)) * _cos_2pi(u2)
    return x * (1.0 + float(np.sqrt(p / (1.0 - p))) * z)


def spatial_dropout(x, p: float = 0.5, training: bool = True, seed=None,
                    step=None) -> Tensor:
    """SpatialDropout: drop whole channels of x (N, C, *S), kept ones scaled by 1 / (1 - p).

    y[n, c] = x[n, c] / (1 - p) where u[n, c] >= p, else 0 (torch's dropout2d/3d).

    Example:
        >>> h = gd.spatial_dropout(h, 0.2)
    """
    x = _float(x, "spatial_dropout")
    p = _check_p(p, "spatial_dropout")
    if x.ndim < 3:
        raise shape_error(f"spatial_dropout needs x of shape (N, C, *S), got "
                          f"{format_shape(x.shape)}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    u = random_uniform(x.shape[:2], step, seed, x.dtype)
    return _keep(x, reshape(u, tuple(x.shape[:2]) + (1,) * (x.ndim - 2)), p)


def drop_block(x, p: float = 0.1, block_size=7, training: bool = True, seed=None,
               step=None) -> Tensor:
    """DropBlock (Ghiasi et al., 2018): drop contiguous blocks of each channel of x (N, C, *S).

    Block seeds are Bernoulli(gamma) at the positions where a whole block fits, with
    gamma = p / prod(block) * prod(S) / prod(S - block + 1) (the paper's eq. 1 in d dims);
    each seed drops the block starting at it (a max-pool of the seed mask), and kept values
    are scaled by count / sum(mask), as torchvision.ops.drop_block2d.

    Example:
        >>> h = gd.drop_block(h, 0.1, block_size=3)
    """
    x = _float(x, "drop_block")
    p = _check_p(p, "drop_block")
    d = x.ndim - 2
    if d < 1:
        raise shape_error(f"drop_block needs x of shape (N, C, *S), got "
                          f"{format_shape(x.shape)}")
    if not training or p == 0.0:
        return x
    spatial = tuple(x.shape[2:])
    block = tuple(min(b, s) for b, s in zip(_ints(block_size, d, "block_size"), spatial))
    valid = tuple(s - b + 1 for s, b in zip(spatial, block))
    gamma = p * float(np.prod(spatial)) / (float(np.prod(block)) * float(np.prod(valid)))
    u = random_uniform(tuple(x.shape[:2]) + valid, step, seed, x.dtype)
    seeds = cast(apply("less", u, gamma), x.dtype)
    spread = pad(seeds, [(0, 0), (0, 0)] + [(b - 1, b - 1) for b in block])
    dropped = max(windows(spread, block, 1, 1), axis=tuple(range(2, 2 + d)))
    keep = 1.0 - dropped
    scale = dim_size(keep, None, x.dtype) / (sum(keep) + 1e-6)
    return x * keep * scale


__all__ = [
    "drop_block",
    "drop_connect",
    "dropout",
    "gaussian_dropout",
    "random_step",
    "random_uniform",
    "random_updates",
    "spatial_dropout",
]
