"""Attention kinds, looked up by name.

Importing this package imports every module in it, and each kind registers itself with
``@register("name")``: a new kind is one new file here, nothing else to edit.
"""

import importlib
import pkgutil

from geoformer.attention.registry import build, get, make_options, names, register

for _m in pkgutil.iter_modules(__path__):
    if _m.name not in ("registry", "base"):
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["build", "get", "make_options", "names", "register"]
