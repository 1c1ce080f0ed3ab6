"""Every public op and layer has a docstring whose first line is a summary and which shows
an example (issue 4's "documented with a one-line docstring and an example")."""

import inspect

import pytest

import graphdl as gd
from graphdl import ops

PLUMBING = {"apply", "fused", "all_ops", "get"}      # registry helpers, documented as such


def _public(module, names):
    for name in names:
        obj = getattr(module, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            yield f"{module.__name__}.{name}", obj


OPS = [p for p in _public(ops, ops.__all__) if p[0].rsplit(".", 1)[1] not in PLUMBING]
LAYERS = list(_public(gd.nn, [n for n in dir(gd.nn) if not n.startswith("_")]))


@pytest.mark.parametrize("name,obj", OPS + LAYERS, ids=[n for n, _ in OPS + LAYERS])
def test_public_name_has_a_summary_and_an_example(name, obj):
    doc = inspect.getdoc(obj)
    assert doc, f"{name} has no docstring"
    assert doc.splitlines()[0].strip(), f"{name}: the first line should be a summary"
    assert "Example" in doc or ">>>" in doc, f"{name}: no example in the docstring"


def test_the_new_catalog_names_are_exported():
    for name in ("tensordot", "ps_roi_pool", "ps_roi_align", "deform_conv2d"):
        assert name in ops.__all__ and callable(getattr(gd, name))
