"""Imports flow downwards (STYLE.md section 1), and graphdl.codegen is this repository's."""

import ast
import os
import pathlib

import graphdl

ROOT = pathlib.Path(__file__).resolve().parent.parent

# module (relative path) -> graphdl modules it must not import
FORBIDDEN = {
    "graphdl/graph.py": ("graphdl.ops", "graphdl.autodiff", "graphdl.function", "graphdl.nn",
                         "graphdl.optim", "graphdl.codegen"),
    "graphdl/shapes.py": ("graphdl.graph", "graphdl.ops", "graphdl.codegen"),
    "graphdl/errors.py": ("graphdl.",),
}
CODEGEN_FORBIDDEN = ("graphdl.nn", "graphdl.optim", "graphdl.losses", "graphdl.function",
                     "graphdl.train", "graphdl.data")


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_low_layers_import_nothing_above_them():
    for rel, forbidden in FORBIDDEN.items():
        bad = [m for m in _imports(ROOT / rel) if m.startswith(forbidden)]
        assert not bad, f"{rel} imports {bad}"


def test_ops_import_only_graph_shapes_errors_and_ops():
    allowed = ("graphdl.graph", "graphdl.shapes", "graphdl.errors", "graphdl.ops")
    for path in (ROOT / "graphdl" / "ops").glob("*.py"):
        bad = [m for m in _imports(path) if m.startswith("graphdl") and not m.startswith(allowed)]
        assert not bad, f"{path.name} imports {bad}"


def test_codegen_never_imports_nn_or_optim():
    for path in (ROOT / "codegen").rglob("*.py"):
        bad = [m for m in _imports(path) if m.startswith(CODEGEN_FORBIDDEN)]
        assert not bad, f"{path} imports {bad}"


def test_graphdl_codegen_resolves_into_this_repository():
    import graphdl.codegen
    import graphdl.codegen.reference
    here = os.path.realpath(graphdl.codegen.__file__)
    assert here.startswith(os.path.realpath(ROOT / "codegen")) or \
        here.startswith(os.path.realpath(pathlib.Path(graphdl.__file__).parent)), here


def test_every_package_is_listed_in_pyproject():
    text = (ROOT / "pyproject.toml").read_text()
    for init in list((ROOT / "graphdl").rglob("__init__.py")) + \
            list((ROOT / "codegen").rglob("__init__.py")):
        rel = init.parent.relative_to(ROOT).parts
        name = ".".join(("graphdl",) + rel) if rel[0] == "codegen" else ".".join(rel)
        assert f'"{name}"' in text, f"{name} is missing from pyproject's package list"
