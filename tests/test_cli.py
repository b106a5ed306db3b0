"""CLI contract: outputs of `train`, and every kind of bad input is one line, exit 2, nothing lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import assert_one_line_error, run_cli

TINY = """
seed = 0
[model]
block_size = 16
n_layer = 1
n_head = 2
n_embd = 16
[train]
max_iters = 6
batch_size = 4
eval_interval = 3
eval_iters = 2
threads = 1
"""


@pytest.fixture
def tiny_toml(tmp_path, corpus):
    p = tmp_path / "tiny.toml"
    p.write_text(TINY + f'[data]\nsource = "{corpus}"\n')
    return p


@pytest.fixture
def trained(tmp_path, tiny_toml, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run_cli(["train", "--config", str(tiny_toml), "--out", str(out), "--quiet"], capsys)
    assert code == 0 and "val loss" in stdout
    return out


def snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_train_writes_contract_files_and_sample_works(trained, capsys):
    assert {"config.json", "metrics.jsonl", "summary.json", "ckpt.pt"} <= set(os.listdir(trained))
    code, out, _ = run_cli(["sample", "--ckpt", str(trained), "--prompt", "the", "--tokens", "20"], capsys)
    assert code == 0 and out.startswith("the") and len(out) >= 20


def test_resume_from_folder_alone_extends_run(trained, capsys):
    code, _, err = run_cli(
        ["train", "--out", str(trained), "--resume", "--set", "train.max_iters=9", "--quiet"], capsys
    )
    assert code == 0, err
    steps = [json.loads(x)["step"] for x in (trained / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 3, 6, 9]


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--preset", "nope"], "unknown preset 'nope'; known presets:"),
        (["--set", "model.attention=flash9"], "unknown attention kind 'flash9'; known kinds:"),
        (["--set", "train.schedule=zigzag"], "unknown schedule 'zigzag'; known schedules:"),
        (["--set", "train.nope=1"], "unknown key config.train.nope"),
        (["--set", "train.max_iters=lots"], "train.max_iters must be int"),
        (["--set", "model.block_size=100000"], "larger than"),
    ],
)
def test_bad_config_input(tmp_path, tiny_toml, capsys, extra, match):
    argv = ["train", "--out", str(tmp_path / "o")] + (
        extra if extra[0] == "--preset" else ["--config", str(tiny_toml), *extra]
    )
    code, _, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, match)


def test_malformed_toml(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nmax_iters=3")
    code, _, err = run_cli(["train", "--config", str(bad), "--out", str(tmp_path / "o")], capsys)
    assert_one_line_error(code, err, "malformed TOML")


@pytest.mark.parametrize("kind", ["missing", "empty_file", "empty_dir", "binary"])
def test_bad_data_paths(tmp_path, tiny_toml, capsys, kind):
    target = tmp_path / kind
    if kind == "empty_file":
        target.write_text("")
    elif kind == "empty_dir":
        target.mkdir()
    elif kind == "binary":
        target.write_bytes(bytes(range(256)) * 8)
    code, _, err = run_cli(
        ["train", "--config", str(tiny_toml), "--data", str(target), "--out", str(tmp_path / "o")], capsys
    )
    assert_one_line_error(code, err, str(target))


def test_refuses_out_that_holds_a_run(trained, tiny_toml, capsys):
    before = snapshot(trained)
    code, _, err = run_cli(["train", "--config", str(tiny_toml), "--out", str(trained)], capsys)
    assert_one_line_error(code, err, "already holds a run")
    assert snapshot(trained) == before


def test_corrupt_checkpoint(trained, capsys):
    (trained / "ckpt.pt").write_bytes(b"\x00garbage" * 10)
    before = snapshot(trained)
    code, _, err = run_cli(["train", "--out", str(trained), "--resume"], capsys)
    assert_one_line_error(code, err, "cannot read checkpoint")
    code, _, err = run_cli(["sample", "--ckpt", str(trained)], capsys)
    assert_one_line_error(code, err, "cannot read checkpoint")
    assert snapshot(trained) == before


def test_incompatible_checkpoint(trained, tiny_toml, capsys):
    before = snapshot(trained)
    code, _, err = run_cli(
        ["train", "--config", str(tiny_toml), "--set", "model.n_embd=32", "--out", str(trained), "--resume"],
        capsys,
    )
    assert_one_line_error(code, err, "incompatible")
    assert snapshot(trained) == before


def test_resume_without_checkpoint(tmp_path, capsys):
    code, _, err = run_cli(["train", "--out", str(tmp_path / "none"), "--resume"], capsys)
    assert_one_line_error(code, err, "nothing to resume")


def test_usage_errors_are_one_line(capsys):
    code, _, err = run_cli(["train", "--preset"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_console_entry_prints_no_traceback(tmp_path):
    """The real process: one line on stderr, exit status 2."""
    r = subprocess.run(
        [sys.executable, "-m", "geoformer", "train", "--preset", "nope", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "Traceback" not in r.stderr
