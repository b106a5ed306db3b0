"""``geoformer claims --jobs N``: ledger rows measured in N worker processes, then merged into one ledger.

Rows of one write-up share their experiments (one comparison read by several rows, in the ledger's ``_shared``
folder), and the arena rows share the schedules comparison with 004's, so rows are grouped by the module that
registers them (arena with seed004) and each group runs as one ``geoformer claims --only ...`` process in its own
folder ``<out>/_jobs/<group>``, whose ``experiments`` is a link to ``<out>/experiments``: runs already there (a
serial ``claims`` run's, or comparisons prefilled with ``compare --out <out>/experiments/_shared/...``) are reused,
and what a group trains stays where a later serial run finds it (groups touch disjoint experiment folders). The
groups are dealt to the N workers largest first. Each row is measured exactly
as a serial run measures it (same seeds, same looks), and :func:`~geoformer.claims.ledger.merge_ledgers` copies
every row with its provenance into ``<out>``. Intra-op threads are divided between the workers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from geoformer.claims.registry import Row, module_of
from geoformer.errors import GeoformerError
from geoformer.experiments.pools import EXIT_WITH_PARENT_ENV

_GROUP = {"arena": "arena+seed004", "seed004": "arena+seed004"}


def groups(rows: dict[str, Row]) -> dict[str, list[str]]:
    """Row ids by the experiments they may share: one group per registering module, arena with seed004."""
    out: dict[str, list[str]] = {}
    for rid, row in rows.items():
        m = module_of(row)
        out.setdefault(_GROUP.get(m, m), []).append(rid)
    return out


def deal(sizes: dict[str, int], n: int) -> list[list[str]]:
    """Groups to ``n`` workers, largest first onto the least-loaded worker (ties: the lower index)."""
    bins: list[list[str]] = [[] for _ in range(n)]
    load = [0] * n
    for name in sorted(sizes, key=lambda k: (-sizes[k], k)):
        i = min(range(n), key=lambda j: (load[j], j))
        bins[i].append(name)
        load[i] += sizes[name]
    return [b for b in bins if b]


def share_experiments(out: Path, folder: Path) -> None:
    """Make ``folder/experiments`` a link to ``out/experiments`` (created if missing). A group folder from before
    the link (a real ``experiments`` folder) is refused in one line rather than silently measured apart."""
    target = (Path(out) / "experiments").resolve()
    target.mkdir(parents=True, exist_ok=True)
    link = Path(folder) / "experiments"
    if link.is_symlink():
        if link.resolve() == target:
            return
        link.unlink()
    elif link.exists():
        raise GeoformerError(
            f"{link} is a folder of its own (an older claims --jobs run): move its contents into {target} "
            "(or delete it) so the group reuses the ledger's runs"
        )
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=True)


def run_parallel(
    *, out: Path, rows: dict[str, Row], jobs: int, quick: bool, max_seeds: int | None, force: bool
) -> list[Path]:
    """Measure ``rows`` in ``jobs`` processes; returns the group folders (merged by the caller)."""
    if jobs < 1:
        raise GeoformerError(f"--jobs must be >= 1, got {jobs}")
    by_group = groups(rows)
    workers = deal({g: len(ids) for g, ids in by_group.items()}, jobs)
    threads = max(1, (os.cpu_count() or 1) // len(workers))
    folders = {g: Path(out) / "_jobs" / g for g in by_group}
    for f in folders.values():
        share_experiments(out, f)

    def run_worker(names: list[str]) -> None:
        for g in names:
            argv = [sys.executable, "-m", "geoformer", "claims", "--out", str(folders[g]), "--quiet",
                    "--only", ",".join(by_group[g])]  # fmt: skip
            argv += ["--quick"] if quick else []
            argv += ["--max-seeds", str(max_seeds)] if max_seeds is not None else []
            argv += ["--force"] if force else []
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), EXIT_WITH_PARENT_ENV: "1"}
            proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith(("claim ", "geoformer: error")):
                    print(f"[{g}] {line.rstrip()}", flush=True)
            if proc.wait() != 0:
                raise GeoformerError(f"claims group {g} failed (exit {proc.returncode}); its rows are in {folders[g]}")

    with ThreadPoolExecutor(len(workers)) as pool:
        for f in [pool.submit(run_worker, w) for w in workers]:
            f.result()
    return [folders[g] for g in by_group]
