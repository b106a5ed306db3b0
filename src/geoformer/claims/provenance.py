"""Where a ledger row came from: code (git commit, dirty or not), configs (hashes), machine, date.

``stale_reason(row_provenance, depends)`` says why a measured row no longer describes the code: it was
measured on a modified tree, at a commit this repository does not have, or a file its experiment depends on
changed since (committed or not).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

from geoformer import gitstate


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    import torch

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.machine()}",
    }


def now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def config_hash(cfg: Any) -> str:
    """sha256 (first 16 hex digits) of the canonical JSON of a resolved config (a dict or dataclass)."""
    if hasattr(cfg, "to_dict"):
        cfg = cfg.to_dict()
    blob = json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def changed_since(commit: str, depends: tuple[str, ...]) -> list[str] | None:
    """Files under ``depends`` that differ between ``commit`` and the working tree (committed or not);
    None if the commit is not in this repository (or git is unavailable)."""
    try:
        if gitstate.git("cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
            return None
        res = gitstate.git("diff", "--name-only", commit, "--", *depends)
        untracked = gitstate.git("ls-files", "--others", "--exclude-standard", "--", *depends)
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    return sorted(set(res.stdout.split()) | set(untracked.stdout.split()))


def stale_reason(prov: dict[str, Any] | None, depends: tuple[str, ...]) -> str | None:
    """Why a row measured with provenance ``prov`` is stale, or None if it still describes the code."""
    if not prov or not prov.get("commit"):
        return "no commit recorded"
    if prov.get("dirty"):
        return f"measured on a modified tree at {prov['commit'][:10]}"
    changed = changed_since(prov["commit"], depends)
    if changed is None:
        return f"commit {prov['commit'][:10]} is not in this repository"
    if changed:
        return f"changed since {prov['commit'][:10]}: {_files(changed)}"
    return _runs_stale_reason(prov, depends)


def _files(changed: list[str]) -> str:
    more = f" (+{len(changed) - 3} more)" if len(changed) > 3 else ""
    return ", ".join(changed[:3]) + more


def _runs_stale_reason(prov: dict[str, Any], depends: tuple[str, ...]) -> str | None:
    """Why the training runs a row reused (``prov["trained_at"]``, see ``context.trained_at``) no longer
    describe the code, or None: each was trained at the row's commit or at one where no file in ``depends``
    differs from now."""
    runs = prov.get("trained_at")
    if not runs:
        return None
    if runs.get("unrecorded"):
        return f"{runs['unrecorded']} of its {runs.get('runs', '?')} runs record no commit (trained before runs recorded one)"
    for c in runs.get("commits", []):
        n = c.get("runs", "?")
        if not c.get("commit"):
            return f"{n} of its runs were trained outside a git checkout"
        if c.get("dirty"):
            return f"{n} of its runs were trained on a modified tree at {c['commit'][:10]}"
        if c["commit"] == prov.get("commit"):
            continue
        changed = changed_since(c["commit"], depends)
        if changed is None:
            return f"{n} of its runs were trained at {c['commit'][:10]}, a commit this repository does not have"
        if changed:
            return f"{n} of its runs were trained at {c['commit'][:10]}; changed since: {_files(changed)}"
    return None
