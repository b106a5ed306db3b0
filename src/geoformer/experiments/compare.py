"""`geoformer compare`: every variant of a preset, over the same seeds, data and token budget.

Layout of ``--out``: ``runs/<variant>/seed<N>/`` (ordinary train run folders, so any of them can be
inspected, sampled or resumed), ``results.json``, ``report.md``, ``report.html`` and the PNG plots.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import shlex
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from geoformer import config as C
from geoformer import gitstate
from geoformer.data.prepare import data_key
from geoformer.errors import GeoformerError, TrainingDiverged
from geoformer.train import checkpoint
from geoformer.train.trainer import Trainer, prepare_out_dir

COMPARE_FILES = ("results.json", "report.md", "report.html")


def machine_string() -> str:
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}" + (
        f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    )


def compare_spec(raw: dict[str, Any]) -> tuple[str, int, dict[str, dict[str, Any]]]:
    """(baseline, seeds, {variant: overrides}) from a preset's [compare] section."""
    spec = raw.get("compare")
    if not isinstance(spec, dict) or not isinstance(spec.get("variants"), dict) or not spec["variants"]:
        raise GeoformerError("this preset has no [compare.variants.*] tables to compare")
    variants = {name: dict(ov or {}) for name, ov in spec["variants"].items()}
    baseline = spec.get("baseline", next(iter(variants)))
    if baseline not in variants:
        raise GeoformerError(
            f"compare.baseline {baseline!r} is not one of the variants: {', '.join(variants)}"
        )
    seeds = spec.get("seeds", 3)
    if not isinstance(seeds, int) or seeds < 1:
        raise GeoformerError("compare.seeds must be a positive integer")
    return baseline, seeds, variants


def plan(
    raw: dict[str, Any], sets: list[tuple[str, Any]], variants: list[str] | None, seeds: int | None
) -> tuple[str, list[int], dict[str, list[C.RunConfig]], dict[str, dict[str, Any]]]:
    """Validate every (variant, seed) config before anything trains."""
    baseline, n_seeds, spec = compare_spec(raw)
    if variants:
        unknown = [v for v in variants if v not in spec]
        if unknown:
            raise GeoformerError(f"unknown variant {unknown[0]!r}; this preset has: {', '.join(spec)}")
        if baseline not in variants:
            variants = [baseline, *variants]
        spec = {v: spec[v] for v in spec if v in variants}
    n_seeds = n_seeds if seeds is None else seeds
    if n_seeds < 1:
        raise GeoformerError("--seeds must be >= 1")
    base = C.build_config(raw, sets)
    seed_list = [base.seed + i for i in range(n_seeds)]
    configs: dict[str, list[C.RunConfig]] = {}
    for name, overrides in spec.items():
        configs[name] = [C.build_config(raw, [*sets, *overrides.items(), ("seed", s)]) for s in seed_list]
    budgets = {n: _tokens(cs[0]) for n, cs in configs.items()}
    if len(set(budgets.values())) > 1:
        raise GeoformerError(f"variants must train on the same token budget; got {budgets}")
    return baseline, seed_list, configs, spec


def _tokens(cfg: C.RunConfig) -> int:
    t = cfg.train
    return t.max_iters * t.batch_size * t.grad_accum * cfg.model.block_size


