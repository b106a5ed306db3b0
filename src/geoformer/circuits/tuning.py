"""The same tuning budget for every continual-learning method's main knob.

Each knob is tuned once, on the simplest method that has it, over a grid of four values, at each phase-B lr
multiplier, on a *tuning seed* that is never reported (its own initialisation, its own split of the key pairs
into train and test, its own A model). The criterion is the continual-learning average accuracy on that
seed's test split, ``(A after + B after) / 2``; ties go to the earlier grid value. Methods built from several
components (``subspace_replay``, ``subspace_canary``) take the values tuned for each component.

``naive`` has no knob; ``canary`` and ``canary_repair`` share the canary tolerance (tuned on
``canary_repair``, the library's monitor), ``subspace_circuit`` the energy threshold of ``subspace``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from geoformer.circuits.continual import CircuitsConfig, _jsonable, _prepare_out, _save, phase_b, train_a
from geoformer.circuits.methods import KNOB_NAMES, TUNE_SEED

# knob -> (the method it is tuned on, its grid)
KNOBS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "ewc_lambda": ("ewc", (0.01, 0.1, 1.0, 10.0)),
    "replay_mix": ("replay", (0.1, 0.25, 0.5, 0.75)),
    "zones": ("protect", tuple(
        tuple((name, round(frac * f, 4), scale) for name, frac, scale in CircuitsConfig().zones) for f in (0.5, 1, 2, 3)
    )),
    "canary_tol": ("canary_repair", (0.01, 0.02, 0.05, 0.1)),
    "gpm_threshold": ("subspace", (0.6, 0.8, 0.9, 0.97)),
}  # fmt: skip
if tuple(KNOBS) != KNOB_NAMES:  # the CLI lists KNOB_NAMES without importing this module
    raise AssertionError("methods.KNOB_NAMES must list the knobs of tuning.KNOBS")
GRIDS = {k: grid for k, (_, grid) in KNOBS.items()}


def criterion(result) -> float:
    return (result.a_after + result.b_after) / 2


def run_tune(
    out: Path, *, lr_mults=(1.0,), knobs=tuple(KNOBS), seed: int = TUNE_SEED, quick: bool = False,
    force: bool = False, quiet: bool = False, resume: bool = True, sets: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Tune ``knobs`` at each lr multiplier; writes ``out/tuned.json`` (trials and the chosen values)."""
    import torch

    from geoformer.circuits.continual import quick_config

    torch.set_num_threads(1)
    unknown = [k for k in knobs if k not in KNOBS]
    if unknown:
        from geoformer.errors import GeoformerError

        raise GeoformerError(f"unknown knob {unknown[0]!r}; known knobs: {', '.join(KNOBS)}")
    cfg = quick_config() if quick else CircuitsConfig()
    if sets:
        cfg = replace(cfg, **sets)
    _prepare_out(out, force or resume, "tuned.json")
    path = out / "tuned.json"
    state: dict[str, Any] = {"config": _jsonable(asdict(cfg)), "seed": seed, "trials": []}
    if path.exists() and resume and not force:
        try:
            saved = json.loads(path.read_text())
            if saved.get("config") == state["config"] and saved.get("seed") == seed:
                state = saved
        except (OSError, ValueError):
            pass
    done = {(t["knob"], t["lr_mult"], json.dumps(t["value"])) for t in state["trials"]}
    model_a = train_a(cfg, seed, out / f"seed{seed}", quiet)
    for mult in lr_mults:
        for knob in knobs:
            method, grid = KNOBS[knob]
            for value in grid:
                if (knob, mult, json.dumps(_jsonable(value))) in done:
                    continue
                r = phase_b(model_a, method, replace(cfg, **{knob: value}), seed, lr_b=cfg.lr_b * mult)
                state["trials"].append({"knob": knob, "method": method, "lr_mult": mult, "value": _jsonable(value),
                                        "a_after": r.a_after, "b_after": r.b_after, "score": criterion(r)})  # fmt: skip
                _save(path, state | {"chosen": choose(state["trials"], GRIDS)})
                if not quiet:
                    print(f"tune {knob}={value} ({method}, lr x{mult:g}): A {r.a_after:.3f}, B {r.b_after:.3f}",
                          flush=True)  # fmt: skip
    state["chosen"] = choose(state["trials"], GRIDS)
    _save(path, state)
    return state


def choose(trials: list[dict[str, Any]], grids: dict[str, tuple] | None = None) -> dict[str, dict[str, Any]]:
    """``{lr_mult (as text): {knob: best value}}``: the highest criterion, the earlier trial on a tie; with
    ``grids`` (knob -> values), only trials of values on today's grid count."""
    best: dict[tuple[str, float], dict[str, Any]] = {}
    allowed = {k: [json.dumps(_jsonable(v)) for v in g] for k, g in (grids or {}).items()}
    for t in trials:
        if grids is not None and json.dumps(t["value"]) not in allowed.get(t["knob"], []):
            continue
        key = (t["knob"], t["lr_mult"])
        if key not in best or t["score"] > best[key]["score"]:
            best[key] = t
    out: dict[str, dict[str, Any]] = {}
    for (knob, mult), t in best.items():
        out.setdefault(f"{mult:g}", {})[knob] = t["value"]
    return out
