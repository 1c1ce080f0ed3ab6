"""Loop nests and strided views: the shapes every kernel is built from.

A `View` is an affine map from an index tuple to an element of a buffer: element offset +
sum(index[d] * strides[d]). Transpose, broadcast (stride 0), slicing and reshapes of
contiguous data are all views, so they cost no copy: kernels read through the strides.

`loop_nest` emits counted loops over static trip counts (the outermost over a runtime
[begin, end) range, so a kernel can be split across threads) and calls `body(indices)`
in the innermost block. Dimensions that are contiguous for every operand are merged first
(`collapse`), so an elementwise op on same-shape tensors is one long vectorizable loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import llvmlite.ir as ir
import numpy as np

I64 = ir.IntType(64)


@dataclass(frozen=True)
class View:
    """Where a tensor's elements live: a buffer slot, an element offset, and strides."""

    slot: int
    offset: int
    shape: tuple
    strides: tuple
    dtype: str

    @staticmethod
    def contiguous(slot: int, shape, dtype: str, offset: int = 0) -> "View":
        """A row-major view of a whole buffer."""
        strides, acc = [], 1
        for d in reversed(shape):
            strides.append(acc if d != 1 else 0)
            acc *= d
        return View(slot, offset, tuple(shape), tuple(reversed(strides)), dtype)

    @property
    def is_contiguous(self) -> bool:
        """True when the elements are dense in row-major order."""
        acc = 1
        for d, s in zip(reversed(self.shape), reversed(self.strides)):
            if d != 1 and s != acc:
                return False
            acc *= d
        return True

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape, dtype=np.int64))

    def transpose(self, perm) -> "View":
        """The view with axes permuted."""
        return View(self.slot, self.offset, tuple(self.shape[p] for p in perm),
                    tuple(self.strides[p] for p in perm), self.dtype)

    def broadcast(self, shape) -> "View":
        """The view broadcast to a larger shape (new and size-1 axes get stride 0)."""
        lead = len(shape) - len(self.shape)
        strides = [0] * lead + [0 if d == 1 and n != 1 else s
                                for d, s, n in zip(self.shape, self.strides, shape[lead:])]
        return View(self.slot, self.offset, tuple(shape), tuple(strides), self.dtype)

    def slice(self, spec) -> "View":
        """The view of x[start:stop:step, ...] for normalized (start, stop, step) triples."""
        offset, shape, strides = self.offset, [], []
        for (start, stop, step), d, s in zip(spec, self.shape, self.strides):
            n = len(range(start, d if stop is None and step > 0 else
                          (-1 if stop is None else stop), step))
            offset += start * s
            shape.append(n)
            strides.append(s * step)
        return View(self.slot, offset, tuple(shape), tuple(strides), self.dtype)

    def windows(self, kernel, stride, dilation) -> "View":
        """Sliding windows of the last len(kernel) axes: (..., *S) -> (..., *K, *O), no copy.

        Element [..., k, o] is element [..., o*stride + k*dilation] of this view, so the
        window axes get strides dilation*s and the output axes stride*s (graphdl.ops.conv).
        """
        d = len(kernel)
        lead = len(self.shape) - d
        spatial, steps = self.shape[lead:], self.strides[lead:]
        out = tuple((n - dl * (k - 1) - 1) // st + 1
                    for n, k, st, dl in zip(spatial, kernel, stride, dilation))
        strides = (self.strides[:lead] + tuple(s * dl for s, dl in zip(steps, dilation))
                   + tuple(s * st for s, st in zip(steps, stride)))
        return View(self.slot, self.offset, self.shape[:lead] + tuple(kernel) + out,
                    strides, self.dtype)

    def reshape(self, shape) -> "View | None":
        """The view in another shape, or None when that needs a copy.

        Old and new dims are matched in runs of equal size products (as NumPy does for a
        no-copy reshape): each run of old dims must be one contiguous stride chain, which
        the new dims of the run then split. So a transposed view still reshapes for free
        when the merged or split axes stay together.
        """
        shape = tuple(int(d) for d in shape)
        if self.is_contiguous:
            return View.contiguous(self.slot, shape, self.dtype, self.offset)
        old = [(d, s) for d, s in zip(self.shape, self.strides) if d != 1]
        strides = [0] * len(shape)
        i = j = 0
        new_idx = [k for k, d in enumerate(shape) if d != 1]
        while i < len(old) or j < len(new_idx):
            if i == len(old) or j == len(new_idx):
                return None
            run_old, run_new = [old[i]], [new_idx[j]]
            p_old, p_new = old[i][0], shape[new_idx[j]]
            i, j = i + 1, j + 1
            while p_old != p_new:
                if p_old < p_new:
                    if i == len(old):
                        return None
                    run_old.append(old[i])
                    p_old *= old[i][0]
                    i += 1
                else:
                    if j == len(new_idx):
                        return None
                    run_new.append(new_idx[j])
                    p_new *= shape[new_idx[j]]
                    j += 1
            for (d0, s0), (d1, s1) in zip(run_old, run_old[1:]):
                if s0 != s1 * d1:
                    return None             # the run is not one stride chain
            acc = run_old[-1][1]
            for k in reversed(run_new):
                strides[k] = acc
                acc *= shape[k]
        return View(self.slot, self.offset, shape, tuple(strides), self.dtype)

    def merge(self, groups) -> "View | None":
        """The view with each run of consecutive axes (lengths in `groups`) merged into one,
        or None when a run is not one stride chain."""
        shape, strides, start = [], [], 0
        for n in groups:
            dims = list(zip(self.shape[start:start + n], self.strides[start:start + n]))
            start += n
            size = int(np.prod([d for d, _ in dims], dtype=np.int64))
            live = [(d, s) for d, s in dims if d != 1]
            for (d0, s0), (d1, s1) in zip(live, live[1:]):
                if s0 != s1 * d1:
                    return None
            shape.append(size)
            strides.append(live[-1][1] if live else 0)
        return View(self.slot, self.offset, tuple(shape), tuple(strides), self.dtype)