def _read_run(
    run_dir: Path, cfg: C.RunConfig | None = None, keys: dict[str, str] | None = None
) -> dict[str, Any] | None:
    """A completed run's summary and metrics; None if it is missing, unfinished, or (given ``cfg``) was
    trained with a different configuration or on a corpus whose contents changed since (a stale run is never
    reused on resume). ``keys`` memoises the corpus hash per data config across the runs of one comparison
    (the corpus is read once per call of :func:`run_compare`, not once per run)."""
    summary = run_dir / "summary.json"
    if not summary.is_file():
        return None
    if cfg is not None:
        saved = run_dir / "config.json"
        if not saved.is_file():
            return None
        want = cfg.to_dict()
        try:  # through the dataclass: fields added since the run was made take their defaults
            got = C.RunConfig.from_dict(C.load_json(saved)).to_dict()
            if not want["model"]["vocab_size"]:  # 0 = taken from the data at run time
                got["model"]["vocab_size"] = 0
            same = got == want
        except Exception:  # noqa: BLE001 - an unreadable or outdated config is a stale run
            same = False
        if not same:
            return None
    try:
        s = C.load_json(summary)
        if not isinstance(s, dict):
            raise ValueError("summary.json is not an object")
        if not s.get("completed"):
            return None
        metrics = [C.json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
        if not metrics or not all(isinstance(m, dict) and "val_loss" in m for m in metrics):
            raise ValueError("metrics.jsonl has no records")
    except (OSError, ValueError, GeoformerError) as e:  # damaged: never reused, trained again with a line
        print(f"{run_dir}: finished run is damaged ({str(e).splitlines()[0][:80]}); training it again", flush=True)
        return None
    if cfg is not None and s.get("data_key") and s["data_key"] != _data_key(cfg, keys):
        # same config, other corpus: data.source names a folder or file whose contents changed since
        print(f"{run_dir}: the corpus {cfg.data.source} changed since this run; training it again", flush=True)
        return None
    return {"summary": s, "metrics": metrics}


def _data_key(cfg: C.RunConfig, keys: dict[str, str] | None) -> str:
    if keys is None:
        return data_key(cfg.data)
    k = C.json.dumps(asdict(cfg.data), sort_keys=True, default=str)
    if k not in keys:
        keys[k] = data_key(cfg.data)
    return keys[k]


def train_or_reuse(
    cfg: C.RunConfig, run_dir: Path, *, resume: bool = True, quiet: bool = False, desc: str = "train"
) -> dict[str, Any]:
    """A completed run made with exactly ``cfg`` in ``run_dir`` (``resume``), else a fresh one trained there.
    A diverged run returns NaN losses and the reason under ``summary["diverged"]``."""
    run = _read_run(run_dir, cfg) if resume else None
    if run is not None:
        return run
    prepare_out_dir(run_dir, resume=False, force=True)
    try:
        Trainer(cfg, run_dir, quiet=quiet, progress=not quiet, progress_desc=desc).fit()
        return _read_run(run_dir)
    except TrainingDiverged as e:
        return {
            "summary": {
                "final_val_loss": math.nan, "best_val_loss": math.nan, "diverged": str(e),
                "code": [gitstate.git_state()],  # trained just now (a diverged run is retrained on resume)
            },
            "metrics": [],
        }


def checked_plan(*, out, preset=None, config=None, sets=None, data=None, variants=None, seeds=None, force=False,
                 resume=False, extra_sets=None, **_: Any):  # fmt: skip
    """The checks every way of running a comparison makes before training anything (a preset or config given,
    ``out`` a folder that holds no comparison unless resumed or forced), then :func:`plan`'s
    ``(baseline, seeds, configs, spec)``."""
    if preset is None and config is None:
        raise GeoformerError("give --preset NAME or --config FILE.toml")
    raw = C.load_raw(preset, config)
    parsed = C.parse_sets(sets) + list(extra_sets or [])
    if data is not None:
        parsed.append(("data.source", data))
    planned = plan(raw, parsed, variants, seeds)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GeoformerError(f"--out {out} exists and is not a folder")
    existing = [f for f in COMPARE_FILES if (out / f).exists()]
    if existing and not (force or resume):
        raise GeoformerError(f"{out} already holds a comparison ({existing[0]}); use --resume or --force")
    return planned


def run_compare(
    *,
    preset: str | None,
    config: str | None,
    sets: list[str] | None,
    data: str | None,
    variants: list[str] | None,
    seeds: int | None,
    out: Path,
    force: bool = False,
    resume: bool = False,
    quiet: bool = False,
    extra_sets: list[tuple[str, Any]] | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Train each variant for each seed and write results.json + report; returns the results dict."""
    baseline, seed_list, configs, spec = checked_plan(
        preset=preset, config=config, sets=sets, data=data, variants=variants, seeds=seeds, out=out,
        force=force, resume=resume, extra_sets=extra_sets,
    )  # fmt: skip
    out = Path(out)
    from geoformer.train.run_lock import run_lock

    with run_lock(out, "comparison"):
        return _run(out, preset, config, baseline, seed_list, configs, spec, resume, quiet, write)


def _run(out, preset, config, baseline, seed_list, configs, spec, resume, quiet, write) -> dict[str, Any]:
    from geoformer.experiments import report

    out.mkdir(parents=True, exist_ok=True)

    results: dict[str, Any] = {
        "preset": preset or str(config),
        "baseline": baseline,
        "seeds": seed_list,
        "tokens": _tokens(next(iter(configs.values()))[0]),
        "machine": machine_string(),
        "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "geoformer " + shlex.join(sys.argv[1:]) if sys.argv and "geoformer" in sys.argv[0] else "",
        "variants": {},
    }
    # seed-major (every variant's first seed, then the second, ...) so load drift hits all variants alike
    jobs = [(name, cfgs[i]) for i in range(len(seed_list)) for name, cfgs in configs.items()]
    keys: dict[str, str] = {}  # data config -> corpus key, for the resume check of every run
    from tqdm.auto import tqdm

    bar = tqdm(jobs, desc="compare", disable=quiet, dynamic_ncols=True)
    for name, cfg in bar:
        bar.set_description(f"compare: {name} seed {cfg.seed}")
        run_dir = out / "runs" / name / f"seed{cfg.seed}"
        run = _read_run(run_dir, cfg, keys) if resume else None
        if run is None:
            run = train_or_reuse(cfg, run_dir, resume=False, quiet=quiet, desc=f"{name}/seed{cfg.seed}")
            if quiet:
                s = run["summary"]
                print(f"{name} seed {cfg.seed}: val loss {s['final_val_loss']:.4f}", flush=True)
        v = results["variants"].setdefault(name, {"overrides": spec[name], "runs": []})
        v["runs"].append({"seed": cfg.seed, **run})
        if write:
            checkpoint.atomic_write_json(out / "results.json", results)  # partial results survive a crash
    bar.close()
    if write:
        report.write_report(results, out)
        print(report.format_table(results))
        print(f"report: {out / 'report.html'} (also report.md, results.json)")
    return results
