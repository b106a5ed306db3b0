"""The claims ledger's mechanics: rows measured at looks with provenance, written after every row, --only updates,
--merge keeps each row's provenance, --stale finds rows whose code changed, the rendering and the CLI's errors."""

from __future__ import annotations

import json
import subprocess

import pytest

from geoformer import gitstate
from geoformer.claims import ledger as L
from geoformer.claims import provenance
from geoformer.claims import registry as REG
from geoformer.claims import rules as R
from geoformer.errors import GeoformerError

from .conftest import assert_one_line_error, run_cli

RULE = R.Directional("negative", 0.1, "nats", "why")


DEFAULT_LOOKS = R.Looks()


def fake_row(rid: str, values=None, *, looks=DEFAULT_LOOKS, fail=False, depends=("src/x.py",)) -> REG.Row:
    seen = []

    def measure(ctx, n):
        if fail:
            raise ZeroDivisionError("boom")
        seen.append(n)
        ctx.record(f"run{n}", {"n": n})
        ctx.seeds.update(range(n))
        vals = values(n) if callable(values) else values
        return {"d": vals[:n]}

    row = REG.Row(
        id=rid, claim=f"claim {rid} | with a pipe", origin="004", section="sec", experiment="exp", rule=RULE.text(),
        measure=measure, decide=lambda data, level: RULE.decide(R.t_interval(data["d"], level)),
        describe=lambda data, d: f"{len(data['d'])} values", examples={}, looks=looks, depends=depends,
    )  # fmt: skip
    row.seen = seen
    return row


@pytest.fixture
def fake_rows(monkeypatch):
    rows = {}
    monkeypatch.setattr(L, "all_rows", lambda: rows)
    monkeypatch.setattr(L, "untestable", lambda: {})
    return rows


def test_sequential_looks_stop_when_decisive_and_provenance_is_recorded(tmp_path, fake_rows):
    fake_rows["t-tight"] = fake_row("t-tight", [-1.0, -1.01, -0.99, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0])
    noisy = [-1.0, 1.0, -0.5, 0.6, -0.2, 0.4, -0.8, 0.9, -0.1, 0.3]
    fake_rows["t-noisy"] = fake_row("t-noisy", noisy)
    rows = L.run_ledger(out=tmp_path, quick=False, only=None, quiet=True)
    tight, wide = rows
    assert fake_rows["t-tight"].seen == [3] and tight["verdict"] == "reproduced"
    assert fake_rows["t-noisy"].seen == [3, 5, 10] and wide["verdict"] == "inconclusive"
    p = tight["provenance"]
    assert p["n"] == 3 and p["looks"] == [3, 5, 10] and p["level"] == pytest.approx(1 - 0.05 / 3)
    assert p["seeds"] == [0, 1, 2] and set(p["configs"]) == {"run3"} and len(p["configs"]["run3"]) == 16
    assert {"cpu", "cores", "device", "torch"} <= set(p["machine"]) and p["mode"] == "full" and p["date"]
    assert "commit" in p and "dirty" in p
    assert wide["provenance"]["n"] == 10 and wide["decision"]["detectable"] > 0
    assert "Bonferroni" in wide["rule"]
    md = (tmp_path / "CLAIMS.md").read_text()
    assert "| t-tight | claim t-tight \\| with a pipe |" in md and "| 3 |" in md and "| 10 |" in md
    assert "1 reproduced, 0 not reproduced, 1 inconclusive" in md
    assert (tmp_path / "forest.png").stat().st_size > 1000 and "forest.png" in md
    html = (tmp_path / "CLAIMS.html").read_text()
    assert "data:image/png;base64," in html and "t-noisy" in html
    data = json.loads((tmp_path / "claims.json").read_text())
    assert [r["id"] for r in data["claims"]] == ["t-tight", "t-noisy"]


