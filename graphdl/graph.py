"""The graph IR: `Tensor` (an immutable, hash-consed node) and `Graph` (a topological view).

A Tensor is one node: an op name, its input tensors, its attributes (a sorted tuple of
hashable key/value pairs), a static shape (ints and symbolic `Dim`s), a dtype, and the
user's file:line where it was built. Building a node equal to an existing one (same op,
same inputs, same attributes) returns the existing node, so common subexpressions are shared
from the start (tinygrad's UOp interning).

Leaves are inputs (bound at call time), params (trainable state with a value), state
(non-trainable variables such as optimizer slots) and constants. Params and state hold their
array in a `Storage`, shared by every compiled function that uses them; assigning
`p.value = array` copies into that buffer so earlier compiled functions see it.

This module imports nothing from graphdl but shapes and errors; operators (`+`, `@`, ...)
are attached to Tensor by `graphdl.ops`.
"""

from __future__ import annotations

import itertools
import weakref

import networkx as nx
import numpy as np

from graphdl.errors import ShapeError, dtype_error, shape_error, user_site
from graphdl.shapes import Dim, as_dtype, as_shape, format_shape, is_static

LEAF_OPS = ("input", "param", "state", "constant")
_INTERNED: "weakref.WeakValueDictionary" = weakref.WeakValueDictionary()
_UNIQUE = itertools.count()


