"""`geoformer claims --jobs N`: rows grouped by write-up (arena with 004), dealt to workers, measured in their own
folders and merged with their provenance."""

from __future__ import annotations

import json

import pytest

from geoformer.claims import parallel as P
from geoformer.claims.registry import all_rows

from .conftest import assert_one_line_error, run_cli


def test_groups_keep_rows_that_share_experiments_together():
    g = P.groups(all_rows())
    assert {"arena-nanogpt-parity", "arena-modern-recipe", "004-constant-beats-cosine"} <= set(g["arena+seed004"])
    assert all(i.startswith("001-") for i in g["seed001"]) and sum(map(len, g.values())) == len(all_rows())


def test_deal_balances_largest_first():
    assert P.deal({"a": 5, "b": 3, "c": 2, "d": 1}, 2) == [["a", "d"], ["b", "c"]]
    assert P.deal({"a": 1}, 4) == [["a"]]


def test_jobs_2_measures_and_merges(tmp_path, capsys):
    out = tmp_path / "ledger"
    ids = "000-adapter-parameter-savings,003-exp-log-relative-error"
    code, stdout, err = run_cli(["claims", "--quick", "--jobs", "2", "--only", ids, "--out", str(out)], capsys)
    assert code == 0, err
    rows = {r["id"]: r for r in json.loads((out / "claims.json").read_text())["claims"]}
    assert set(rows) == set(ids.split(",")) and all(r["provenance"]["mode"] == "quick" for r in rows.values())
    assert "[seed000] claim 000-adapter-parameter-savings" in stdout and "[seed003] claim 003-exp-log" in stdout
    assert (out / "_jobs" / "seed000" / "claims.json").is_file() and (out / "CLAIMS.md").is_file()
    code, _, err = run_cli(["claims", "--quick", "--jobs", "0", "--only", ids, "--out", str(tmp_path / "x")], capsys)
    assert_one_line_error(code, err, "--jobs must be >= 1")


def test_every_row_names_the_module_that_registers_it():
    """module_of (the staleness check's module path, the --jobs groups) is the module whose source defines the row's
    id: rows built by a helper in common.py (compare_row) or from another origin (the ARC bar) included."""
    import importlib
    import inspect

    from geoformer.claims.registry import MODULES, all_rows, module_of

    sources = {m: inspect.getsource(importlib.import_module(f"geoformer.claims.{m}")) for m in MODULES}
    for rid, row in all_rows().items():
        m = module_of(row)
        assert m in MODULES and f'"{rid}"' in sources[m], (rid, m)


def test_group_folders_share_the_ledgers_experiments(tmp_path):
    """A comparison prefilled under <out>/experiments/_shared is what every group folder sees (so claims --jobs
    reuses it instead of retraining), what a group writes lands in <out>/experiments, linking twice is a no-op,
    a link elsewhere is re-pointed, and a group folder with an experiments folder of its own is one line."""
    from geoformer.errors import GeoformerError

    out = tmp_path / "ledger"
    (out / "experiments" / "_shared" / "levels").mkdir(parents=True)
    (out / "experiments" / "_shared" / "levels" / "results.json").write_text("{}")
    for g in ("seed001", "seed002"):
        P.share_experiments(out, out / "_jobs" / g)
        P.share_experiments(out, out / "_jobs" / g)
        assert (out / "_jobs" / g / "experiments" / "_shared" / "levels" / "results.json").read_text() == "{}"
    (out / "_jobs" / "seed001" / "experiments" / "001-x").mkdir()
    assert (out / "experiments" / "001-x").is_dir()
    other = tmp_path / "elsewhere"
    other.mkdir()
    link = out / "_jobs" / "seed002" / "experiments"
    link.unlink()
    link.symlink_to(other, target_is_directory=True)
    P.share_experiments(out, out / "_jobs" / "seed002")
    assert link.resolve() == (out / "experiments").resolve()
    own = out / "_jobs" / "seed003" / "experiments"
    own.mkdir(parents=True)
    with pytest.raises(GeoformerError, match="folder of its own") as e:
        P.share_experiments(out, out / "_jobs" / "seed003")
    assert "\n" not in str(e.value)
