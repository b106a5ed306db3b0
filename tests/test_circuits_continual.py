"""The experiment drivers on a toy budget, and the CLI's error paths."""

from __future__ import annotations

import json

import pytest

from geoformer import cli
from geoformer.circuits import continual as CL

TINY = {
    "n_layer": 1, "n_head": 2, "n_embd": 16, "n_train": 40, "n_test": 20, "steps": 4, "steps_a": 4, "steps_b": 6, "steps_extra": 4,
    "batch_size": 8, "fisher_examples": 12, "canary_examples": 8, "canary_every": 2, "attrib_examples": 12,
}  # fmt: skip


def test_continual_all_methods_tiny(tmp_path):
    res = CL.run_continual(tmp_path, seeds=1, lr_mults=(1.0,), quiet=True, sets=TINY)
    rows = res["rows"]
    assert {r["method"] for r in rows} == set(CL.METHODS)
    for r in rows:
        assert 0 <= r["a_after"] <= 1 and 0 <= r["b_after"] <= 1
        assert r["forgetting"] == pytest.approx(r["a_before"] - r["a_after"])
    canary = [r for r in rows if r["method"] == "canary"][0]
    assert canary["extra"]["canary"]["checks"] == 3
    with pytest.raises(Exception, match="already holds"):
        CL.run_continual(tmp_path, seeds=1, quiet=True, sets=TINY)
    # resume keeps finished rows and adds only the missing ones (here: naive at 10x the lr)
    res2 = CL.run_continual(
        tmp_path, seeds=1, lr_mults=(10.0,), methods=("naive",), quiet=True, sets=TINY, resume=True
    )
    assert len(res2["rows"]) == len(rows) + 1
    # every row records the code that trained its model A (cached) and its phase B: here both now, so one entry
    from geoformer import gitstate

    now = gitstate.git_state()
    assert all(r["code"] == [now] for r in res2["rows"])
    assert CL.model_a_code(tmp_path / "seed0") == [now]
    (tmp_path / "seed0" / "model_a.code.json").unlink()  # a model A cached before codes were recorded
    res3 = CL.run_continual(tmp_path, seeds=1, lr_mults=(10.0,), methods=("ewc",), quiet=True, sets=TINY, resume=True)
    assert [r["code"] for r in res3["rows"] if r["method"] == "ewc" and r["lr_b"] > 0.005] == [None]
    table = (tmp_path / "continual.md").read_text()
    assert "| 0.01 | naive |" in table and "| 0.001 | canary |" in table and "overhead" in table


def test_continual_resume_does_not_reuse_rows_of_other_settings(tmp_path, capsys):
    CL.run_continual(tmp_path, seeds=1, methods=("naive",), quiet=True, sets=TINY)
    first = json.loads((tmp_path / "continual.json").read_text())["rows"]
    other = {**TINY, "steps_b": TINY.get("steps_b", 10) + 1}
    res = CL.run_continual(tmp_path, seeds=1, methods=("naive",), quiet=False, sets=other, resume=True)
    assert "made with another configuration" in capsys.readouterr().out
    assert len(res["rows"]) == 1 and res["rows"][0]["train_b_s"] != first[0]["train_b_s"]
    (tmp_path / "continual.json").write_text("{garbled")
    res = CL.run_continual(tmp_path, seeds=1, methods=("naive",), quiet=False, sets=other, resume=True)
    assert "unreadable" in capsys.readouterr().out and len(res["rows"]) == 1


def test_attribute_tiny(tmp_path, monkeypatch):
    monkeypatch.setattr(CL, "quick_config", lambda: CL.CircuitsConfig(**TINY))
    runs = CL.run_attribute(tmp_path, seeds=1, quick=True, quiet=True)
    assert (tmp_path / "head_importance.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "attribution.json").read_text())
    br = saved["runs"]["0"]["bridges"]
    assert len(br["bridge_score"]) == 1 and len(br["bridge_score"][0]) == 2
    assert runs[0]["timing_s"]["total"] > 0


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["circuits", "continual", "--out", "X", "--methods", "naive,bogus"], "unknown method 'bogus'"),
        (["circuits", "continual", "--out", "X", "--lr-mults", "1,ten"], "--lr-mults"),
        (["circuits", "train", "--out", "X", "--seeds", "0"], "--seeds"),
        (["circuits", "continual", "--out", "X", "--lr-mults", "inf"], "--lr-mults must be positive numbers"),
        (["circuits", "continual", "--out", "X", "--lr-mults", "nan"], "--lr-mults must be positive numbers"),
        (["circuits", "attribute", "--out", "X", "--models", "X/none"], "is not a folder of trained models"),
        (["circuits", "train", "--out", "X", "--seed-ids", "-1"], "--seed-ids must be non-negative"),
        (["circuits", "continual", "--out", "X", "--knobs", "X/none.json"], "not a `circuits tune` result"),
        (["circuits", "tune", "--out", "X", "--knobs", "ewc_lambda,bogus"], "unknown knob 'bogus'"),
        (["circuits", "tune", "--out", "X", "--lr-mults", "0"], "--lr-mults must be positive numbers"),
    ],
)
def test_cli_bad_input_one_line_exit_2(tmp_path, capsys, argv, msg):
    argv = [a if a != "X" else str(tmp_path / "o") for a in argv]
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1


