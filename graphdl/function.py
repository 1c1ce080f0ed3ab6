"""gd.function: compile a graph for a backend and call it on NumPy arrays.

An `Executable` validates every call before running the backend (count, shape, dtype and
memory layout of the arrays; symbolic dimensions bound consistently), runs the outputs and
the update values, then writes the updates into the params' and state's shared storage in
place, all updates seeing the values from before the call (simultaneous assignment).
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np

from graphdl import nanguard
from graphdl.errors import ArgumentError, BackendUnavailable, dtype_error, shape_error
from graphdl.graph import Tensor, as_tensor, toposort
from graphdl.ops.elementwise import cast
from graphdl.ops.structured import broadcast_to
from graphdl.shapes import Dim, format_shape


class Updates(list):
    """A list of (variable, new value) pairs, with hooks run before each call.

    Optimizers return one from `opt.updates(loss, params)`; a hook receives nothing and
    may set state (the learning rate of a schedule, for example) before the step runs.
    """

    def __init__(self, pairs=(), hooks=()):
        super().__init__(pairs)
        self.hooks = list(hooks)

    def __add__(self, other):
        hooks = self.hooks + list(getattr(other, "hooks", []))
        return Updates(list(self) + list(other), hooks)

    def __radd__(self, other):
        hooks = list(getattr(other, "hooks", [])) + self.hooks
        return Updates(list(other) + list(self), hooks)

    def __iadd__(self, other):
        self.extend(other)
        self.hooks.extend(getattr(other, "hooks", []))
        return self


def _backend_compiler(name: str):
    if name == "reference":
        from graphdl.codegen.reference import compile_program
        return compile_program
    if name == "llvm":
        from graphdl.codegen.llvm.program import compile_program
        return compile_program
    if name == "cupy":
        raise BackendUnavailable(
            "the 'cupy' backend is not part of this build yet; use backend='llvm' (the "
            "default) or 'reference'")
    raise ArgumentError(f"unknown backend {name!r}; choose 'llvm' or 'reference'")


def set_num_threads(n: int) -> None:
    """Use n threads for large kernels of the llvm backend (default: OMP_NUM_THREADS, else
    the CPUs this process may use). Functions compiled later are specialized for it.

    Example:
        >>> gd.set_num_threads(1)
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of threads must be an int >= 1, got {n!r}")
    from graphdl.codegen.llvm import runtime
    runtime.set_num_threads(n)


def clear_cache() -> int:
    """Empty the on-disk cache of compiled code (returns the number of files removed).

    The folder is $GRAPHDL_CACHE_DIR, else ~/.cache/graphdl; GRAPHDL_CACHE=0 disables it.

    Example:
        >>> gd.clear_cache()
    """
    from graphdl.codegen.llvm import cache
    return cache.clear()


def set_flush_denormal(mode: bool) -> bool:
    """Flush denormal floats to zero in functions compiled from now on (llvm backend).

    Like torch.set_flush_denormal: with mode=True, results below the smallest normal float
    (about 1.2e-38 in float32) become 0 and such inputs read as 0 (x86 FTZ and DAZ, set for
    the duration of each call on every thread that runs it, then restored). Arithmetic on
    denormals can be 10-100x slower, which a long recurrence's vanishing gradients reach.
    Returns False (and changes nothing) on a CPU without the mode. The reference backend
    (NumPy) never flushes; the mode is part of the compile-cache key.

    Example:
        >>> gd.set_flush_denormal(True)
        True
    """
    from graphdl.codegen.llvm import target
    return target.set_flush_denormal(mode)


def get_num_threads() -> int:
    """The number of threads the llvm backend uses for large kernels.

    Example:
        >>> gd.get_num_threads()
    """
    from graphdl.codegen.llvm import runtime
    return runtime.get_num_threads()


def default_backend() -> str:
    """The backend used when none is named: $GRAPHDL_BACKEND, else 'llvm' (native code)."""
    return os.environ.get("GRAPHDL_BACKEND", "llvm")


def _normalize_updates(updates):
    if updates is None:
        return [], []
    hooks = list(getattr(updates, "hooks", []))
    pairs = list(updates.items()) if isinstance(updates, dict) else list(updates)
    seen, out = set(), []
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise TypeError(f"updates must be (variable, value) pairs, got {pair!r}")
        var, value = pair
        if not isinstance(var, Tensor) or var.op not in ("param", "state"):
            raise TypeError(f"only params and state can be updated, got {var!r}")
        if var in seen:
            raise ValueError(f"{var.name!r} is updated twice in one function")
        seen.add(var)
        value = as_tensor(value, var)
        if value.shape != var.shape and value.ndim <= var.ndim:
            value = broadcast_to(value, var.shape)
        if value.shape != var.shape:
            raise shape_error(f"update of {var.name!r}: value has shape "
                              f"{format_shape(value.shape)}, the variable {var.shape}")
        if value.dtype != var.dtype:
            value = cast(value, var.dtype)
        out.append((var, value))
    return out, hooks


