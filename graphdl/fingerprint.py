"""A canonical fingerprint of a function's graph, for compile caches.

Two graphs get the same fingerprint exactly when they compute the same thing in the same
way: the same ops with the same attributes in the same topological structure, the same
leaf kinds, shapes and dtypes in the same argument positions, and the same constant values.
Names, uids and source lines do not count. Params and state are identified by their order
of first use, so a cache hit can map a stored plan back onto this process's variables.
"""

from __future__ import annotations

import hashlib

import sympy as sp

from graphdl.graph import toposort


def _attr_text(value) -> str:
    if isinstance(value, sp.Basic):
        return sp.srepr(value)
    return repr(value)


def fingerprint(inputs, outputs, updates, extra: str = "") -> tuple[str, list]:
    """(hex digest, leaves with storage in canonical order) of a function's graph.

    The leaves are the params, state and constants, in order of first use.

    `updates` are (variable, value) pairs; `extra` is mixed in (sizes, options, versions).
    """
    values = list(outputs) + [v for _, v in updates]
    nodes = toposort(values)
    index = {}
    variables = []
    h = hashlib.sha256()
    input_pos = {t: k for k, t in enumerate(inputs)}
    for n in nodes:
        index[n] = len(index)
        if n.op == "input":
            text = f"input#{input_pos[n]}"
        elif n.op in ("param", "state"):
            text = f"{n.op}#{len(variables)}"
            variables.append(n)
        elif n.op == "constant":
            array = n.storage.array
            text = "constant:" + hashlib.sha256(array.tobytes()).hexdigest()
            variables.append(n)
        else:
            attrs = ",".join(f"{k}={_attr_text(v)}" for k, v in n.attrs)
            args = ",".join(str(index[p]) for p in n.inputs)
            text = f"{n.op}({args})[{attrs}]"
        h.update(f"{text}|{n.shape}|{n.dtype};".encode())
    for var, value in updates:
        if var not in index:
            index[var] = len(index)
            variables.append(var)
            h.update(f"{var.op}#{len(variables) - 1}|{var.shape}|{var.dtype};".encode())
        h.update(f"update {index[var]}<-{index[value]};".encode())
    h.update(("outputs " + ",".join(str(index[o]) for o in outputs)).encode())
    h.update(extra.encode())
    return h.hexdigest(), variables
