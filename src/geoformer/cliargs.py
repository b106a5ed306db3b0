"""Command-line options shared by ``geoformer`` and ``geoformer bench``: where the training text comes from.

``--data PATH`` is ``--set data.source=PATH``; ``--include`` / ``--exclude`` (repeatable glob patterns, as in
.gitignore: see :func:`geoformer.data.corpus.matches`) choose a folder's files, e.g. a Python source tree with
``--include '*.py'`` or ``--exclude __pycache__``.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="shortcut for --set data.source=PATH (a UTF-8 text file or folder)")
    p.add_argument("--include", action="append", default=[], metavar="PATTERN",
                   help="read only a folder's files matching this glob (repeatable), e.g. '*.py'")  # fmt: skip
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="skip a folder's files or subfolders matching this glob (repeatable), e.g. __pycache__")  # fmt: skip


def data_sets(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """The ``(key, value)`` overrides that ``--data``, ``--include`` and ``--exclude`` stand for."""
    out: list[tuple[str, Any]] = []
    if getattr(args, "data", None) is not None:
        out.append(("data.source", args.data))
    for key in ("include", "exclude"):
        if getattr(args, key, None):
            out.append((f"data.{key}", list(getattr(args, key))))
    return out

