"""A ledger row's fingerprint: a hash of everything in its write-up module that defines it.

A row is its texts (claim, experiment, rule, ...), its examples, its looks and depends, and its three
functions (measure, decide, describe) with every function, class and constant of the same module they
reach by name (followed transitively, lambdas and nested functions included, closure values too).
Imported names are not followed: the files they come from are in the row's ``depends`` or in ``LEDGER``.

With a fingerprint recorded, ``claims --stale`` asks "did *this row's* definition change?" instead of "did any
line of its module change?", so adding a row to ``seed002.py`` does not stale the other eleven.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import re
import types
from typing import Any

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _names(code: types.CodeType) -> set[str]:
    out = set(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            out |= _names(c)
    return out


def _value(obj: Any) -> str:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return f"{type(obj).__name__}({', '.join(f'{f.name}={_value(getattr(obj, f.name))}' for f in dataclasses.fields(obj))})"
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{_value(k)}: {_value(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, list | tuple):
        return type(obj).__name__ + "(" + ", ".join(_value(v) for v in obj) + ")"
    return _ADDRESS.sub("", repr(obj))


def _source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return _value(obj)


def _collect(fn: Any, module: str, seen: set[int], out: list[str]) -> None:
    if id(fn) in seen:
        return
    seen.add(id(fn))
    if not inspect.isfunction(fn):
        out.append(_value(fn))
        return
    out.append(_source(fn))
    for cell in fn.__closure__ or ():
        try:
            v = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if inspect.isfunction(v) and v.__module__ == module:
            _collect(v, module, seen, out)
        else:
            out.append(_value(v))
    g = fn.__globals__
    for name in sorted(_names(fn.__code__)):
        if name not in g or name.startswith("__"):  # module dunders (__file__ is where the clone lives)
            continue
        obj = g[name]
        if inspect.ismodule(obj) or id(obj) in seen:
            continue
        if inspect.isfunction(obj) or inspect.isclass(obj):
            if obj.__module__ != module:
                continue  # imported: its file is a dependency of the row
            if inspect.isclass(obj):
                seen.add(id(obj))
                out.append(_source(obj))
            else:
                _collect(obj, module, seen, out)
        else:  # a constant (a string, a rule object, a tuple of paths ...), wherever it was defined
            seen.add(id(obj))
            out.append(f"{name} = {_value(obj)}")


def row_fingerprint(row: Any) -> str:
    """sha256 (first 16 hex digits) of the row's definition (see the module docstring)."""
    module = row.measure.__module__
    parts = [
        _value({k: getattr(row, k) for k in ("id", "claim", "origin", "section", "experiment", "rule", "kind",
                                             "impossible", "looks", "depends")}),  # fmt: skip
        _value(row.examples),
    ]
    seen: set[int] = set()
    for fn in (row.measure, row.decide, row.describe):
        _collect(fn, module, seen, parts)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