def collapse(shape, stride_lists):
    """Merge adjacent dims that are contiguous for every operand; drop size-1 dims.

    Returns (shape, [strides per operand]) with at least one dim.
    """
    dims = [(d, [s[i] for s in stride_lists]) for i, d in enumerate(shape) if d != 1]
    if not dims:
        return (1,), [[0] for _ in stride_lists]
    merged = [dims[0]]
    for d, strides in dims[1:]:
        pd, pstrides = merged[-1]
        if all(ps == s * d for ps, s in zip(pstrides, strides)):
            merged[-1] = (pd * d, strides)
        else:
            merged.append((d, strides))
    return tuple(d for d, _ in merged), [[m[1][k] for m in merged]
                                         for k in range(len(stride_lists))]


def loop_nest(builder: ir.IRBuilder, shape, begin, end, body, name="i"):
    """Emit loops over `shape` (outermost over [begin, end)); body(indices) fills the inside.

    Loops are bottom-tested with a guard, the form LLVM's vectorizer handles best.
    """
    indices = []

    def level(d):
        if d == len(shape):
            body(indices)
            return
        lo = begin if d == 0 else ir.Constant(I64, 0)
        hi = end if d == 0 else ir.Constant(I64, shape[d])
        pre = builder.block
        loop = builder.append_basic_block(f"{name}{d}.loop")
        after = builder.append_basic_block(f"{name}{d}.end")
        builder.cbranch(builder.icmp_signed("<", lo, hi), loop, after)
        builder.position_at_end(loop)
        i = builder.phi(I64, name=f"{name}{d}")
        i.add_incoming(lo, pre)
        indices.append(i)
        level(d + 1)
        indices.pop()
        nxt = builder.add(i, ir.Constant(I64, 1), flags=("nsw",))
        i.add_incoming(nxt, builder.block)
        builder.cbranch(builder.icmp_signed("<", nxt, hi), loop, after)
        builder.position_at_end(after)

    level(0)


def element_index(builder: ir.IRBuilder, indices, strides, offset: int):
    """IR for offset + sum(indices[d] * strides[d])."""
    value = ir.Constant(I64, offset)
    for i, s in zip(indices, strides):
        if s == 0:
            continue
        term = i if s == 1 else builder.mul(i, ir.Constant(I64, s), flags=("nsw",))
        value = builder.add(value, term, flags=("nsw",))
    return value
