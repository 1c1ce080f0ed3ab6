"""The errors graphdl raises, and how they name the user's own file and line.

Build-time errors (`ShapeError`, `DTypeError`) and gradient errors name the first stack frame
outside graphdl, so the message points at the line of the user's model that is wrong, not at
graphdl's internals. Call-time errors (`ArgumentError`) name the compiled function's input.
"""

from __future__ import annotations

import os
import sys

_PACKAGE_DIRS = (
    os.path.dirname(os.path.abspath(__file__)),
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "codegen"),
)


def _inside_graphdl(filename: str) -> bool:
    path = os.path.abspath(filename)
    return any(path.startswith(d + os.sep) for d in _PACKAGE_DIRS)


def user_site() -> str:
    """Return "file:line" of the innermost stack frame outside graphdl (the user's code)."""
    frame = sys._getframe(1)
    while frame is not None and _inside_graphdl(frame.f_code.co_filename):
        frame = frame.f_back
    if frame is None:
        return "<unknown>"
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


class GraphdlError(Exception):
    """Base class of graphdl's own errors."""


class ShapeError(GraphdlError, ValueError):
    """Shapes that do not fit, raised when the graph is built (names the user's line)."""


class DTypeError(GraphdlError, TypeError):
    """Dtypes that do not fit, raised when the graph is built (names the user's line)."""


class ArgumentError(GraphdlError, ValueError):
    """A compiled function was called with the wrong count, shape, dtype or layout of arrays."""


class NotDifferentiableError(GraphdlError, TypeError):
    """`gd.grad` met an op that has no derivative (a metric such as zero-one loss)."""


class UnsupportedExpr(GraphdlError, NotImplementedError):
    """A backend's printer met a sympy expression class it has no rule for."""


class BackendUnavailable(GraphdlError, RuntimeError):
    """The backend asked for is not installed or not available on this machine."""


def shape_error(message: str) -> ShapeError:
    """A ShapeError whose message ends with the user's file:line."""
    return ShapeError(f"{message}\n  at {user_site()}")


def dtype_error(message: str) -> DTypeError:
    """A DTypeError whose message ends with the user's file:line."""
    return DTypeError(f"{message}\n  at {user_site()}")
