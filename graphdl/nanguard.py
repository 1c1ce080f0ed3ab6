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

Scans (graphdl/ops/scan.py: gd.scan, gd.rnn/lstm/gru, and the reverse scans of their
gradients, graphdl/ops/scan_grad.py) are one node, and one kernel, for all T steps. When the
guard finds a NaN/Inf in a scan's output it *localizes* it: `locate_in_scan` runs the scan
again on the reference interpreter from the very inputs the guarded run gave it, step by
step in the order the scan runs them (t = T-1 first for a reverse scan), evaluating the body
node by node. The message gains a block naming the first step t at which the scan's outputs
(its new carries, and the output found bad) go non-finite and, in that step, the first body
node that makes a NaN/Inf from finite values: its op (with the formula of a fused node),
file:line, inputs with their ranges, and the offending positions; or the step input (x_t, a
loop constant, the initial carry) that already held one. A scan nested in a body is
localized the same way, level by level (`ScanLocation.inner`).

On the reference backend a scan's outputs are checked at each `scan_get`. On llvm no kernel
of their own computes them (they are views of the scan kernel's block), so right after each
scan kernel the guard reads what the later kernels read of that block (`_scan_reads`) and
checks it there, before anything else runs. The re-run uses the reference interpreter's
arithmetic: where the native code rounds differently it may stay finite, and the message
then says so instead of naming a step.

The integration is two calls in graphdl/function.py: `guard_options` adjusts the backend's
compile options, `guarded` wraps the compiled program (its `run` keeps the signature every
program has; any other attribute is the wrapped program's).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

import numpy as np

from graphdl.errors import ArgumentError, BackendUnavailable, GraphdlError
from graphdl.graph import toposort
from graphdl.ops.registry import is_elementwise
from graphdl.shapes import bind_dims, format_shape

SAMPLE = 5                       # offending positions shown in the message
_FLOATS = ("float16", "float32", "float64")


class NaNError(GraphdlError, FloatingPointError):
    """A guarded function met a NaN or an infinity (gd.function(..., nan_guard=True)).

    Attributes: `node` (the Tensor), `op`, `site` (the user's file:line), `backend`,
    `input_shapes`, `bad_count` and `first_index` (in the node's output), `samples` (one
    dict per offending position shown: its index, the output value and the inputs' values).
    For an output of a scan, `location` is the ScanLocation inside the scan's body (None
    when the node is no scan output, or when the reference re-run stayed finite); `step`,
    `body_op` and `body_site` are its shortcuts: the step t of the scan, and the op and
    file:line of the innermost body node that made the NaN/Inf (all None otherwise).

    Example:
        >>> try:
        ...     step(xs)
        ... except gd.NaNError as e:
        ...     print(e.op, e.site, e.step, e.body_op, e.body_site)
    """

    def __init__(self, message, *, node, backend, input_shapes, bad_count, first_index,
                 samples, location=None):
        super().__init__(message)
        self.node = node
        self.op = node.op
        self.site = node.site
        self.backend = backend
        self.input_shapes = input_shapes
        self.bad_count = bad_count
        self.first_index = first_index
        self.samples = samples
        self.location = location
        inner = location.innermost() if location is not None else None
        self.step = location.step if location is not None else None
        self.body_op = inner.op if inner is not None else None
        self.body_site = inner.site if inner is not None else None


# -- integration --------------------------------------------------------------------------
def guard_options(backend: str, options: dict) -> dict:
    """The compile options of a guarded function for `backend` (llvm: the instrumented
    build, without elementwise fusion so each kernel is one op of the user's graph).

    Example:
        >>> guard_options("llvm", {"skip_passes": frozenset()})["instrument"]
        True
    """
    if backend == "reference":
        return dict(options)
    if backend == "llvm":
        skip = frozenset(options.get("skip_passes", ())) | {"fuse_elementwise"}
        return {**options, "skip_passes": skip, "instrument": True}
    raise BackendUnavailable(f"nan_guard is not available on the {backend!r} backend")


def guarded(program, backend: str, inputs) -> GuardedProgram:
    """Wrap a compiled program so that every call checks each node's result.

    Example:
        >>> program = guarded(compiler(inputs, outputs, updates, **options), "llvm", inputs)
        >>> outputs, updates = program.run(arrays, sizes)
    """
    return GuardedProgram(program, backend, inputs)


class GuardedProgram:
    """A backend program whose `run` raises NaNError at the first non-finite value.

    Example:
        >>> f = gd.function([x], y, nan_guard=True)      # f.program is a GuardedProgram
    """

    def __init__(self, program, backend: str, inputs):
        self.program = program
        self.backend = backend
        self.inputs = tuple(inputs)

    @property
    def applies_updates(self) -> bool:
        return self.program.applies_updates

    def run(self, arrays, sizes):
        """(outputs, update values or None), as the wrapped program's run.

        Example:
            >>> outputs, updates = f.program.run([x_array], {"batch": 32})
        """
        if self.backend == "reference":
            return self.program.run(arrays, sizes, observe=_Observer(self.program, arrays))
        return run_instrumented(self.program.for_sizes(sizes), arrays, sizes), None

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
_READS: dict = {}                 # id(plan) -> (plan, _scan_reads(plan))


def run_instrumented(compiled, arrays, sizes=None) -> list:
    """Run an instrumented LLVM build kernel by kernel, checking each kernel's output.

    `compiled` is the backend's Compiled (machine code, plan with probes, argument slots);
    `sizes` binds the symbolic dimensions (needed to localize a NaN inside a scan).
    Returns the outputs; the updates are applied by the plan's final copy kernels, which
    run only when every value before them was finite.

    Example:
        >>> outs = run_instrumented(program.for_sizes({"batch": 4}), arrays, {"batch": 4})
    """
    plan = compiled.plan
    if len(plan.probes) != len(plan.kernels):
        raise RuntimeError("nan_guard needs an instrumented llvm build (instrument=True)")
    _check_labels(plan, arrays)
    args = compiled.args
    outs = compiled.bind(arrays)
    reads = _reads_of(plan)
    for i, (kernel, (node, out, inputs)) in enumerate(zip(plan.kernels, plan.probes)):
        compiled.run_kernel(kernel)
        if node is None:
            continue
        if node.op == "scan" and i in reads:
            _check_scan_llvm(node, inputs, reads[i], args, sizes or {})
        if node.is_leaf or out.dtype not in _FLOATS:
            continue
        value = read_view(args, out)
        if not np.isfinite(value).all():
            values = [read_view(args, v) if hasattr(v, "slot") else np.asarray(v)
                      for v in inputs]
            check(node, value, values, "llvm")
    return outs


def _reads_of(plan) -> dict:
    found = _READS.get(id(plan))
    if found is None or found[0] is not plan:
        if len(_READS) > 64:
            _READS.clear()
        found = _READS[id(plan)] = (plan, _scan_reads(plan))
    return found[1]


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
    (in elements).

    Example:
        >>> value = read_view(compiled.args, plan.probes[k][1])   # kernel k's output
    """
    dtype = np.dtype(view.dtype)
    if any(d == 0 for d in view.shape):
        return np.empty(view.shape, dtype)
    low, high = _element_range(view)
    address = int(args[view.slot]) + low * dtype.itemsize
    raw = (ctypes.c_char * ((high - low + 1) * dtype.itemsize)).from_address(address)
    flat = np.frombuffer(raw, dtype=dtype)
    strides = tuple(s * dtype.itemsize for s in view.strides)
    return np.lib.stride_tricks.as_strided(flat[view.offset - low:], view.shape,
                                           strides).copy()


def _element_range(view) -> tuple:
    """(lowest, highest) element a View touches, counted from its slot's pointer."""
    low = view.offset + sum(min(0, (d - 1) * s) for d, s in zip(view.shape, view.strides))
    high = view.offset + sum(max(0, (d - 1) * s) for d, s in zip(view.shape, view.strides))
    return low, high


def _byte_range(view) -> tuple:
    """[start, stop) bytes a View touches in its slot."""
    size = np.dtype(view.dtype).itemsize
    low, high = _element_range(view)
    return low * size, (high + 1) * size


@dataclass
class _ScanReads:
    """What the kernels after a scan kernel read of its block: views to check, and the
    exact view of each scan_get where one is known."""

    views: list = field(default_factory=list)       # (View, scan_get node or None)
    exact: dict = field(default_factory=dict)       # scan_get node -> its own View
    gets: list = field(default_factory=list)        # the scan's scan_get nodes, first read first


def _scan_reads(plan) -> dict:
    """Per scan kernel (by index), the float views into its block that later kernels read.

    No kernel writes a scan's block while it is live, so those views hold the scan's
    outputs from the scan kernel until the block's last reader; a later kernel writing into
    the block's bytes means the block is dead, and the search stops there. Which scan_get a
    view belongs to is known when the reading kernel's inputs are its node's inputs (or the
    node itself, for copies), through view ops.
    """
    probes = plan.probes
    found = {}
    for i, (scan, whole, _) in enumerate(probes):
        if scan is None or scan.op != "scan" or not hasattr(whole, "slot"):
            continue
        start, stop = _byte_range(whole)
        reads = found[i] = _ScanReads()
        seen = set()
        concat_part: dict = {}
        for node, out, inputs in probes[i + 1:]:
            if node is None:
                node, inputs = _NO_NODE, []
            pairs = []
            if node.op == "concat" and len(inputs) == 1 and len(node.inputs) > 1:
                k = concat_part.get(node, 0)            # one copy per part, in order
                concat_part[node] = k + 1
                if k < len(node.inputs):
                    pairs.append((node.inputs[k], inputs[0]))
            elif len(inputs) == len(node.inputs):
                pairs += zip(node.inputs, inputs)
            if len(inputs) == 1:                        # a copy of the node's own value
                pairs.append((node, inputs[0]))
            owner = {}
            for n, v in pairs:
                get, exact = _root_get(n, v)
                if get is not None and get.inputs[0] is scan:
                    if get not in reads.gets:
                        reads.gets.append(get)
                    if exact is not None and get not in reads.exact \
                            and _within(exact, whole.slot, start, stop):
                        reads.exact[get] = exact
                    owner.setdefault(id(v), get)
            for v in inputs:
                if hasattr(v, "slot") and v.dtype in _FLOATS and \
                        _within(v, whole.slot, start, stop) and v not in seen:
                    seen.add(v)
                    reads.views.append((v, owner.get(id(v))))
            if hasattr(out, "slot") and out.slot == whole.slot:
                lo, hi = _byte_range(out)
                if lo < stop and hi > start:
                    break                               # the block's bytes are reused
    return found


class _NoNode:                     # a probe without a node: only its output counts
    op, inputs = "", ()


_NO_NODE = _NoNode()


def _within(view, slot, start, stop) -> bool:
    if view.slot != slot or any(d == 0 for d in view.shape):
        return False
    lo, hi = _byte_range(view)
    return start <= lo and hi <= stop


def _root_get(node, view):
    """(scan_get, its exact View or None) when `node` is a scan_get or a chain of view ops
    over one; (None, None) otherwise."""
    while node.op != "scan_get":
        if node.op not in ("reshape", "transpose", "broadcast_to", "slice", "stop_gradient",
                           "windows") or not node.inputs:
            return None, None
        parent = node.inputs[0]
        if view is not None:
            if node.op == "transpose":
                perm = node.attr("perm")
                view = view.transpose(tuple(int(np.argsort(perm)[k])
                                            for k in range(len(perm))))
            elif node.op == "reshape" and all(isinstance(d, int) for d in parent.shape):
                view = view.reshape(parent.shape)
            elif node.op != "stop_gradient":
                view = None
        node = parent
    return node, view


def _check_scan_llvm(scan, probe_inputs, reads, args, sizes) -> None:
    """After a scan kernel: check what later kernels read of its outputs; at a NaN/Inf,
    localize it and raise at the scan_get that holds it."""
    bad = None
    for view, get in reads.views:
        value = read_view(args, view)
        if not np.isfinite(value).all():
            bad = (view, get, value)
            break
    if bad is None:
        return
    arrays = []
    for p, v in zip(scan.inputs, probe_inputs):
        if hasattr(v, "slot"):
            arrays.append(read_view(args, v))
        else:
            arrays.append(np.broadcast_to(np.asarray(v, dtype=p.dtype),
                                          bind_dims(p.shape, sizes)))
    view, get, value = bad
    notes = []
    candidates = ([get] if get is not None else []) + [g for g in reads.gets if g is not get]
    node = None
    for g in candidates:                       # the native value of a scan_get itself
        exact = reads.exact.get(g)
        if exact is not None:
            v = read_view(args, exact)
            if not np.isfinite(v).all():
                node, value = g, v
                break
    if node is None:
        from graphdl.codegen.reference.scan import ScanValue
        with np.errstate(all="ignore"):
            outputs = ScanValue(scan, arrays, sizes)
        for g in candidates:
            with np.errstate(all="ignore"):
                v = np.asarray(outputs.get(g.attr("index")), dtype=g.dtype)
            if not np.isfinite(v).all():
                node, value = g, v
                notes.append("  (the kernels read this output through views: its values "
                             "above are the reference interpreter's re-run of the scan)")
                break
    if node is None:
        node = get if get is not None else (candidates[0] if candidates else scan)
        notes.append(f"  (values above: a view {view.shape} of the output, as the next "
                     "kernels read it)")
    index = node.attr("index") if node.op == "scan_get" else None
    inputs = [scan] if node.op == "scan_get" else []
    _raise(node, value, inputs, [()] * len(inputs), "llvm",
           _locate_note(scan, arrays, sizes, index), notes)


# -- scans: localizing a NaN/Inf inside the body -------------------------------------------------
@dataclass
class ScanLocation:
    """Where inside a scan's body a NaN/Inf first appears (see `locate_in_scan`).

    `scan` the scan node; `step` the time index t (rows of xs and ys); `order` how many
    steps ran before it; `node` the body node that made it (or a body placeholder: a step
    input already non-finite); `value`, `inputs` their values at that step; `bad_count`,
    `first_index`, `samples` as in NaNError; `inner` the location inside a nested scan whose
    output `node` is (None otherwise).

    Example:
        >>> loc = locate_in_scan(scan_node, arrays, sizes)
        >>> loc.step, loc.op, loc.site, loc.innermost().op
    """

    scan: object
    step: int
    order: int
    node: object
    value: np.ndarray
    inputs: list
    bad_count: int
    first_index: tuple
    samples: list
    inner: ScanLocation | None = None

    @property
    def op(self) -> str:
        """The op of the body node."""
        return self.node.op

    @property
    def site(self) -> str:
        """The user's file:line that built the body node."""
        return self.node.site

    def innermost(self) -> ScanLocation:
        """The location in the most deeply nested scan.

        Example:
            >>> error.location.innermost().op
            'log'
        """
        loc = self
        while loc.inner is not None:
            loc = loc.inner
        return loc

    def lines(self, indent: str = "  ") -> list:
        """The message block of this location (nested scans further indented).

        Example:
            >>> print("\\n".join(loc.lines()))
        """
        scan = self.scan
        T, body = scan.attr("length"), scan.attr("body")
        where = (f"step t = {self.step} (step {self.order + 1} of {T} run"
                 + (", t = T-1 first" if scan.attr("reverse") else "") + ")")
        kinds = _kinds(self.value)
        out = [(f"{indent}inside the {_scan_words(scan)}, built at {scan.site}, re-run step "
                "by step on the reference interpreter from the same inputs:")]
        inner = indent + "  "
        if self.node in body.inputs:
            out.append(f"{inner}first at {where}: {kinds} already in "
                       f"{_placeholder_words(scan, self.node, self.step)}, as the step "
                       "reads it")
        else:
            out.append(f"{inner}first at {where}: {kinds} produced by {_what(self.node)}, "
                       f"built at {self.node.site}")
        value = self.value
        out.append(f"{inner}  value shape {format_shape(self.node.shape)} = "
                   f"{tuple(value.shape)} {value.dtype}: {self.bad_count} of {value.size} "
                   "values are not finite")
        if self.node not in body.inputs and self.node.inputs:
            out.append(f"{inner}  inputs:")
            for k, (p, v) in enumerate(zip(self.node.inputs, self.inputs)):
                out.append(f"{inner}    i{k}: {_describe_body_input(scan, p, v, self.step)}")
        out.append(f"{inner}  sample of the offending positions:")
        out += [f"{inner}    {_sample_text(row)}" for row in self.samples]
        if self.inner is not None:
            out.append(f"{inner}  {self.node.op} reads a nested scan; at this step:")
            out += self.inner.lines(inner + "  ")
        elif self.node.op == "scan_get":
            out.append(f"{inner}  (the nested scan it reads stayed finite when re-run)")
        return out


def locate_in_scan(scan, arrays, sizes=None, index=None) -> ScanLocation | None:
    """Re-run a scan on the reference interpreter, step by step, from its input `arrays`
    (initial carries, xs, loop constants: the scan node's inputs) and return where the first
    NaN/Inf appears, or None when every step stays finite.

    The first step (in the order the scan runs them) at which a new carry, or output `index`
    (a scan_get index: a y, a carry history, a residual; None: all the body's outputs), is
    not finite; in it, the first body node that is not finite while its inputs that lead to
    the bad output are finite, or the step input that already held the NaN/Inf. A nested
    scan's output found that way is localized inside the nested scan (`inner`).

    Example:
        >>> loc = locate_in_scan(node, [h0, xs, W], {"batch": 4})
        >>> (loc.step, loc.op, loc.site)
        (5, 'log', 'model.py:12')
    """
    from graphdl.codegen.reference.interpreter import evaluate
    body = scan.attr("body")
    T, reverse = scan.attr("length"), scan.attr("reverse")
    nc, nx = body.n_carry, body.n_x
    sizes = dict(sizes or {})
    arrays = [np.asarray(a) for a in arrays]
    carries, xs, consts = arrays[:nc], arrays[nc:nc + nx], arrays[nc + nx:]
    targets = list(body.outputs[:nc]) + _index_targets(body, index)
    order = toposort(list(body.outputs) + targets)
    for k, t in enumerate(range(T - 1, -1, -1) if reverse else range(T)):
        values = dict(zip(body.inputs, carries + [x[t] for x in xs] + consts))
        with np.errstate(all="ignore"):
            for node in order:
                if node in values:
                    continue
                if node.storage is not None:
                    values[node] = node.storage.array
                    continue
                values[node] = evaluate(node, [values[p] for p in node.inputs], sizes)
        bad_targets = [n for n in targets if _is_bad(values[n])]
        if bad_targets:
            return _source(scan, t, k, order, values, bad_targets, sizes)
        carries = [np.asarray(values[o], dtype=c.dtype)
                   for o, c in zip(body.outputs[:nc], body.carries)]
    return None


def _index_targets(body, index) -> list:
    """The body nodes whose per-step values make scan output `index`."""
    nc, ny = body.n_carry, body.n_y
    if index is None:
        return list(body.outputs[nc:])
    if isinstance(index, tuple):
        _, key, j = index
        return [body.residuals(key)[j]]
    if nc <= index < nc + ny:
        return [body.outputs[index]]
    return []                                    # final carries and histories: the carries


def _is_bad(value) -> bool:
    if not isinstance(value, (np.ndarray, np.generic, float)):
        return False                             # a nested scan's ScanValue
    value = np.asarray(value)
    return value.dtype.name in _FLOATS and not np.isfinite(value).all()


def _source(scan, t, k, order, values, bad_targets, sizes) -> ScanLocation:
    """The location of step t: the first node, in evaluation order, on a non-finite path to
    a non-finite target, that is not a step input."""
    bad = {n for n in order if _is_bad(values[n])}
    users: dict = {}
    for n in order:
        for p in n.inputs:
            users.setdefault(p, []).append(n)
    targets = set(bad_targets)
    reach = set()
    for n in reversed(order):
        if n in bad and (n in targets or any(u in reach for u in users.get(n, ()))):
            reach.add(n)
    path = [n for n in order if n in reach]
    node = next((n for n in path if not n.is_leaf), path[0])
    value = np.asarray(values[node])
    inputs = [values[p] for p in node.inputs]
    mask = ~np.isfinite(value)
    positions = [tuple(int(i) for i in p) for p in np.argwhere(mask)[:SAMPLE]]
    samples = _samples(node, value, inputs, positions)
    inner = None
    if node.op == "scan_get":
        nested = values[node.inputs[0]]          # the ScanValue: its inputs are kept
        inner = locate_in_scan(node.inputs[0], nested.arrays, sizes, node.attr("index"))
    return ScanLocation(scan, t, k, node, value, inputs, int(mask.sum()),
                        positions[0] if positions else (), samples, inner)


def _locate_note(scan, arrays, sizes, index):
    """locate_in_scan, or the line saying why there is no location."""
    location = locate_in_scan(scan, arrays, sizes, index)
    if location is not None:
        return location
    return (f"  inside the {_scan_words(scan)}, built at {scan.site}: re-run step by step on "
            "the reference interpreter from the same inputs, every step stayed finite, so no "
            "step or body op can be named (the backend's arithmetic differs from the "
            "reference's here)")


def _scan_words(scan) -> str:
    body = scan.attr("body")
    counts = ", ".join(_count(n, word) for n, word in (
        (body.n_carry, "carry"), (body.n_x, "x"), (body.n_const, "loop constant"),
        (body.n_y, "y")))
    return (f"scan (T={scan.attr('length')}, {'reverse' if scan.attr('reverse') else 'forward'}"
            f"; {counts})")


def _count(n, word) -> str:
    plural = {"carry": "carries", "x": "xs", "y": "ys"}.get(word, word + "s")
    return f"{n} {word if n == 1 else plural}"


def _placeholder_words(scan, p, t) -> str:
    """What a body placeholder holds at step t, and the outer tensor it comes from."""
    body = scan.attr("body")
    nc, nx = body.n_carry, body.n_x
    k = body.inputs.index(p)
    outer = scan.inputs[k]
    name = f" {outer.name!r}" if outer.name else ""
    source = f"{outer.op}{name} built at {outer.site}"
    if k < nc:
        return f"carry {k} entering step {t} (initial value: {source})"
    if k < nc + nx:
        return f"row t = {t} of x {k - nc} ({source})"
    return f"loop constant {k - nc - nx} ({source})"


def _describe_body_input(scan, p, v, t) -> str:
    body = scan.attr("body")
    if p in body.inputs:
        return _describe_input(p, v, label=_placeholder_words(scan, p, t))
    return _describe_input(p, v)


# -- the check and its message -------------------------------------------------------------
def check(node, value, inputs, backend: str) -> None:
    """Raise NaNError when a float `value` (node's output) holds a NaN or an infinity.

    A scan_get whose input is the reference interpreter's ScanValue (the scan's outputs and
    inputs) is localized inside the scan's body (`locate_in_scan`).

    Example:
        >>> check(node, np.array([1.0, np.nan]), [np.array([1.0, -1.0])], "reference")
        Traceback (most recent call last):
        graphdl.nanguard.NaNError: nan_guard: NaN produced by log, built at model.py:3 ...
    """
    value = np.asarray(value)
    if value.dtype.name not in _FLOATS:
        return
    if np.isfinite(value).all():
        return
    location = None
    if node.op == "scan_get" and inputs and hasattr(inputs[0], "arrays"):
        scan_value = inputs[0]              # codegen/reference/scan.py's ScanValue
        location = _locate_note(scan_value.node, scan_value.arrays, scan_value.sizes,
                                node.attr("index"))
        inputs = [scan_value.node]
        shapes = [()]
    else:
        inputs = [np.asarray(v) for v in inputs]
        shapes = [tuple(v.shape) for v in inputs]
    _raise(node, value, inputs, shapes, backend, location)


def _raise(node, value, inputs, shapes, backend, location=None, notes=()) -> None:
    """Build and raise the NaNError of `node`. An input given as a scan node (the input of
    a scan_get) is described as the scan; `location` is a ScanLocation or a line."""
    value = np.asarray(value)
    bad = ~np.isfinite(value)
    positions = [tuple(int(i) for i in p) for p in np.argwhere(bad)[:SAMPLE]]
    samples = _samples(node, value, inputs, positions)
    lines = _message(node, value, inputs, bad, samples, backend).split("\n")
    lines += list(notes)
    if isinstance(location, ScanLocation):
        lines += location.lines()
    elif location:
        lines.append(location)
    raise NaNError("\n".join(lines), node=node, backend=backend, input_shapes=shapes,
                   bad_count=int(bad.sum()), first_index=positions[0], samples=samples,
                   location=location if isinstance(location, ScanLocation) else None)


def _samples(node, value, inputs, positions) -> list:
    """Per offending position: the output and, for an elementwise node, each input there
    (broadcast as the op broadcasts them)."""
    out = []
    for pos in positions:
        row = {"index": pos, "output": value[pos].item() if value.ndim else value.item()}
        if is_elementwise(node):
            row["inputs"] = [np.broadcast_to(np.asarray(v), value.shape)[pos].item()
                             for v in inputs]
        out.append(row)
    return out


def _sample_text(row) -> str:
    args = ""
    if "inputs" in row:
        args = ", ".join(f"i{k} = {v!r}" for k, v in enumerate(row["inputs"]))
        args = f" <- {args}"
    return f"{list(row['index'])}: {row['output']!r}{args}"


def _describe_input(node, value, label=None) -> str:
    if node.op == "scan" and not isinstance(value, np.ndarray):
        return f"{_scan_words(node)}, built at {node.site}"
    value = np.asarray(value)
    if label is not None:
        text = (f"{label}: shape {format_shape(node.shape)} = {tuple(value.shape)} "
                f"{value.dtype}")
    else:
        what = f"{node.op} {node.name!r}" if node.name else node.op
        text = (f"{what} shape {format_shape(node.shape)} = {tuple(value.shape)} "
                f"{value.dtype}, built at {node.site}")
    if value.dtype.name in _FLOATS and value.size:
        bad = ~np.isfinite(value)
        if bad.any():
            text += f"; already holds {int(bad.sum())} NaN/Inf"
        finite = value[~bad]
        if finite.size:
            text += f"; finite range [{finite.min():.6g}, {finite.max():.6g}]"
    return text


def _kinds(value) -> str:
    kinds = []
    if np.isnan(value).any():
        kinds.append("NaN")
    if np.isinf(value).any():
        kinds.append("Inf")
    return "/".join(kinds)


def _what(node) -> str:
    if node.op == "fused":
        return f"fused {node.attr('expr')} (over inputs i0, i1, ...)"
    return node.op


def _message(node, value, inputs, bad, samples, backend) -> str:
    lines = [f"nan_guard: {_kinds(value)} produced by {_what(node)}, built at {node.site}",
             (f"  backend {backend}; output shape {format_shape(node.shape)} = "
              f"{tuple(value.shape)} {value.dtype}: {int(bad.sum())} of {value.size} values "
              "are not finite"),
             "  inputs:"]
    for k, (p, v) in enumerate(zip(node.inputs, inputs)):
        lines.append(f"    i{k}: {_describe_input(p, v)}")
    lines.append("  sample of the offending positions:")
    lines += [f"    {_sample_text(row)}" for row in samples]
    return "\n".join(lines)


__all__ = ["GuardedProgram", "NaNError", "ScanLocation", "check", "guard_options", "guarded",
           "locate_in_scan", "read_view", "run_instrumented"]
