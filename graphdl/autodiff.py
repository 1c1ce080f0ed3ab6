"""gd.grad: reverse-mode differentiation that adds gradient nodes to the same graph.

The walk is iterative over a reverse topological order (no recursion, so deep graphs work);
cotangents of a node used several times accumulate by addition. Elementwise nodes (registered
or fused) differentiate their sympy expression: the gradient with respect to input k is one
fused node computing `gy * d expr / d input_k`, which may reuse the node's saved output (the
op's `d_out` form). Structured ops call their VJP rule. Gradients with a broadcast shape are
summed back to the input's shape here (`unbroadcast`) and nowhere else.
"""

from __future__ import annotations

import sympy as sp

from graphdl.errors import NotDifferentiableError, dtype_error, shape_error
from graphdl.graph import Tensor, as_tensor, constant, depends_on, toposort
from graphdl.ops import registry
from graphdl.ops.scan import PROJECTIONS, OutputCotangents, use_backprop  # multi-output
from graphdl.ops.elementwise import cast, fused_from_nodes
from graphdl.ops.registry import GY, I, OUT
from graphdl.ops.stable import StrongMul
from graphdl.ops.structured import broadcast_to, reshape, sum
from graphdl.shapes import FLOAT_DTYPES, format_shape, promote


def grad(loss, wrt, grad_output=None):
    """Gradients of `loss` with respect to each tensor of `wrt`, as tensors of the same graph.

    A single tensor in `wrt` gives a single gradient; a list gives a list. `loss` must be a
    scalar unless `grad_output` (the cotangent, shaped like `loss`) is given. A tensor of
    `wrt` that `loss` does not depend on gets a zero gradient.

    Example:
        >>> gW, gb = gd.grad(loss, [W, b])
    """
    single = isinstance(wrt, Tensor)
    targets = [wrt] if single else list(wrt)
    loss = as_tensor(loss)
    gy = _seed(loss, grad_output)
    for w in targets:
        if not isinstance(w, Tensor):
            raise TypeError(f"gd.grad: wrt must hold tensors, got {type(w).__name__}")
        if w.dtype not in FLOAT_DTYPES:
            raise dtype_error(f"gd.grad: cannot differentiate with respect to {w!r}: "
                              "only float tensors have gradients")
    cotangents = backprop(loss, gy, targets)
    grads = [cotangents.get(w) for w in targets]
    grads = [g if g is not None else broadcast_to(constant(0.0, w.dtype), w.shape)
             for g, w in zip(grads, targets)]
    return grads[0] if single else grads


def _seed(loss, grad_output):
    if loss.dtype not in FLOAT_DTYPES:
        raise dtype_error(f"gd.grad: the loss must be float, got {loss.dtype}")
    if grad_output is not None:
        g = as_tensor(grad_output, loss)
        if g.shape != loss.shape:
            raise shape_error(f"gd.grad: grad_output has shape {format_shape(g.shape)}, "
                              f"the loss {format_shape(loss.shape)}")
        return g
    if loss.shape != ():
        raise shape_error(f"gd.grad needs a scalar loss, got shape {format_shape(loss.shape)}:"
                          " reduce it (.sum() or .mean()) or pass grad_output=")
    return constant(1.0, loss.dtype)


def backprop(root: Tensor, gy: Tensor, targets) -> dict:
    """Propagate the cotangent `gy` of `root` back; returns {node: gradient} for every node
    on a path from `targets` to `root`."""
    return backprop_seeds({root: gy}, targets)


def backprop_seeds(seeds: dict, targets) -> dict:
    """`backprop` from several roots at once ({root: its cotangent}, e.g. the outputs of a
    scan body); returns {node: gradient} for every node on a path from `targets` to a root."""
    nodes = toposort(list(seeds))
    relevant = depends_on(nodes, targets)
    cotangents = dict(seeds)
    for node in reversed(nodes):
        g = cotangents.get(node)
        if g is None or node.is_leaf:
            continue
        # -- multi-output nodes (graphdl/ops/scan.py) ---------------------------------------
        # A projection hands its cotangent to the node it reads, keyed by the output it
        # selects; that node's VJP rule then gets all of them (and which inputs need one).
        if node.op in PROJECTIONS:
            parts = cotangents.setdefault(node.inputs[0], OutputCotangents())
            parts.add(node.attr("index"), g)
            continue
        # -- end multi-output nodes -----------------------------------------------------------
        needed = [k for k, x in enumerate(node.inputs)
                  if x in relevant and x.dtype in FLOAT_DTYPES]
        if not needed:
            continue
        if isinstance(g, OutputCotangents):   # multi-output nodes (ops/scan.py)
            g.needed = tuple(needed)
        grads = vjp(node, g, needed)
        for k in needed:
            if grads[k] is None:
                continue
            x = node.inputs[k]
            gx = unbroadcast(grads[k], x.shape)
            if gx.dtype != x.dtype:
                gx = cast(gx, x.dtype)
            cotangents[x] = gx if x not in cotangents else cotangents[x] + gx
    return cotangents


def vjp(node: Tensor, gy: Tensor, needed) -> tuple:
    """The gradients of `node`'s inputs given its output cotangent `gy`."""
    op = registry.get(node.op) if node.op != "fused" else None
    if op is not None and not op.differentiable:
        raise NotDifferentiableError(
            f"gd.grad cannot differentiate through {node.op!r} (built at {node.site}): "
            f"{op.why_not}")
    if op is None or op.kind == "elementwise":
        return _elementwise_vjp(node, gy, needed)
    return tuple(op.vjp(gy, node))


def _elementwise_vjp(node, gy, needed):
    symbols = {GY: gy, OUT: node}
    symbols.update({I[k]: x for k, x in enumerate(node.inputs)})
    dtype = promote(gy.dtype, node.dtype)
    grads = [None] * len(node.inputs)
    for k in needed:
        d = registry.node_derivative(node, k)
        expr = GY * d
        if _has_pole(d, node):
            # A "strong zero": where no cotangent arrives (gy == 0, e.g. the unused branch
            # of a where), the gradient is 0 even where the local derivative is infinite
            # (log'(0) = 1/0), instead of 0 * inf = NaN leaking into every gradient.
            expr = StrongMul(GY, d)
        grads[k] = fused_from_nodes(expr, symbols, dtype)
    return tuple(grads)


def _has_pole(d, node) -> bool:
    """Whether a derivative can be infinite at a finite input: a negative power of
    something that varies (not of constants only, such as the 1/n of a mean)."""
    constant = {I[k] for k, x in enumerate(node.inputs) if x.op in ("constant", "dim_size")}
    return any(isinstance(p, sp.Pow) and p.exp.is_negative and not p.base.is_number
               and not p.base.free_symbols <= constant
               for p in sp.preorder_traversal(d))


def unbroadcast(g: Tensor, shape) -> Tensor:
    """Sum a gradient over the axes along which its input was broadcast to `shape`."""
    if g.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    if lead < 0:
        return broadcast_to(g, shape)
    axes = list(range(lead)) + [lead + i for i, d in enumerate(shape)
                                if d == 1 and g.shape[lead + i] != 1]
    reduced = sum(g, tuple(axes)) if axes else g
    return reshape(reduced, shape) if reduced.shape != tuple(shape) else reduced


use_backprop(backprop_seeds)   # the VJP of scan differentiates its body (ops/scan.py)
