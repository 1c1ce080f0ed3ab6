"""Static shapes with named symbolic dimensions, NumPy broadcasting, and dtype promotion.

A shape is a tuple whose entries are ints or `Dim`s. `None` in a user's shape is the batch
dimension `Dim("batch")`; a string names another symbolic dimension (`("T", 28)`). Every
symbolic dimension of one name is the same size at a call; compiled code is specialized per
concrete size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphdl.errors import dtype_error, shape_error

DTYPES = ("bool", "int64", "float32", "float64")
FLOAT_DTYPES = ("float32", "float64")
DEFAULT_FLOAT = "float32"


@dataclass(frozen=True)
class Dim:
    """A named symbolic dimension, bound to a concrete size when a function is called."""

    name: str

    def __repr__(self) -> str:
        return "None" if self.name == "batch" else repr(self.name)


BATCH = Dim("batch")
Shape = tuple  # tuple[int | Dim, ...]


def as_shape(shape) -> Shape:
    """Normalize a user's shape: ints stay, `None` is the batch, a string names a Dim."""
    if isinstance(shape, (int, np.integer)) or shape is None or isinstance(shape, str):
        shape = (shape,)
    out = []
    for d in tuple(shape):
        if d is None:
            out.append(BATCH)
        elif isinstance(d, Dim):
            out.append(d)
        elif isinstance(d, str):
            out.append(Dim(d))
        elif isinstance(d, (int, np.integer)) and int(d) >= 0:
            out.append(int(d))
        else:
            raise shape_error(f"invalid dimension {d!r} in shape {shape!r}: use an int >= 0, "
                              "None (the batch) or a name")
    return tuple(out)


def format_shape(shape: Shape) -> str:
    """Shape as text, with `None` for the batch and names for other symbolic dimensions."""
    inner = ", ".join(repr(d) if isinstance(d, Dim) else str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def is_static(shape: Shape) -> bool:
    """True when every dimension is a concrete int."""
    return all(isinstance(d, int) for d in shape)


def broadcast_shapes(*shapes: Shape, what: str = "operands") -> Shape:
    """NumPy broadcasting over static and symbolic dimensions; a mismatch is a ShapeError."""
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for axis in range(ndim):
        dims = [s[axis - ndim + len(s)] for s in shapes if axis - ndim + len(s) >= 0]
        result = 1
        for d in dims:
            if d == 1:
                continue
            if result == 1 or result == d:
                result = d
            else:
                listed = " and ".join(format_shape(s) for s in shapes)
                raise shape_error(f"cannot broadcast {what} of shapes {listed}: "
                                  f"dimension {d!r} does not match {result!r}")
        out.append(result)
    return tuple(out)


def normalize_axes(axis, ndim: int) -> tuple:
    """Axis argument (None, int or tuple) -> sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        a = int(a)
        if not -ndim <= a < ndim:
            raise shape_error(f"axis {a} is out of range for a tensor of {ndim} dimensions")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise shape_error(f"repeated axis in {axis!r}")
    return tuple(sorted(out))


def as_dtype(dtype) -> str:
    """Normalize a dtype (string, NumPy dtype or type) to one of graphdl's names."""
    if dtype is None:
        return DEFAULT_FLOAT
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    aliases = {"float": "float32", "int": "int64", "bool_": "bool"}
    name = aliases.get(name, name)
    if name not in DTYPES:
        raise dtype_error(f"unsupported dtype {dtype!r}: graphdl has {', '.join(DTYPES)}")
    return name


def promote(*dtypes: str) -> str:
    """The widest of several dtypes, in the order bool < int64 < float32 < float64."""
    return max(dtypes, key=DTYPES.index)


def bind_dims(shape: Shape, sizes: dict) -> tuple:
    """Replace symbolic dimensions by their bound sizes."""
    return tuple(sizes[d.name] if isinstance(d, Dim) else d for d in shape)