def test_max_seeds_caps_the_looks_and_corrects_the_level(tmp_path, fake_rows):
    fake_rows["t"] = fake_row("t", [-1.0, 1.0, -0.5, 0.6, -0.2, 0.4, -0.8, 0.9, -0.1, 0.3])
    row = L.run_ledger(out=tmp_path, quick=False, only=None, quiet=True, max_seeds=5)[0]
    assert fake_rows["t"].seen == [3, 5] and row["provenance"]["level"] == pytest.approx(0.975)


def test_only_updates_rows_a_broken_check_is_reported_and_errors_are_one_line(tmp_path, fake_rows):
    fake_rows["t-a"] = fake_row("t-a", [-1.0] * 10)
    fake_rows["t-b"] = fake_row("t-b", fail=True)
    rows = L.run_ledger(out=tmp_path, quick=True, only=None, quiet=True)
    assert rows[1]["verdict"] == "inconclusive" and "ZeroDivisionError" in rows[1]["measured"]
    assert rows[0]["provenance"]["mode"] == "quick" and rows[0]["provenance"]["n"] == 2  # quick: one look at 2
    with pytest.raises(GeoformerError, match="already holds a claims run"):
        L.run_ledger(out=tmp_path, quick=True, only=None, quiet=True)
    fake_rows["t-b"] = fake_row("t-b", [0.0] * 10)
    rows = L.run_ledger(out=tmp_path, quick=False, only=["t-b"], quiet=True)
    assert [(r["id"], r["verdict"], r["provenance"]["mode"]) for r in rows] == [
        ("t-a", "reproduced", "quick"), ("t-b", "not reproduced", "full")]  # fmt: skip
    with pytest.raises(GeoformerError, match="unknown claim 'nope'; known claims: t-a, t-b"):
        L.run_ledger(out=tmp_path / "o", quick=True, only=["nope"], quiet=True)
    with pytest.raises(GeoformerError, match="--only needs at least one claim id"):
        L.run_ledger(out=tmp_path / "o", quick=True, only=["", ""], quiet=True)
    with pytest.raises(GeoformerError, match="--only pattern 'zz-\\*' matches no claim"):
        L.run_ledger(out=tmp_path / "o", quick=True, only=["zz-*"], quiet=True)


def test_only_takes_glob_patterns_in_registry_order_without_repeats(fake_rows):
    for i in ("004-a", "001-b", "004-c-overhead", "002-d-overhead"):
        fake_rows[i] = fake_row(i, [1.0] * 10)
    assert list(L._select(["004-*"])) == ["004-a", "004-c-overhead"]
    assert list(L._select(["*-overhead"])) == ["004-c-overhead", "002-d-overhead"]
    assert list(L._select(["002-d-overhead", "*-overhead", "001-b"])) == ["002-d-overhead", "004-c-overhead", "001-b"]


def test_rows_not_yet_measured_are_listed_apart_and_not_counted(tmp_path, fake_rows):
    fake_rows["t-a"] = fake_row("t-a", [-1.0] * 10)
    fake_rows["t-b"] = fake_row("t-b", [0.0] * 10)
    L.run_ledger(out=tmp_path, quick=False, only=["t-b"], quiet=True)
    md = (tmp_path / "CLAIMS.md").read_text()
    head, pending = md.split("## Claims registered but not yet measured in this ledger")
    assert "1 rows: 0 reproduced, 1 not reproduced, 0 inconclusive" in head and "| t-a |" not in head
    assert "| t-a | claim t-a \\| with a pipe |" in pending and "| t-b |" not in pending
    assert "not yet measured" in (tmp_path / "CLAIMS.html").read_text()
    L.run_ledger(out=tmp_path, quick=False, only=["t-a"], quiet=True)
    assert "not yet measured" not in (tmp_path / "CLAIMS.md").read_text()


