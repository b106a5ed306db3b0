"""Which code is running: the git commit of the checkout holding this package, and whether the files the
experiments run (``src/``, ``configs/``, ``pyproject.toml``) differ from it.

Every training run records this in its ``summary.json`` (and its checkpoint, so a run resumed at another
commit lists both); the claims ledger records it per row and checks it per run (a row's runs may have been
trained at an earlier commit and reused).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import geoformer

# the checkout holding this package (src/geoformer -> the repository root), if it is one
REPO = Path(geoformer.__file__).resolve().parents[2]
RUN_PATHS = ("src", "configs", "pyproject.toml")


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=60)


def git_state() -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None, "version": ...}``; dirty = a tracked file under
    :data:`RUN_PATHS` differs from the commit, or an untracked, not ignored file exists there. Commit and
    dirty are None outside a git checkout (an installed package)."""
    none = {"commit": None, "dirty": None, "version": geoformer.__version__}
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return none
        status = git("status", "--porcelain", "--", *RUN_PATHS)
    except (OSError, subprocess.SubprocessError):
        return none
    if status.returncode != 0:
        return none
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip()), "version": geoformer.__version__}


def extended(states: list[dict[str, Any]], state: dict[str, Any]) -> list[dict[str, Any]]:
    """``states`` (the git states that trained a run so far, in order) with ``state`` appended unless one with
    its commit and dirty flag is already there."""
    known = {(s.get("commit"), s.get("dirty")) for s in states}
    return [*states, state] if (state.get("commit"), state.get("dirty")) not in known else list(states)


def states(value: Any) -> list[dict[str, Any]]:
    """The git states recorded in a run file's ``code`` field (anything else, e.g. a damaged field: none)."""
    return [c for c in value if isinstance(c, dict)] if isinstance(value, list) else []


def label(state: dict[str, Any] | None) -> str:
    """``"1a2b3c4d"``, ``"1a2b3c4d+dirty"`` or ``"?"`` (no commit recorded)."""
    if not state or not state.get("commit"):
        return "?"
    return state["commit"][:8] + ("+dirty" if state.get("dirty") else "")
