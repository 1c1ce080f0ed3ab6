"""graphdl: a define-then-run deep-learning compiler.

Declare a model as a static graph of ops, ask for its gradients (derived by sympy and
readable with `gd.explain`), and run it as compiled code:

    >>> import graphdl as gd
    >>> x = gd.input("x", (None, 64))
    >>> W = gd.param("W", (64, 10), init=gd.init.xavier_uniform())
    >>> loss = gd.losses.cross_entropy(x @ W, gd.input("y", (None,), dtype="int64"))
    >>> gW = gd.grad(loss, W)

See README.md for the two commands a newcomer runs, and API.md for the public names.
"""

from __future__ import annotations

import importlib.util as _importlib_util
import os as _os
import sys as _sys

__version__ = "0.1.0"


def _locate_codegen():
    """Make `graphdl.codegen` importable from a source checkout that was not installed.

    Installed, setuptools maps the folder codegen/ to graphdl.codegen (pyproject.toml). Run
    from a plain checkout, the folder sits beside graphdl/; register it under its package
    name so that `python -m pytest` from the repository root works before any install.
    """
    if _importlib_util.find_spec("graphdl.codegen") is not None:
        return
    root = _os.path.join(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))),
                         "codegen")
    init = _os.path.join(root, "__init__.py")
    if not _os.path.exists(init):
        return
    spec = _importlib_util.spec_from_file_location("graphdl.codegen", init,
                                                   submodule_search_locations=[root])
    module = _importlib_util.module_from_spec(spec)
    _sys.modules["graphdl.codegen"] = module
    spec.loader.exec_module(module)
    globals()["codegen"] = module  # what the import system does for a found subpackage


_locate_codegen()

from graphdl.errors import (ArgumentError, BackendUnavailable, DTypeError,  # noqa: E402
                            NotDifferentiableError, ShapeError, UnsupportedExpr)
from graphdl.shapes import Dim  # noqa: E402
from graphdl.graph import Graph, Tensor, constant, input, param, state  # noqa: E402,A004
from graphdl.ops import *  # noqa: E402,F401,F403
from graphdl.ops import __all__ as _ops_all  # noqa: E402
from graphdl.autodiff import grad  # noqa: E402
from graphdl.function import (Executable, Updates, clear_cache, function,  # noqa: E402
                              get_num_threads, set_flush_denormal, set_num_threads)
from graphdl.random import seed  # noqa: E402
from graphdl import data, init, losses, metrics, optim, regularizers, schedules, select  # noqa: E402,E501
from graphdl.explain import explain, to_dot  # noqa: E402
from graphdl.dot import print_graph  # noqa: E402
from graphdl.html import to_html  # noqa: E402
from graphdl.nanguard import NaNError  # noqa: E402
from graphdl.gradcheck import check_grad  # noqa: E402
from graphdl import checkpoint, nn, train  # noqa: E402
from graphdl.checkpoint import load, save  # noqa: E402
from graphdl.train import EarlyStopping, History, Trainer, fit  # noqa: E402

__all__ = [
    "ArgumentError", "BackendUnavailable", "DTypeError", "NotDifferentiableError",
    "ShapeError", "UnsupportedExpr", "Dim", "Graph", "Tensor", "constant", "input", "param",
    "state", "grad", "function", "Executable", "Updates", "set_num_threads", "get_num_threads",
    "set_flush_denormal", "clear_cache", "seed", "init", "losses", "optim",
    "regularizers", "data", "metrics", "schedules", "select", "Trainer", "fit", "History",
    "EarlyStopping", "save", "load", "train", "checkpoint", "nn", "explain", "to_dot", "check_grad",
    "print_graph", "to_html", "NaNError", *_ops_all,
]
