"""ARC evaluation harness: one method, a list of tasks, two attempts per test output, exact-match scoring.

``run_arc_eval`` writes ``config.json``, one ``<task id>.json`` per task (solved, score, attempts,
seconds) and ``summary.json`` (accuracy with a Wilson 95% interval, seconds per task). It resumes: a
task whose JSON already exists is read back, not re-run (unless ``force``); a folder holding a run
with other settings is an error, so nothing already there is lost.

Scoring (as ARC-AGI-1): a test output counts if one of its 2 attempts equals it exactly (size and
every pixel); a task scores the fraction of its test outputs that count; accuracy is the mean task
score. Methods: ``learner`` (test-time training, :mod:`geoformer.models.arc_learner`), ``identity``
(attempt = the test input) and ``mode`` (the two most common demonstration outputs).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from geoformer.data import arc as A
from geoformer.errors import GeoformerError
from geoformer.train import checkpoint

METHODS = ("learner", "identity", "mode")
DEFAULT_STEPS = 300
DEFAULT_BUDGET_S = 600.0  # wall clock: a hard cap against a stuck task
DEFAULT_BUDGET_CPU_S = 60.0  # CPU seconds of this process: the load-independent per-task cap
ARC_COLOURS = (
    "#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00",
    "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF", "#870C25",
)  # fmt: skip


def committed_ids_path() -> Path:
    from geoformer.config import configs_dir

    return configs_dir() / "arc_eval_ids.txt"


def wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion k/n (k may be fractional: partial task scores)."""
    if n <= 0:
        return math.nan, math.nan
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


# ----------------------------------------------------------------------------- methods


def identity_attempts(task: A.ArcTask) -> dict:
    return {"attempts": [[t] for t, _ in task.test]}


def mode_attempts(task: A.ArcTask) -> dict:
    """The two most common demonstration outputs (ties: the earlier one first), for every test input."""
    counts: Counter = Counter()
    first: dict[bytes, tuple[int, np.ndarray]] = {}
    for k, (_, o) in enumerate(task.train):
        key = o.tobytes() + bytes(o.shape)
        counts[key] += 1
        first.setdefault(key, (k, o))
    ranked = sorted(counts, key=lambda key: (-counts[key], first[key][0]))
    top = [first[key][1] for key in ranked[:2]]
    return {"attempts": [list(top) for _ in task.test]}


def _solve(method: str, task: A.ArcTask, *, steps: int, budget_s, budget_cpu_s, seed: int) -> dict:
    if method == "identity":
        return identity_attempts(task)
    if method == "mode":
        return mode_attempts(task)
    from geoformer.models.arc_learner import LearnerConfig, solve_task

    return solve_task(
        task, LearnerConfig(steps=steps), seed=seed, budget_s=budget_s, budget_cpu_s=budget_cpu_s
    )


def score_attempts(attempts: list[list[np.ndarray]], task: A.ArcTask) -> list[bool]:
    """Per test output: does one of its (at most 2) attempts equal it exactly?"""
    out = []
    for att, (_, truth) in zip(attempts, task.test, strict=True):
        out.append(any(a.shape == truth.shape and bool((a == truth).all()) for a in att[:2]))
    return out


# ----------------------------------------------------------------------------- the run


def resolve_ids(
    dataset: str, split: str, *, tasks: int | None = None, ids: list[str] | None = None
) -> list[str]:
    """The task list: explicit ids (each checked), a seeded sample of ``tasks`` ids, or the whole split."""
    known = set(A.task_ids(dataset, split))
    if ids:
        for i in ids:
            if i not in known:
                raise GeoformerError(f"unknown task id {i!r} in {dataset} {split}")
        return list(dict.fromkeys(ids))
    if tasks is not None:
        return A.sample_ids(dataset, split, tasks)
    return sorted(known)


