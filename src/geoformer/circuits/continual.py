"""Experiment drivers for circuits: train on capability suites, attribute, continual learning, high lr.

``geoformer circuits train|attribute|bridges|continual --out DIR`` call the ``run_*`` functions here.
Everything runs on CPU with one thread in minutes (a 3-layer, 4-head, 64-wide GPT, ~150k parameters).

Continual learning: train on suites A (modus ponens, contrapositive, control) to convergence, then on
suites B (transitivity, copy) with one of

* ``naive``: plain AdamW on B;
* ``ewc``: B loss + EWC penalty with the empirical Fisher of A (:mod:`geoformer.circuits.ewc`);
* ``replay``: a buffer of A's train examples mixed into B's batches (:mod:`geoformer.circuits.replay`);
* ``protect``: per-element update scales from the A-importance of each parameter, graduated zones (the
  write-up's zones);
* ``canary``: ``protect`` plus a :class:`CanaryMonitor` on a canary subset of A's *train* split that rolls
  back and grows the mask (the write-up's monitor); ``canary_repair``: the monitor that repairs first
  (canary-gradient projection, then halved steps, only then a larger mask);
* ``subspace``: updates projected out of the span of A's layer inputs (GPM, :mod:`geoformer.circuits.subspace`)
  in every block; ``subspace_circuit``: only in the heads and blocks of A's circuits (head ablation);
  ``subspace_canary``, ``subspace_replay``: subspace with the repairing canary, with replay.

and report accuracy on A's and B's *test* splits, forgetting (A before - A after) and wall-clock.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from geoformer import gitstate
from geoformer.circuits import attribution as attr
from geoformer.circuits.canaries import (
    SUITES,
    Suite,
    answer_logprob,
    answer_loss,
    make_suite,
    score_all,
    vocab_size,
)
from geoformer.circuits.ewc import EWC, fisher_diag
from geoformer.circuits.methods import COMPONENTS, METHODS
from geoformer.circuits.protection import CanaryMonitor, UpdateScaler, zone_counts, zone_scales
from geoformer.circuits.replay import ReplayBuffer, buffer_from_suites
from geoformer.errors import GeoformerError
from geoformer.experiments.stats import mean_std
from geoformer.models.gpt import GPT, GPTConfig

SUITES_A = ("modus_ponens", "contrapositive", "control")
SUITES_B = ("transitivity", "copy")


@dataclass
class CircuitsConfig:
    n_layer: int = 3
    n_head: int = 4
    n_embd: int = 64
    n_symbols: int = 20
    attention: str = "naive"  # explicit attention: torch.func.vmap (EWC's per-example grads) batches it
    n_train: int = 1000  # examples per suite of the fixed train-split sets (importance, canaries)
    n_test: int = 1000  # examples per suite, test split
    batch_size: int = 64
    suite_weights: dict = field(default_factory=lambda: {"copy": 0.3, "control": 0.3})
    lr: float = 3e-3
    warmup: int = 100
    steps: int = 5000  # training on all suites
    steps_a: int = 8000  # phase A of continual learning: at most this many warmup + cosine steps ...
    until: float = 0.98  # ... stopping once every A suite scores this on a train-split check set
    steps_extra: int = 6000  # all-suites model and phase A: at most this many constant-lr steps after the cosine
    lr_extra: float = 1e-3
    steps_b: int = 500  # phase B of continual learning
    lr_b: float = 1e-3  # phase B learning rate (x lr_mult for the high-lr experiment)
    ewc_lambda: float = 1.0  # relative to the mean Fisher entry (tuned per lr by `circuits tune`)
    replay_per_suite: int = 100  # replay buffer: examples per A suite, from A's train split
    replay_mix: float = 0.25  # fraction of every B batch drawn from the buffer
    gpm_threshold: float = 0.97  # energy kept in each protected layer's input basis (GPM)
    gpm_examples: int = 200  # per A suite, train split, for the activation bases and the circuit's heads
    norms: str = "frozen"  # subspace protection: norm gains frozen or free
    max_retries: int = 3  # repairing canary: retries (projection, then halved steps) before the mask grows
    stall_checks: int = 4  # a run whose B check score has not risen by 1 point over this many checks stalled
    fisher_examples: int = 600  # from A's train split
    zones: tuple = (("core", 0.02, 0.01), ("support", 0.08, 0.1), ("context", 0.2, 0.5))
    canary_every: int = 25
    canary_tol: float = 0.02
    canary_examples: int = 200  # per A suite, from the train split
    grow_frac: float = 0.005
    attrib_examples: int = 500  # per suite, test split, for attribution
    neuron_examples: int = 40  # per suite, for single-neuron ablation (768 neurons x this many rows)
    bridge_threshold: float = 0.1
    top_k: int = 2


def quick_config() -> CircuitsConfig:
    return CircuitsConfig(n_train=1000, n_test=300, steps=600, steps_a=600, steps_b=200, steps_extra=300, attrib_examples=200,
                          fisher_examples=200, canary_examples=100)  # fmt: skip


def build_model(cfg: CircuitsConfig, seed: int) -> GPT:
    torch.manual_seed(seed)
    return GPT(
        GPTConfig(
            vocab_size=vocab_size(cfg.n_symbols),
            block_size=16,
            n_layer=cfg.n_layer,
            n_head=cfg.n_head,
            n_embd=cfg.n_embd,
            attention=cfg.attention,
        )  # fmt: skip
    )


def suites(cfg: CircuitsConfig, names, split: str, seed: int, n: int | None = None) -> dict[str, Suite]:
    n = n or (cfg.n_train if split == "train" else cfg.n_test)
    return {s: make_suite(s, split, n, seed=seed, n_symbols=cfg.n_symbols) for s in names}


def train_suites(
    model: GPT,
    names: tuple[str, ...] | list[str],
    *,
    steps: int,
    lr: float,
    seed: int,
    cfg: CircuitsConfig,
    stream: int = 1,
    warmup: int = 0,
    cosine: bool = False,
    optimizer: torch.optim.Optimizer | None = None,
    penalty=None,
    monitor: CanaryMonitor | None = None,
    desc: str = "train",
    quiet: bool = False,
    log_every: int = 0,
    log_suites: dict[str, Suite] | None = None,
    until: float | None = None,
    on_step=None,
    replay: ReplayBuffer | None = None,
) -> torch.optim.Optimizer:
    """AdamW on the answer-token loss of the suites ``names`` (train split of ``seed``).

    With ``until``, training stops early at the first log step where every suite of ``log_suites``
    scores at least ``until`` (pass a *train*-split set there, never the test split).

    Every step draws a fresh batch (``batch_size`` examples shared among the suites in proportion to
    ``cfg.suite_weights``, default 1; the easy, position-only suites get less), from stream
    ``stream * 10**6 + step``), so the model cannot memorise examples, only the split's key pairs.
    With ``replay``, ``replay.count(batch_size)`` of the batch are rows of its buffer and the rest are shared.
    """
    import math

    from tqdm.auto import tqdm

    k_replay = replay.count(cfg.batch_size) if replay is not None else 0
    w = [cfg.suite_weights.get(n, 1.0) for n in names]
    per = [max(1, round((cfg.batch_size - k_replay) * wi / sum(w))) for wi in w]
    opt = optimizer or torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    model.train()
    for step in tqdm(range(1, steps + 1), desc=desc, disable=quiet, dynamic_ncols=True, leave=False):
        f = min(1.0, step / warmup) if warmup else 1.0
        if cosine:
            f *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps))
        for grp in opt.param_groups:
            grp["lr"] = lr * f
        batch = [
            make_suite(n, "train", k, seed=seed, n_symbols=cfg.n_symbols, stream=stream * 10**6 + step)
            for n, k in zip(names, per, strict=True)
        ]
        x = torch.cat([b.inputs for b in batch])
        y = torch.cat([b.targets for b in batch])
        if k_replay:
            xr, yr = replay.draw(k_replay, step)  # type: ignore[union-attr]
            x, y = torch.cat([x, xr]), torch.cat([y, yr])
        logits, _ = model(x)
        loss = answer_loss(logits, y)
        if penalty is not None:
            loss = loss + penalty(model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if monitor is not None:
            monitor.step(step)
        if on_step is not None:
            on_step(step)
        if log_every and log_suites and step % log_every == 0:
            accs = score_all(model, log_suites)
            print(f"{desc} step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in accs.items()), flush=True)
            model.train()
            if until is not None and min(accs.values()) >= until:
                break
    model.eval()
    return opt


def _save(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float))
    tmp.replace(path)


def _prepare_out(out: Path, force: bool, marker: str) -> None:
    if out.exists() and not out.is_dir():
        raise GeoformerError(f"--out {out} exists and is not a folder")
    if (out / marker).exists() and not force:
        raise GeoformerError(f"{out} already holds {marker}; pass --force to overwrite")
    out.mkdir(parents=True, exist_ok=True)


# ------------------------------------------------------------------------------------------ train


def train_all(
    cfg: CircuitsConfig, seed: int, out: Path | None = None, quiet: bool = False
) -> tuple[GPT, dict]:
    """Train one model on every suite; returns it with its test accuracies (cached in ``out/ckpt.pt``).

    Phase 1: ``cfg.steps`` steps, warmup + cosine to 10%. Phase 2, only while some suite scores below
    ``cfg.until`` on a train-split check set (300 examples each): a fresh AdamW at constant
    ``cfg.lr_extra`` for at most ``cfg.steps_extra`` steps, stopping at the criterion. A checkpoint
    left after phase 1 is continued with phase 2.
    """
    path = out / "ckpt.pt" if out is not None else None
    if out is not None:
        from geoformer.train.run_lock import run_lock

        with run_lock(out, "circuits model"):
            return _train_all(cfg, seed, out, path, quiet)
    return _train_all(cfg, seed, out, path, quiet)


def _load_blob(path: Path | None, quiet: bool) -> dict | None:
    """A cached checkpoint (tensors and plain containers only), or None; a damaged one is trained again."""
    if path is None or not path.exists():
        return None
    try:
        return torch.load(path, weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, foreign or unsafe file: retrain, say so
        if not quiet:
            print(f"{path}: unreadable ({type(e).__name__}); training again", flush=True)
        return None


def _train_all(
    cfg: CircuitsConfig, seed: int, out: Path | None, path: Path | None, quiet: bool
) -> tuple[GPT, dict]:
    blob = _load_blob(path, quiet)
    if blob is not None and _jsonable(blob.get("cfg")) != _jsonable(asdict(cfg)):
        if not quiet:
            print(f"{path}: trained with another configuration; training again", flush=True)
        blob = None
    if blob is not None:
        known = {f.name for f in fields(CircuitsConfig)}
        model = build_model(CircuitsConfig(**{k: v for k, v in blob["cfg"].items() if k in known}), seed)
        model.load_state_dict(blob["model"])
        model.eval()
        if blob.get("done"):
            return model, blob["result"]
        t_prev, steps_prev = blob["result"].get("train_s", 0.0), cfg.steps
        code = gitstate.states(blob["result"].get("code"))
    else:
        model = build_model(cfg, seed)
        t_prev, steps_prev, code = 0.0, 0, []
    code = gitstate.extended(code, gitstate.git_state())
    t0 = time.perf_counter()
    if blob is None:
        train_suites(model, SUITES, steps=cfg.steps, lr=cfg.lr, seed=seed, cfg=cfg, log_every=500,
                     log_suites=suites(cfg, SUITES, "test", seed, n=300),
                     warmup=cfg.warmup, cosine=True, desc=f"train seed {seed}", quiet=quiet)  # fmt: skip
        steps_prev = cfg.steps
    check = {k: v.subset(300) for k, v in suites(cfg, SUITES, "train", seed).items()}
    extra = 0
    if min(score_all(model, check).values()) < cfg.until and cfg.steps_extra > 0:
        counter = {"n": 0}

        def count(_step, counter=counter):
            counter["n"] = _step

        train_suites(model, SUITES, steps=cfg.steps_extra, lr=cfg.lr_extra, seed=seed, cfg=cfg, stream=3,
                     log_every=250, log_suites=check, until=cfg.until, warmup=50,
                     desc=f"train+ seed {seed}", quiet=quiet, on_step=count)  # fmt: skip
        extra = counter["n"]
    result = {
        "seed": seed,
        "train_s": t_prev + time.perf_counter() - t0,
        "steps": steps_prev + extra,
        "steps_extra": extra,
        "test_acc": score_all(model, suites(cfg, SUITES, "test", seed)),
        "train_acc": score_all(model, suites(cfg, SUITES, "train", seed, n=cfg.n_test)),
        "params": model.num_params(),
        "code": code,  # the git state(s) that trained it (two if phase 2 continued a checkpoint elsewhere)
    }
    if path is not None:
        out.mkdir(parents=True, exist_ok=True)
        blob = {"cfg": _jsonable(asdict(cfg)), "model": model.state_dict(), "result": result, "done": True}
        tmp = path.with_suffix(".pt.tmp")  # atomic: a killed write never leaves a truncated checkpoint
        torch.save(blob, tmp)
        tmp.replace(path)
        _save(out / "train.json", result)
    return model, result


def run_train(
    out: Path, *, seeds: int = 1, quick: bool = False, force: bool = False, quiet: bool = False,
    seed_ids: list[int] | None = None,
) -> dict:  # fmt: skip
    cfg = quick_config() if quick else CircuitsConfig()
    _prepare_out(out, force, "train.json")
    res = {}
    for s in list(seed_ids) if seed_ids is not None else range(seeds):
        d = out / f"seed{s}"
        if force and (d / "ckpt.pt").exists():
            (d / "ckpt.pt").unlink()
        _, r = train_all(cfg, s, d, quiet)
        res[s] = r
        if not quiet:
            print(
                f"seed {s}: "
                + ", ".join(f"{k} {v:.3f}" for k, v in r["test_acc"].items())
                + f" ({r['train_s']:.0f}s)"
            )
    _save(out / "train.json", {"config": asdict(cfg), "runs": res})
    return res


# -------------------------------------------------------------------------------------- attribute


def attribute(model: GPT, cfg: CircuitsConfig, seed: int, *, neurons: bool = True) -> dict[str, Any]:
    """Every measure of :mod:`attribution` for every suite (test split), with timings."""
    test = suites(cfg, SUITES, "test", seed, n=cfg.attrib_examples)
    res: dict[str, Any] = {"suites": list(SUITES), "timing_s": {}}
    per: dict[str, dict[str, Any]] = {}
    t_all, cpu_all = time.perf_counter(), time.process_time()
    for name, s in test.items():
        r: dict[str, Any] = {}
        means = attr.site_means(model, s)
        for key, fn in (
            ("head_zero", lambda s=s: attr.ablate_heads(model, s, "zero")),
            ("head_mean", lambda s=s, m=means: attr.ablate_heads(model, s, "mean", m)),
            ("patch", lambda s=s: attr.patch_heads(model, s)),
            ("gxa", lambda s=s, m=means: attr.grad_x_act(model, s, m)),
            (
                "neuron_zero",
                (
                    lambda s=s: (
                        attr.ablate_neurons(model, s.subset(cfg.neuron_examples), "zero")
                        | {"gxa": attr.grad_x_act(model, s.subset(cfg.neuron_examples))["neuron_zero"]}
                    )
                )
                if neurons
                else None,
            ),
        ):
            if fn is None:
                continue
            t0 = time.perf_counter()
            r[key] = fn()
            res["timing_s"][key] = res["timing_s"].get(key, 0.0) + time.perf_counter() - t0
        per[name] = r
    res["timing_s"]["total"] = time.perf_counter() - t_all
    res["timing_s"]["total_cpu"] = time.process_time() - cpu_all  # wall time inflates on a shared machine
    res["per_suite"] = per
    return res


def head_drops(att: dict[str, Any], mode: str = "mean") -> torch.Tensor:
    """(L, H, n_suites) accuracy drop from ablating each head alone."""
    return torch.stack(
        [r[f"head_{mode}"]["clean_acc"] - r[f"head_{mode}"]["acc"] for r in att["per_suite"].values()], -1
    )


def heatmap(drops: torch.Tensor, suite_names, path: Path, title: str, label: str = "accuracy drop") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    L, H, S = drops.shape
    fig, ax = plt.subplots(figsize=(2.4 + 0.9 * S, 1.2 + 0.35 * L * H))
    im = ax.imshow(drops.reshape(L * H, S).numpy(), cmap="Reds", vmin=0, vmax=max(0.05, float(drops.max())))
    ax.set_xticks(range(S), suite_names, rotation=30, ha="right")
    ax.set_yticks(range(L * H), [f"L{lay}.H{h}" for lay in range(L) for h in range(H)])
    for i in range(L * H):
        for j in range(S):
            v = float(drops.reshape(L * H, S)[i, j])
            ax.text(
                j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v > 0.5 else "black"
            )
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label=label)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _corr_table(att: dict[str, Any]) -> dict[str, float]:
    """Rank agreement between exact measures and their gradient x activation estimates."""
    out = {}
    for key_exact, key_est in (("head_zero", "head_zero"), ("head_mean", "head_mean")):
        ex = torch.stack(
            [r[key_exact]["logprob"] - r[key_exact]["clean_logprob"] for r in att["per_suite"].values()]
        )
        es = torch.stack([r["gxa"][key_est] for r in att["per_suite"].values()])
        out[f"{key_exact}_vs_gxa"] = attr.spearman(ex, es)
    ex = torch.stack([r["patch"]["restoration"] * (r["patch"]["lp_clean"] - r["patch"]["lp_corrupt"])
                      for r in att["per_suite"].values()])  # fmt: skip
    es = torch.stack([r["gxa"]["head_patch"] for r in att["per_suite"].values()])
    out["patch_vs_gxa"] = attr.spearman(ex, es)
    if all("neuron_zero" in r for r in att["per_suite"].values()):
        nz = [r["neuron_zero"] for r in att["per_suite"].values()]
        ex = torch.stack([r["logprob"] - r["clean_logprob"] for r in nz])
        es = torch.stack([r["gxa"] for r in nz])
        out["neuron_zero_vs_gxa"] = attr.spearman(ex, es)
    return out


def bridge_analysis(model: GPT, att: dict[str, Any], cfg: CircuitsConfig, seed: int) -> dict[str, Any]:
    """Bridge score per head vs its weight norm; ablating top-k bridge heads vs top-k norm heads."""
    drops = head_drops(att, "mean")  # (L, H, S)
    L, H, S = drops.shape
    score = attr.bridge_scores(drops, cfg.bridge_threshold)  # (L, H)
    total = drops.clamp_min(0).sum(-1)  # (L, H) summed drop over capabilities
    norms = attr.head_param_norms(model)
    k = cfg.top_k
    # rank by bridge score, ties broken by summed drop
    key = score.float() * 100 + total
    top_bridge = [divmod(int(i), H) for i in key.flatten().argsort(descending=True)[:k]]
    top_norm = [divmod(int(i), H) for i in norms.flatten().argsort(descending=True)[:k]]
    test = suites(cfg, SUITES, "test", seed, n=cfg.attrib_examples)
    clean = score_all(model, test)

    def drop_when(heads):
        out = {}
        for n, s in test.items():
            means = attr.site_means(model, s)
            with attr.ablated(model, heads=heads, means=means):
                out[n] = clean[n] - score_all(model, {n: s})[n]
        return out

    db, dn = drop_when(top_bridge), drop_when(top_norm)
    return {
        "bridge_score": score.tolist(),
        "summed_drop": total.tolist(),
        "head_norm": norms.tolist(),
        "max_bridge_score": int(score.max()),
        "n_bridges": int((score >= 2).sum()),
        "spearman_norm_vs_summed_drop": attr.spearman(norms, total),
        "spearman_norm_vs_bridge_score": attr.spearman(norms, score.float()),
        "top_bridge_heads": top_bridge,
        "top_norm_heads": top_norm,
        "drop_top_bridge": db,
        "drop_top_norm": dn,
        "mean_drop_top_bridge": sum(db.values()) / S,
        "mean_drop_top_norm": sum(dn.values()) / S,
    }


def _jsonable(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    return x


def run_attribute(
    out: Path, *, seeds: int = 1, quick: bool = False, force: bool = False, quiet: bool = False,
    models: Path | None = None, neurons: bool = True, seed_ids: list[int] | None = None,
) -> dict:  # fmt: skip
    """Train (or load from ``models/seed{s}``) and attribute ``seeds`` models; bridge analysis; heatmap."""
    torch.set_num_threads(1)
    cfg = quick_config() if quick else CircuitsConfig()
    _prepare_out(out, force, "attribution.json")
    runs = {}
    seed_list = list(seed_ids) if seed_ids is not None else list(range(seeds))
    for s in seed_list:
        first = s == seed_list[0]
        model, tr = train_all(cfg, s, (models or out) / f"seed{s}", quiet)
        att = attribute(model, cfg, s, neurons=neurons and first)
        br = bridge_analysis(model, att, cfg, s)
        runs[s] = {"train": tr, "timing_s": att["timing_s"], "corr": _corr_table(att), "bridges": br,
                   "head_drop_mean": head_drops(att, "mean"), "head_drop_zero": head_drops(att, "zero"),
                   "patch": torch.stack([r["patch"]["restoration"] for r in att["per_suite"].values()], -1)}  # fmt: skip
        if all("neuron_zero" in r for r in att["per_suite"].values()):
            nd = torch.stack([r["neuron_zero"]["clean_acc"] - r["neuron_zero"]["acc"]
                              for r in att["per_suite"].values()], -1)  # fmt: skip
            ns = attr.bridge_scores(nd, cfg.bridge_threshold)
            runs[s]["neuron_bridges"] = {"n_score_ge_2": int((ns >= 2).sum()), "n_score_ge_1": int((ns >= 1).sum()),
                                         "max_score": int(ns.max()), "n_neurons": ns.numel()}  # fmt: skip
        if first:
            heatmap(head_drops(att, "mean"), SUITES, out / "head_importance.png",
                    f"accuracy drop when one head is mean-ablated (seed {s})")  # fmt: skip
            heatmap(runs[s]["patch"].clamp(0, 1), SUITES, out / "head_patching.png",
                    f"activation patching: restoration of the clean answer (seed {s})",
                    label="restoration (clipped to [0, 1])")  # fmt: skip
        if not quiet:
            print(f"seed {s}: attribution {att['timing_s']['total']:.1f}s; bridges {br['n_bridges']}, "
                  f"top-bridge drop {br['mean_drop_top_bridge']:.3f} vs top-norm {br['mean_drop_top_norm']:.3f}")  # fmt: skip
        _save(out / "attribution.json", {"config": asdict(cfg), "runs": _jsonable(runs)})
        (out / "attribution.md").write_text(attribution_report(_jsonable(runs)))
    return _jsonable(runs)


def attribution_report(runs: dict) -> str:
    """Markdown summary of :func:`run_attribute`'s results (one row per seed)."""
    lines = [
        "| seed | min test acc | attribution time (s) | bridge heads (score >= 2) | Spearman(norm, drop) "
        "| drop top-2 bridge | drop top-2 norm | gxa vs exact (zero / mean / patch / neurons) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s, r in runs.items():
        b, c = r["bridges"], r["corr"]
        lines.append(
            f"| {s} | {100 * min(r['train']['test_acc'].values()):.1f}% | {r['timing_s']['total']:.1f} "
            f"| {b['n_bridges']} (max score {b['max_bridge_score']}) | {b['spearman_norm_vs_summed_drop']:.2f} "
            f"| {100 * b['mean_drop_top_bridge']:.1f} pts | {100 * b['mean_drop_top_norm']:.1f} pts "
            f"| {c['head_zero_vs_gxa']:.2f} / {c['head_mean_vs_gxa']:.2f} / {c['patch_vs_gxa']:.2f} / "
            f"{c.get('neuron_zero_vs_gxa', float('nan')):.2f} |"
        )
    first = next(iter(runs.values()))
    t = first["timing_s"]
    lines += [
        "",
        "Timing of the first seed (s, all five suites): "
        + ", ".join(f"{k} {v:.1f}" for k, v in t.items())
        + ".",
    ]
    if "neuron_bridges" in first:
        nb = first["neuron_bridges"]
        lines.append(
            f"Neurons (zero-ablated one at a time): {nb['n_score_ge_1']} of {nb['n_neurons']} drop at least "
            f"one suite by > 10 points, {nb['n_score_ge_2']} drop two or more (max {nb['max_score']})."
        )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------- continual


@dataclass
class ContinualResult:
    seed: int
    method: str
    lr_b: float
    acc_a_before: dict[str, float]
    acc_a_after: dict[str, float]
    acc_b_before: dict[str, float]
    acc_b_after: dict[str, float]
    prep_s: float
    train_b_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def a_before(self) -> float:
        return sum(self.acc_a_before.values()) / len(self.acc_a_before)

    @property
    def a_after(self) -> float:
        return sum(self.acc_a_after.values()) / len(self.acc_a_after)

    @property
    def b_after(self) -> float:
        return sum(self.acc_b_after.values()) / len(self.acc_b_after)


def _importance_a(model: GPT, train_a: dict[str, Suite], n: int) -> dict[str, torch.Tensor]:
    total: dict[str, torch.Tensor] = {}
    for s in train_a.values():
        imp = attr.param_importance(model, s.subset(n), "taylor")
        for k, v in imp.items():  # each capability counts equally: normalise by its total
            v = v / v.sum().clamp_min(1e-30)
            total[k] = total.get(k, 0) + v
    return total


def phase_b(
    model_a: GPT, method: str, cfg: CircuitsConfig, seed: int, *, lr_b: float, quiet: bool = True
) -> ContinualResult:
    """Copy the A-trained model and train it on B with ``method``; score A and B test splits."""
    import copy

    if method not in COMPONENTS:
        raise GeoformerError(f"unknown method {method!r}; known methods: {', '.join(METHODS)}")
    parts = COMPONENTS[method]
    model = copy.deepcopy(model_a)
    train_a = suites(cfg, SUITES_A, "train", seed)
    test_a, test_b = suites(cfg, SUITES_A, "test", seed), suites(cfg, SUITES_B, "test", seed)
    before_a, before_b = score_all(model, test_a), score_all(model, test_b)
    opt = torch.optim.AdamW(model.parameters(), lr=lr_b, betas=(0.9, 0.98), weight_decay=0.0)
    t0 = time.perf_counter()
    penalty, monitor, replay, extra = None, None, None, {}
    if "ewc" in parts:
        per = max(1, cfg.fisher_examples // len(train_a))
        xa = torch.cat([s.inputs[:per] for s in train_a.values()])
        ya = torch.cat([s.targets[:per] for s in train_a.values()])
        fisher = fisher_diag(model, xa, lambda o, y: answer_logprob(o[None], y[None])[0], ya)
        # lambda is stated relative to the mean Fisher entry (F / mean F), so it means the same across seeds
        mean_f = torch.cat([f.flatten() for f in fisher.values()]).mean().clamp_min(1e-30)
        fisher = {k: f / mean_f for k, f in fisher.items()}
        extra["fisher_mean"] = float(mean_f)
        ewc = EWC(model, fisher, cfg.ewc_lambda)
        penalty = ewc.penalty
    if "replay" in parts:
        replay = buffer_from_suites(train_a, cfg.replay_per_suite, cfg.replay_mix, seed)
        extra["replay"] = {"buffer": int(replay.inputs.shape[0]), "per_batch": replay.count(cfg.batch_size)}
    scaler = None
    if "zones" in parts:
        imp = _importance_a(model, train_a, cfg.fisher_examples)
        scaler = UpdateScaler(model, opt, zone_scales(imp, cfg.zones))
        extra["zones"] = zone_counts(scaler.scales)
    if "canary" in parts or "repair" in parts:
        if scaler is None:  # the mask the monitor grows, all ones until then
            scaler = UpdateScaler(model, opt, {})
        canaries = {k: s.subset(cfg.canary_examples) for k, s in train_a.items()}
        xc = torch.cat([s.inputs for s in canaries.values()])
        yc = torch.cat([s.targets for s in canaries.values()])
        check_b = {k: s.subset(cfg.canary_examples) for k, s in suites(cfg, SUITES_B, "train", seed).items()}
        monitor = CanaryMonitor(model, opt, lambda m: score_all(m, canaries), every=cfg.canary_every,
                                tol=cfg.canary_tol, scaler=scaler, grow_frac=cfg.grow_frac,
                                repair="repair" in parts, max_retries=cfg.max_retries,
                                canary_loss=lambda m: answer_loss(m(xc)[0], yc),
                                progress=lambda m: sum(score_all(m, check_b).values()) / len(check_b),
                                stall_checks=cfg.stall_checks)  # fmt: skip
        monitor.start()
    projector = None
    if "subspace" in parts:  # registered last: its guarantee (dW U = 0) holds for the update finally applied
        from geoformer.circuits import subspace as sub

        xg = torch.cat([s.inputs[: cfg.gpm_examples] for s in train_a.values()])
        heads = None
        if "circuit" in parts:
            gsub = {k: s.subset(cfg.gpm_examples) for k, s in train_a.items()}
            drops = torch.stack([(lambda r: r["clean_acc"] - r["acc"])(attr.ablate_heads(model, s, "mean"))
                                 for s in gsub.values()], -1)  # fmt: skip
            heads = sub.circuit_heads(drops, cfg.bridge_threshold)
            extra["circuit_heads"] = heads
        prot = sub.gpt_protection(model, xg, threshold=cfg.gpm_threshold, heads=heads, norms=cfg.norms,
                                  layers="circuit" if heads else "all")  # fmt: skip
        extra["subspace"] = sub.summary(prot)
        projector = sub.SubspaceProjector(model, opt, prot)
    prep = time.perf_counter() - t0
    t1 = time.perf_counter()
    train_suites(model, SUITES_B, steps=cfg.steps_b, lr=lr_b, seed=seed, stream=2, cfg=cfg, optimizer=opt,
                 penalty=penalty, monitor=monitor, replay=replay, desc=f"B {method} seed {seed}", quiet=quiet)  # fmt: skip
    train_s = time.perf_counter() - t1
    if monitor is not None:
        extra["canary"] = monitor.summary()
        extra["canary"].pop("events")
        monitor.remove()
    if scaler is not None:
        extra["protected_final"] = scaler.n_protected()
        scaler.remove()
    if projector is not None:
        projector.remove()
    res = ContinualResult(seed, method, lr_b, before_a, score_all(model, test_a), before_b,
                          score_all(model, test_b), prep, train_s, extra)  # fmt: skip
    res.model = model  # not a dataclass field: stays out of asdict() and the JSON
    return res


def train_a(cfg: CircuitsConfig, seed: int, cache: Path | None, quiet: bool) -> GPT:
    """The model trained on suites A (cached in ``cache/model_a.pt`` with the config it was trained with; a cache
    made with another configuration is trained again)."""
    cfg_file = cache / "model_a.json" if cache is not None else None
    if cache is not None and (cache / "model_a.pt").exists():
        saved = json.loads(cfg_file.read_text()) if cfg_file.is_file() else None
        if saved != _jsonable(asdict(cfg)):
            if not quiet:
                print(
                    f"{cache / 'model_a.pt'}: trained with another configuration; training again", flush=True
                )
            (cache / "model_a.pt").unlink()
    blob = _load_blob(cache / "model_a.pt", quiet) if cache is not None else None
    if blob is not None:
        model = build_model(cfg, seed)
        model.load_state_dict(blob)
        model.eval()
        return model
    model = build_model(cfg, seed)
    check = {k: s.subset(300) for k, s in suites(cfg, SUITES_A, "train", seed).items()}
    # the all-suites recipe (train_all): warmup + cosine to 10%, then, only while some A suite is below the
    # criterion, constant lr_extra; both phases stop at the criterion (a train-split check, never the test split)
    train_suites(model, SUITES_A, steps=cfg.steps_a, lr=cfg.lr, seed=seed, cfg=cfg, log_every=250, cosine=True,
                 log_suites=check, until=cfg.until, warmup=cfg.warmup, desc=f"A seed {seed}", quiet=quiet)  # fmt: skip
    if min(score_all(model, check).values()) < cfg.until and cfg.steps_extra > 0:
        train_suites(model, SUITES_A, steps=cfg.steps_extra, lr=cfg.lr_extra, seed=seed, cfg=cfg, stream=3,
                     log_every=250, log_suites=check, until=cfg.until, warmup=50, desc=f"A+ seed {seed}",
                     quiet=quiet)  # fmt: skip
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / "model_a.pt.tmp"
        torch.save(model.state_dict(), tmp)
        tmp.replace(cache / "model_a.pt")
        _save(cfg_file, _jsonable(asdict(cfg)))
        _save(cache / "model_a.code.json", [gitstate.git_state()])
    return model


def model_a_code(cache: Path) -> list[dict] | None:
    """The git state(s) that trained the cached model A in ``cache`` (None if not recorded)."""
    try:
        code = json.loads((cache / "model_a.code.json").read_text())
    except (OSError, ValueError):
        return None
    return code if isinstance(code, list) and code == gitstate.states(code) else None


def run_continual(
    out: Path, *, seeds: int = 3, methods=METHODS, lr_mults=(1.0,), quick: bool = False,
    force: bool = False, quiet: bool = False, sets: dict[str, Any] | None = None, resume: bool = False,
    seed_ids: list[int] | None = None, knobs: dict[str, dict[str, Any]] | None = None,
) -> dict:  # fmt: skip
    """The continual-learning table (and, with ``lr_mults=(1, 10)``, the high-lr experiment).

    ``resume`` keeps the rows already in ``out/continual.json`` and runs only the missing ones (a row made
    with other knob values is measured again). ``knobs`` are tuned values ``{lr_mult: {knob: value}}`` (the
    ``chosen`` of :func:`geoformer.circuits.tuning.run_tune`); each row applies the ones its method reads
    and records them.
    """
    from tqdm.auto import tqdm

    from geoformer.circuits.methods import overrides

    torch.set_num_threads(1)
    cfg = quick_config() if quick else CircuitsConfig()
    if sets:
        cfg = replace(cfg, **sets)
    _prepare_out(out, force or resume, "continual.json")
    path = out / "continual.json"
    rows: list[dict] = []
    saved = None
    if path.exists() and resume and not force:
        try:
            saved = json.loads(path.read_text())
            if not isinstance(saved, dict) or not isinstance(saved.get("rows"), list):
                raise ValueError("no rows")
        except (OSError, ValueError) as e:
            if not quiet:
                print(f"{path}: unreadable ({type(e).__name__}); its rows are measured again", flush=True)
            path.unlink()
            saved = None
    if saved is not None:
        if _jsonable(saved.get("config")) == _jsonable(asdict(cfg)):
            rows = saved["rows"]
        else:  # rows measured with other settings are not reused
            if not quiet:
                print(f"{path}: made with another configuration; its rows are measured again", flush=True)
            path.unlink()
    done = {(r["seed"], r["method"], r["lr_b"]): _jsonable(r.get("knobs", {})) for r in rows}
    seed_list = list(seed_ids) if seed_ids is not None else list(range(seeds))
    jobs = [(s, m, k) for s in seed_list for k in lr_mults for m in methods]
    for s, m, k in tqdm(jobs, desc="continual", disable=quiet, dynamic_ncols=True):
        lr, over = cfg.lr_b * k, overrides(knobs, k, m)
        if done.get((s, m, lr), None) == _jsonable(over):
            continue
        from geoformer.train.run_lock import run_lock

        with run_lock(out / f"seed{s}", "circuits continual seed"):  # one writer of the cached A model
            model_a = train_a(cfg, s, out / f"seed{s}", quiet)
        r = phase_b(model_a, m, replace(cfg, **over), s, lr_b=lr, quiet=quiet)
        code_a = model_a_code(out / f"seed{s}")
        # the code that trained model A (cached, possibly at an earlier commit) and phase B; None: A unrecorded
        code = None if code_a is None else gitstate.extended(code_a, gitstate.git_state())
        row = asdict(r) | {"a_before": r.a_before, "a_after": r.a_after, "b_after": r.b_after,
                           "forgetting": r.a_before - r.a_after, "knobs": _jsonable(over), "code": code}  # fmt: skip
        rows = _merge_rows(path, cfg, [row])
        if not quiet:
            tqdm.write(f"seed {s} {m} lr {lr:g}: A {r.a_before:.3f} -> {r.a_after:.3f}, B {r.b_after:.3f}, "
                       f"{r.train_b_s:.0f}s (+{r.prep_s:.1f}s prep)")  # fmt: skip
    rows = _merge_rows(path, cfg, [])
    from geoformer.circuits import continual_report as rep

    table = continual_table(rows) + "\n" + rep.paired_table(rows) + "\n" + rep.goal_table(rows)
    (out / "continual.md").write_text(table)
    rep.tradeoff_plot(rows, out / "tradeoff.png")
    if not quiet:
        print(table)
    return {"config": asdict(cfg), "rows": rows}


def _merge_rows(path: Path, cfg: CircuitsConfig, new: list[dict]) -> list[dict]:
    """Add rows to ``path`` under a file lock, so runs for different seeds can share one folder."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = json.loads(path.read_text())["rows"] if path.exists() else []
        keys = {(r["seed"], r["method"], r["lr_b"]) for r in new}
        rows = [r for r in rows if (r["seed"], r["method"], r["lr_b"]) not in keys] + new
        rows.sort(key=lambda r: (r["lr_b"], METHODS.index(r["method"]), r["seed"]))
        _save(path, {"config": asdict(cfg), "rows": rows})
    return rows


def continual_table(rows: list[dict]) -> str:
    """Markdown: per (lr, method) mean ± std over seeds; overhead is time / naive's time at that lr."""
    lines = [
        "| phase-B lr | method | A before | A after | forgetting | B after | time B (s) | overhead vs naive | n |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lrs = sorted({r["lr_b"] for r in rows})
    for lr in lrs:
        naive_t = {
            r["seed"]: r["prep_s"] + r["train_b_s"]
            for r in rows
            if r["lr_b"] == lr and r["method"] == "naive"
        }
        for m in METHODS:
            rs = [r for r in rows if r["lr_b"] == lr and r["method"] == m]
            if not rs:
                continue

            def ms(key, rs=rs, scale=100.0):
                a, b = mean_std([r[key] * scale for r in rs])
                return f"{a:.1f} ± {b:.1f}"

            t = [r["prep_s"] + r["train_b_s"] for r in rs]
            ov = [(r["prep_s"] + r["train_b_s"]) / naive_t[r["seed"]] for r in rs if r["seed"] in naive_t]
            ta, tb = mean_std(t)
            oa, ob = mean_std(ov)
            lines.append(
                f"| {lr:g} | {m} | {ms('a_before')} | {ms('a_after')} | {ms('forgetting')} | {ms('b_after')} "
                f"| {ta:.0f} ± {tb:.0f} | {oa:.2f}x ± {ob:.2f} | {len(rs)} |"
            )
    return (
        "\n".join(lines)
        + "\n\nAccuracies are exact-match % on the held-out test splits, mean ± std over seeds.\n"
    )
