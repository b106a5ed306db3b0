"""``geoformer compare --jobs N``: the runs of a comparison trained in N worker processes.

Every (variant, seed) run is independent and deterministic given its config, so the workers train them into
the same folders a serial comparison would use (``<out>/runs/<variant>/seed<seed>``), then the serial
:func:`~geoformer.experiments.compare.run_compare` assembles ``results.json`` and the report from the finished
runs (``resume``: it reuses every run whose config matches, and trains none). Results are therefore the
serial ones, bit for bit, as long as each run's thread count is the same (every preset pins
``train.threads``; a config that leaves it at 0 gets ``cores // N`` threads per worker, which changes its
floating-point reductions against a serial run on all cores).

Workers are spawned (not forked: a forked torch with a live OpenMP pool can deadlock); on a machine with
several CUDA devices worker ``i`` sees only device ``i mod count`` (``CUDA_VISIBLE_DEVICES``).

On a cluster, ``launcher="slurm"`` submits one job per run through submitit (the engine this field uses for
SLURM: it pickles the call, submits a job array, and returns each job's result or traceback), with at most
``jobs`` running at once (``slurm_array_parallelism``); ``launcher="local"`` runs submitit's local executor
(subprocesses on this machine), which is how the path is tested without a cluster. Options such as
``slurm_partition``, ``timeout_min`` or ``gpus_per_node`` pass through ``launcher_opts``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from geoformer import config as C
from geoformer.errors import GeoformerError
from geoformer.experiments.pools import completed, exit_with_parent


def _init_worker(counter, n_jobs: int, n_gpus: int) -> None:
    exit_with_parent()
    with counter.get_lock():
        slot = counter.value
        counter.value += 1
    if n_gpus > 0:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot % n_gpus)
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // n_jobs))  # a config with train.threads > 0 overrides


def _train_one(cfg_dict: dict[str, Any], run_dir: str, resume: bool) -> tuple[str, float | None]:
    from geoformer.experiments.compare import train_or_reuse

    cfg = C.RunConfig.from_dict(cfg_dict)
    run = train_or_reuse(cfg, Path(run_dir), resume=resume, quiet=True)
    loss = run["summary"].get("final_val_loss")
    return run_dir, loss


def _cuda_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no usable CUDA is "no GPU"
        return 0


def train_runs(jobs: list[tuple[C.RunConfig, Path]], n_jobs: int, *, resume: bool, quiet: bool) -> None:
    """Train (or, with ``resume``, reuse) every ``(cfg, run_dir)`` in ``n_jobs`` worker processes."""
    from tqdm.auto import tqdm

    ctx = mp.get_context("spawn")
    counter = ctx.Value("i", 0)
    bar = tqdm(total=len(jobs), desc=f"compare ({n_jobs} workers)", disable=quiet, dynamic_ncols=True)
    with ProcessPoolExecutor(n_jobs, mp_context=ctx, initializer=_init_worker,
                             initargs=(counter, n_jobs, _cuda_count())) as pool:  # fmt: skip
        futures = {pool.submit(_train_one, cfg.to_dict(), str(d), resume): d for cfg, d in jobs}
        for f in completed(futures):
            err = f.exception()
            if isinstance(err, GeoformerError):
                raise err
            if err is not None:
                raise GeoformerError(f"{futures[f]}: the run failed: {type(err).__name__}: {err}") from err
            run_dir, loss = f.result()
            bar.update(1)
            if quiet:
                print(f"{Path(run_dir).parent.name} {Path(run_dir).name}: val loss {loss:.4f}", flush=True)
    bar.close()


LAUNCHERS = ("processes", "local", "slurm")


def submit_runs(
    jobs: list[tuple[C.RunConfig, Path]], n_jobs: int, folder: Path, *, cluster: str, resume: bool, quiet: bool,
    opts: dict[str, Any] | None = None,
) -> None:
    """Train every ``(cfg, run_dir)`` as one submitit job each (``cluster`` "slurm" or "local"); job logs go
    to ``folder``. A failed job is one line naming its run and the job's log folder."""
    try:
        import submitit
    except ImportError:
        raise GeoformerError("--launcher slurm/local needs submitit (pip install submitit)") from None
    from tqdm.auto import tqdm

    ex = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params: dict[str, Any] = {"timeout_min": 24 * 60, "name": "geoformer"}
    if cluster == "slurm":
        params["slurm_array_parallelism"] = n_jobs
    try:
        ex.update_parameters(**{**params, **(opts or {})})
    except (ValueError, TypeError, NameError, AssertionError) as e:  # submitit's own checks of the options
        raise GeoformerError(f"--launcher-opt: {str(e).splitlines()[0]}") from None
    with ex.batch():
        handles = [(d, ex.submit(_train_one, cfg.to_dict(), str(d), resume)) for cfg, d in jobs]
    bar = tqdm(total=len(handles), desc=f"compare ({cluster} jobs)", disable=quiet, dynamic_ncols=True)
    for d, job in handles:
        try:
            _, loss = job.result()
        except Exception as e:  # noqa: BLE001 - submitit re-raises the job's failure as its own error type
            raise GeoformerError(f"{d}: job {job.job_id} failed ({type(e).__name__}); its log is in {folder}") from e
        bar.update(1)
        if quiet:
            print(f"{d.parent.name} {d.name}: val loss {loss:.4f}", flush=True)
    bar.close()


def run_compare_parallel(
    *, jobs: int, launcher: str = "processes", launcher_opts: dict[str, Any] | None = None, **kw: Any
) -> dict[str, Any]:
    """:func:`~geoformer.experiments.compare.run_compare` with its runs trained in ``jobs`` processes, or as
    submitit jobs (``launcher`` "slurm" / "local"), then assembled by the serial compare."""
    from geoformer.experiments import compare
    from geoformer.train.run_lock import run_lock

    if jobs < 1:
        raise GeoformerError(f"--jobs must be >= 1, got {jobs}")
    if launcher not in LAUNCHERS:
        raise GeoformerError(f"unknown launcher {launcher!r}; known: {', '.join(LAUNCHERS)}")
    if launcher_opts and launcher == "processes":
        raise GeoformerError("--launcher-opt needs --launcher slurm or local")
    if jobs == 1 and launcher == "processes":
        return compare.run_compare(**kw)
    _, seed_list, configs, _ = compare.checked_plan(**kw)
    out = Path(kw["out"])
    runs = [(cfgs[i], out / "runs" / name / f"seed{cfgs[i].seed}")
            for i in range(len(seed_list)) for name, cfgs in configs.items()]  # fmt: skip
    resume, quiet = bool(kw.get("resume")), bool(kw.get("quiet"))
    with run_lock(out, "comparison"):  # held across both phases (re-entrant in this process)
        if resume:  # which runs can be reused is decided here, once (the corpus hashed once, not per worker)
            keys: dict[str, str] = {}
            runs = [(cfg, d) for cfg, d in runs if compare._read_run(d, cfg, keys) is None]
        if runs and launcher == "processes":
            train_runs(runs, min(jobs, len(runs)), resume=False, quiet=quiet)
        elif runs:
            submit_runs(runs, jobs, out / "jobs", cluster=launcher, resume=False, quiet=quiet, opts=launcher_opts)
        return compare.run_compare(**{**kw, "resume": True, "force": False})
