"""ARC evaluation harness: one method, a list of tasks, two attempts per test output, exact-match scoring.

``run_arc_eval`` writes ``config.json``, one ``<task id>.json`` per task (solved, score, attempts,
seconds) and ``summary.json`` (accuracy with a Wilson 95% interval, seconds per task). It resumes: a
task whose JSON already exists is read back, not re-run (unless ``force``); a folder holding a run
with other settings is an error, so nothing already there is lost.

Scoring (as ARC-AGI-1): a test output counts if one of its 2 attempts equals it exactly (size and
every pixel); a task scores the fraction of its test outputs that count; accuracy is the mean task
score. Methods: ``learner`` (test-time training, :mod:`geoformer.models.arc_learner`), ``identity``
(attempt = the test input), ``mode`` (the two most common demonstration outputs), ``search`` (program
search, :mod:`geoformer.arc`) and ``hybrid`` (search first, then the learner; see :func:`hybrid_attempts`).
A ``search`` or ``hybrid`` task file also records, per attempt, the method that made it (``methods``)
and the program in the DSL's text form (``programs``; None for a learner attempt).

``jobs > 1`` solves tasks in that many spawned worker processes with one thread each (torch, OpenMP,
BLAS); a task's result does not depend on which process solved it, and each enforces the same per-task
budgets (CPU seconds are the worker's own).
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import statistics
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from geoformer.data import arc as A
from geoformer.errors import GeoformerError
from geoformer.train import checkpoint

METHODS = ("learner", "identity", "mode", "search", "hybrid")
DEFAULT_STEPS = 300
SEARCH_DEPTH = 3  # searched primitives per program (a fitted final step comes on top)
DEFAULT_BUDGET_S = 600.0  # wall clock: a hard cap against a stuck task
DEFAULT_BUDGET_CPU_S = 60.0  # CPU seconds of this process: the load-independent per-task cap


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


def search_attempts(task: A.ArcTask, *, budget_cpu_s: float) -> dict:
    """Program search (:func:`geoformer.arc.solve`): per test input the predictions of the two cheapest
    programs consistent with every demonstration, else fallbacks (their program text ends in
    ``(fallback)``)."""
    from geoformer.arc import solve

    tests = [t for t, _ in task.test]
    res = solve(list(task.train), tests, budget_cpu_s=budget_cpu_s, max_depth=SEARCH_DEPTH)
    return {
        "attempts": res["attempts"],
        "programs": res["programs"],
        "methods": [["search"] * len(p) for p in res["programs"]],
        "costs": res["costs"],
        "search": {k: res[k] for k in ("found", "solutions", "searched")} | {"cpu_s": round(res["cpu_s"], 3)},
    }


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool((a == b).all())


def hybrid_attempts(
    task: A.ArcTask, *, steps: int, budget_s, budget_cpu_s: float, search_budget_cpu_s: float, seed: int
) -> dict:
    """Search first (at most ``search_budget_cpu_s``); the learner (with what is left of ``budget_cpu_s``)
    only if some test input has fewer than two predictions from consistent programs. One ranking per test
    input: consistent programs by description length, then the learner's attempts, then the search's
    fallbacks; equal grids count once."""
    c0 = time.process_time()
    res = search_attempts(task, budget_cpu_s=min(search_budget_cpu_s, budget_cpu_s))
    need = any(sum(c is not None for c in costs) < 2 for costs in res["costs"])
    left = budget_cpu_s - (time.process_time() - c0)
    learned = None
    if need and left > 0.5:
        from geoformer.models.arc_learner import LearnerConfig, solve_task

        cfg = LearnerConfig(steps=steps)
        learned = solve_task(task, cfg, seed=seed, budget_s=budget_s, budget_cpu_s=left)
    out: dict = {"attempts": [], "programs": [], "methods": [], "search": res["search"]}
    if learned is not None:
        out.update(size_rules=learned["size_rules"], fit=learned["fit"])
    for t in range(len(task.test)):
        cands = []  # (grid, method, program)
        atts, progs, costs = res["attempts"][t], res["programs"][t], res["costs"][t]
        cands += [(a, "search", p) for a, p, c in zip(atts, progs, costs, strict=True) if c is not None]
        if learned is not None:
            cands += [(np.asarray(a), "learner", None) for a in learned["attempts"][t]]
        cands += [(a, "search", p) for a, p, c in zip(atts, progs, costs, strict=True) if c is None]
        picked: list = []
        for cand in cands:
            if len(picked) < 2 and not any(_same(cand[0], q[0]) for q in picked):
                picked.append(cand)
        out["attempts"].append([q[0] for q in picked])
        out["methods"].append([q[1] for q in picked])
        out["programs"].append([q[2] for q in picked])
    return out


def _solve(
    method: str, task: A.ArcTask, *, steps: int, budget_s, budget_cpu_s, seed: int, search_budget_cpu_s=None
) -> dict:
    if method == "identity":
        return identity_attempts(task)
    if method == "mode":
        return mode_attempts(task)
    if method == "search":
        return search_attempts(task, budget_cpu_s=search_budget_cpu_s or budget_cpu_s or DEFAULT_BUDGET_CPU_S)
    if method == "hybrid":
        return hybrid_attempts(
            task, steps=steps, budget_s=budget_s, budget_cpu_s=budget_cpu_s or DEFAULT_BUDGET_CPU_S,
            search_budget_cpu_s=search_budget_cpu_s, seed=seed,
        )  # fmt: skip
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


def _settings(
    dataset, split, method, steps, budget_s, budget_cpu_s, seed, search_budget_cpu_s=None
) -> dict[str, Any]:
    s: dict[str, Any] = {"dataset": dataset, "split": split, "method": method, "seed": seed}
    if method in ("search", "hybrid"):
        s.update(budget_cpu_s=budget_cpu_s, search_budget_cpu_s=search_budget_cpu_s)
        s["search_depth"] = SEARCH_DEPTH
    if method in ("learner", "hybrid"):
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
    jobs: int = 1,
    search_budget_cpu_s: float | None = None,
) -> dict[str, Any]:
    """Solve ``ids`` with ``method`` into ``out`` (see the module docstring). ``search_budget_cpu_s``: the
    search's share of ``budget_cpu_s`` (default: all of it for ``search``, half for ``hybrid``)."""
    if method not in METHODS:
        raise GeoformerError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    if steps < 1:
        raise GeoformerError("--steps must be >= 1")
    if budget_s is not None and budget_s <= 0:
        raise GeoformerError("--budget-s must be > 0")
    if budget_cpu_s is not None and budget_cpu_s <= 0:
        raise GeoformerError("--budget-cpu-s must be > 0")
    if jobs < 1:
        raise GeoformerError("--jobs must be >= 1")
    if search_budget_cpu_s is not None and search_budget_cpu_s <= 0:
        raise GeoformerError("--search-budget-cpu-s must be > 0")
    if method in ("search", "hybrid"):
        total = budget_cpu_s or DEFAULT_BUDGET_CPU_S
        share = search_budget_cpu_s or (total if method == "search" else total / 2)
        search_budget_cpu_s = min(share, total)
    else:
        search_budget_cpu_s = None
    known = set(A.task_ids(dataset, split))
    for tid in ids:
        if tid not in known:
            raise GeoformerError(f"unknown task id {tid!r} in {dataset} {split}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GeoformerError(f"--out {out} exists and is not a folder")
    settings = _settings(dataset, split, method, steps, budget_s, budget_cpu_s, seed, search_budget_cpu_s)
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
    if method in ("learner", "hybrid"):  # the first optimizer imports torch._dynamo (seconds): not task time
        torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.atomic_write_json(cfg_path, {"settings": settings, "command": command})
    opts = dict(method=method, steps=steps, budget_s=budget_s, budget_cpu_s=budget_cpu_s, seed=seed,
                search_budget_cpu_s=search_budget_cpu_s)  # fmt: skip
    done: dict[str, dict] = {}
    for tid in ids:
        row = None if force else _load_task_json(out / f"{tid}.json")
        if row is not None:
            done[tid] = row
    todo = [tid for tid in ids if tid not in done]
    bar = tqdm(total=len(ids), initial=len(done), desc=f"arc {method}", disable=quiet, dynamic_ncols=True)

    def finished(row: dict) -> None:
        checkpoint.atomic_write_json(out / f"{row['id']}.json", row)
        done[row["id"]] = row
        bar.update(1)
        bar.set_postfix(acc=f"{sum(r['score'] for r in done.values()) / len(done):.3f}")

    if jobs == 1 or len(todo) <= 1:
        for tid in todo:
            finished(solve_one(dataset, split, tid, **opts))
    else:
        _solve_parallel(todo, min(jobs, len(todo)), finished, dataset=dataset, split=split, **opts)
    bar.close()
    rows = [done[tid] for tid in ids]
    summary = summarise(rows, settings)
    summary["command"] = command
    checkpoint.atomic_write_json(out / "summary.json", summary)
    return summary


def solve_one(dataset: str, split: str, tid: str, *, method: str, **opts) -> dict:
    """The task file of one task: attempts, scores, seconds (and, per method, what made the attempts)."""
    task = A.get_task(dataset, split, tid)
    t0, c0 = time.perf_counter(), time.process_time()
    res = _solve(method, task, **opts)
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
    for k in ("size_rules", "fit", "methods", "programs", "search"):
        if k in res:
            row[k] = res[k]
    if "methods" in res:  # per test output: the method of the attempt that matched it (None: neither did)
        row["right_by"] = [
            next((m for a, m in zip(att[:2], ms, strict=False) if _same(a, o)), None)
            for att, ms, (_, o) in zip(res["attempts"], res["methods"], task.test, strict=True)
        ]
    return row


_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@contextmanager
def _one_thread_env():
    """Spawned workers read these at start-up (numpy's BLAS, torch's OpenMP): one thread each."""
    old = {k: os.environ.get(k) for k in _THREAD_VARS}
    os.environ.update({k: "1" for k in _THREAD_VARS})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _init_worker(method: str) -> None:
    import torch

    from geoformer.experiments.pools import exit_with_parent

    exit_with_parent()

    torch.set_num_threads(1)
    if method in ("learner", "hybrid"):
        torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def _solve_parallel(todo: list[str], jobs: int, finished, *, dataset: str, split: str, **opts) -> None:
    """Solve ``todo`` in ``jobs`` spawned processes (not forked: a forked torch with a live OpenMP pool can
    deadlock); ``finished(row)`` runs here as each task ends; a failed task cancels the ones not started."""
    from geoformer.experiments.pools import completed

    ctx = mp.get_context("spawn")
    with _one_thread_env(), ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker,
                                                initargs=(opts["method"],)) as pool:  # fmt: skip
        for f in completed([pool.submit(solve_one, dataset, split, tid, **opts) for tid in todo]):
            finished(f.result())


def _solver_of(row: dict) -> str:
    """``search``, ``learner`` or ``learner+search``: the methods of the right attempts of a task."""
    return "+".join(sorted({m for m in row.get("right_by", []) if m is not None}))


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
    made = Counter(m for r in rows for per_test in r.get("methods", []) for m in per_test[:2])
    if made:  # search and hybrid runs (the other methods' summaries stay as they were)
        s["cpu_seconds_per_task_max"] = max(cpus)
        s["attempts_by_method"] = dict(made)
        s["programs_found"] = sum(1 for r in rows if r.get("search", {}).get("found"))
        s["solved_by"] = dict(Counter(_solver_of(r) for r in rows if r["score"] > 0))
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
