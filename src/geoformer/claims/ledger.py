"""``geoformer claims``: measure rows, write ``claims.json`` / ``CLAIMS.md`` / ``CLAIMS.html`` / the forest plot.

A row is measured at its looks (:func:`geoformer.claims.rules.sequential`), decided, and written with its
provenance after every row, so a crash loses nothing. ``--only`` updates rows of an existing ledger,
``--merge`` copies rows measured elsewhere (each keeps its own provenance), ``--stale`` lists the rows whose
code changed since they were measured.
"""

from __future__ import annotations

import fnmatch
import html
import time
import traceback
from pathlib import Path
from typing import Any

from geoformer import gitstate
from geoformer.claims import provenance
from geoformer.claims.context import ClaimContext, trained_at
from geoformer.claims.fingerprint import row_fingerprint
from geoformer.claims.registry import LEDGER, Row, all_rows, module_of, untestable
from geoformer.claims.rules import OUTCOMES, SINGLE, Decision, Looks, sequential
from geoformer.errors import GeoformerError
from geoformer.train import checkpoint

QUICK_LOOKS = Looks((2,))  # quick mode: a smoke test of every pipeline; its verdicts are not evidence


def _module_path(row: Row) -> str:
    return f"src/geoformer/claims/{module_of(row)}.py"  # the module that registers the row


def _row_depends(row: Row) -> tuple[str, ...]:
    return (*row.depends, *LEDGER, _module_path(row))


def measure_row(row: Row, *, out: Path, quick: bool, quiet: bool, max_seeds: int | None = None) -> dict[str, Any]:
    """Measure and decide one row; returns its ledger record (with provenance)."""
    ctx = ClaimContext(out=out / "experiments" / row.id, quick=quick, quiet=quiet)
    ctx.out.mkdir(parents=True, exist_ok=True)
    looks = row.looks if row.looks.at == SINGLE.at else (QUICK_LOOKS if quick else row.looks.capped(max_seeds))
    git = gitstate.git_state()
    t0 = time.perf_counter()
    data: dict[str, Any] = {}
    try:
        data, decision, n = sequential(lambda n: row.measure(ctx, n), row.decide, looks)
        measured = row.describe(data, decision)
    except GeoformerError:
        raise
    except Exception as e:  # a broken check is reported in its row, the ledger goes on
        n = 0
        decision = Decision("inconclusive", f"check failed: {type(e).__name__}: {e}")
        measured = f"check failed: {type(e).__name__}: {e}"
        data = {"traceback": traceback.format_exc()}
    return {
        "id": row.id,
        "claim": row.claim,
        "origin": row.origin,
        "source": row.source,
        "experiment": row.experiment,
        "rule": row.rule + ("" if row.looks.at == SINGLE.at else f" [{looks.text()}]"),
        "kind": row.kind,
        "measured": measured,
        "verdict": decision.outcome,
        "reason": decision.reason,
        "decision": decision.to_dict(),
        "data": data,
        "provenance": {
            **git,
            "mode": "quick" if quick else "full",
            "date": provenance.now(),
            "n": n if row.looks.at != SINGLE.at else None,
            "looks": list(looks.at) if row.looks.at != SINGLE.at else [],
            "level": looks.level,
            "seeds": sorted(ctx.seeds),
            "configs": dict(sorted(ctx.configs.items())),
            **({"trained_at": trained_at(ctx.codes)} if ctx.codes else {}),
            "machine": provenance.machine(),
            "seconds": round(time.perf_counter() - t0, 1),
            "fingerprint": row_fingerprint(row),
        },
    }