def _settings(dataset, split, method, steps, budget_s, budget_cpu_s, seed) -> dict[str, Any]:
    s: dict[str, Any] = {"dataset": dataset, "split": split, "method": method, "seed": seed}
    if method == "learner":
        from geoformer.models.arc_learner import LearnerConfig

        s.update(
            steps=steps,
            budget_s=budget_s,
            budget_cpu_s=budget_cpu_s,
            learner=LearnerConfig(steps=steps).to_dict(),
        )
        s["learner"]["w_phase1"] = list(s["learner"]["w_phase1"])
        s["learner"]["w_phase2"] = list(s["learner"]["w_phase2"])
    return s


def _load_task_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) and "score" in data else None
    except (OSError, ValueError):
        return None


def run_arc_eval(
    *,
    dataset: str,
    split: str,
    ids: list[str],
    method: str,
    out: Path,
    steps: int = DEFAULT_STEPS,
    budget_s: float | None = DEFAULT_BUDGET_S,
    budget_cpu_s: float | None = DEFAULT_BUDGET_CPU_S,
    seed: int = 0,
    force: bool = False,
    quiet: bool = False,
    command: str = "",
) -> dict[str, Any]:
    if method not in METHODS:
        raise GeoformerError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    if steps < 1:
        raise GeoformerError("--steps must be >= 1")
    if budget_s is not None and budget_s <= 0:
        raise GeoformerError("--budget-s must be > 0")
    if budget_cpu_s is not None and budget_cpu_s <= 0:
        raise GeoformerError("--budget-cpu-s must be > 0")
    known = set(A.task_ids(dataset, split))
    for tid in ids:
        if tid not in known:
            raise GeoformerError(f"unknown task id {tid!r} in {dataset} {split}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GeoformerError(f"--out {out} exists and is not a folder")
    settings = _settings(dataset, split, method, steps, budget_s, budget_cpu_s, seed)
    cfg_path = out / "config.json"
    if cfg_path.exists() and not force:
        try:
            old = json.loads(cfg_path.read_text(encoding="utf-8")).get("settings")
        except (OSError, ValueError):
            old = None
        if old != settings:
            raise GeoformerError(
                f"{out} holds an ARC eval with other settings (see its config.json); use another --out or --force"
            )
    import torch
    from tqdm.auto import tqdm

    torch.set_num_threads(1)  # a shared 2-core machine; per-task timings stay comparable
    if method == "learner":  # the first optimizer imports torch._dynamo (seconds): not a task's time
        torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.atomic_write_json(cfg_path, {"settings": settings, "command": command})
    rows = []
    bar = tqdm(ids, desc=f"arc {method}", disable=quiet, dynamic_ncols=True)
    for tid in bar:
        path = out / f"{tid}.json"
        row = None if force else _load_task_json(path)
        if row is None:
            task = A.get_task(dataset, split, tid)
            t0, c0 = time.perf_counter(), time.process_time()
            res = _solve(method, task, steps=steps, budget_s=budget_s, budget_cpu_s=budget_cpu_s, seed=seed)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            correct = score_attempts(res["attempts"], task)
            truth_shapes = [tuple(o.shape) for _, o in task.test]
            row = {
                "id": tid,
                "dataset": dataset,
                "split": split,
                "method": method,
                "solved": all(correct),
                "score": sum(correct) / len(correct),
                "correct": correct,
                "attempts": [[a.tolist() for a in att] for att in res["attempts"]],
                "size_correct": [
                    any(a.shape == s for a in att)
                    for att, s in zip(res["attempts"], truth_shapes, strict=True)
                ],
                "seconds": seconds,
                "cpu_seconds": cpu,
            }
            for k in ("size_rules", "fit"):
                if k in res:
                    row[k] = res[k]
            checkpoint.atomic_write_json(path, row)
        rows.append(row)
        bar.set_postfix(acc=f"{sum(r['score'] for r in rows) / len(rows):.3f}")
    summary = summarise(rows, settings)
    summary["command"] = command
    checkpoint.atomic_write_json(out / "summary.json", summary)
    return summary


def summarise(rows: list[dict], settings: dict) -> dict[str, Any]:
    n = len(rows)
    k = sum(r["score"] for r in rows)
    lo, hi = wilson(k, n)
    secs = [r["seconds"] for r in rows]
    cpus = [r.get("cpu_seconds", math.nan) for r in rows]
    s: dict[str, Any] = {
        **settings,
        "tasks": n,
        "solved": k,
        "accuracy": k / n if n else math.nan,
        "wilson95": [lo, hi],
        "test_outputs": sum(len(r["correct"]) for r in rows),
        "test_outputs_solved": sum(sum(r["correct"]) for r in rows),
        "size_correct": sum(sum(r["size_correct"]) for r in rows),
        "seconds_per_task": statistics.fmean(secs) if secs else math.nan,
        "seconds_per_task_median": statistics.median(secs) if secs else math.nan,
        "seconds_per_task_max": max(secs) if secs else math.nan,
        "cpu_seconds_per_task": statistics.fmean(cpus) if cpus else math.nan,
        "solved_ids": [r["id"] for r in rows if r["score"] > 0],
    }
    fits = [r["fit"] for r in rows if "fit" in r]
    if fits:
        s["demos_fitted"] = sum(f["fitted"] for f in fits)
        s["stopped_by"] = dict(Counter(f["stopped_by"] for f in fits))
    rules = Counter(rule for r in rows for rule in r.get("size_rules", []))
    if rules:
        s["size_rules"] = dict(rules)
    return s


# ----------------------------------------------------------------------------- rendering


def load_prediction(pred_dir: Path, task_id: str) -> dict:
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise GeoformerError(f"--pred {pred_dir} is not a folder")
    p = pred_dir / f"{task_id}.json"
    if not p.is_file():
        raise GeoformerError(f"no prediction for task {task_id} in {pred_dir}")
    row = _load_task_json(p)
    if row is None:
        raise GeoformerError(f"{p} is not an ARC eval task file")
    return row


def render_task(task: A.ArcTask, png: Path, *, prediction: dict | None = None, title: str = "") -> Path:
    """A PNG: one column per demonstration pair (input over output), then per test input the input, the
    true output and (with ``prediction``) the attempts, each marked correct or not."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import BoundaryNorm, ListedColormap

    cmap, norm = ListedColormap(ARC_COLOURS), BoundaryNorm(np.arange(-0.5, 10.5, 1), 10)
    cols: list[list[tuple[str, np.ndarray | None]]] = [
        [(f"demo {k + 1} in", i), (f"demo {k + 1} out", o)] for k, (i, o) in enumerate(task.train)
    ]
    for t, (ti, to) in enumerate(task.test):
        col = [(f"test {t + 1} in", ti), (f"test {t + 1} truth", to)]
        if prediction is not None:
            atts = prediction["attempts"][t] if t < len(prediction["attempts"]) else []
            for a_i, a in enumerate(atts[:2]):
                a = np.asarray(a)
                ok = to is not None and a.shape == to.shape and bool((a == to).all())
                col.append((f"attempt {a_i + 1} {'✓' if ok else '✗'}", a))
        cols.append(col)
    rows = max(len(c) for c in cols)
    fig, axes = plt.subplots(rows, len(cols), figsize=(2.0 * len(cols), 2.1 * rows), squeeze=False)
    for ci, col in enumerate(cols):
        for ri in range(rows):
            ax = axes[ri][ci]
            ax.set_xticks([])
            ax.set_yticks([])
            if ri >= len(col) or col[ri][1] is None:
                ax.axis("off")
                continue
            name, grid = col[ri]
            ax.imshow(grid, cmap=cmap, norm=norm, interpolation="nearest")
            ax.set_title(f"{name} {grid.shape[0]}x{grid.shape[1]}", fontsize=7)
    fig.suptitle(title or task.id, fontsize=9)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png
