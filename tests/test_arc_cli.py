"""`geoformer arc eval|show` and the harness: outputs, resume, scoring, and one-line error paths that
leave --out untouched."""

from __future__ import annotations

import json

import numpy as np
import pytest

from geoformer.data import arc as A
from geoformer.experiments.arc_eval import (
    identity_attempts,
    mode_attempts,
    run_arc_eval,
    score_attempts,
    wilson,
)

from .conftest import assert_one_line_error, run_cli

IDS = "007bbfb7,25ff71a9,3c9b0459"  # arc1 training


def snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_wilson_interval():
    lo, hi = wilson(0, 100)
    assert lo == 0 and hi == pytest.approx(0.0370, abs=1e-4)
    lo, hi = wilson(20, 100)
    assert lo == pytest.approx(0.1334, abs=1e-4) and hi == pytest.approx(0.2888, abs=1e-4)


def test_baselines_and_scoring():
    task = A.ArcTask(
        id="t",
        train=(
            (np.zeros((2, 2)), np.ones((2, 2))),
            (np.zeros((1, 1)), np.ones((2, 2))),
            (np.ones((1, 1)), np.eye(2)),
        ),
        test=((np.eye(2), np.eye(2)),),
    )
    ident = identity_attempts(task)["attempts"]
    assert score_attempts(ident, task) == [True]
    mode = mode_attempts(task)["attempts"]
    assert np.array_equal(mode[0][0], np.ones((2, 2))) and np.array_equal(mode[0][1], np.eye(2))
    assert score_attempts(mode, task) == [True]  # the second attempt counts
    assert score_attempts([[np.ones((2, 2)), np.ones((2, 2)), np.eye(2)]], task) == [False]  # only 2 attempts
    assert score_attempts([[np.eye(3)]], task) == [False]  # wrong size


def test_eval_writes_task_files_and_summary_and_resumes(tmp_path, capsys):
    out = tmp_path / "ident"
    argv = ["arc", "eval", "--dataset", "arc1", "--split", "training", "--ids", IDS, "--method", "identity"]
    code, stdout, err = run_cli([*argv, "--out", str(out), "--quiet"], capsys)
    assert code == 0, err and "accuracy" in stdout
    assert {"config.json", "summary.json", "007bbfb7.json"} <= set(p.name for p in out.iterdir())
    s = json.loads((out / "summary.json").read_text())
    assert s["tasks"] == 3 and 0 <= s["accuracy"] <= 1 and "seconds_per_task" in s and len(s["wilson95"]) == 2
    row = json.loads((out / "007bbfb7.json").read_text())
    assert {"solved", "attempts", "seconds", "score"} <= set(row)
    # resume: an existing task file is read back, not re-run
    row["seconds"] = 123.0
    (out / "007bbfb7.json").write_text(json.dumps(row))
    run_cli([*argv, "--out", str(out), "--quiet"], capsys)
    assert json.loads((out / "007bbfb7.json").read_text())["seconds"] == 123.0
    run_cli([*argv, "--out", str(out), "--quiet", "--force"], capsys)
    assert json.loads((out / "007bbfb7.json").read_text())["seconds"] < 123.0


def test_learner_eval_on_one_task(tmp_path):
    s = run_arc_eval(
        dataset="arc1", split="training", ids=["25ff71a9"], method="learner", out=tmp_path / "l",
        steps=3, budget_s=20, quiet=True,
    )  # fmt: skip
    row = json.loads((tmp_path / "l" / "25ff71a9.json").read_text())
    assert s["tasks"] == 1 and row["fit"]["steps"] <= 3 and len(row["attempts"]) == 2
    assert row["size_rules"] == ["same", "same"]


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--dataset", "arc9"], "unknown ARC dataset"),
        (["--split", "test"], "unknown ARC split"),
        (["--ids", "deadbeef"], "unknown task id"),
        (["--ids", "@/nonexistent/ids.txt"], "does not exist"),
        (["--tasks", "3", "--ids", "007bbfb7"], "not both"),
        (["--tasks", "0"], "--tasks must be"),
        (["--method", "oracle", "--tasks", "2"], "unknown method"),
        (["--budget-s", "0", "--tasks", "2"], "--budget-s must be"),
        (["--budget-cpu-s", "-1", "--tasks", "2"], "--budget-cpu-s must be"),
        (["--steps", "0", "--tasks", "2"], "--steps must be"),
    ],
)
def test_eval_bad_input_is_one_line_and_keeps_out(tmp_path, capsys, extra, match):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    before = snapshot(out)
    code, _, err = run_cli(
        ["arc", "eval", "--split", "training", *extra, "--out", str(out), "--quiet"], capsys
    )
    assert_one_line_error(code, err, match)
    assert snapshot(out) == before


def test_eval_refuses_a_folder_with_other_settings(tmp_path, capsys):
    out = tmp_path / "ident"
    base = ["arc", "eval", "--split", "training", "--ids", "007bbfb7", "--out", str(out), "--quiet"]
    assert run_cli([*base, "--method", "identity"], capsys)[0] == 0
    before = snapshot(out)
    code, _, err = run_cli([*base, "--method", "mode"], capsys)
    assert_one_line_error(code, err, "other settings")
    assert snapshot(out) == before


def test_show_renders_a_png_with_prediction(tmp_path, capsys):
    pred = tmp_path / "pred"
    run_cli(
        [
            "arc",
            "eval",
            "--split",
            "training",
            "--ids",
            "007bbfb7",
            "--method",
            "mode",
            "--out",
            str(pred),
            "--quiet",
        ],
        capsys,
    )
    png = tmp_path / "t.png"
    code, out, err = run_cli(["arc", "show", "007bbfb7", "--pred", str(pred), "--out", str(png)], capsys)
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "extra,match",
    [
        (["zzzzzzzz"], "unknown ARC task id"),
        (["007bbfb7", "--dataset", "arc7"], "unknown ARC dataset"),
        (["007bbfb7", "--pred", "/nonexistent/dir"], "is not a folder"),
        (["007bbfb7", "--pred", "{empty}"], "no prediction for task"),
        (["007bbfb7", "--pred", "{corrupt}"], "not an ARC eval task file"),
    ],
)
def test_show_bad_input_is_one_line(tmp_path, capsys, extra, match):
    (tmp_path / "empty").mkdir()
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "007bbfb7.json").write_text("{not json")
    extra = [e.format(empty=tmp_path / "empty", corrupt=tmp_path / "corrupt") for e in extra]
    code, _, err = run_cli(["arc", "show", *extra, "--out", str(tmp_path / "x.png")], capsys)
    assert_one_line_error(code, err, match)
    assert not (tmp_path / "x.png").exists()