def test_merge_keeps_each_rows_provenance(tmp_path, fake_rows):
    for i in ("t-a", "t-b", "t-c"):
        fake_rows[i] = fake_row(i, [-1.0] * 10)
    L.run_ledger(out=tmp_path / "main", quick=False, only=["t-a", "t-b"], quiet=True)
    L.run_ledger(out=tmp_path / "side", quick=True, only=["t-c", "t-a"], quiet=True)
    side = {r["id"]: r for r in json.loads((tmp_path / "side" / "claims.json").read_text())["claims"]}
    rows = L.merge_ledgers(tmp_path / "main", [tmp_path / "side"])
    assert [(r["id"], r["provenance"]["mode"]) for r in rows] == [("t-a", "quick"), ("t-b", "full"), ("t-c", "quick")]
    assert rows[2]["provenance"] == side["t-c"]["provenance"]
    with pytest.raises(GeoformerError, match="holds no claims ledger"):
        L.merge_ledgers(tmp_path / "main", [tmp_path / "nothing"])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "claims.json").write_text('{"claims": [{"no": "id"}]}')
    with pytest.raises(GeoformerError, match="not a claims ledger"):
        L.merge_ledgers(tmp_path / "main", [tmp_path / "bad"])


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def _repo(tmp_path, monkeypatch, files: dict[str, str]):
    """A git repository with ``files`` (path under src/ -> text) in one commit, as provenance's REPO."""
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    for name, text in files.items():
        (repo / "src" / name).write_text(text)
    _git(repo, "init", "-q")
    _git(repo, "-c", "user.email=a@b", "-c", "user.name=t", "add", ".")
    _git(repo, "-c", "user.email=a@b", "-c", "user.name=t", "commit", "-qm", "one")
    monkeypatch.setattr(gitstate, "REPO", repo)
    return repo


def test_stale_lists_rows_whose_dependencies_changed(tmp_path, fake_rows, monkeypatch):
    repo = _repo(tmp_path, monkeypatch, {"x.py": "a = 1\n", "y.py": "b = 1\n"})
    monkeypatch.setattr(L, "_row_depends", lambda row: row.depends)
    fake_rows["t-x"] = fake_row("t-x", [-1.0] * 10, depends=("src/x.py",))
    fake_rows["t-y"] = fake_row("t-y", [-1.0] * 10, depends=("src/y.py",))
    L.run_ledger(out=tmp_path / "ledger", quick=False, only=None, quiet=True)
    assert L.stale_rows(tmp_path / "ledger") == []
    (repo / "src" / "x.py").write_text("a = 2\n")  # uncommitted change to t-x's dependency
    assert L.stale_rows(tmp_path / "ledger") == [("t-x", "changed since " + json.loads(
        (tmp_path / "ledger" / "claims.json").read_text())["claims"][0]["provenance"]["commit"][:10] + ": src/x.py")]  # fmt: skip
    _git(repo, "-c", "user.email=a@b", "-c", "user.name=t", "commit", "-qam", "two")
    assert [r for r, _ in L.stale_rows(tmp_path / "ledger")] == ["t-x"]
    # a row measured on a modified tree is stale, and so is a registered row the ledger lacks
    (repo / "src" / "y.py").write_text("b = 3\n")
    L.run_ledger(out=tmp_path / "ledger", quick=False, only=["t-y"], quiet=True)
    fake_rows["t-z"] = fake_row("t-z", [-1.0] * 10)
    got = dict(L.stale_rows(tmp_path / "ledger"))
    assert got["t-y"].startswith("measured on a modified tree") and got["t-z"] == "not measured in this ledger"
    with pytest.raises(GeoformerError, match="holds no claims ledger"):
        L.stale_rows(tmp_path / "nothing")


