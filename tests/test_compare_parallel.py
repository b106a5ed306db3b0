"""`compare --jobs N` trains the runs in worker processes and gives the serial comparison's results exactly."""

from __future__ import annotations

import json

import pytest

from geoformer.errors import GeoformerError
from geoformer.experiments.parallel import run_compare_parallel

from .conftest import TINY, assert_one_line_error, run_cli

TOML = TINY + """
[compare]
baseline = "sdpa"
seeds = 2
[compare.variants.sdpa]
[compare.variants.local]
"model.attention" = "local"
"model.attn.window" = 4
"""


def _compare(cfg, corpus, out, jobs, **kw):
    return run_compare_parallel(
        jobs=jobs, preset=None, config=str(cfg), sets=[], data=str(corpus), variants=None, seeds=None,
        out=out, quiet=True, **kw,
    )  # fmt: skip


def _losses(res):
    return {(name, r["seed"]): [m["val_loss"] for m in r["metrics"]] for name, v in res["variants"].items()
            for r in v["runs"]}  # fmt: skip


def test_parallel_runs_equal_the_serial_ones_bit_for_bit(tmp_path, corpus, capsys, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TOML, encoding="utf-8")
    serial = _compare(cfg, corpus, tmp_path / "serial", 1)
    par = _compare(cfg, corpus, tmp_path / "par", 2)
    assert _losses(serial) == _losses(par) and len(_losses(par)) == 4
    saved = json.loads((tmp_path / "par" / "results.json").read_text())
    assert sorted(saved["variants"]) == ["local", "sdpa"] and (tmp_path / "par" / "report.md").is_file()
    # --resume after a parallel sweep trains nothing; an existing comparison without --resume/--force is refused
    stamp = (tmp_path / "par" / "runs" / "local" / "seed1" / "summary.json").stat().st_mtime_ns
    from geoformer.experiments import compare
    from geoformer.experiments import parallel as P

    hashed, trained = [], []
    real_key = compare.data_key
    monkeypatch.setattr(compare, "data_key", lambda d: hashed.append(d) or real_key(d))
    monkeypatch.setattr(P, "train_runs", lambda runs, n, **kw: trained.append([str(d) for _, d in runs]))
    _compare(cfg, corpus, tmp_path / "par", 2, resume=True)
    assert (tmp_path / "par" / "runs" / "local" / "seed1" / "summary.json").stat().st_mtime_ns == stamp
    # reuse is decided in the parent, the corpus hashed once per call (not once per run), no worker started
    assert trained == [] and len(hashed) == 2  # once to pick the runs to train, once to assemble the results
    (tmp_path / "par" / "runs" / "sdpa" / "seed0" / "summary.json").unlink()
    _compare(cfg, corpus, tmp_path / "par", 2, resume=True)  # (the fake workers train nothing: assembling does)
    assert trained == [[str(tmp_path / "par" / "runs" / "sdpa" / "seed0")]]  # the workers get the missing run alone
    monkeypatch.undo()
    with pytest.raises(GeoformerError, match="already holds a comparison"):
        _compare(cfg, corpus, tmp_path / "par", 2)


def test_bad_jobs_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(["compare", "--preset", "quick", "--jobs", "0", "--out", str(tmp_path / "o")], capsys)
    assert_one_line_error(code, err, "--jobs must be >= 1")


def test_submitit_local_launcher_gives_the_same_runs(tmp_path, corpus, capsys):
    pytest.importorskip("submitit")
    cfg = tmp_path / "c.toml"
    cfg.write_text(TOML.replace("seeds = 2", "seeds = 1"), encoding="utf-8")
    serial = _compare(cfg, corpus, tmp_path / "serial", 1)
    sub = _compare(cfg, corpus, tmp_path / "sub", 2, launcher="local", launcher_opts={"timeout_min": 10})
    assert _losses(serial) == _losses(sub) and len(_losses(sub)) == 2
    assert any((tmp_path / "sub" / "jobs").iterdir())  # submitit's job logs
    with pytest.raises(GeoformerError, match="unknown launcher 'pbs'"):
        _compare(cfg, corpus, tmp_path / "x", 2, launcher="pbs")
    with pytest.raises(GeoformerError, match="--launcher-opt needs --launcher slurm or local"):
        _compare(cfg, corpus, tmp_path / "x", 2, launcher_opts={"timeout_min": 1})
    with pytest.raises(GeoformerError, match="--launcher-opt"):
        _compare(cfg, corpus, tmp_path / "y", 2, launcher="local", launcher_opts={"no_such_option": 1})