def _ordered(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    order = list(all_rows())
    return sorted(rows.values(), key=lambda r: order.index(r["id"]) if r["id"] in order else len(order))


def write_ledger(out: Path, rows: dict[str, dict[str, Any]], command: str) -> list[dict[str, Any]]:
    from geoformer.claims import plot

    ordered = _ordered(rows)
    meta = {"command": command, "written": provenance.now(), "head": gitstate.git_state()}
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.atomic_write_json(out / "claims.json", {"meta": meta, "claims": ordered})
    has_plot = plot.forest_plot(ordered, out / "forest.png")
    checkpoint.atomic_write_text(out / "CLAIMS.md", render_markdown(ordered, meta, has_plot))
    checkpoint.atomic_write_text(out / "CLAIMS.html", render_html(ordered, meta, out / "forest.png" if has_plot else None))
    return ordered


def load_rows(path: Path) -> list[dict[str, Any]]:
    from geoformer.config import load_json

    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
        raise GeoformerError(f"{path} is not a claims ledger")
    if not all(isinstance(r, dict) and isinstance(r.get("id"), str) for r in data["claims"]):
        raise GeoformerError(f"{path} is not a claims ledger (a row without an id)")
    return data["claims"]


def _select(only: list[str] | None) -> dict[str, Row]:
    rows = all_rows()
    if only is None:
        return rows
    only = [i for i in only if i]
    if not only:
        raise GeoformerError("--only needs at least one claim id")
    chosen: list[str] = []
    for item in only:
        if any(ch in item for ch in "*?["):  # a glob over the ids, e.g. 004-* or *-overhead*
            hits = [i for i in rows if fnmatch.fnmatchcase(i, item)]
            if not hits:
                raise GeoformerError(f"--only pattern {item!r} matches no claim; known claims: {', '.join(rows)}")
        elif item not in rows:
            raise GeoformerError(f"unknown claim {item!r}; known claims: {', '.join(rows)}")
        else:
            hits = [item]
        chosen += [i for i in hits if i not in chosen]
    return {i: rows[i] for i in chosen}


def run_ledger(
    *,
    out: Path,
    quick: bool,
    only: list[str] | None,
    force: bool = False,
    quiet: bool = False,
    max_seeds: int | None = None,
) -> list[dict[str, Any]]:
    selected = _select(only)
    out = Path(out)
    from geoformer.train.run_lock import run_lock

    with run_lock(out, "claims ledger"):
        return _run_ledger(out, selected, quick=quick, only=only, force=force, quiet=quiet, max_seeds=max_seeds)


def _run_ledger(out: Path, selected: dict[str, Row], *, quick, only, force, quiet, max_seeds) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    if (out / "claims.json").exists():
        if only and not force:  # update the named rows of an existing ledger, keep the rest
            rows = {r["id"]: r for r in load_rows(out / "claims.json") if r["id"] in all_rows()}
        elif not force:
            raise GeoformerError(
                f"{out} already holds a claims run (claims.json); use --only IDS to update rows or --force"
            )
    command = "geoformer claims" + (" --quick" if quick else "") + (f" --only {','.join(only)}" if only else "")
    for row in selected.values():
        if not quiet:
            print(f"claim {row.id}: running ...", flush=True)
        rows[row.id] = rec = measure_row(row, out=out, quick=quick, quiet=quiet, max_seeds=max_seeds)
        write_ledger(out, rows, command)
        n = rec["provenance"]["n"]
        print(f"claim {row.id}: {rec['verdict']}{f' (n={n})' if n else ''}: {rec['measured']}", flush=True)
    print(f"ledger: {out / 'CLAIMS.md'}")
    return _ordered(rows)


def merge_ledgers(out: Path, sources: list[Path]) -> list[dict[str, Any]]:
    """Copy the rows of other ledgers into ``out`` (a source's row replaces the row with the same id; later
    sources win); every row keeps its own provenance. Lets rows measured in separate runs form one ledger."""
    known = all_rows()
    rows: dict[str, dict[str, Any]] = {}
    if (out / "claims.json").exists():
        rows = {r["id"]: r for r in load_rows(out / "claims.json")}
    merged = []
    for src in sources:
        path = src / "claims.json"
        if not path.is_file():
            raise GeoformerError(f"{src} holds no claims ledger (claims.json)")
        for r in load_rows(path):
            if r["id"] not in known:
                raise GeoformerError(f"{path}: row {r['id']!r} is not a registered claim")
            rows[r["id"]] = r
            merged.append(r["id"])
    command = "geoformer claims --merge " + " --merge ".join(str(s) for s in sources)
    ordered = write_ledger(Path(out), rows, command)
    print(f"merged {len(merged)} rows ({', '.join(merged)}) -> {Path(out) / 'CLAIMS.md'}")
    return ordered


def stale_rows(path: Path) -> list[tuple[str, str]]:
    """``(id, reason)`` for every row of the ledger at ``path`` (a folder or claims.json) that is stale, or
    no longer a registered claim; every registered row missing from the ledger is listed too."""
    path = Path(path)
    file = path / "claims.json" if path.is_dir() else path
    if not file.is_file():
        raise GeoformerError(f"{path} holds no claims ledger (claims.json)")
    known = all_rows()
    out: list[tuple[str, str]] = []
    seen = set()
    for r in load_rows(file):
        seen.add(r["id"])
        row = known.get(r["id"])
        if row is None:
            out.append((r["id"], "not a registered claim any more"))
            continue
        prov = r.get("provenance") or {}
        recorded = prov.get("fingerprint")
        deps = _row_depends(row)
        if recorded:  # the row's own definition stands in for its whole module file
            deps = tuple(d for d in deps if d != _module_path(row))
        why = provenance.stale_reason(prov, deps)
        if why is None and recorded and recorded != (now := row_fingerprint(row)):
            why = f"its definition changed since {prov['commit'][:10]} (fingerprint {recorded} -> {now})"
        if why is None and (r.get("provenance") or {}).get("mode") == "quick":
            why = "measured in quick mode"
        if why:
            out.append((r["id"], why))
    out += [(i, "not measured in this ledger") for i in known if i not in seen]
    return out


# ------------------------------------------------------------------------------------------ rendering
def _md(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _prov_cells(r: dict[str, Any]) -> tuple[str, str, str]:
    p = r.get("provenance") or {}
    commit = gitstate.label(p)
    runs = p.get("trained_at") or {}
    other = [gitstate.label(c) for c in runs.get("commits", []) if c.get("commit") != p.get("commit") or c.get("dirty")]
    if other or runs.get("unrecorded"):
        also = other + ([f"{runs['unrecorded']} unrecorded"] if runs.get("unrecorded") else [])
        commit += f" (runs reused from {', '.join(also)})"
    n = p.get("n")
    return (str(n) if n else "-"), commit, (p.get("date") or "?") + (" (quick)" if p.get("mode") == "quick" else "")


def unmeasured(rows: list[dict[str, Any]]) -> list[Row]:
    """The registered rows that ``rows`` (a ledger) holds no measurement of, in registry order."""
    have = {r["id"] for r in rows}
    return [row for i, row in all_rows().items() if i not in have]


def totals(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {v: sum(r["verdict"] == v for r in rows) for v in OUTCOMES}


def render_markdown(rows: list[dict[str, Any]], meta: dict[str, Any], plot: bool = False) -> str:
    head = meta.get("head") or {}
    t = totals(rows)
    lines = [
        "# Claims ledger",
        "",
        f"Written by `{meta['command']}` on {meta['written']} (code at {(head.get('commit') or '?')[:10]}"
        f"{', modified' if head.get('dirty') else ''}). Every row carries its own provenance: the commit it was "
        "measured at (and, where it reused training runs trained earlier, the commits those were trained at), "
        "n (seeds), date; `geoformer claims --stale DIR` lists rows whose code changed since either.",
        "",
        "Each row quotes a claim of one of five public write-ups, or of a public system the library is measured "
        "against (the arena rows: nanoGPT, modded-nanogpt, CompressARC), names the experiment that tests it here, "
        "the value measured, and the verdict with the rule that decided it. Rules are stated before a row runs (its smallest "
        "effect of interest delta and why) and are code under test (`tests/test_claims_rules.py`). "
        "Seeds are added at looks n = 3, 5, 10 while a row is inconclusive, each look's interval at 98.3% "
        "(Bonferroni over the looks). A claim that did not reproduce says so.",
        "",
        f"**{len(rows)} rows: {t['reproduced']} reproduced, {t['not reproduced']} not reproduced, "
        f"{t['inconclusive']} inconclusive.**",
        "",
    ]
    if plot:
        lines += [
            "![forest plot](forest.png)",
            "",
            "Forest plot: every comparison row (and every part of a compound row) with an interval, at the row's "
            "look level. Directional rows: the effect in units of its own delta, oriented so that the claimed "
            "direction is to the right; the grey band is (-delta, +delta), effects inside it are too small to "
            "matter. Bound rows (and the ARC bar): the margin to the bound in units of |bound|, claimed side to the "
            "right, so the claim holds where the interval lies right of 0. Equivalence rows: (quantity - claimed "
            "value) / tolerance, the claim holds inside the green band. Zero-rate rows are in the table only.",
            "",
        ]
    lines += [
        "| id | claim | source | experiment | measured | verdict | rule | n | commit | date |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        n, commit, date = _prov_cells(r)
        cells = [r["id"], r["claim"], r["source"], r["experiment"], r["measured"], f"**{r['verdict']}**",
                 r["rule"], n, commit, date]  # fmt: skip
        lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
    pending = unmeasured(rows)
    if pending:
        lines += [
            "",
            "## Claims registered but not yet measured in this ledger",
            "",
            f"{len(pending)} rows have an experiment but no measurement here yet (none is counted in the totals "
            "above); `geoformer claims --only ID --out DIR` measures one.",
            "",
            "| id | claim | source | experiment |",
            "|---|---|---|---|",
        ]
        lines += [f"| {_md(r.id)} | {_md(r.claim)} | {_md(r.source)} | {_md(r.experiment)} |" for r in pending]
    un = untestable()
    if un:
        lines += [
            "",
            "## Claims not tested here",
            "",
            "| id | claim | source | why not |",
            "|---|---|---|---|",
        ]
        lines += [f"| {_md(u.id)} | {_md(u.claim)} | {_md(u.source)} | {_md(u.reason)} |" for u in un.values()]
    lines.append("")
    return "\n".join(lines)


_COLOURS = {"reproduced": "#2e7d32", "not reproduced": "#c62828", "inconclusive": "#9e9e9e"}


def render_html(rows: list[dict[str, Any]], meta: dict[str, Any], plot_path: Path | None) -> str:
    import base64

    esc = html.escape
    t = totals(rows)
    img = ""
    if plot_path is not None and plot_path.is_file():
        b64 = base64.b64encode(plot_path.read_bytes()).decode()
        img = f'<img alt="forest plot" src="data:image/png;base64,{b64}" style="max-width:100%">'
    body = []
    for r in rows:
        n, commit, date = _prov_cells(r)
        colour = _COLOURS.get(r["verdict"], "#000")
        body.append(
            "<tr>"
            + "".join(f"<td>{esc(str(c))}</td>" for c in (r["id"], r["claim"], r["source"], r["experiment"], r["measured"]))
            + f'<td style="color:{colour};font-weight:bold">{esc(r["verdict"])}</td>'
            + "".join(f"<td>{esc(str(c))}</td>" for c in (r.get("reason", ""), r["rule"], n, commit, date))
            + "</tr>"
        )
    pending = "".join(
        f"<tr><td>{esc(r.id)}</td><td>{esc(r.claim)}</td><td>{esc(r.source)}</td><td>{esc(r.experiment)}</td></tr>"
        for r in unmeasured(rows)
    )
    pending_html = (
        "<h2>Claims registered but not yet measured in this ledger</h2><div class=\"wrap\"><table><tr><th>id</th>"
        f"<th>claim</th><th>source</th><th>experiment</th></tr>{pending}</table></div>"
        if pending
        else ""
    )
    un = "".join(
        f"<tr><td>{esc(u.id)}</td><td>{esc(u.claim)}</td><td>{esc(u.source)}</td><td>{esc(u.reason)}</td></tr>"
        for u in untestable().values()
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>geoformer claims ledger</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:4px;vertical-align:top}} th{{background:#f3f3f3;position:sticky;top:0}}
.wrap{{overflow-x:auto}}</style></head><body>
<h1>Claims ledger</h1>
<p>Written by <code>{esc(meta['command'])}</code> on {esc(meta['written'])}.
{len(rows)} rows: {t['reproduced']} reproduced, {t['not reproduced']} not reproduced, {t['inconclusive']} inconclusive.</p>
{img}
<div class="wrap"><table><tr><th>id</th><th>claim</th><th>source</th><th>experiment</th><th>measured</th><th>verdict</th>
<th>why</th><th>rule</th><th>n</th><th>commit</th><th>date</th></tr>{''.join(body)}</table></div>
{pending_html}
<h2>Claims not tested here</h2><div class="wrap"><table><tr><th>id</th><th>claim</th><th>source</th><th>why not</th></tr>{un}</table></div>
</body></html>
"""