def test_stale_checks_the_commit_every_reused_run_was_trained_at(tmp_path, monkeypatch):
    from geoformer.claims.context import trained_at

    repo = _repo(tmp_path, monkeypatch, {"x.py": "a = 1\n", "y.py": "b = 1\n"})
    one = gitstate.git_state()["commit"]
    (repo / "src" / "y.py").write_text("b = 2\n")
    _git(repo, "-c", "user.email=a@b", "-c", "user.name=t", "commit", "-qam", "two")
    two = gitstate.git_state()["commit"]
    at = lambda c, dirty=False: {"commit": c, "dirty": dirty, "version": "v"}  # noqa: E731
    codes = {"r/seed0": [at(one)], "r/seed1": [at(one), at(two)], "r/seed2": [at(two)]}
    runs = trained_at(codes)
    assert runs["runs"] == 3 and runs["unrecorded"] == 0
    assert {(c["commit"], c["runs"]) for c in runs["commits"]} == {(one, 2), (two, 2)}

    def why(codes, depends):
        return provenance.stale_reason({"commit": two, "dirty": False, "trained_at": trained_at(codes)}, depends)

    assert why(codes, ("src/x.py",)) is None  # runs reused from commit one: x.py is the same there
    assert why(codes, ("src/y.py",)) == f"2 of its runs were trained at {one[:10]}; changed since: src/y.py"
    assert why({"r/seed2": [at(two)]}, ("src/y.py",)) is None  # every run at the row's own commit
    assert why({**codes, "r/seed3": None}, ("src/x.py",)).startswith("1 of its 4 runs record no commit")
    assert "modified tree at" in why({"r/seed0": [at(one, dirty=True)]}, ("src/x.py",))
    assert "a commit this repository does not have" in why({"r/seed0": [at("f" * 40)]}, ("src/x.py",))
    assert "outside a git checkout" in why({"r/seed0": [at(None)]}, ("src/x.py",))
    assert provenance.stale_reason({"commit": two, "dirty": False}, ("src/x.py",)) is None  # no runs: as before
    row = {"provenance": {"commit": two, "trained_at": trained_at(codes)}}
    assert L._prov_cells(row)[1] == f"{two[:8]} (runs reused from {one[:8]})"


def test_a_row_records_the_commit_its_training_runs_were_trained_at(tmp_path, fake_rows, corpus):
    from .conftest import tiny_config

    row = fake_row("t-train", [-1.0] * 10)

    def measure(ctx, n):
        run = ctx.train("tiny", tiny_config(corpus, max_iters=4, eval_interval=2))
        return {"d": [-1.0] * n, "loss": run["summary"]["final_val_loss"]}

    row.measure = measure
    fake_rows["t-train"] = row
    (rec,) = L.run_ledger(out=tmp_path, quick=False, only=None, quiet=True)
    now = gitstate.git_state()
    assert set(rec["provenance"]["configs"]) == {"tiny"}
    assert rec["provenance"]["trained_at"] == {
        "runs": 1, "unrecorded": 0, "commits": [{"commit": now["commit"], "dirty": bool(now["dirty"]), "runs": 1}]
    }  # fmt: skip


def test_git_state_outside_a_repository(tmp_path, monkeypatch):
    monkeypatch.setattr(gitstate, "REPO", tmp_path)
    st = gitstate.git_state()
    assert st["commit"] is None and provenance.stale_reason({"commit": None}, ("x",)) == "no commit recorded"


def test_config_hash_is_canonical():
    a = provenance.config_hash({"b": 1, "a": [1, 2]})
    assert a == provenance.config_hash({"a": [1, 2], "b": 1}) and a != provenance.config_hash({"a": [2, 1], "b": 1})


def test_forest_points_orient_every_directional_part():
    neg = R.Directional("negative", 0.02, "nats", "w").decide(R.Interval(-0.05, -0.06, -0.04, 0.95, 3))
    pos = R.Directional("positive", 0.5, "x", "w").decide(R.Interval(1.0, 0.5, 1.5, 0.95, 3))
    rows = [{"id": "a", "verdict": "reproduced", "decision": neg.to_dict()},
            {"id": "b", "verdict": "reproduced", "decision": R.combine({"p": pos}).to_dict()},
            {"id": "c", "verdict": "inconclusive", "decision": R.Decision("inconclusive", "x").to_dict()}]  # fmt: skip
    from geoformer.claims.plot import forest_points

    pts = forest_points(rows)
    assert [p["label"] for p in pts] == ["a", "b: p"]
    assert pts[0]["lo"] == pytest.approx(2.0) and pts[0]["hi"] == pytest.approx(3.0)  # claimed side to the right
    assert pts[1]["lo"] == pytest.approx(1.0) and pts[1]["hi"] == pytest.approx(3.0)


