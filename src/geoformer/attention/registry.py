"""Name -> attention class registry.

Every attention kind is an ``nn.Module`` with the contract ``(B, T, C) -> (B, T, C)``
(causal self-attention over the sequence) and a constructor

    cls(n_embd: int, n_head: int, *, dropout: float, bias: bool, block_size: int, opts: cls.Options)

where ``cls.Options`` is a dataclass of the kind's own settings (possibly empty). The
dataclass is what makes ``--set model.attn.<key>=<value>`` type-checkable without the
config system knowing any kind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch.nn as nn

from geoformer.coerce import coerce_dataclass
from geoformer.errors import GeoformerError

_REGISTRY: dict[str, type[nn.Module]] = {}


def register(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make an attention kind available under ``name``."""

    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"attention kind {name!r} registered twice")
        if not dataclasses.is_dataclass(getattr(cls, "Options", None)):
            raise TypeError(f"attention kind {name!r} needs an `Options` dataclass")
        cls.kind = name
        _REGISTRY[name] = cls
        return cls

    return deco


def names() -> list[str]:
    """The registered attention kinds, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> type[nn.Module]:
    """The class registered as ``name``; unknown names raise a one-line error listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise GeoformerError(f"unknown attention kind {name!r}; known kinds: {', '.join(names())}") from None


def make_options(name: str, options: dict[str, Any] | None) -> Any:
    """Build ``get(name).Options`` from a plain dict, rejecting unknown keys and wrong types."""
    return coerce_dataclass(get(name).Options, options or {}, where=f"model.attn ({name})")


def build(
    name: str,
    n_embd: int,
    n_head: int,
    *,
    dropout: float = 0.0,
    bias: bool = False,
    block_size: int = 1024,
    options: dict[str, Any] | None = None,
) -> nn.Module:
    """Instantiate the attention kind ``name``."""
    cls = get(name)
    opts = make_options(name, options)
    return cls(n_embd, n_head, dropout=dropout, bias=bias, block_size=block_size, opts=opts)
