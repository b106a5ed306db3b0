"""Attention kinds, looked up by name. Importing this package registers the built-in kinds."""

from geoformer.attention import kinds as _kinds  # noqa: F401  (registers sdpa, naive, local, topk)
from geoformer.attention.registry import build, get, make_options, names, register

__all__ = ["build", "get", "make_options", "names", "register"]
