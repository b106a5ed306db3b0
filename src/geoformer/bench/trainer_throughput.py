"""Training throughput of :class:`~geoformer.train.trainer.Trainer` against a minimal hand-written loop.

The hand loop is nanoGPT's: the same :class:`GPT` built from the same config and seed, AdamW with the same
param groups and betas, the lr of the configured schedule set per step, the same batch and block size,
batches from :func:`geoformer.data.sample_batch`, then forward, backward, ``clip_grad_norm_``, ``step``,
``zero_grad(set_to_none=True)``. Both run in this process, alternating ``repeats`` times (the order flips
every repeat) to cancel drift; each times ``steps`` steps after ``warmup`` excluded ones. The trainer is
timed from a callback, so its set-up and its evaluations fall outside the timed window. The same seed and
batches make both loops compute the same losses, which is checked as a sanity test of the comparison.
"""

from __future__ import annotations

import contextlib
import gc
import io
import statistics
import time
from typing import Any

import torch

from geoformer import data as gdata
from geoformer.bench._common import (
    BackgroundLoad,
    fmt,
    load_note,
    machine_info,
    markdown_table,
    positive_int,
    prepare_out,
    sync,
    write_json,
)
from geoformer.config import RunConfig
from geoformer.models import GPT
from geoformer.train import schedules
from geoformer.train.callbacks import Callback

TARGET_RATIO = 0.95
NO_EVAL = (
    10**9
)  # an eval_interval no timed run reaches (the trainer still evaluates at step 0 and at the end)


def bench_config(cfg: RunConfig, steps: int, warmup: int, vocab_size: int) -> RunConfig:
    """A copy of ``cfg`` that trains exactly ``warmup + steps`` steps with no evaluation in between."""
    d = cfg.to_dict()
    d["train"].update(max_iters=warmup + steps, eval_interval=NO_EVAL, eval_iters=1)
    d["model"]["vocab_size"] = cfg.model.vocab_size or vocab_size
    return RunConfig.from_dict(d)


def tokens_per_step(cfg: RunConfig) -> int:
    t = cfg.train
    return t.batch_size * t.grad_accum * cfg.model.block_size


