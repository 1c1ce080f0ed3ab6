"""Shared checks for the pass tests: run a graph with the reference interpreter, compare.

Every rewrite test asserts the structure after its pass and the values of the original and
the rewritten graph on the same random inputs (codegen.reference is the ground truth).
"""

import collections

import numpy as np
import pytest
from graphdl.codegen.reference import Program

from graphdl.graph import toposort
from graphdl.shapes import Dim

SPECIALS = (np.nan, np.inf, -np.inf, -0.0, 0.0, 1.0, -1.0, 0.5)
BATCH = 4


class Checker:
    """Run graphs on random inputs and compare them (float64 to 1e-12, float32 to 2e-6)."""

    def inputs(self, outputs):
        return [n for n in toposort(outputs) if n.op == "input"]

    def feeds(self, outputs, seed=0, special=False, positive=False):
        rng = np.random.default_rng(seed)
        out = {}
        for t in self.inputs(outputs):
            shape = tuple(BATCH if isinstance(d, Dim) else d for d in t.shape)
            if t.dtype == "int64":
                a = rng.integers(0, 3, size=shape)
            elif t.dtype == "bool":
                a = rng.random(shape) > 0.5
            else:
                a = np.array(rng.standard_normal(shape) * 2)
                if positive:
                    a = np.abs(a) + 0.1
                if special:
                    flat = a.reshape(-1)            # a view: writes go into a
                    n = min(flat.size, len(SPECIALS))
                    flat[:n] = SPECIALS[:n]
                a = a.astype(t.dtype)
            out[t] = np.array(a, order="C")         # ascontiguousarray would make 0-d 1-d
        return out

    def run(self, outputs, feeds):
        inputs = list(feeds)
        values, _ = Program(inputs, list(outputs), []).run([feeds[t] for t in inputs],
                                                            {"batch": BATCH})
        return [np.asarray(v) for v in values]

    def same(self, before, after, feeds=None, exact=False, **feed_options):
        """Assert both graphs give the same values (bitwise, signed zeros too, if exact)."""
        feeds = feeds if feeds is not None else self.feeds(before, **feed_options)
        for t in self.inputs(after):
            assert t in feeds, f"the rewritten graph has a new input {t!r}"
        got_before = self.run(before, feeds)
        got_after = self.run(after, feeds)
        for a, b, t in zip(got_before, got_after, before):
            assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, a.dtype, b.shape,
                                                               b.dtype)
            if exact or a.dtype.kind not in "f":
                np.testing.assert_array_equal(a, b)
                if a.dtype.kind == "f":
                    real = ~np.isnan(a)              # a NaN's sign bit means nothing
                    np.testing.assert_array_equal(np.signbit(a)[real], np.signbit(b)[real])
            else:
                tol = 1e-12 if a.dtype == np.float64 else 2e-6
                np.testing.assert_allclose(b, a, rtol=tol, atol=tol)
        return got_before

    @staticmethod
    def ops(outputs) -> collections.Counter:
        """How many nodes of each op the graph of `outputs` has."""
        return collections.Counter(n.op for n in toposort(list(outputs)))

    @staticmethod
    def size(outputs) -> int:
        return len(toposort(list(outputs)))


@pytest.fixture
def check():
    return Checker()


@pytest.fixture(params=["float64", "float32"])
def dtype(request):
    return request.param