class Storage:
    """The array behind a param, state variable or constant; shared, updated in place."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray):
        self.array = array


class Tensor:
    """A symbolic value in a graphdl graph: op, inputs, attributes, static shape and dtype.

    Example:
        >>> x = gd.input("x", (None, 3))
        >>> (x * 2).shape
        (None, 3)
    """

    __slots__ = ("op", "inputs", "attrs", "shape", "dtype", "site", "storage", "__weakref__")
    __array_priority__ = 1000  # so ndarray <op> Tensor defers to Tensor's reflected operator

    def __init__(self, op, inputs, attrs, shape, dtype, site, storage=None):
        self.op = op
        self.inputs = inputs
        self.attrs = attrs
        self.shape = shape
        self.dtype = dtype
        self.site = site
        self.storage = storage

    # -- construction -------------------------------------------------------------------
    @staticmethod
    def make(op: str, inputs, attrs: dict, shape, dtype: str) -> "Tensor":
        """Build (or find the existing equal) node; used by every op constructor."""
        inputs = tuple(inputs)
        frozen = tuple(sorted(attrs.items()))
        key = (op, tuple(id(t) for t in inputs), frozen)
        found = _INTERNED.get(key)
        if found is not None and found.inputs == inputs:
            return found
        node = Tensor(op, inputs, frozen, tuple(shape), dtype, user_site())
        _INTERNED[key] = node
        return node

    # -- attributes and views -----------------------------------------------------------
    def attr(self, name: str, default=None):
        """The value of one attribute of this node."""
        for k, v in self.attrs:
            if k == name:
                return v
        return default

    @property
    def name(self) -> str | None:
        """The name given to an input, param or state variable (None for other nodes)."""
        return self.attr("name")

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @property
    def is_leaf(self) -> bool:
        """True for inputs, params, state and constants."""
        return self.op in LEAF_OPS

    @property
    def value(self) -> np.ndarray:
        """The current array of a param, state variable or constant."""
        if self.storage is None:
            raise TypeError(f"{self!r} has no value: only params, state and constants do")
        return self.storage.array

    @value.setter
    def value(self, array) -> None:
        if self.op not in ("param", "state"):
            raise TypeError(f"cannot assign the value of {self!r}")
        array = np.asarray(array)
        current = self.storage.array
        if array.shape != current.shape:
            raise ShapeError(f"{self.name}: new value has shape {array.shape}, "
                             f"expected {current.shape}")
        np.copyto(current, array, casting="same_kind")

    def __repr__(self) -> str:
        label = f"{self.op} {self.name!r}" if self.name else self.op
        return f"Tensor({label}, shape={format_shape(self.shape)}, dtype={self.dtype})"

    def _repr_latex_(self) -> str:  # notebooks show the formula: graphdl.explain, lazily
        from graphdl.explain import tensor_repr_latex
        return tensor_repr_latex(self)

    def _repr_html_(self) -> str:
        from graphdl.explain import tensor_repr_html
        return tensor_repr_html(self)

    def __bool__(self):
        raise TypeError("the truth value of a symbolic Tensor is unknown until it runs; "
                        "use gd.where(...) for a data-dependent choice")

    def __iter__(self):
        raise TypeError("a symbolic Tensor cannot be iterated; index it with t[i]")

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other) -> bool:  # identity: tensors are dict keys throughout graphdl
        return self is other

    def __ne__(self, other) -> bool:
        return self is not other


# -- leaves -------------------------------------------------------------------------------
def _leaf(op: str, name, shape, dtype, storage=None) -> Tensor:
    attrs = (("name", name), ("uid", next(_UNIQUE)))
    return Tensor(op, (), attrs, shape, dtype, user_site(), storage)


def input(name: str, shape, dtype="float32") -> Tensor:  # noqa: A001 - public DSL name
    """Declare a graph input, bound to an array at each call; `None` in shape is the batch.

    Example:
        >>> x = gd.input("x", (None, 64))
        >>> y = gd.input("y", (None,), dtype="int64")
    """
    return _leaf("input", str(name), as_shape(shape), as_dtype(dtype))


def _variable(op: str, name: str, shape_or_array, init, dtype) -> Tensor:
    if isinstance(shape_or_array, np.ndarray) or np.isscalar(shape_or_array) and init is None:
        array = np.array(shape_or_array, dtype=as_dtype(dtype or _float_like(shape_or_array)))
        shape = array.shape
    else:
        shape = as_shape(shape_or_array)
        if not is_static(shape):
            raise shape_error(f"{op} {name!r} needs a concrete shape, got {format_shape(shape)}")
        dtype = as_dtype(dtype)
        if init is None:
            array = np.zeros(shape, dtype=dtype)
        else:
            array = np.asarray(init(shape, dtype), dtype=dtype)
            if array.shape != shape:
                raise shape_error(f"initializer for {name!r} returned shape {array.shape}, "
                                  f"expected {shape}")
    array = np.array(array, order="C", copy=True)  # ascontiguousarray would make 0-d 1-d
    return _leaf(op, str(name), tuple(array.shape), array.dtype.name, Storage(array))


def _float_like(value) -> str:
    kind = np.asarray(value).dtype.kind
    if kind == "f":
        return np.asarray(value).dtype.name if np.asarray(value).dtype.itemsize == 8 \
            else "float32"
    return {"b": "bool", "i": "int64", "u": "int64"}.get(kind, "float32")


def param(name: str, shape_or_array, init=None, dtype=None) -> Tensor:
    """Declare a trainable parameter from a shape and an initializer, or from an array.

    Example:
        >>> W = gd.param("W", (64, 128), init=gd.init.xavier_uniform())
        >>> b = gd.param("b", np.zeros(128, np.float32))
    """
    if dtype is not None:
        dtype = as_dtype(dtype)
    return _variable("param", name, shape_or_array, init, dtype)


def state(name: str, shape_or_array, dtype=None) -> Tensor:
    """Declare a non-trainable variable (optimizer slots, running statistics), zeros by default.

    Example:
        >>> m = gd.state("m", (64, 128))
    """
    return _variable("state", name, shape_or_array, None, dtype)


def constant(value, dtype=None) -> Tensor:
    """A constant tensor; Python scalars become 0-d constants of the float default dtype.

    Example:
        >>> c = gd.constant(0.5)
    """
    if dtype is None:
        dtype = _float_like(value)
        if isinstance(value, float):
            dtype = "float32"
        elif isinstance(value, bool):
            dtype = "bool"
        elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            dtype = "int64"
    dtype = as_dtype(dtype)
    array = np.array(value, dtype=dtype)
    if array.size <= 16:
        key = ("constant", (), (("bytes", array.tobytes()), ("dtype", dtype),
                                ("shape", array.shape)))
        found = _INTERNED.get(key)
        if found is not None:
            return found
    attrs = (("uid", next(_UNIQUE)),)
    node = Tensor("constant", (), attrs, array.shape, dtype, user_site(), Storage(array))
    if array.size <= 16:
        _INTERNED[key] = node
    return node


def as_tensor(value, like: Tensor | None = None) -> Tensor:
    """Wrap a Python scalar or array as a constant; a Tensor is returned unchanged.

    A Python float next to a float tensor takes that tensor's dtype (weak typing, as in
    PyTorch and JAX), so `x * 0.5` stays float32 for a float32 `x`.
    """
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (np.ndarray, list, tuple)):
        return constant(np.asarray(value))
    if isinstance(value, (bool, int, float, np.number)):
        if like is not None:
            if like.dtype in ("float32", "float64") and not isinstance(value, bool):
                return constant(value, like.dtype)
            if like.dtype == "int64" and isinstance(value, (int, np.integer)) \
                    and not isinstance(value, bool):
                return constant(value, "int64")
        return constant(value)
    raise dtype_error(f"cannot use {type(value).__name__} {value!r} as a tensor")


# -- graphs -------------------------------------------------------------------------------
def toposort(outputs, stop=()) -> list:
    """All nodes reachable from `outputs`, inputs before users (iterative, no recursion).

    Nodes in `stop` are left out, and so is what lies below them unless it is reachable
    otherwise.
    """
    order, seen = [], set()
    stack = [(t, False) for t in reversed(list(outputs))]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        if stop and node in stop:
            continue
        stack.append((node, True))
        for parent in reversed(node.inputs):
            if id(parent) not in seen:
                stack.append((parent, False))
    return order


def depends_on(order, sources) -> set:
    """The nodes of `order` (a topological order) that depend on any of `sources`, and the
    sources themselves."""
    out = set(sources)
    for node in order:
        if any(p in out for p in node.inputs):
            out.add(node)
    return out


class Graph:
    """A topological view of the nodes that `outputs` depend on.

    Example:
        >>> g = gd.Graph([loss])
        >>> [n.op for n in g.nodes][:3]
    """

    def __init__(self, outputs):
        self.outputs = tuple(outputs)
        self.nodes = toposort(self.outputs)

    def leaves(self, op: str) -> list:
        """The leaves of one kind ("input", "param", "state", "constant") in order of use."""
        return [n for n in self.nodes if n.op == op]

    def users(self) -> dict:
        """Map from node to the list of nodes that consume it."""
        out = {n: [] for n in self.nodes}
        for n in self.nodes:
            for parent in n.inputs:
                out[parent].append(n)
        return out

    def to_networkx(self) -> nx.DiGraph:
        """The graph as a networkx DiGraph of node ids, with op/shape/dtype attributes."""
        g = nx.DiGraph()
        index = {n: i for i, n in enumerate(self.nodes)}
        for n, i in index.items():
            g.add_node(i, op=n.op, shape=format_shape(n.shape), dtype=n.dtype, site=n.site,
                       name=n.name)
            for parent in n.inputs:
                g.add_edge(index[parent], i)
        return g

    def __len__(self) -> int:
        return len(self.nodes)


__all__ = ["Tensor", "Storage", "Graph", "Dim", "input", "param", "state", "constant",
           "as_tensor", "toposort", "depends_on"]
