"""What a row's ``measure`` gets: its folder, the mode, and helpers that record every config it used."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoformer.claims import provenance


@dataclass
class ClaimContext:
    out: Path  # this row's own folder: <ledger>/experiments/<id>
    quick: bool
    quiet: bool
    configs: dict[str, str] = field(default_factory=dict)  # run label -> config hash
    # training-run label -> the git states that trained it (summary["code"]; None: not recorded)
    codes: dict[str, list[dict[str, Any]] | None] = field(default_factory=dict)
    seeds: set[int] = field(default_factory=set)

    def shared(self, name: str) -> Path:
        """A folder shared by the rows of one ledger (e.g. one comparison read by several rows)."""
        return self.out.parent / "_shared" / name

    def record(self, label: str, cfg: Any) -> str:
        """Record a config this row used (a RunConfig, or the settings dict of a non-training experiment)."""
        h = provenance.config_hash(cfg)
        self.configs[label] = h
        return h

    def compare(
        self, preset: str, *, variants: list[str] | None, seeds: int, sets=(), key: str = ""
    ) -> dict[str, Any]:
        """Run (or reuse) ``seeds`` seeds of ``variants`` of a preset's comparison in a shared folder (rows
        that pass the same ``key``, default the preset name, share its runs; more seeds extend it) and record
        the config of every run returned."""
        from geoformer import config as C
        from geoformer.experiments.compare import run_compare

        key = (key or preset) + ("-quick" if self.quick else "")
        folder = self.shared(key)
        res = run_compare(
            preset=preset,
            config=None,
            sets=None,
            data=None,
            variants=variants,
            seeds=seeds,
            out=folder,
            resume=True,
            quiet=self.quiet,
            extra_sets=list(sets),
        )
        for name, v in res["variants"].items():
            for run in v["runs"]:
                cfg_file = folder / "runs" / name / f"seed{run['seed']}" / "config.json"
                label = f"{key}/{name}/seed{run['seed']}"
                if cfg_file.is_file():
                    self.record(label, C.load_json(cfg_file))
                self.codes[label] = (run.get("summary") or {}).get("code")
                self.seeds.add(int(run["seed"]))
        res["folder"] = str(folder)
        return res


    def train(self, label: str, cfg) -> dict[str, Any]:
        """Train (or reuse, if one was made with exactly ``cfg``) a single run in the shared folder ``label``
        and record its config; returns ``{"summary", "metrics"}`` (NaN losses if it diverged)."""
        from geoformer.experiments.compare import train_or_reuse

        folder = self.shared(label + ("-quick" if self.quick else ""))
        from geoformer import config as C

        run = train_or_reuse(cfg, folder, resume=True, quiet=self.quiet, desc=label)
        saved = folder / "config.json"  # what the trainer ran (vocab_size filled in from the data)
        self.record(label, C.load_json(saved) if saved.is_file() else cfg)
        self.codes[label] = (run.get("summary") or {}).get("code")
        self.seeds.add(int(cfg.seed))
        return run


def trained_at(codes: dict[str, list[dict[str, Any]] | None]) -> dict[str, Any]:
    """What trained a row's runs: ``{"runs": n, "commits": [{"commit", "dirty", "runs"}], "unrecorded": k}``,
    one entry per distinct git state (a run resumed across commits counts under each)."""
    counts: dict[tuple, int] = {}
    unrecorded = 0
    for states in codes.values():
        if not states:
            unrecorded += 1
            continue
        for st in states:
            k = (st.get("commit"), bool(st.get("dirty")))
            counts[k] = counts.get(k, 0) + 1
    commits = [{"commit": c, "dirty": d, "runs": n} for (c, d), n in sorted(counts.items(), key=lambda kv: -kv[1])]
    return {"runs": len(codes), "commits": commits, "unrecorded": unrecorded}


def finals(res: dict[str, Any], metric: str = "final_val_loss") -> dict[str, dict[int, float]]:
    """``{variant: {seed: summary[metric]}}`` of a comparison; a diverged run gives NaN."""
    out: dict[str, dict[int, float]] = {}
    for name, v in res["variants"].items():
        out[name] = {int(r["seed"]): float(r["summary"].get(metric, math.nan)) for r in v["runs"]}
    return out


def last_record(run: dict[str, Any]) -> dict[str, Any] | None:
    """The last metrics record of a completed run (None for a diverged run)."""
    return run["metrics"][-1] if run.get("metrics") else None