def autocast_for(cfg: RunConfig, device: torch.device):
    """The trainer's mixed-precision rule: bf16 autocast on CUDA (dtype auto/bfloat16) or when asked."""
    dt = cfg.train.dtype
    if dt == "bfloat16" or (device.type == "cuda" and dt == "auto"):
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def lr_values(cfg: RunConfig, n: int) -> list[float]:
    """The lr of the configured schedule at steps 0..n-1 (read off the same scheduler the trainer uses)."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.train.lr)
    sched = schedules.build(cfg.train.schedule, opt, cfg.train)
    values = []
    for _ in range(n):
        values.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return values


def throughput(stamps: list[float], tokens: int, device: torch.device) -> dict[str, float | None]:
    """Tokens/s from the clock readings at the end of each timed step (``stamps[0]`` = start).

    ``tokens_per_s`` uses the total time (the figure compared); ``tokens_per_s_median_step`` uses the
    median step, which shrugs off bursts of background load (CPU only: on CUDA the intermediate readings
    are not synchronised, so as not to add a sync per step to the hand loop).
    """
    steps = len(stamps) - 1
    median_step = statistics.median(b - a for a, b in zip(stamps, stamps[1:], strict=False))
    return {
        "tokens_per_s": steps * tokens / (stamps[-1] - stamps[0]),
        "tokens_per_s_median_step": tokens / median_step if device.type != "cuda" else None,
    }


class StepTimer(Callback):
    """Clock readings at the end of trainer steps ``start .. end`` (set-up and evaluation excluded)."""

    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end
        self.stamps: list[float] = []
        self.last_loss: float | None = None

    def on_step_end(self, trainer, step: int, loss: float) -> None:
        if step in (self.start, self.end):
            sync(trainer.device)
        if self.start <= step <= self.end:
            self.stamps.append(time.perf_counter())
        if step == self.end:
            self.last_loss = loss


def run_trainer_once(cfg: RunConfig, data: gdata.TokenData, steps: int, warmup: int) -> dict[str, float]:
    """Tokens/s of ``Trainer.fit`` over ``steps`` steps after ``warmup``, and its last loss."""
    from geoformer.train.trainer import Trainer

    timer = StepTimer(warmup, warmup + steps)
    trainer = Trainer(cfg, out_dir=None, callbacks=[timer], quiet=True, progress=False, data=data)
    with contextlib.redirect_stdout(io.StringIO()):  # quiet=True still prints a line per evaluation
        trainer.fit()
    device = trainer.device
    del trainer
    return {**throughput(timer.stamps, tokens_per_step(cfg), device), "last_loss": timer.last_loss}


def run_hand_once(cfg: RunConfig, data: gdata.TokenData, steps: int, warmup: int) -> dict[str, float]:
    """Tokens/s of the minimal nanoGPT loop over ``steps`` steps after ``warmup``, and its last loss."""
    from geoformer.train.trainer import build_optimizer, pick_device

    t, m = cfg.train, cfg.model
    device = pick_device(t.device)
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    torch.manual_seed(cfg.seed)
    model = GPT(m).to(device).train()
    # the trainer's own optimizer (AdamW, or Muon + AdamW for the modern recipe): the loops differ only in the loop
    opt = build_optimizer(model.param_groups(t.weight_decay), t, device, model)
    lrs = lr_values(cfg, warmup + steps)
    autocast = autocast_for(cfg, device)
    gen = torch.Generator().manual_seed(cfg.seed)
    stamps: list[float] = []
    for it in range(warmup + steps):
        for group in opt.param_groups:
            group["lr"] = lrs[it]
        for _ in range(t.grad_accum):
            x, y = gdata.sample_batch(data.train, t.batch_size, m.block_size, gen)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast():
                _, loss = model(x, y)
            (loss / t.grad_accum).backward()
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if it + 1 >= warmup:  # the same readings as StepTimer: after steps warmup .. warmup+steps
            if it + 1 in (warmup, warmup + steps):
                sync(device)
            stamps.append(time.perf_counter())
    last = loss.item() if t.grad_accum == 1 else None  # the trainer reports the mean over micro-batches
    return {**throughput(stamps, tokens_per_step(cfg), device), "last_loss": last}


def run_trainer_bench(
    cfg: RunConfig, *, steps: int = 60, warmup: int = 10, repeats: int = 3, log=None
) -> dict[str, Any]:
    """Alternate trainer and hand-loop runs ``repeats`` times; returns machine, settings, runs and summary."""
    positive_int("--steps", steps)
    positive_int("--warmup", warmup)
    positive_int("--repeats", repeats)
    data = gdata.prepare_data(cfg.data)
    gdata.check_block_size(data, cfg.model.block_size)
    cfg = bench_config(cfg, steps, warmup, data.vocab_size)
    runners = {"trainer": run_trainer_once, "hand": run_hand_once}
    runs: list[dict[str, Any]] = []
    with BackgroundLoad() as load:
        # process warm-up, discarded: the first loop of a process pays one-off costs (thread pool, allocator
        # growth) beyond its own warm-up steps, which would otherwise land on whichever loop runs first
        run_hand_once(RunConfig.from_dict(cfg.to_dict()), data, 1, warmup)
        for r in range(repeats):
            order = ("trainer", "hand") if r % 2 == 0 else ("hand", "trainer")
            for name in order:
                res = runners[name](RunConfig.from_dict(cfg.to_dict()), data, steps, warmup)
                runs.append({"repeat": r, "loop": name, **res})
                gc.collect()
                if log is not None:
                    log(f"  repeat {r}: {name:>7} {res['tokens_per_s']:,.0f} tok/s")
    from geoformer.train.trainer import pick_device

    device = pick_device(cfg.train.device)
    return {
        "machine": machine_info(device),
        "settings": {
            "steps": steps,
            "warmup": warmup,
            "repeats": repeats,
            "process_warmup": f"one discarded hand-loop run of {warmup + 1} steps before the repeats",
            "tokens_per_step": tokens_per_step(cfg),
            "config": cfg.to_dict(),
        },
        "background_load": load.as_dict(),
        "runs": runs,
        "summary": summarize(runs),
    }


def paired_ratios(runs: list[dict[str, Any]], key: str) -> list[float | None]:
    """trainer / hand of ``key`` within each repeat (drift between repeats cancels)."""
    by = {(r["repeat"], r["loop"]): r[key] for r in runs}
    reps = sorted({r["repeat"] for r in runs})
    return [by[i, "trainer"] / by[i, "hand"] if by[i, "trainer"] and by[i, "hand"] else None for i in reps]


def _median_or_none(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median tokens/s of each loop, their ratio, and whether both loops computed the same losses."""
    med = {
        n: statistics.median(r["tokens_per_s"] for r in runs if r["loop"] == n) for n in ("trainer", "hand")
    }
    losses = {n: [r["last_loss"] for r in runs if r["loop"] == n] for n in ("trainer", "hand")}
    diffs = [abs(a - b) for a, b in zip(losses["trainer"], losses["hand"], strict=True) if a is not None]
    diff = max(diffs) if diffs else None
    ratio = med["trainer"] / med["hand"]
    return {
        "trainer_tokens_per_s": med["trainer"],
        "hand_tokens_per_s": med["hand"],
        "ratio_trainer_vs_hand": ratio,
        "ratio_paired_median": statistics.median(paired_ratios(runs, "tokens_per_s")),
        "ratio_median_step": _median_or_none(paired_ratios(runs, "tokens_per_s_median_step")),
        "target": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
        "max_last_loss_diff": diff,
    }