def test_bound_and_equivalence_points_put_the_claimed_side_right():
    from geoformer.claims.plot import bound_points, equivalence_points

    below = R.Bound("below", 10.0, "%", "w").decide(R.Interval(5.0, 4.0, 6.0, 0.95, 3))  # claim holds
    above = R.Bound("above", 2.0, "x", "w").decide(R.Interval(1.0, 0.5, 1.5, 0.95, 3))  # claim fails
    zero = R.Bound("below", 0.0, "x", "w").decide(R.Interval(-1.0, -2.0, -0.5, 0.95, 3))
    eq = R.Equivalence(1.88, 0.05, "nats", "w").decide(R.Interval(1.90, 1.86, 1.94, 0.95, 3))
    bar = R.Decision("reproduced", "x", R.Interval(0.22, 0.15, 0.31, 0.95, 100), spec={"form": "bar", "bar": 0.2})
    rows = [{"id": "b", "verdict": "reproduced", "decision": R.combine({"lo": below, "hi": above, "z": zero}).to_dict()},
            {"id": "e", "verdict": "reproduced", "decision": eq.to_dict()},
            {"id": "arc", "verdict": "reproduced", "decision": bar.to_dict()}]  # fmt: skip
    pts = {p["label"]: p for p in bound_points(rows)}
    assert list(pts) == ["b: lo", "b: hi", "b: z", "arc"]
    assert (pts["b: lo"]["lo"], pts["b: lo"]["hi"], pts["b: lo"]["estimate"]) == pytest.approx((0.4, 0.6, 0.5))
    assert (pts["b: hi"]["lo"], pts["b: hi"]["hi"]) == pytest.approx((-0.75, -0.25))
    assert (pts["b: z"]["lo"], pts["b: z"]["hi"]) == pytest.approx((0.5, 2.0))  # a zero bound is scaled by 1
    assert (pts["arc"]["lo"], pts["arc"]["hi"]) == pytest.approx((-0.25, 0.55))
    (e,) = equivalence_points(rows)
    assert (e["label"], e["lo"], e["hi"], e["estimate"]) == pytest.approx(("e", -0.4, 1.2, 0.4))


def test_forest_plot_with_bound_rows_only(tmp_path):
    d = R.Bound("below", 1.0, "x", "w").decide(R.Interval(0.5, 0.4, 0.6, 0.95, 3))
    from geoformer.claims.plot import forest_plot

    assert forest_plot([{"id": "b", "verdict": "reproduced", "decision": d.to_dict()}], tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 1000
    assert not forest_plot([{"id": "c", "verdict": "inconclusive", "decision": R.Decision("inconclusive", "x").to_dict()}],
                           tmp_path / "g.png") and not (tmp_path / "g.png").exists()  # fmt: skip


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["claims", "--only", ",", "--out", "X"], "--only needs at least one claim id"),
        (["claims", "--only", "nope", "--out", "X"], "unknown claim 'nope'"),
        (["claims", "--quick"], "--out DIR is required"),
        (["claims", "--stale", "X"], "holds no claims ledger"),
        (["claims", "--stale", "X", "--only", "a"], "--stale only reads a ledger"),
        (["claims", "--merge", "X", "--quick", "--out", "Y"], "--merge copies measured rows"),
        (["claims", "--max-seeds", "1", "--out", "X"], "--max-seeds must be >= 2"),
    ],
)
def test_cli_bad_input(tmp_path, capsys, argv, msg):
    argv = [str(tmp_path / a) if a in ("X", "Y") else a for a in argv]
    code, _, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, msg)


def test_every_rows_dependencies_exist_in_the_repository():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for rid, row in REG.all_rows().items():
        for path in L._row_depends(row):
            assert (root / path).exists(), (rid, path)


