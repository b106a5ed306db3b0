"""Ledger rows: what each claim is, where it comes from, how it is measured and decided.

A :class:`Row` splits a claim's check into three functions so the verdict is code under test:

- ``measure(ctx, n) -> data``: runs (or reuses) the experiment with ``n`` seeds (``n`` is ignored by rows
  measured once) and returns plain JSON-able numbers;
- ``decide(data, level) -> Decision``: pure; the verdict from those numbers at the look's level;
- ``describe(data, decision) -> str``: the "measured" cell.

``examples`` holds synthetic ``data`` that drives ``decide`` to each outcome (the test suite checks every
row reaches all three, or names in ``impossible`` why one cannot happen). Rows are registered by the
per-write-up modules (:mod:`geoformer.claims.seed000` ... :mod:`~geoformer.claims.seed004`,
:mod:`~geoformer.claims.arena`) and looked up with :func:`all_rows`; claims that cannot be tested here are
listed with :func:`untestable` and their reason.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from geoformer.claims.rules import Decision, Looks

# The write-ups' public origins (shared/SEED_NOTES.md): a clone of this project has no seeds/ folder.
ORIGINS: dict[str, str] = {
    "000": "GitHub faezs/homotopy-nn, neural_compiler/topos/ write-up 'Sparse Attention + Group-Aware Homotopy'",
    "001": "GitHub cdenn016/Gauge-Transformer, attention-uniformity investigation notes",
    "002": "Jeffrey Emanuel, 'Acting as Claude's Research Helper in AI' (blog post, 2024-12-25); code "
    "sketches in GitHub Dicklesworthstone/cohomological_ai",
    "003": "GitHub someaka/adaptive-attention-tiling-v2, project notes",
    "004": "GitHub thehalleyyoung/TorchType, proposal 7 (homotopy learning rate) report",
    "arena": "nanoGPT (GitHub karpathy/nanoGPT), README, shakespeare_char on CPU",
    "modded": "modded-nanogpt (GitHub KellerJordan/modded-nanogpt), README record history",
    "compressarc": "CompressARC (Liao and Gu, 'ARC-AGI Without Pretraining', arXiv 2512.06104; GitHub "
    "iliao2345/CompressARC)",
}

MODULES = ("arena", "seed000", "seed001", "seed002", "seed003", "seed004")
# the module that registers an origin's rows, where it is not seed<origin> (the ARC bar sits beside 000's ARC rows)
_ORIGIN_MODULE = {"arena": "arena", "modded": "arena", "compressarc": "seed000"}


def module_of(row: Row) -> str:
    """The name of the module in geoformer.claims that registers ``row`` (one of MODULES)."""
    return _ORIGIN_MODULE.get(row.origin, f"seed{row.origin}")


@dataclass
class Row:
    id: str
    claim: str  # the write-up's claim, quoted where it is a sentence of the text
    origin: str  # key of ORIGINS
    section: str  # where in the write-up
    experiment: str  # what we run, with the command
    rule: str  # exactly what decide() does
    measure: Callable[[Any, int], dict[str, Any]]
    decide: Callable[[dict[str, Any], float], Decision]
    describe: Callable[[dict[str, Any], Decision], str]
    examples: dict[str, dict[str, Any]]
    looks: Looks  # SINGLE for rows measured once
    depends: tuple[str, ...]  # source paths (files or folders) the experiment depends on
    impossible: dict[str, str] = field(default_factory=dict)  # outcome -> why decide cannot reach it
    kind: str = "comparison"  # comparison | measurement (deterministic / benchmark) | gpu

    @property
    def source(self) -> str:
        return f"{ORIGINS[self.origin]}; {self.section}"


@dataclass(frozen=True)
class Untestable:
    id: str
    claim: str
    origin: str
    section: str
    reason: str

    @property
    def source(self) -> str:
        return f"{ORIGINS[self.origin]}; {self.section}"


_ROWS: dict[str, Row] = {}
_UNTESTABLE: dict[str, Untestable] = {}


def register(row: Row) -> Row:
    if row.id in _ROWS:
        raise ValueError(f"claim {row.id!r} registered twice")
    if row.origin not in ORIGINS:
        raise ValueError(f"{row.id}: unknown origin {row.origin!r}")
    _ROWS[row.id] = row
    return row


def register_untestable(*items: Untestable) -> None:
    for u in items:
        if u.id in _UNTESTABLE or u.origin not in ORIGINS:
            raise ValueError(f"untestable claim {u.id!r}: duplicate id or unknown origin")
        _UNTESTABLE[u.id] = u


def _load() -> None:
    for m in MODULES:
        importlib.import_module(f"geoformer.claims.{m}")


def all_rows() -> dict[str, Row]:
    """Every registered row, in ledger order (the modules' order, then registration order)."""
    _load()
    return dict(_ROWS)


def untestable() -> dict[str, Untestable]:
    _load()
    return dict(_UNTESTABLE)


# The source every training-based row depends on (a change here can change any trained number).
TRAINING = (
    "src/geoformer/train/trainer.py",
    "src/geoformer/train/schedules.py",
    "src/geoformer/train/checkpoint.py",
    "src/geoformer/models/gpt.py",
    "src/geoformer/data",
    "src/geoformer/config.py",
    "src/geoformer/experiments/compare.py",
)
LEDGER = (
    "src/geoformer/claims/rules.py",
    "src/geoformer/claims/context.py",
    "src/geoformer/claims/common.py",
    "src/geoformer/experiments/stats.py",  # the t quantiles the rules decide with
)
