"""One seed for everything random in graphdl: initialization, shuffling, dropout masks.

`gd.seed(n)` resets the global generator that initializers draw from (in declaration
order), so the same script gives the same parameters. Later randomness (dropout masks) is
counter-based on (seed, step, element index) and so reproducible across backends too.
"""

from __future__ import annotations

import numpy as np

_STATE = {"seed": 0, "rng": np.random.default_rng(0)}


def seed(n: int) -> None:
    """Seed every random draw graphdl makes (initializers, loaders, dropout masks).

    Example:
        >>> gd.seed(0)
    """
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"seed must be a non-negative int, got {n!r}")
    _STATE["seed"] = int(n)
    _STATE["rng"] = np.random.default_rng(int(n))
    from graphdl.ops import random as counter_random   # dropout masks (counter-based)
    counter_random.set_seed(int(n))


def current_seed() -> int:
    """The seed last given to gd.seed (0 by default)."""
    return _STATE["seed"]


def generator() -> np.random.Generator:
    """The global generator that initializers draw from."""
    return _STATE["rng"]
