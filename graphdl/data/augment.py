"""Data augmentation for image batches ``(N, C, H, W)``, as seeded NumPy transforms.

Each augmentation is a callable ``(x, rng) -> x`` taking a float batch and a
``numpy.random.Generator``; it draws random parameters per sample and returns a new array of
the same shape and dtype. :class:`Compose` chains them, and the result is meant for the
``transform=`` hook of :class:`graphdl.data.DataLoader`::

    augment = Compose([HorizontalFlip(), Rotate(15), Shift(0.1), Cutout(8)])
    loader = DataLoader((X, y), batch_size=128, transform=augment)

Why augmentation lives in the loader and not in the model graph: the data pipeline already
runs on the host, where drawing fresh random geometry per sample and per epoch is cheap;
keeping it out of the compiled graph keeps that graph static (the same shapes and ops at every
step, so it is compiled once and cached) and keeps evaluation free of augmentation without
a second graph. Geometry (:class:`Rotate`, :class:`Scale`, :class:`Shift`) is inverse-mapped
bilinear sampling written in NumPy, with zeros outside the image; there is no SciPy
dependency. The functional forms :func:`rotate`, :func:`zoom` and :func:`translate` apply
given (not random) parameters.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "Compose", "HorizontalFlip", "VerticalFlip", "Rotate", "Scale", "Shift", "ColorJitter",
    "GaussianNoise", "Cutout", "rotate", "zoom", "translate",
]

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _images(x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"augmentations take image batches (N, C, H, W), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"augmentations take float images, got dtype {x.dtype}; "
                         "convert with x.astype(np.float32)")
    return x


def _per_sample(value, n: int, name: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0:
        return np.full(n, float(array))
    if array.shape != (n,):
        raise ValueError(f"{name} must be a number or one value per sample ({n}), "
                         f"got shape {array.shape}")
    return array


# ------------------------------------------------------------------- bilinear warping


def _bilinear(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Sample ``x`` (N, C, H, W) at float positions ``rows, cols`` (N, H*W); zero outside."""
    n, channels, height, width = x.shape
    # Positions within 1e-6 of a pixel are snapped so that exact geometry (90 degrees,
    # integer shifts) reproduces pixels exactly instead of blending in ~1e-16 of a neighbour.
    rows = np.where(np.abs(rows - np.rint(rows)) < 1e-6, np.rint(rows), rows)
    cols = np.where(np.abs(cols - np.rint(cols)) < 1e-6, np.rint(cols), cols)
    row0 = np.floor(rows).astype(np.int64)
    col0 = np.floor(cols).astype(np.int64)
    row_frac = rows - row0
    col_frac = cols - col0
    flat = x.reshape(n, channels, height * width).astype(np.float64)
    out = np.zeros((n, channels, rows.shape[1]))
    for d_row, w_row in ((0, 1.0 - row_frac), (1, row_frac)):
        for d_col, w_col in ((0, 1.0 - col_frac), (1, col_frac)):
            r = row0 + d_row
            c = col0 + d_col
            inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            weight = np.where(inside, w_row * w_col, 0.0)
            index = np.clip(r, 0, height - 1) * width + np.clip(c, 0, width - 1)
            values = np.take_along_axis(flat, index[:, None, :], axis=2)
            out += values * weight[:, None, :]
    return out


