"""The claims ledger: each quantitative claim of the seeds, the experiment that tests it, and a verdict.

A claim is registered with :func:`claim`; its check function receives a :class:`ClaimContext`
(output folder, quick flag, quiet flag) and returns a :class:`Verdict`. ``geoformer claims`` runs the
checks and writes ``CLAIMS.md`` and ``claims.json`` after every claim, so a crash loses nothing.
Each idea adds its rows in its own ``experiments/claims_<idea>.py``; see ``claims_arena.py`` for the pattern.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import math
import pkgutil
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from geoformer.errors import GeoformerError
from geoformer.train import checkpoint

VERDICTS = ("reproduced", "not reproduced", "inconclusive")


@dataclass
class Verdict:
    measured: str  # the measured value, in a sentence fragment with units and spread
    verdict: str  # one of VERDICTS
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


@dataclass
class ClaimContext:
    out: Path
    quick: bool
    quiet: bool

    def shared(self, name: str) -> Path:
        """A folder shared by the claims of one ledger run (e.g. one comparison read by several rows)."""
        return self.out.parent / "_shared" / name

    def compare(
        self, preset: str, *, variants=None, seeds: int = 3, sets=(), key: str = ""
    ) -> dict[str, Any]:
        """Run (or reuse, when another claim already ran it in this ledger) a preset comparison.

        Claims that pass the same ``key`` (default: the preset name) share its runs.
        """
        from geoformer.experiments.compare import run_compare

        key = (key or preset) + ("-quick" if self.quick else "")
        return run_compare(
            preset=preset,
            config=None,
            sets=None,
            data=None,
            variants=variants,
            seeds=seeds,
            out=self.shared(key),
            resume=True,
            quiet=self.quiet,
            extra_sets=list(sets),
        )


@dataclass
class Claim:
    id: str
    claim: str  # the seed's claim, in one sentence
    source: str  # the seed file (and section) it comes from
    experiment: str  # what we run to test it, with the command
    rule: str  # how the verdict is decided
    check: Callable[[ClaimContext], Verdict]


_CLAIMS: dict[str, Claim] = {}


def claim(*, id: str, claim: str, source: str, experiment: str, rule: str):
    """Decorator registering a check function as a claim row."""

    def deco(fn: Callable[[ClaimContext], Verdict]) -> Callable[[ClaimContext], Verdict]:
        if id in _CLAIMS:
            raise ValueError(f"claim {id!r} registered twice")
        _CLAIMS[id] = Claim(id=id, claim=claim, source=source, experiment=experiment, rule=rule, check=fn)
        return fn

    return deco


def all_claims() -> dict[str, Claim]:
    """Every registered claim; each ``geoformer.experiments.claims_*`` module (one per idea) is imported."""
    import geoformer.experiments as pkg

    for m in pkgutil.iter_modules(pkg.__path__):
        if m.name.startswith("claims_"):
            importlib.import_module(f"{pkg.__name__}.{m.name}")
    return dict(_CLAIMS)


def ci_verdict(lo: float, hi: float, *, want: str) -> str:
    """Verdict for a directional claim from a 95% CI of a difference.

    ``want="negative"``: the claim says the difference is < 0. Reproduced if the whole CI is < 0,
    not reproduced if the whole CI is > 0, inconclusive if it straddles 0 (or is undefined).
    """
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive"
    sign = -1 if want == "negative" else 1
    if sign * hi > 0 and sign * lo > 0:
        return "reproduced"
    if sign * hi < 0 and sign * lo < 0:
        return "not reproduced"
    return "inconclusive"


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def render_markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Claims ledger",
        "",
        f"Last updated by `{meta['command']}` on {meta['created']} ({meta['machine']}). "
        "Each row says when it was measured and whether in quick or full mode.",
        "",
        "Each row is a quantitative claim from a write-up in `seeds/`, the experiment that tests it here, "
        "the value we measured, and the verdict with the rule that decided it. A claim that did not "
        "reproduce says so.",
        "",
        "| id | claim | source | experiment | measured | verdict | rule |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            r["id"],
            r["claim"],
            r["source"],
            r["experiment"],
            r["measured"],
            f"**{r['verdict']}**",
            r["rule"],
        ]
        lines.append("| " + " | ".join(_md_escape(str(c)) for c in cells) + " |")
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    lines += ["", "Totals: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + ".", ""]
    return "\n".join(lines)


def run_claims(
    *, out: Path, quick: bool, only: list[str] | None, force: bool = False, quiet: bool = False
) -> list[dict]:
    claims = all_claims()
    if only:
        unknown = [c for c in only if c not in claims]
        if unknown:
            raise GeoformerError(f"unknown claim {unknown[0]!r}; known claims: {', '.join(sorted(claims))}")
        claims = {k: claims[k] for k in only}
    out = Path(out)
    previous: list[dict[str, Any]] = []
    if (out / "claims.json").exists():
        if only and not force:  # update the named rows of an existing ledger, keep the rest
            previous = _load_rows(out / "claims.json")
        elif not force:
            raise GeoformerError(
                f"{out} already holds a claims run (claims.json); use --only IDS to update rows or --force"
            )
    out.mkdir(parents=True, exist_ok=True)
    import platform
    import sys

    import torch

    meta = {
        "command": "geoformer claims"
        + (" --quick" if quick else "")
        + (f" --only {','.join(only)}" if only else ""),
        "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.system()} {platform.machine()}, torch {torch.__version__}, python {sys.version.split()[0]}",
        "quick": quick,
    }
    order = list(all_claims())
    rows: dict[str, dict[str, Any]] = {r["id"]: r for r in previous if r.get("id") in order}
    for c in claims.values():
        if not quiet:
            print(f"claim {c.id}: running ...", flush=True)
        t0 = time.perf_counter()
        ctx = ClaimContext(out=out / "experiments" / c.id, quick=quick, quiet=quiet)
        ctx.out.mkdir(parents=True, exist_ok=True)
        try:
            v = c.check(ctx)
        except GeoformerError:
            raise
        except Exception as e:  # a broken check is reported in its row, the ledger goes on
            v = Verdict(
                measured=f"check failed: {type(e).__name__}: {e}",
                verdict="inconclusive",
                details={"traceback": traceback.format_exc()},
            )
        row = {k: v2 for k, v2 in asdict(c).items() if k != "check"}
        row.update(
            measured=v.measured,
            verdict=v.verdict,
            details=v.details,
            seconds=time.perf_counter() - t0,
            mode="quick" if quick else "full",
            created=meta["created"],
        )
        rows[c.id] = row
        ordered = sorted(rows.values(), key=lambda r: order.index(r["id"]))
        checkpoint.atomic_write_json(out / "claims.json", {"meta": meta, "claims": ordered})
        checkpoint.atomic_write_text(out / "CLAIMS.md", render_markdown(ordered, meta))
        print(f"claim {c.id}: {v.verdict} ({v.measured})", flush=True)
    print(f"ledger: {out / 'CLAIMS.md'}")
    return sorted(rows.values(), key=lambda r: order.index(r["id"]))


def merge_ledgers(out: Path, sources: list[Path]) -> list[dict[str, Any]]:
    """Copy the rows of other ledgers into ``out`` (a row of a source replaces the row with the same id;
    later sources win), keeping every row's own measurement date and mode; rewrites claims.json and
    CLAIMS.md. Lets rows measured in separate runs (or on other machines) form one ledger."""
    order = list(all_claims())
    rows: dict[str, dict[str, Any]] = {}
    if (out / "claims.json").exists():
        rows = {r["id"]: r for r in _load_rows(out / "claims.json")}
    merged = []
    for src in sources:
        path = src / "claims.json"
        if not path.is_file():
            raise GeoformerError(f"{src} holds no claims ledger (claims.json)")
        for r in _load_rows(path):
            if r.get("id") not in order:
                raise GeoformerError(f"{path}: row {r.get('id')!r} is not a registered claim")
            rows[r["id"]] = r
            merged.append(r["id"])
    ordered = sorted(rows.values(), key=lambda r: order.index(r["id"]))
    meta = {
        "command": "geoformer claims --merge " + " --merge ".join(str(s) for s in sources),
        "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": "rows keep their own measurement date and mode",
        "quick": any(r.get("mode") == "quick" for r in ordered),
    }
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.atomic_write_json(out / "claims.json", {"meta": meta, "claims": ordered})
    checkpoint.atomic_write_text(out / "CLAIMS.md", render_markdown(ordered, meta))
    print(f"merged {len(merged)} rows ({', '.join(merged)}) -> {out / 'CLAIMS.md'}")
    return ordered


def _load_rows(path: Path) -> list[dict[str, Any]]:
    from geoformer.config import load_json

    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
        raise GeoformerError(f"{path} is not a claims ledger")
    return data["claims"]
