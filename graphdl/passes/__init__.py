"""Graph -> graph rewrites, each a small module with its own tests; `optimize` runs them.

    canonicalize -> simplify -> cse -> dce -> fold_constants -> fuse_elementwise

Each pass takes the output tensors of a graph and returns new outputs computing the same
values; `optimize(outputs, skip=..., check=..., report=...)` runs the pipeline.
"""

from graphdl.passes.canonicalize import canonicalize
from graphdl.passes.cse import cse
from graphdl.passes.dce import dce
from graphdl.passes.fold import fold_constants
from graphdl.passes.fuse import fuse_elementwise
from graphdl.passes.pipeline import PIPELINE, InvalidGraph, optimize, verify
from graphdl.passes.rewrite import RewriteLoop, RuleTable, rewrite_to_fixed_point, rule
from graphdl.passes.simplify import simplify

__all__ = ["PIPELINE", "InvalidGraph", "RewriteLoop", "RuleTable", "canonicalize", "cse", "dce",
           "fold_constants", "fuse_elementwise", "optimize", "rewrite_to_fixed_point", "rule",
           "simplify", "verify"]
