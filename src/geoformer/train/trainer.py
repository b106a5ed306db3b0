"""The training loop: AdamW, a named schedule, clipping, accumulation, fixed-batch evaluation,
callbacks, atomic resumable checkpoints and data-parallel training under torchrun.

Determinism: the model is initialised from ``seed``; training batches come from a dedicated
``torch.Generator`` seeded with ``seed`` that every rank advances identically (each rank takes its
slice of the same global batch), so one process and N processes see the same data. The generator and
the global RNG (dropout) are checkpointed, which makes ``resume`` bit-identical on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import resource
import shutil
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from geoformer import data as gdata
from geoformer import gitstate
from geoformer.config import RunConfig
from geoformer.cpuload import BackgroundLoad
from geoformer.errors import GeoformerError, TrainingDiverged
from geoformer.models import GPT, build_model
from geoformer.train import checkpoint, distributed, schedules
from geoformer.train.callbacks import Callback, build_callbacks

RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", "ckpt.pt")


PARAM_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}
# train settings a resume may change: they decide how long and how often, not what the optimizer does
RESUMABLE = frozenset({"max_iters", "eval_interval", "threads", "device", "compile", "dist_timeout_s"})


def build_optimizer(groups, t, device: torch.device, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
    """``train.optimizer``: AdamW (default), SGD with momentum ``beta1`` (the plainest optimizer: its stability
    depends on lr x curvature, the homotopy lr's stress case), Muon for the blocks' matrices with AdamW for the
    rest (``muon``, the modern recipe; needs ``model``), or Schedule-Free AdamW (PyPI ``schedulefree``)."""
    if t.optimizer == "muon":
        from geoformer.train.optimizers import MuonAdamW

        return MuonAdamW(model, lr=t.lr, betas=(t.beta1, t.beta2), weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(
            groups, lr=t.lr, betas=(t.beta1, t.beta2), **({"fused": True} if device.type == "cuda" else {})
        )
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.beta1)
    import schedulefree

    opt = schedulefree.AdamWScheduleFree(
        groups, lr=t.lr, betas=(t.beta1, t.beta2), warmup_steps=t.warmup_iters
    )
    opt.train()
    return opt


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise GeoformerError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GeoformerError(f"device {name!r} requested but CUDA is not available")
    return dev


def peak_rss_mb() -> float:
    """Peak resident set size of this process (Linux reports KiB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def prepare_out_dir(out: Path, *, resume: bool, force: bool) -> None:
    """Refuse to overwrite an existing run unless asked; ``force`` removes only geoformer's run files."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GeoformerError(f"--out {out} exists and is not a folder")
    existing = [f for f in RUN_FILES if (out / f).exists()]
    if resume:
        if not (out / "ckpt.pt").exists():
            hint = "; it stopped before its first checkpoint: start it again with --force" if existing else ""
            raise GeoformerError(f"nothing to resume: {out / 'ckpt.pt'} does not exist{hint}")
        return
    if existing and not force:
        if not (out / "ckpt.pt").exists():
            raise GeoformerError(
                f"{out} holds a run that stopped before its first checkpoint ({', '.join(existing)}); use --force to "
                "start it again"
            )
        raise GeoformerError(
            f"{out} already holds a run ({', '.join(existing)}); use --resume to continue it or --force to overwrite"
        )
    for f in existing:
        (out / f).unlink()
    for extra in ("plots",):
        if force and (out / extra).is_dir():
            shutil.rmtree(out / extra)
    out.mkdir(parents=True, exist_ok=True)


class Trainer:
    """Train a :class:`GPT` described by a :class:`RunConfig`.

    >>> trainer = Trainer(cfg, out_dir="runs/x")      # doctest: +SKIP
    >>> summary = trainer.fit()                       # doctest: +SKIP
    """

    def __init__(
        self,
        cfg: RunConfig,
        out_dir: str | Path | None = None,
        *,
        callbacks: list[Callback] | tuple[Callback, ...] = (),
        resume: bool = False,
        quiet: bool = False,
        progress: bool = True,
        progress_desc: str = "train",
        data: gdata.TokenData | None = None,
    ) -> None:
        self.cfg = cfg = copy.deepcopy(cfg)  # vocab_size is filled in from the data
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.callbacks = [*build_callbacks(cfg.train.callbacks, cfg), *callbacks]
        self.quiet = quiet
        self.progress = progress and not quiet
        self.progress_desc = progress_desc
        t = cfg.train
        self.dist = distributed.info_from_env()
        self.device = pick_device(t.device if not self.dist.enabled or t.device != "auto" else "auto")
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        distributed.init(self.dist, self.device, t.dist_timeout_s)
        if t.threads > 0:
            torch.set_num_threads(t.threads)
        # deterministic kernels where torch has them (CPU kernels already are; on CUDA this picks the deterministic
        # variants and warns where an op has none); False lets torch choose the fastest
        torch.use_deterministic_algorithms(t.deterministic, warn_only=True)

        self.data = data if data is not None else gdata.prepare_data(cfg.data)
        gdata.check_block_size(self.data, cfg.model.block_size)
        if cfg.model.vocab_size == 0:
            cfg.model.vocab_size = self.data.vocab_size
        elif cfg.model.vocab_size < self.data.vocab_size:
            raise GeoformerError(
                f"model.vocab_size={cfg.model.vocab_size} is smaller than the data's vocabulary ({self.data.vocab_size})"
            )
        world = self.dist.world_size
        if t.batch_size % world:
            raise GeoformerError(f"train.batch_size={t.batch_size} is not divisible by the {world} ranks")
        self.micro_batch = t.batch_size // world
        self.eval_batch = t.eval_batch_size or t.batch_size

        torch.manual_seed(cfg.seed)
        # initialised in float32 (same init for every param_dtype), then stored in param_dtype
        self.model = build_model(cfg.model).to(self.device, dtype=PARAM_DTYPES[t.param_dtype])
        self.raw_model = self.model
        if t.init_from and not resume:  # a resumed run has its (trained) weights in its own checkpoint
            self._init_weights_from(t.init_from)
        self.optimizer = build_optimizer(self.model.param_groups(t.weight_decay), t, self.device, self.model)
        self.batch_gen = torch.Generator().manual_seed(cfg.seed)
        self.scheduler = schedules.build(t.schedule, self.optimizer, t, trainer=self)
        if t.compile:
            self.model = torch.compile(self.model)
        if self.dist.enabled:
            self.model = DDP(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.autocast = self._autocast_ctx()
        self.val_batches = gdata.fixed_batches(
            self.data.val, t.eval_iters, self.eval_batch, cfg.model.block_size, seed=cfg.seed + 1
        )
        self.step = 0
        self.train_s = 0.0  # time spent in training steps (all segments of a resumed run)
        self._grad_norms: list[float] = []  # pre-clip norms since the last evaluation
        self.best_val = math.inf
        self.wall_offset = 0.0
        self.history: list[dict[str, Any]] = []
        # the code this run was trained with: one git state, or (resumed at another commit) each in order
        self.code: list[dict[str, Any]] = [gitstate.git_state()]
        if resume:
            if self.out_dir is None:
                raise GeoformerError("resume needs an output folder")
            self._load(self.out_dir / "ckpt.pt")

    # ------------------------------------------------------------------ setup helpers
    def _autocast_ctx(self):
        dt = self.cfg.train.dtype
        if self.device.type == "cuda" and dt in ("auto", "bfloat16"):
            return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
        if dt == "bfloat16":
            return lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def log(self, msg: str) -> None:
        """A line per evaluation on the main rank, unless a progress bar shows it or the trainer is quiet."""
        if self.is_main and not self.progress and not self.quiet:
            print(msg, flush=True)

    # ------------------------------------------------------------------ batches and evaluation
    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's slice of the next global batch (every rank advances the generator identically)."""
        x, y = gdata.sample_batch(
            self.data.train, self.cfg.train.batch_size, self.cfg.model.block_size, self.batch_gen
        )
        if self.dist.enabled:
            sl = slice(self.dist.rank * self.micro_batch, (self.dist.rank + 1) * self.micro_batch)
            x, y = x[sl], y[sl]
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss over the fixed validation batches (split across ranks, averaged)."""
        self.model.eval()
        mine = self.val_batches[self.dist.rank :: self.dist.world_size]
        total = torch.zeros(2, dtype=torch.float64)
        for x, y in mine:
            with self.autocast():
                _, loss = self.raw_model(x.to(self.device), y.to(self.device))
            total += torch.tensor([loss.item(), 1.0], dtype=torch.float64)
        self.model.train()
        if self.dist.enabled:
            total = total.to(self.device)
            torch.distributed.all_reduce(total)
            total = total.cpu()
        return (total[0] / total[1]).item()

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(),
            "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "best_val": self.best_val,
            "wall_s": self.wall_offset + (time.perf_counter() - self._t0 if hasattr(self, "_t0") else 0.0),
            "train_s": self.train_s,
            "batch_gen": self.batch_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "data_key": self.data.key or None,
            "code": self.code,
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "history": self.history,
            "callbacks": [cb.state_dict() for cb in self.callbacks],
        }

    def save_checkpoint(self) -> None:
        if self.out_dir is not None and self.is_main:
            checkpoint.save(self.out_dir / "ckpt.pt", self.state_dict())
        distributed.barrier()

    def _init_weights_from(self, source: str) -> None:
        """Start from the weights of the run at ``source`` (train.init_from): same model config, same tokenizer."""
        state = checkpoint.load(Path(source).expanduser(), map_location="cpu")
        try:
            theirs = RunConfig.from_dict(state["config"])
        except (KeyError, GeoformerError) as e:
            raise GeoformerError(f"train.init_from {source}: not a geoformer run checkpoint ({e})") from None
        mine, saved = asdict(self.cfg.model), asdict(theirs.model)
        k = first_difference(mine, saved)
        if k is not None:
            raise GeoformerError(
                f"train.init_from {source}: its model.{k} is {saved.get(k)!r}, this run's is {mine[k]!r} "
                f"(the model configs must be equal{'; set data.tokenizer_from to that run' if k == 'vocab_size' else ''})"
            )
        tok = Path(source).expanduser()
        tok = (tok if tok.is_dir() else tok.parent) / "tokenizer.json"
        if tok.is_file() and gdata.load_tokenizer(tok).to_dict() != self.data.tokenizer.to_dict():
            raise GeoformerError(
                f"train.init_from {source}: that run's tokenizer differs from this run's data, so token ids would "
                f"mean other text; set data.tokenizer_from={source}"
            )
        with torch.no_grad():
            self.raw_model.load_state_dict(state["model"])  # copied into this run's param_dtype and device

    def _load(self, path: Path) -> None:
        state = checkpoint.load(path, map_location=self.device)
        saved = state.get("config")
        if not isinstance(saved, dict) or not isinstance(state.get("step"), int):
            raise GeoformerError(f"checkpoint {path} is incomplete: it has no config or no step")
        try:  # options added since the checkpoint was written take their defaults
            saved = RunConfig.from_dict(saved).to_dict()
        except GeoformerError as e:
            raise GeoformerError(f"checkpoint {path} is incompatible: {e}") from None
        mine = self.cfg.to_dict()
        for sec in ("model", "data"):
            if saved.get(sec) != mine[sec]:
                k = first_difference(mine[sec], saved.get(sec) or {})
                raise GeoformerError(f"checkpoint {path} is incompatible: {sec}.{k or '?'} differs")
        if state.get("data_key") and self.data.key and state["data_key"] != self.data.key:
            raise GeoformerError(
                f"checkpoint {path} was trained on other contents of {self.cfg.data.source} (a file changed since): "
                "--resume would continue on another corpus; start a new run (--force or another --out)"
            )
        changed = sorted(
            f"{k}" for k in mine["train"] if k not in RESUMABLE and saved.get("train", {}).get(k) != mine["train"][k]
        ) + (["seed"] if saved.get("seed") != mine["seed"] else [])
        if changed:
            raise GeoformerError(
                f"--resume cannot change {', '.join(('train.' + k) if k != 'seed' else k for k in changed)}: the "
                "optimizer, schedule and data order come back from the checkpoint; start a new run (--force or "
                "another --out) to train with other settings"
            )
        if int(state["step"]) > self.cfg.train.max_iters:
            raise GeoformerError(
                f"the run in {path.parent} is already at step {state['step']}: train.max_iters must be at least that"
            )
        try:
            self.raw_model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.batch_gen.set_state(state["batch_gen"])
            torch.set_rng_state(state["torch_rng"])
            if hasattr(self.optimizer, "train"):  # schedule-free: saved at its averaged (eval) weights
                self.optimizer.train()
            if state.get("cuda_rng") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda_rng"])
            for cb, s in zip(self.callbacks, state.get("callbacks", []), strict=False):
                cb.load_state_dict(s)
        except (KeyError, RuntimeError, ValueError) as e:
            raise GeoformerError(
                f"checkpoint {path} is incompatible with this model: {str(e).splitlines()[0]}"
            ) from None
        self.step = int(state["step"])
        self.best_val = float(state["best_val"])
        self.wall_offset = float(state.get("wall_s", 0.0))
        self.train_s = float(state.get("train_s", state.get("wall_s", 0.0)))
        self.history = list(state.get("history", []))
        self.code = gitstate.extended(gitstate.states(state.get("code")), self.code[0])

    # ------------------------------------------------------------------ output files
    def _write_metrics_file(self) -> None:
        if self.out_dir is not None and self.is_main:
            text = "".join(json.dumps(r) + "\n" for r in self.history)
            checkpoint.atomic_write_text(self.out_dir / "metrics.jsonl", text)

    def _append_metrics(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if self.out_dir is not None and self.is_main:
            with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------ the loop
    def _train_step(self) -> float:
        t = self.cfg.train
        for micro in range(t.grad_accum):
            x, y = self.next_batch()
            for cb in self.callbacks:
                x, y = cb.on_batch(self, x, y)
            sync = micro == t.grad_accum - 1 or not self.dist.enabled
            ctx = contextlib.nullcontext() if sync else self.model.no_sync()
            with ctx, self.autocast():
                _, loss = self.model(x, y)
                loss = loss / t.grad_accum
            loss.backward()
            if micro == 0:
                total = loss.detach()
            else:
                total = total + loss.detach()
        total = distributed.all_reduce_mean(total)
        value = total.item()
        if not math.isfinite(value):
            self.optimizer.zero_grad(set_to_none=True)
            where = (
                f"; the last good checkpoint in {self.out_dir} is intact" if self.out_dir is not None else ""
            )
            raise TrainingDiverged(f"loss became {value} at step {self.step}{where}")
        # the pre-clip gradient norm of every step, summarised at each evaluation (train_grad_norm[_max])
        if t.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])
        self._grad_norms.append(float(norm))
        for cb in self.callbacks:
            cb.on_before_optimizer_step(self, self.step)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return value

    def _eval_and_checkpoint(self, train_losses: list[float], tokens_per_s: float) -> None:
        """Evaluate, log and checkpoint; schedule-free optimizers do both at their averaged weights."""
        swap = hasattr(self.optimizer, "eval") and hasattr(self.optimizer, "train")
        if swap:
            self.optimizer.eval()
        try:
            self._eval_and_log(train_losses, tokens_per_s)
            self.save_checkpoint()
        finally:
            if swap:
                self.optimizer.train()

    def _grad_norm_stats(self) -> dict[str, float]:
        """Mean and max pre-clip gradient norm over the steps since the last evaluation (none at step 0)."""
        g, self._grad_norms = self._grad_norms, []
        return {"train_grad_norm": statistics.fmean(g), "train_grad_norm_max": max(g)} if g else {}

    def _bits_per_byte(self, val_loss: float) -> dict[str, float]:
        """The validation loss in bits per UTF-8 byte of the validation text (nats/token / ln 2 x tokens/byte),
        so runs with different tokenizers (char, BPE) compare."""
        if not self.data.val_bytes:  # TokenData built by hand without it
            return {}
        return {"val_bpb": val_loss / math.log(2) * len(self.data.val) / self.data.val_bytes}

    def _eval_and_log(self, train_losses: list[float], tokens_per_s: float) -> None:
        val = self.evaluate()
        self.best_val = min(self.best_val, val)
        record = {
            "step": self.step,
            "tokens": self.step
            * self.cfg.train.batch_size
            * self.cfg.train.grad_accum
            * self.cfg.model.block_size,
            "train_loss": statistics.fmean(train_losses) if train_losses else val,
            "val_loss": val,
            **self._bits_per_byte(val),
            "lr": self.optimizer.param_groups[0]["lr"],
            **self._grad_norm_stats(),
            "tokens_per_s": tokens_per_s,
            "wall_s": self.wall_offset + time.perf_counter() - self._t0,
        }
        if hasattr(self.scheduler, "metrics"):
            record.update(self.scheduler.metrics())
        for cb in self.callbacks:
            cb.on_eval(self, self.step, record)
        self._append_metrics(record)
        self.log(
            f"step {self.step:>6} | train {record['train_loss']:.4f} | val {val:.4f} | "
            f"lr {record['lr']:.2e} | {tokens_per_s:,.0f} tok/s"
        )
        if not math.isfinite(val):
            raise TrainingDiverged(f"validation loss became {val} at step {self.step}")

    def fit(self, until: int | None = None) -> dict[str, Any]:
        """Train to ``train.max_iters`` (or stop early at step ``until``, checkpointed, for a later resume)."""
        t, m = self.cfg.train, self.cfg.model
        end = t.max_iters if until is None else min(until, t.max_iters)
        self._t0 = time.perf_counter()
        load = BackgroundLoad().__enter__()  # other processes' busy cores while this segment trains
        if self.out_dir is not None and self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            checkpoint.atomic_write_json(self.out_dir / "config.json", self.cfg.to_dict())
            self.data.tokenizer.save(self.out_dir / "tokenizer.json")  # for `geoformer sample`
            self._write_metrics_file()  # on resume: drop records past the checkpoint
        for cb in self.callbacks:
            cb.on_train_start(self)
        tokens_per_step = t.batch_size * t.grad_accum * m.block_size
        bar = None
        if self.progress and self.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=t.max_iters, initial=self.step, desc=self.progress_desc, leave=False, dynamic_ncols=True
            )
        fresh = not self.history or self.history[-1]["step"] != self.step
        if fresh:
            self._eval_and_checkpoint([], 0.0)
        train_losses: list[float] = []
        seg_t0, seg_steps = time.perf_counter(), 0
        try:
            while self.step < end:
                loss = self._train_step()
                self.step += 1
                seg_steps += 1
                train_losses.append(loss)
                for cb in self.callbacks:
                    cb.on_step_end(self, self.step, loss)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
                if self.step % t.eval_interval == 0 or self.step == t.max_iters:
                    # tokens_per_s, everywhere: tokens trained so far / time spent in training steps so far
                    # (evaluations and checkpoints excluded, resumed segments included)
                    self.train_s += time.perf_counter() - seg_t0
                    self._eval_and_checkpoint(train_losses, self.step * tokens_per_step / max(self.train_s, 1e-9))
                    train_losses, seg_t0, seg_steps = [], time.perf_counter(), 0
            if self.step != self.history[-1]["step"]:  # stopped at `until` between evaluations
                self.train_s += time.perf_counter() - seg_t0
                self._eval_and_checkpoint(train_losses, self.step * tokens_per_step / max(self.train_s, 1e-9))
        finally:
            if bar is not None:
                bar.close()
        load.__exit__(None, None, None)
        vals = [r["val_loss"] for r in self.history]
        bpb = [r["val_bpb"] for r in self.history if "val_bpb" in r]
        summary = {
            "final_val_loss": vals[-1],
            "best_val_loss": min(vals),
            **({"final_val_bpb": bpb[-1], "best_val_bpb": min(bpb)} if bpb else {}),
            "final_train_loss": self.history[-1]["train_loss"],
            "step": self.step,
            "tokens": self.step * tokens_per_step,
            "params": self.raw_model.num_params(),
            "wall_s": self.wall_offset + time.perf_counter() - self._t0,
            "tokens_per_s": self.step * tokens_per_step / self.train_s if self.train_s > 0 else 0.0,
            "train_s": self.train_s,
            "peak_rss_mb": peak_rss_mb(),
            # cores kept busy by other processes (sibling --jobs workers and torchrun ranks included) during
            # this segment of the run; None where /proc/stat does not exist
            "background_cores": load.cores,
            "device": str(self.device),
            "world_size": self.dist.world_size,
            # the token data's cache key (corpus contents, tokenizer, split): a resumed comparison retrains a
            # run whose corpus changed since (config.json alone cannot tell, data.source names a folder)
            "data_key": self.data.key or None,
            # the git state(s) of the code that trained it (gitstate.git_state; more than one if resumed at
            # another commit): the claims ledger checks a reused run's commit, not only the ledger's own
            "code": self.code,
            "completed": self.step >= t.max_iters,
        }
        if self.device.type == "cuda":
            summary["peak_cuda_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        for cb in self.callbacks:
            cb.on_train_end(self, summary)
        if self.out_dir is not None and self.is_main:
            checkpoint.atomic_write_json(self.out_dir / "summary.json", summary)
        return summary


def first_difference(mine: dict[str, Any], saved: dict[str, Any]) -> str | None:
    """The first key of ``mine`` whose value ``saved`` does not share (None when every key agrees)."""
    return next((k for k in mine if saved.get(k) != mine[k]), None)


def load_model(path: str | Path, device: str = "cpu") -> tuple[GPT, RunConfig, dict[str, Any]]:
    """Rebuild the model of a checkpoint (a run folder or a ckpt.pt) for sampling or analysis."""
    state = checkpoint.load(Path(path), map_location=device)
    try:
        cfg = RunConfig.from_dict(state["config"])
        model = build_model(cfg.model).to(dtype=PARAM_DTYPES.get(cfg.train.param_dtype, torch.float32))
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, TypeError, GeoformerError) as e:
        raise GeoformerError(
            f"checkpoint {path} is incompatible with this version of geoformer: {e}"
        ) from None
    return model.to(device).eval(), cfg, state


__all__ = ["Trainer", "load_model", "prepare_out_dir", "pick_device", "asdict"]
