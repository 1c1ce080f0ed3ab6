"""The reference backend: a NumPy interpreter of the graph (the ground truth)."""

from graphdl.codegen.reference.interpreter import Program, compile_program

__all__ = ["Program", "compile_program"]