class Executable:
    """A compiled graph, callable on NumPy arrays.

    Example:
        >>> f = gd.function([x], [logits])
        >>> (out,) = f(np.zeros((32, 64), np.float32))
    """

    def __init__(self, inputs, outputs, updates=None, backend=None, cast=False, name=None,
                 skip_passes=(), nan_guard=False):
        self.single = isinstance(outputs, Tensor)
        self.outputs = [outputs] if self.single else list(outputs)
        self.inputs = list(inputs)
        self.name = name or "function"
        self.cast = cast
        self.backend = backend or default_backend()
        self.updates, self.hooks = _normalize_updates(updates)
        self._check_inputs()
        self._specs = self._fast_specs()
        self._lock = threading.Lock()
        self.calls = 0
        start = time.perf_counter()
        compiler = _backend_compiler(self.backend)
        options = {"skip_passes": frozenset(skip_passes)} if self.backend == "llvm" else {}
        self.nan_guard = bool(nan_guard)
        if self.nan_guard:
            options = nanguard.guard_options(self.backend, options)
        self.program = compiler(self.inputs, self.outputs, self.updates, **options)
        if self.nan_guard:
            self.program = nanguard.guarded(self.program, self.backend, self.inputs)
        self.compile_seconds = time.perf_counter() - start

    def _check_inputs(self):
        for t in self.inputs:
            if not isinstance(t, Tensor) or t.op != "input":
                raise TypeError(f"gd.function inputs must be gd.input tensors, got {t!r}")
        if len(set(self.inputs)) != len(self.inputs):
            raise ValueError("an input is listed twice")
        for o in self.outputs:
            if not isinstance(o, Tensor):
                raise TypeError(f"outputs must be tensors, got {type(o).__name__}")
        needed = toposort(self.outputs + [v for _, v in self.updates])
        missing = [n for n in needed if n.op == "input" and n not in self.inputs]
        if missing:
            names = ", ".join(repr(n.name) for n in missing)
            raise ArgumentError(f"the outputs depend on input(s) {names} that are not in "
                                "the function's inputs")

    # -- calling -------------------------------------------------------------------------
    def _fast_specs(self):
        """Per input: (dtype, ndim, static dims, symbolic dims) for the fast check."""
        specs = []
        for t in self.inputs:
            static = tuple((i, d) for i, d in enumerate(t.shape) if not isinstance(d, Dim))
            symbolic = tuple((i, d.name) for i, d in enumerate(t.shape) if isinstance(d, Dim))
            specs.append((np.dtype(t.dtype), t.ndim, static, symbolic))
        return specs

    def _validate(self, args):
        """(arrays, sizes) after checking every argument; the common case is checked with
        a few comparisons, anything unusual goes through the careful path that explains."""
        if len(args) == len(self._specs):
            sizes = {}
            for (dtype, ndim, static, symbolic), a in zip(self._specs, args):
                if (type(a) is not np.ndarray or a.dtype != dtype or a.ndim != ndim
                        or not a.flags.c_contiguous):
                    break
                shape = a.shape
                if any(shape[i] != d for i, d in static) or any(
                        sizes.setdefault(name, shape[i]) != shape[i] for i, name in symbolic):
                    break
            else:
                return args, sizes
        return self._validate_slow(args)

    def _validate_slow(self, args):
        if len(args) != len(self.inputs):
            names = ", ".join(t.name for t in self.inputs)
            raise ArgumentError(f"{self.name} takes {len(self.inputs)} array(s) ({names}), "
                                f"got {len(args)}")
        sizes, arrays = {}, []
        for t, a in zip(self.inputs, args):
            a = self._check_dtype(t, a)
            if a.ndim != t.ndim:
                raise ArgumentError(f"input {t.name!r}: expected shape {format_shape(t.shape)},"
                                    f" got {a.shape}")
            for d, n in zip(t.shape, a.shape):
                if isinstance(d, Dim):
                    if sizes.setdefault(d.name, n) != n:
                        raise ArgumentError(
                            f"input {t.name!r}: dimension {d!r} is {n} here but "
                            f"{sizes[d.name]} in an earlier input")
                elif d != n:
                    raise ArgumentError(f"input {t.name!r}: expected shape "
                                        f"{format_shape(t.shape)}, got {a.shape}")
            if not a.flags.c_contiguous:
                raise ArgumentError(f"input {t.name!r} is not C-contiguous; pass "
                                    "np.ascontiguousarray(array)")
            arrays.append(a)
        return arrays, sizes

    def _check_dtype(self, t, a):
        if not isinstance(a, np.ndarray):
            a = np.asarray(a)
            if a.dtype.kind == "f":
                a = a.astype(t.dtype) if t.dtype in ("float32", "float64") else a
        want = np.dtype(t.dtype)
        if a.dtype == want:
            return a
        if self.cast or (a.dtype.kind in "iu" and want.kind == "i"
                         and np.can_cast(a.dtype, want, "safe")):
            return a.astype(want)
        raise ArgumentError(f"input {t.name!r} expects {t.dtype}, got {a.dtype}"
                            + (" (pass cast=True to gd.function to convert)"
                               if a.dtype.kind == want.kind or want.kind == "f" else ""))

    def __call__(self, *args):
        arrays, sizes = self._validate(args)
        with self._lock:
            for hook in self.hooks:
                hook()
            outs, new_values = self.program.run(arrays, sizes)
            if self.program.applies_updates:
                self.calls += 1
                return outs[0] if self.single else outs
            # Updates are simultaneous: a new value may be (a view of) another variable's
            # storage, so take every value before writing any.
            new_values = [np.array(v, copy=True) if node.storage is not None or _may_alias(v)
                          else v for (_, node), v in zip(self.updates, new_values)]
            for (var, _), value in zip(self.updates, new_values):
                np.copyto(var.storage.array, value)
            self.calls += 1
        # Never hand out a view of internal or shared storage: the caller owns what it gets.
        outs = [o if o.base is None and o.flags.writeable and t.storage is None
                else np.array(o) for o, t in zip(outs, self.outputs)]
        return outs[0] if self.single else outs

    def report(self, *arrays, profile: bool = False) -> str:
        """What was compiled and how: backend, per batch size the compile stages (passes
        with node counts, lowering, LLVM), cache hits, kernels, memory, threads.

        With `profile=True` and example input arrays, also times every kernel alone.

        Example:
            >>> print(step.report())
            >>> print(step.report(xb, yb, profile=True))
        """
        lines = [repr(self), f"compile (graph) {self.compile_seconds * 1e3:.1f} ms, "
                             f"calls {self.calls}"]
        history = getattr(self.program, "history", None)
        if history is None:
            lines.append("reference backend: the graph is interpreted with NumPy, no "
                         "passes, no compilation")
            return "\n".join(lines)
        if not history:
            lines.append("not compiled yet: native code is made at the first call "
                         "(per batch size)")
        for h in history:
            lines.append(f"- sizes {h['sizes']} ({h['reason']}): cache "
                         f"{'hit' if h['cache_hit'] else 'miss'}, total {h['total_s']:.3f} s"
                         f" = passes {h['passes_s']:.3f} + lowering {h['lower_s']:.3f} + "
                         f"llvm {h['llvm_s']:.3f}; {h['kernels']} kernels, arena "
                         f"{h['arena_bytes'] / 2**20:.2f} MiB, {h['inplace_updates']} "
                         f"in-place updates, {h['threads']} threads")
            for p in h.get("passes", []):
                lines.append(f"    pass {p['pass']:<17} nodes {p['nodes_before']:>5} -> "
                             f"{p['nodes_after']:<5} {p['seconds'] * 1e3:7.1f} ms  "
                             f"{_details(p.get('details', {}))}")
        if profile:
            if not arrays:
                raise ArgumentError("report(profile=True) needs example input arrays")
            checked, sizes = self._validate(arrays)
            rows = self.program.for_sizes(sizes).profile(checked)
            total = sum(r["us"] for r in rows)
            lines.append(f"kernels (alone, median), {total:.1f} us in all:")
            for r in rows:
                lines.append(f"  {r['us']:9.1f} us  {r['threads']}T  {r['kernel']:<22} "
                             f"{r['label'][:70]}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        ins = ", ".join(t.name for t in self.inputs)
        return (f"<Executable {self.name}({ins}) -> {len(self.outputs)} output(s), "
                f"{len(self.updates)} update(s), backend={self.backend!r}>")


def _details(details: dict) -> str:
    parts = []
    for key, value in details.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} x{v}" for k, v in list(value.items())[:4])
        if value not in ({}, "", 0, None):
            parts.append(f"{key}: {value}")
    return "; ".join(parts)[:120]


def _may_alias(array: np.ndarray) -> bool:
    return array.base is not None or not array.flags.owndata or not array.flags.writeable


def function(inputs, outputs, updates=None, backend=None, cast=False, name=None,
             skip_passes=(), nan_guard=False) -> Executable:
    """Compile `outputs` (and in-place `updates`) as a function of `inputs`.

    Returns a bare array when `outputs` is one tensor, a list when it is a list or tuple.
    `updates` is a list of (param or state, new value) pairs, or what `opt.updates` returns.
    A float64 array given to a float32 input raises unless `cast=True`. `skip_passes`
    names graph passes to switch off (see graphdl.passes.PASS_NAMES), to compare.
    `nan_guard=True` checks every node's result and raises gd.NaNError at the first NaN or
    Inf, naming the op and its file:line, before any update is written (graphdl.nanguard;
    on the llvm backend an instrumented build: unfused, kernel by kernel, slower).

    Example:
        >>> f = gd.function([x], logits)
        >>> step = gd.function([x, y], [loss], updates=opt.updates(loss, params))
    """
    return Executable(inputs, outputs, updates, backend, cast, name, skip_passes, nan_guard)
