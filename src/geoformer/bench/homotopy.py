"""Overhead of the homotopy lr's curvature probes, as a ratio to constant lr measured in the same run.

Each setting trains the same model on the same batches for ``steps`` timed steps (after ``warmup``),
settings alternate over ``repeats`` rounds (the order flips each round) to cancel drift, and the
median time per setting is divided by constant lr's. The extra time divided by the number of
estimates in the timed window gives the cost of one estimate in units of one training step.
"""

from __future__ import annotations

import statistics
from typing import Any

from geoformer import data as gdata
from geoformer.bench._common import BackgroundLoad, load_note, machine_info, markdown_table, write_json
from geoformer.bench.trainer_throughput import bench_config, run_trainer_once, tokens_per_step
from geoformer.config import RunConfig
from geoformer.train.homotopy import HomotopyOptions
from geoformer.train.trainer import pick_device

# name -> train overrides; "default" is HomotopyOptions() as shipped
SETTINGS: dict[str, dict[str, Any]] = {
    "constant": {"schedule": "constant"},
    "homotopy default": {"schedule": "homotopy", "homotopy": {}},
    "homotopy interval 10, 1 probe": {
        "schedule": "homotopy",
        "homotopy": {"interval": 10, "eigen": "power", "power_iters": 1, "hutchinson_probes": 1},
    },
    "homotopy interval 10, seed estimator (20 power its, 10 probes)": {
        "schedule": "homotopy",
        "homotopy": {"interval": 10, "eigen": "power", "power_iters": 20, "power_tol": 1e-6, "hutchinson_probes": 10},
    },
    # the write-up's cheap proxy: the probe batch's gradient norm every step, no Hessian
    "homotopy grad-norm proxy every step": {
        "schedule": "homotopy",
        "homotopy": {"interval": 1, "curvature": "grad_norm", "power_iters": 0, "hutchinson_probes": 0},
    },
}


def estimates_in_window(name: str, steps: int, warmup: int) -> int:
    """Curvature estimates a setting makes in the timed steps warmup + 1 .. warmup + steps."""
    if name == "constant":
        return 0
    interval = {"interval": HomotopyOptions().interval, **SETTINGS[name].get("homotopy", {})}["interval"]
    return sum(1 for s in range(warmup + 1, warmup + steps + 1) if s % interval == 0)


def _with(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    d = cfg.to_dict()
    d["train"].update(overrides)
    return RunConfig.from_dict(d)


def run_homotopy_bench(
    cfg: RunConfig, *, steps: int = 200, warmup: int = 20, repeats: int = 3, log=print, first_round: int = 0
) -> dict:
    """Time every setting ``repeats`` times, interleaved; ``first_round`` continues the order alternation of an
    earlier call (rounds ``first_round ..`` flip the order as if they had followed it)."""
    data = gdata.prepare_data(cfg.data)
    base = bench_config(cfg, steps, warmup, data.vocab_size)
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    with BackgroundLoad() as load:
        for r in range(first_round, first_round + repeats):
            order = list(SETTINGS) if r % 2 == 0 else list(reversed(SETTINGS))
            for name in order:
                res = run_trainer_once(_with(base, SETTINGS[name]), data, steps, warmup)
                times[name].append(steps * tokens_per_step(base) / res["tokens_per_s"])
                log(f"round {r + 1}/{first_round + repeats}: {name}: {times[name][-1]:.2f} s")
    t_const = statistics.median(times["constant"])
    step_s = t_const / steps
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        n_est = estimates_in_window(name, steps, warmup)
        rows.append(
            {
                "setting": name,
                "median_s": med,
                "times_s": ts,
                "ratio_vs_constant": med / t_const,
                "overhead_pct": 100 * (med / t_const - 1),
                "estimates_in_window": n_est,
                "estimate_cost_steps": ((med - t_const) / n_est / step_s) if n_est else None,
            }
        )
    return {
        "machine": machine_info(pick_device(cfg.train.device)),
        "settings": {
            "steps": steps,
            "warmup": warmup,
            "repeats": repeats,
            "model": cfg.model.__dict__,
            "batch_size": cfg.train.batch_size,
            "probe_batch": 4,
        },
        "load": load.as_dict(),
        "rows": rows,
    }


def format_table(result: dict) -> str:
    rows = [
        [
            r["setting"],
            f"{r['median_s']:.2f}",
            f"{r['ratio_vs_constant']:.3f}",
            f"{r['overhead_pct']:+.1f}%",
            str(r["estimates_in_window"]),
            "" if r["estimate_cost_steps"] is None else f"{r['estimate_cost_steps']:.2f}",
        ]
        for r in result["rows"]
    ]
    header = ["setting", "median s", "× constant", "overhead", "estimates", "1 estimate = N steps"]
    return markdown_table(header, rows) + "\n" + load_note(result["load"]).strip() + "\n"


def write_outputs(result: dict, out) -> None:
    from pathlib import Path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "bench.json", result)
    (out / "bench.md").write_text(format_table(result))
