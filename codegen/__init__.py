"""Backends that turn a graphdl graph into running code; installed as `graphdl.codegen`.

- `reference`: the NumPy interpreter, ground truth for every other backend.
"""
