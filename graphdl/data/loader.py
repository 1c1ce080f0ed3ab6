"""Mini-batches from in-memory arrays: :class:`DataLoader`.

The loader runs on the host in NumPy. Each epoch draws its order and the randomness of
``transform`` from ``numpy.random.default_rng(seed + epoch)``, so a run is reproducible and
can be resumed at any epoch with :meth:`DataLoader.set_epoch`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator

import numpy as np

from graphdl.data.datasets import Dataset

__all__ = ["DataLoader"]


class DataLoader:
    """Iterate over ``(xb, yb)`` NumPy mini-batches of a :class:`Dataset` or an ``(X, y)`` pair.

    Formula: epoch ``e`` visits ``permutation(n)`` from ``default_rng(seed + e)`` (or
    ``0 .. n-1`` when ``shuffle=False``) in slices of ``batch_size``; ``len(loader)`` is
    ``ceil(n / batch_size)``, or ``floor`` with ``drop_last``. Each ``for`` loop over the
    loader is one epoch and advances the epoch counter; with ``infinite=True`` one loop runs
    through epoch after epoch, reshuffling each time. ``transform(xb, rng)`` (for example a
    :mod:`graphdl.data.augment` pipeline) is applied to each input batch with that epoch's
    generator; batches are copies, so a transform may modify them in place.

    Example::

        loader = DataLoader((X_train, y_train), batch_size=64, transform=HorizontalFlip())
        for epoch in range(10):
            for xb, yb in loader:
                (loss,) = step(xb, yb)
    """

    def __init__(
        self,
        dataset,
        batch_size: int = 32,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        infinite: bool = False,
        transform: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
    ):
        if isinstance(dataset, tuple) and len(dataset) == 2:
            dataset = Dataset(*dataset)
        if not isinstance(dataset, Dataset):
            raise ValueError("DataLoader takes a Dataset or an (X, y) tuple, got "
                             f"{type(dataset).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or (
                batch_size < 1):
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        if transform is not None and not callable(transform):
            raise ValueError(f"transform must be callable as transform(xb, rng), got {transform!r}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.infinite = bool(infinite)
        self.transform = transform
        self.epoch = 0
        if len(self) == 0:
            raise ValueError(f"the loader yields no batch: {len(dataset)} samples, "
                             f"batch_size={batch_size}, drop_last={drop_last}")

    def __len__(self) -> int:
        """Batches per epoch (an infinite loader repeats this many per epoch)."""
        n = len(self.dataset)
        if self.drop_last:
            return n // self.batch_size
        return math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next loop over the loader be epoch ``epoch`` (for resuming a run).

        Formula: the next epoch uses ``default_rng(seed + epoch)``.

        Example::

            loader.set_epoch(checkpoint["epoch"])
        """
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ValueError(f"epoch must be an integer >= 0, got {epoch!r}")
        self.epoch = int(epoch)

    def _one_epoch(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng(self.seed + self.epoch)
        n = len(self.dataset)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        self.epoch += 1
        for b in range(len(self)):
            index = order[b * self.batch_size:(b + 1) * self.batch_size]
            xb, yb = self.dataset[index]
            if self.transform is not None:
                xb = self.transform(xb, rng)
            yield xb, yb

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if not self.infinite:
            return self._one_epoch()
        return self._forever()

    def _forever(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while True:
            yield from self._one_epoch()

    def __repr__(self) -> str:
        return (f"DataLoader({len(self.dataset)} samples, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, seed={self.seed}, epoch={self.epoch})")
