"""Typed tables: build a (nested) dataclass from a plain dict, checking every key and type.

A leaf module (it imports nothing of geoformer but its errors), so every registry that reads its own options
from a config table (attention kinds, level options, the homotopy schedule) can use it without importing the
run configuration, and ``config`` can import those registries to validate names: the import graph runs one way.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from geoformer.errors import GeoformerError


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_type_ok(v, a) for v, a in zip(value, args, strict=True))
        inner = args[0] if args else Any
        return all(_type_ok(v, inner) for v in value)
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    return isinstance(value, tp) if isinstance(tp, type) else True


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce_dataclass(cls: type, values: dict[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from ``values``, recursing into dataclass fields.

    Unknown keys and wrong types raise :class:`GeoformerError` naming the key, the expected type and
    the known keys. ints are accepted (and converted) where floats are expected; tuples/lists interchange.
    """
    if not isinstance(values, dict):
        raise GeoformerError(f"{where} must be a table, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise GeoformerError(f"unknown key {where}.{unknown[0]}; known keys: {', '.join(sorted(fields))}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = value if isinstance(value, tp) else coerce_dataclass(tp, value, f"{where}.{name}")
            continue
        if not _type_ok(value, tp):
            raise GeoformerError(
                f"{where}.{name} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})"
            )
        if tp is float and isinstance(value, int):
            value = float(value)
        if typing.get_origin(tp) is tuple and isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kwargs[name] = value
    return cls(**kwargs)