def _warp(x: np.ndarray, matrix: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Inverse map: output pixel ``q`` reads ``matrix @ (q - centre) + centre + offset``.

    ``matrix`` is (N, 2, 2) and ``offset`` (N, 2), both in (row, column) order."""
    height, width = x.shape[2:]
    centre = np.array([(height - 1) / 2.0, (width - 1) / 2.0])
    grid_rows, grid_cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    grid = np.stack([grid_rows.ravel(), grid_cols.ravel()], axis=0) - centre[:, None]
    source = matrix @ grid + (centre + offset)[:, :, None]  # (N, 2, H*W)
    out = _bilinear(x, source[:, 0], source[:, 1])
    return out.reshape(x.shape).astype(x.dtype)


def rotate(x, degrees) -> np.ndarray:
    """Rotate each image counter-clockwise by ``degrees`` about its centre (zero fill).

    Formula: output pixel ``(r, c)`` reads the input at
    ``(cy + cos t (r - cy) + sin t (c - cx), cx - sin t (r - cy) + cos t (c - cx))``,
    bilinearly; ``90`` equals ``np.rot90`` on the last two axes.

    Example::

        rotated = rotate(images, 30.0)               # or one angle per image
    """
    x = _images(x)
    theta = np.deg2rad(_per_sample(degrees, x.shape[0], "degrees"))
    cos, sin = np.cos(theta), np.sin(theta)
    matrix = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], axis=1)
    return _warp(x, matrix, np.zeros((x.shape[0], 2)))


def zoom(x, factor) -> np.ndarray:
    """Scale each image about its centre by ``factor`` (> 1 enlarges; zero fill).

    Formula: output pixel ``q`` reads the input at ``centre + (q - centre) / factor``.

    Example::

        enlarged = zoom(images, 1.2)
    """
    x = _images(x)
    factor = _per_sample(factor, x.shape[0], "factor")
    if np.any(factor <= 0):
        raise ValueError(f"zoom factors must be > 0, got {factor.min()}")
    matrix = np.eye(2)[None] / factor[:, None, None]
    return _warp(x, matrix, np.zeros((x.shape[0], 2)))


def translate(x, dy, dx) -> np.ndarray:
    """Move each image ``dy`` pixels down and ``dx`` pixels right (zero fill).

    Formula: ``out[r, c] = x[r - dy, c - dx]`` (bilinear for fractional shifts).

    Example::

        moved = translate(images, 1, -2)
    """
    x = _images(x)
    n = x.shape[0]
    offset = -np.stack([_per_sample(dy, n, "dy"), _per_sample(dx, n, "dx")], axis=1)
    return _warp(x, np.broadcast_to(np.eye(2), (n, 2, 2)), offset)


# -------------------------------------------------------------------- random transforms


def _probability(p) -> float:
    if not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
    return float(p)


def _non_negative(value, name: str) -> float:
    if not isinstance(value, numbers.Real) or not value >= 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


class _Augmentation:
    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={value!r}" for key, value in vars(self).items())
        return f"{type(self).__name__}({fields})"


class Compose(_Augmentation):
    """Apply augmentations in order, all drawing from the same generator.

    Formula: ``Compose([f, g])(x, rng) = g(f(x, rng), rng)``

    Example::

        augment = Compose([HorizontalFlip(), GaussianNoise(0.05)])
        xb = augment(xb, np.random.default_rng(0))
    """

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise ValueError(f"Compose takes callables (x, rng) -> x, got {t!r}")

    def __call__(self, x, rng: np.random.Generator) -> np.ndarray:
        for t in self.transforms:
            x = t(x, rng)
        return x


class HorizontalFlip(_Augmentation):
    """Mirror each image left-right with probability ``p``.

    Formula: ``out[n, :, r, c] = x[n, :, r, W - 1 - c]`` for the chosen samples.

    Example::

        xb = HorizontalFlip(p=0.5)(xb, rng)
    """

    _axis = -1

    def __init__(self, p: float = 0.5):
        self.p = _probability(p)

    def __call__(self, x, rng: np.random.Generator) -> np.ndarray:
        x = _images(x)
        chosen = rng.random(x.shape[0]) < self.p
        out = x.copy()
        out[chosen] = np.flip(x[chosen], axis=self._axis)
        return out


class VerticalFlip(HorizontalFlip):
    """Mirror each image top-bottom with probability ``p``.

    Formula: ``out[n, :, r, c] = x[n, :, H - 1 - r, c]`` for the chosen samples.

    Example::

        xb = VerticalFlip(p=0.5)(xb, rng)
    """

    _axis = -2


def _range(value, name: str, symmetric_from_zero: bool) -> tuple[float, float]:
    """A number ``m`` means ``(-m, m)``; a pair ``(lo, hi)`` is taken as is."""
    if isinstance(value, numbers.Real):
        bound = _non_negative(value, name)
        return (-bound, bound) if symmetric_from_zero else (bound, bound)
    low, high = value
    if not low <= high:
        raise ValueError(f"{name} range must be (low, high) with low <= high, got {value!r}")
    return float(low), float(high)


class Rotate(_Augmentation):
    """Rotate each image by an angle drawn uniformly from ``[-max_degrees, max_degrees]``.

    Formula: :func:`rotate` with ``degrees ~ U(-m, m)`` per sample; ``max_degrees`` may also
    be a range ``(low, high)`` (``(90, 90)`` always rotates by 90 degrees).

    Example::

        xb = Rotate(15)(xb, rng)
    """

    def __init__(self, max_degrees):
        self.degrees = _range(max_degrees, "max_degrees", symmetric_from_zero=True)

    def __call__(self, x, rng: np.random.Generator) -> np.ndarray:
        x = _images(x)
        return rotate(x, rng.uniform(*self.degrees, size=x.shape[0]))


class Scale(_Augmentation):
    """Zoom each image by a factor drawn uniformly from ``[min_scale, max_scale]``.

    Formula: :func:`zoom` with ``factor ~ U(min_scale, max_scale)`` per sample.

    Example::

        xb = Scale(0.9, 1.1)(xb, rng)
    """

    def __init__(self, min_scale: float, max_scale: float):
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"Scale needs 0 < min_scale <= max_scale, got ({min_scale!r}, "
                             f"{max_scale!r})")
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)

    def __call__(self, x, rng: np.random.Generator) -> np.ndarray:
        x = _images(x)
        return zoom(x, rng.uniform(self.min_scale, self.max_scale, size=x.shape[0]))


class Shift(_Augmentation):
    """Translate each image by a whole number of pixels in each direction.

    Formula: :func:`translate` with ``dy, dx`` drawn uniformly from the integers in
    ``[-m, m]``; ``max_shift`` is ``m`` in pixels when an integer, or a fraction of the image
    height and width when a float in ``[0, 1)`` (``m = round(fraction * size)``).

    Example::

        xb = Shift(2)(xb, rng)             # up to 2 pixels
        xb = Shift(0.1)(xb, rng)           # up to 10% of the size
    """

    def __init__(self, max_shift):
        if isinstance(max_shift, bool) or not isinstance(max_shift, numbers.Real):
            raise ValueError(f"max_shift must be pixels (int) or a fraction, got {max_shift!r}")
        if isinstance(max_shift, numbers.Integral):
            if max_shift < 0:
                raise ValueError(f"max_shift must be >= 0 pixels, got {max_shift}")
        elif not 0.0 <= max_shift < 1.0:
            raise ValueError(f"a fractional max_shift must be in [0, 1), got {max_shift!r}; "
                             "pass an int for pixels")
        self.max_shift = max_shift

    def __call__(self, x, rng: np.random.Generator) -> np.ndarray:
        x = _images(x)
        n, _, height, width = x.shape
        if isinstance(self.max_shift, numbers.Integral):
            max_dy = max_dx = int(self.max_shift)
        else:
            max_dy = round(self.max_shift * height)
            max_dx = round(self.max_shift * width)
        dy = rng.integers(-max_dy, max_dy + 1, size=n)
        dx = rng.integers(-max_dx, max_dx + 1, size=n)
        return translate(x, dy, dx)


class ColorJitter(_Augmentation):
    """Randomly change brightness and contrast per sample (no clipping).

    Formula: ``b ~ U(max(0, 1 - brightness), 1 + brightness)``, ``x <- b x``; then
    ``c ~ U(max(0, 1 - contrast), 1 + contrast)``, ``x <- c (x - mean) + mean`` with the
    sample's mean over channels and pixels (torchvision's factor ranges).

    Example::

        xb = ColorJitter(brightness=0.2, contrast=0.2)(xb, rng)
    """

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0):
        self.brightness = _non_negative(brightness, "brightness")
        self.contrast = _non_negative(contrast, "contrast")

    def __call__(self, x, rng: np.random.Generator) -> np.ndarray:
        x = _images(x)
        n = x.shape[0]
        b = rng.uniform(max(0.0, 1.0 - self.brightness), 1.0 + self.brightness, size=n)
        c = rng.uniform(max(0.0, 1.0 - self.contrast), 1.0 + self.contrast, size=n)
        out = x.astype(np.float64) * b[:, None, None, None]
        mean = out.mean(axis=(1, 2, 3), keepdims=True)
        out = (out - mean) * c[:, None, None, None] + mean
        return out.astype(x.dtype)


class GaussianNoise(_Augmentation):
    """Add independent Gaussian noise to every value.

    Formula: ``x <- x + std * N(0, 1)``

    Example::

        xb = GaussianNoise(0.05)(xb, rng)
    """

    def __init__(self, std: float):
        self.std = _non_negative(std, "std")

    def __call__(self, x, rng: np.random.Generator) -> np.ndarray:
        x = _images(x)
        return (x + self.std * rng.standard_normal(x.shape)).astype(x.dtype)


class Cutout(_Augmentation):
    """Zero ``count`` random ``size x size`` squares in each image, all channels (DeVries &
    Taylor 2017).

    Formula: top-left corner ``(r, c)`` uniform over positions where the square fits in the
    image; ``out[n, :, r:r+size, c:c+size] = 0``. Squares may overlap when ``count > 1``.

    Example::

        xb = Cutout(8, count=1)(xb, rng)
    """

    def __init__(self, size: int, count: int = 1):
        for value, name in ((size, "size"), (count, "count")):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.size, self.count = int(size), int(count)

    def __call__(self, x, rng: np.random.Generator) -> np.ndarray:
        x = _images(x)
        n, _, height, width = x.shape
        if self.size > min(height, width):
            raise ValueError(f"Cutout size {self.size} does not fit {height}x{width} images")
        top = rng.integers(0, height - self.size + 1, size=(n, self.count))
        left = rng.integers(0, width - self.size + 1, size=(n, self.count))
        rows = np.arange(height)[None, None, :]
        cols = np.arange(width)[None, None, :]
        in_rows = (rows >= top[..., None]) & (rows < top[..., None] + self.size)
        in_cols = (cols >= left[..., None]) & (cols < left[..., None] + self.size)
        hole = (in_rows[..., :, None] & in_cols[..., None, :]).any(axis=1)  # (N, H, W)
        return np.where(hole[:, None], 0, x).astype(x.dtype)
