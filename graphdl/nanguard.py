"""NaN/Inf guard: gd.function(..., nan_guard=True) stops at the first node that makes one.

A guarded function checks every value the graph computes, in the order the backend
computes them, forward and backward alike, and raises `NaNError` at the first node whose
output holds a NaN or an infinity: the error names the op, the user's file:line that built
the node, the input shapes and a sample of the inputs at the offending positions. Nothing is
committed when it raises: parameters and optimizer state keep their values from before the
call.

How each backend is checked:

- **reference**: the interpreter calls `observe(node, value)` after each node; the observer
  keeps the values the next nodes still need (by use count) to report the inputs.
- **llvm**: an *instrumented build* (`compile_program(..., instrument=True)`, see
  codegen/llvm/lower.py): the same passes minus elementwise fusion, so each kernel computes
  one node of the graph as the user built it and carries that node's file:line; no update
  is written in place and no loops are merged, so variables are written only by the copies
  at the very end. The guard runs the kernels one by one (as `Compiled.profile` does) and
  checks each kernel's output, read straight from the native buffers, before the next
  kernel runs. The first bad node is therefore found as the native code computes it, and
  the final copies into the variables never run when one is found.

The integration is two calls in graphdl/function.py: `guard_options` adjusts the backend's
compile options, `guarded` wraps the compiled program (its `run` keeps the signature every
program has; any other attribute is the wrapped program's).
"""

from __future__ import annotations

import ctypes

import numpy as np

from graphdl.errors import ArgumentError, BackendUnavailable, GraphdlError
from graphdl.ops.registry import is_elementwise
from graphdl.shapes import format_shape

SAMPLE = 5                       # offending positions shown in the message
_FLOATS = ("float16", "float32", "float64")


class NaNError(GraphdlError, FloatingPointError):
    """A guarded function met a NaN or an infinity (gd.function(..., nan_guard=True)).

    Attributes: `node` (the Tensor), `op`, `site` (the user's file:line), `backend`,
    `input_shapes`, `bad_count` and `first_index` (in the node's output), `samples` (one
    dict per offending position shown: its index, the output value and the inputs' values).
    """

    def __init__(self, message, *, node, backend, input_shapes, bad_count, first_index,
                 samples):
        super().__init__(message)
        self.node = node
        self.op = node.op
        self.site = node.site
        self.backend = backend
        self.input_shapes = input_shapes
        self.bad_count = bad_count
        self.first_index = first_index
        self.samples = samples


# -- integration --------------------------------------------------------------------------
def guard_options(backend: str, options: dict) -> dict:
    """The compile options of a guarded function for `backend` (llvm: the instrumented
    build, without elementwise fusion so each kernel is one op of the user's graph)."""
    if backend == "reference":
        return dict(options)
    if backend == "llvm":
        skip = frozenset(options.get("skip_passes", ())) | {"fuse_elementwise"}
        return {**options, "skip_passes": skip, "instrument": True}
    raise BackendUnavailable(f"nan_guard is not available on the {backend!r} backend")


def guarded(program, backend: str, inputs) -> GuardedProgram:
    """Wrap a compiled program so that every call checks each node's result."""
    return GuardedProgram(program, backend, inputs)


class GuardedProgram:
    """A backend program whose `run` raises NaNError at the first non-finite value."""

    def __init__(self, program, backend: str, inputs):
        self.program = program
        self.backend = backend
        self.inputs = tuple(inputs)

    @property
    def applies_updates(self) -> bool:
        return self.program.applies_updates

    def run(self, arrays, sizes):
        """(outputs, update values or None), as the wrapped program's run."""
        if self.backend == "reference":
            return self.program.run(arrays, sizes, observe=_Observer(self.program, arrays))
        return run_instrumented(self.program.for_sizes(sizes), arrays), None

    def __getattr__(self, name):          # history, for_sizes, ... of the wrapped program
        return getattr(self.program, name)


# -- reference backend -----------------------------------------------------------------------
class _Observer:
    """`observe(node, value)` for the reference interpreter: check, then keep the value as
    long as a later node reads it (so an error can show the offending inputs)."""

    def __init__(self, program, arrays):
        self.values = dict(zip(program.inputs, arrays))
        self.uses: dict = {}
        for node in program.nodes:
            for p in node.inputs:
                self.uses[p] = self.uses.get(p, 0) + 1

    def __call__(self, node, value) -> None:
        inputs = [self._value(p) for p in node.inputs]
        check(node, value, inputs, "reference")
        self.values[node] = value
        for p in node.inputs:
            self.uses[p] -= 1
            if self.uses[p] == 0:
                self.values.pop(p, None)

    def _value(self, node):
        if node.storage is not None:
            return node.storage.array
        return self.values[node]


# -- llvm backend ------------------------------------------------------------------------------