def format_table(result: dict[str, Any]) -> str:
    """Per-repeat tokens/s of both loops, their ratios, and the summary row, as markdown."""
    runs, s = result["runs"], result["summary"]
    total, step = paired_ratios(runs, "tokens_per_s"), paired_ratios(runs, "tokens_per_s_median_step")
    by = {(r["repeat"], r["loop"]): r["tokens_per_s"] for r in runs}
    rows = [
        [
            str(i),
            fmt(by[i, "trainer"], ",.0f"),
            fmt(by[i, "hand"], ",.0f"),
            fmt(total[i], ".3f"),
            fmt(step[i], ".3f"),
        ]
        for i in range(len(total))
    ]
    rows.append(
        [
            "**median**",
            fmt(s["trainer_tokens_per_s"], ",.0f"),
            fmt(s["hand_tokens_per_s"], ",.0f"),
            f"**{s['ratio_trainer_vs_hand']:.3f}**",
            fmt(s["ratio_median_step"], ".3f"),
        ]
    )
    header = ["repeat", "Trainer tok/s", "hand loop tok/s", "trainer / hand", "trainer / hand (median step)"]
    return markdown_table(header, rows)


def describe(result: dict[str, Any]) -> str:
    m, st, s = result["machine"], result["settings"], result["summary"]
    mc = st["config"]["model"]
    verdict = "meets" if s["meets_target"] else "misses"
    return (
        f"Trainer vs hand loop: {mc['n_layer']} layers, {mc['n_embd']} wide, block {mc['block_size']}, "
        f"batch {st['config']['train']['batch_size']}, {st['steps']} timed steps after {st['warmup']}, "
        f"{st['repeats']} alternating repeats, on {m['device_name']} ({m['device']}, {m['torch_threads']} threads, "
        f"torch {m['torch']}). Ratio {s['ratio_trainer_vs_hand']:.3f} {verdict} the {s['target']} target "
        f"(median of paired ratios {s['ratio_paired_median']:.3f}, of median-step ratios "
        f"{fmt(s['ratio_median_step'], '.3f')}); "
        f"last-step losses of the two loops differ by at most {fmt(s['max_last_loss_diff'], '.2e')}."
        f"{load_note(result.get('background_load', {}))}\n"
    )


def write_outputs(result: dict[str, Any], out) -> None:
    """``bench.json`` and ``bench.md`` in ``out``."""
    out = prepare_out(out)
    write_json(out / "bench.json", result)
    (out / "bench.md").write_text(describe(result) + "\n" + format_table(result), encoding="utf-8")


__all__ = ["run_trainer_bench", "run_trainer_once", "run_hand_once", "write_outputs", "format_table"]
