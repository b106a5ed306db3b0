"""The continual-learning methods as sets of components, and which config knobs each component reads.

:func:`geoformer.circuits.continual.phase_b` assembles a method from its components; the tuning of
:mod:`geoformer.circuits.tuning` chooses the knobs; :func:`overrides` hands a method the values it reads.
"""

from __future__ import annotations

from typing import Any

# method -> its components (the order here is the order of every table)
COMPONENTS: dict[str, frozenset[str]] = {
    "naive": frozenset(),
    "ewc": frozenset({"ewc"}),
    "replay": frozenset({"replay"}),
    "protect": frozenset({"zones"}),
    "canary": frozenset({"zones", "canary"}),
    "canary_repair": frozenset({"zones", "repair"}),
    "subspace": frozenset({"subspace"}),
    "subspace_circuit": frozenset({"subspace", "circuit"}),
    "subspace_canary": frozenset({"subspace", "repair"}),
    "subspace_replay": frozenset({"subspace", "replay"}),
}
METHODS = tuple(COMPONENTS)

TUNE_SEED = 100  # `circuits tune` tunes on this seed, never among the reported ones (0, 1, ...)
KNOB_NAMES = (
    "ewc_lambda",
    "replay_mix",
    "zones",
    "canary_tol",
    "gpm_threshold",
)  # the grids: circuits.tuning

# component -> the CircuitsConfig fields (knobs) it reads
COMPONENT_KNOBS: dict[str, tuple[str, ...]] = {
    "ewc": ("ewc_lambda",),
    "replay": ("replay_mix",),
    "zones": ("zones",),
    "canary": ("canary_tol",),
    "repair": ("canary_tol",),
    "subspace": ("gpm_threshold",),
}


def knobs_of(method: str) -> tuple[str, ...]:
    return tuple(
        dict.fromkeys(k for part in sorted(COMPONENTS[method]) for k in COMPONENT_KNOBS.get(part, ()))
    )


def overrides(chosen: dict[str, dict[str, Any]] | None, lr_mult: float, method: str) -> dict[str, Any]:
    """The config overrides of ``method`` at ``lr_mult`` from tuned values ``{lr_mult as text: {knob: value}}``
    (only the knobs its components read; JSON lists of zones back to tuples)."""
    vals = (chosen or {}).get(f"{lr_mult:g}", {})
    out: dict[str, Any] = {}
    for k in knobs_of(method):
        if k in vals:
            out[k] = tuple(tuple(z) for z in vals[k]) if k == "zones" else vals[k]
    return out