def run_instrumented(compiled, arrays) -> list:
    """Run an instrumented LLVM build kernel by kernel, checking each kernel's output.

    `compiled` is the backend's Compiled (machine code, plan with probes, argument slots).
    Returns the outputs; the updates are applied by the plan's final copy kernels, which
    run only when every value before them was finite.
    """
    plan = compiled.plan
    if len(plan.probes) != len(plan.kernels):
        raise RuntimeError("nan_guard needs an instrumented llvm build (instrument=True)")
    _check_labels(plan, arrays)
    args = compiled.args
    outs = compiled.bind(arrays)
    for kernel, (node, out, inputs) in zip(plan.kernels, plan.probes):
        compiled.run_kernel(kernel)
        if node is None or node.is_leaf or out.dtype not in _FLOATS:
            continue
        value = read_view(args, out)
        if not np.isfinite(value).all():
            values = [read_view(args, v) if hasattr(v, "slot") else np.asarray(v)
                      for v in inputs]
            check(node, value, values, "llvm")
    return outs


def _check_labels(plan, arrays) -> None:
    """gd_main checks labels before any kernel; kernel by kernel, check them here."""
    for slot, bound in plan.label_checks:
        labels = arrays[slot]
        bad = labels[(labels < 0) | (labels >= bound)]
        if bad.size:
            raise ArgumentError(f"label/index {int(bad.ravel()[0])} in input {slot} is out "
                                f"of range [0, {bound})")


def read_view(args, view) -> np.ndarray:
    """A copy of the elements a lowering View addresses: slot pointer + offset + strides
    (in elements)."""
    dtype = np.dtype(view.dtype)
    if any(d == 0 for d in view.shape):
        return np.empty(view.shape, dtype)
    low = view.offset + sum(min(0, (d - 1) * s) for d, s in zip(view.shape, view.strides))
    high = view.offset + sum(max(0, (d - 1) * s) for d, s in zip(view.shape, view.strides))
    address = int(args[view.slot]) + low * dtype.itemsize
    raw = (ctypes.c_char * ((high - low + 1) * dtype.itemsize)).from_address(address)
    flat = np.frombuffer(raw, dtype=dtype)
    strides = tuple(s * dtype.itemsize for s in view.strides)
    return np.lib.stride_tricks.as_strided(flat[view.offset - low:], view.shape,
                                           strides).copy()


# -- the check and its message -------------------------------------------------------------
def check(node, value, inputs, backend: str) -> None:
    """Raise NaNError when a float `value` (node's output) holds a NaN or an infinity."""
    value = np.asarray(value)
    if value.dtype.name not in _FLOATS:
        return
    bad = ~np.isfinite(value)
    if not bad.any():
        return
    positions = [tuple(int(i) for i in p) for p in np.argwhere(bad)[:SAMPLE]]
    inputs = [np.asarray(v) for v in inputs]
    samples = _samples(node, value, inputs, positions)
    shapes = [tuple(v.shape) for v in inputs]
    raise NaNError(_message(node, value, inputs, bad, samples, backend), node=node,
                   backend=backend, input_shapes=shapes, bad_count=int(bad.sum()),
                   first_index=positions[0], samples=samples)


def _samples(node, value, inputs, positions) -> list:
    """Per offending position: the output and, for an elementwise node, each input there
    (broadcast as the op broadcasts them)."""
    out = []
    for pos in positions:
        row = {"index": pos, "output": value[pos].item() if value.ndim else value.item()}
        if is_elementwise(node):
            row["inputs"] = [np.broadcast_to(v, value.shape)[pos].item() for v in inputs]
        out.append(row)
    return out


def _describe_input(node, value) -> str:
    what = f"{node.op} {node.name!r}" if node.name else node.op
    text = (f"{what} shape {format_shape(node.shape)} = {tuple(value.shape)} {value.dtype}, "
            f"built at {node.site}")
    if value.dtype.name in _FLOATS and value.size:
        bad = ~np.isfinite(value)
        if bad.any():
            text += f"; already holds {int(bad.sum())} NaN/Inf"
        finite = value[~bad]
        if finite.size:
            text += f"; finite range [{finite.min():.6g}, {finite.max():.6g}]"
    return text


def _message(node, value, inputs, bad, samples, backend) -> str:
    kinds = []
    if np.isnan(value).any():
        kinds.append("NaN")
    if np.isinf(value).any():
        kinds.append("Inf")
    what = node.op
    if node.op == "fused":
        what = f"fused {node.attr('expr')} (over inputs i0, i1, ...)"
    lines = [f"nan_guard: {'/'.join(kinds)} produced by {what}, built at {node.site}",
             (f"  backend {backend}; output shape {format_shape(node.shape)} = "
              f"{tuple(value.shape)} {value.dtype}: {int(bad.sum())} of {value.size} values "
              "are not finite"),
             "  inputs:"]
    for k, (p, v) in enumerate(zip(node.inputs, inputs)):
        lines.append(f"    i{k}: {_describe_input(p, v)}")
    lines.append("  sample of the offending positions:")
    for row in samples:
        args = ""
        if "inputs" in row:
            args = ", ".join(f"i{k} = {v!r}" for k, v in enumerate(row["inputs"]))
            args = f" <- {args}"
        lines.append(f"    {list(row['index'])}: {row['output']!r}{args}")
    return "\n".join(lines)


__all__ = ["GuardedProgram", "NaNError", "check", "guard_options", "guarded", "read_view",
           "run_instrumented"]