def _module_rows(tmp_path, name: str, helper_body: str, other_body: str = "return 0"):
    """A throwaway write-up module with two rows: one reaching ``helper`` from decide, one not."""
    import importlib.util
    import textwrap

    src = textwrap.dedent(f'''
        from geoformer.claims import registry as REG
        from geoformer.claims import rules as R

        RULE = R.Directional("negative", 0.1, "nats", "why")


        def helper(data):
            {helper_body}


        def other():
            {other_body}


        def measure(ctx, n):
            return {{"d": [-1.0] * n}}


        A = REG.Row(id="m-a", claim="c", origin="004", section="s", experiment="e", rule="r", measure=measure,
                    decide=lambda data, level: RULE.decide(R.t_interval(helper(data), level)),
                    describe=lambda data, d: "x", examples={{}}, looks=R.Looks(), depends=())
        B = REG.Row(id="m-b", claim="c", origin="004", section="s", experiment="e", rule="r", measure=measure,
                    decide=lambda data, level: RULE.decide(R.t_interval(data["d"], level)),
                    describe=lambda data, d: "x", examples={{}}, looks=R.Looks(), depends=())
    ''')
    path = tmp_path / f"{name}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.A, mod.B


def test_fingerprint_follows_what_the_row_reaches_and_nothing_else(tmp_path):
    from geoformer.claims.fingerprint import row_fingerprint

    a1, b1 = _module_rows(tmp_path, "m1", 'return data["d"]')
    a2, b2 = _module_rows(tmp_path, "m2", 'return data["d"]')  # the same text in another file: same print
    assert row_fingerprint(a1) == row_fingerprint(a2) and row_fingerprint(b1) == row_fingerprint(b2)
    a3, b3 = _module_rows(tmp_path, "m3", 'return [v * 2 for v in data["d"]]')  # helper changed: only A moves
    assert row_fingerprint(a3) != row_fingerprint(a1) and row_fingerprint(b3) == row_fingerprint(b1)
    a4, b4 = _module_rows(tmp_path, "m4", 'return data["d"]', other_body="return 1")  # unrelated code changed
    assert row_fingerprint(a4) == row_fingerprint(a1) and row_fingerprint(b4) == row_fingerprint(b1)
    a1.claim = "another claim"  # the row's texts count
    assert row_fingerprint(a1) != row_fingerprint(a2)


def test_stale_with_a_fingerprint_ignores_other_rows_of_the_module(tmp_path, fake_rows, monkeypatch):
    repo = _repo(tmp_path, monkeypatch, {"mod.py": "a = 1\n", "dep.py": "b = 1\n"})
    monkeypatch.setattr(L, "_module_path", lambda row: "src/mod.py")
    monkeypatch.setattr(L, "_row_depends", lambda row: (*row.depends, "src/mod.py"))
    fake_rows["t-x"] = fake_row("t-x", [-1.0] * 10, depends=("src/dep.py",))
    L.run_ledger(out=tmp_path / "ledger", quick=False, only=None, quiet=True)
    file = tmp_path / "ledger" / "claims.json"
    assert json.loads(file.read_text())["claims"][0]["provenance"]["fingerprint"]
    (repo / "src" / "mod.py").write_text("a = 2\n")  # the module changed, this row's definition did not
    assert L.stale_rows(tmp_path / "ledger") == []
    fake_rows["t-x"].experiment = "another experiment"  # now it did
    assert "its definition changed" in dict(L.stale_rows(tmp_path / "ledger"))["t-x"]
    fake_rows["t-x"].experiment = "exp"
    (repo / "src" / "dep.py").write_text("b = 2\n")  # and a dependency still counts
    assert "src/dep.py" in dict(L.stale_rows(tmp_path / "ledger"))["t-x"]
    d = json.loads(file.read_text())  # a row without a fingerprint (measured before them): the whole module counts
    d["claims"][0]["provenance"].pop("fingerprint")
    (repo / "src" / "dep.py").write_text("b = 1\n")
    file.write_text(json.dumps(d))
    assert "src/mod.py" in dict(L.stale_rows(tmp_path / "ledger"))["t-x"]