def test_claim_rows_registered():
    from geoformer.claims import all_rows

    ids = {"002-protection-high-lr", "002-canary-rollback", "002-protected-training-speedup", "002-bridges-exist",
           "002-bridges-beyond-magnitude", "002-circuit-fraction"}  # fmt: skip
    rows = all_rows()
    assert ids <= set(rows)
    assert all(rows[i].rule and rows[i].experiment for i in ids)


def test_cli_train_quick_writes_results(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(CL, "quick_config", lambda: CL.CircuitsConfig(**TINY))
    out = tmp_path / "t"
    with pytest.raises(SystemExit) as e:
        cli.main(["circuits", "train", "--quick", "--quiet", "--out", str(out)])
    assert e.value.code == 0
    saved = json.loads((out / "train.json").read_text())
    assert set(saved["runs"]["0"]["test_acc"]) == set(CL.SUITES)
    assert (out / "seed0" / "ckpt.pt").is_file()
    with pytest.raises(SystemExit) as e:  # nothing overwritten without --force
        cli.main(["circuits", "train", "--quick", "--quiet", "--out", str(out)])
    assert e.value.code == 2


def test_cli_knobs_without_tuned_values_is_one_line(tmp_path, capsys):
    f = tmp_path / "tuned.json"
    f.write_text(json.dumps({"trials": []}))
    with pytest.raises(SystemExit) as e:
        cli.main(["circuits", "continual", "--out", str(tmp_path / "o"), "--knobs", str(tmp_path)])
    assert e.value.code == 2 and "holds no tuned values" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_tune_chooses_the_best_value_and_continual_applies_it(tmp_path):
    from geoformer.circuits import tuning
    from geoformer.circuits.methods import overrides

    st = tuning.run_tune(tmp_path / "t", lr_mults=(1.0,), knobs=("ewc_lambda", "replay_mix"), seed=7, quiet=True,
                         sets=TINY)  # fmt: skip
    assert len(st["trials"]) == 8 and all(t["lr_mult"] == 1.0 for t in st["trials"])
    for knob in ("ewc_lambda", "replay_mix"):
        trials = [t for t in st["trials"] if t["knob"] == knob]
        best = max(trials, key=lambda t: t["score"])  # max returns the first of equals: the earlier grid value
        assert st["chosen"]["1"][knob] == best["value"]
        assert all(t["score"] == pytest.approx((t["a_after"] + t["b_after"]) / 2) for t in trials)
    again = tuning.run_tune(tmp_path / "t", lr_mults=(1.0,), knobs=("ewc_lambda", "replay_mix"), seed=7, quiet=True,
                            sets=TINY)  # fmt: skip
    assert again["trials"] == st["trials"]  # resumed: nothing measured twice
    assert overrides(st["chosen"], 1.0, "ewc") == {"ewc_lambda": st["chosen"]["1"]["ewc_lambda"]}
    assert overrides(st["chosen"], 1.0, "naive") == {} and overrides(st["chosen"], 10.0, "ewc") == {}
    res = CL.run_continual(tmp_path / "c", seeds=1, methods=("naive", "ewc", "replay"), quiet=True, sets=TINY,
                           knobs=st["chosen"])  # fmt: skip
    by = {r["method"]: r for r in res["rows"]}
    assert by["ewc"]["knobs"] == {"ewc_lambda": st["chosen"]["1"]["ewc_lambda"]} and by["naive"]["knobs"] == {}
    assert by["replay"]["extra"]["replay"]["per_batch"] == round(st["chosen"]["1"]["replay_mix"] * TINY["batch_size"])
    assert (tmp_path / "c" / "tradeoff.png").stat().st_size > 1000
    md = (tmp_path / "c" / "continual.md").read_text()
    assert "forgetting - naive" in md and "| 0.001 | ewc |" in md and "Goal:" in md


def test_tuning_tie_goes_to_the_earlier_value():
    from geoformer.circuits.tuning import choose

    trials = [{"knob": "k", "lr_mult": 1.0, "value": v, "score": s} for v, s in ((1, 0.5), (2, 0.7), (3, 0.7))]
    assert choose(trials) == {"1": {"k": 2}}
    assert choose(trials, {"k": (1, 3)}) == {"1": {"k": 3}}  # values off today's grid do not count
