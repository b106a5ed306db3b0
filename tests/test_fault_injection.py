"""Faults injected into runs: a kill during a checkpoint write, SIGKILL mid-training, two writers on one folder, a
full disk, and damaged files for train, compare and circuits. Each time: one line, nothing lost, and the next
start cleans up or retrains with a line saying so."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from geoformer.train import checkpoint

from .conftest import assert_one_line_error, run_cli

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}


@pytest.fixture
def run(tmp_path, tiny_toml, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(["train", "--config", str(tiny_toml), "--out", str(out), "--quiet"], capsys)
    assert code == 0, err
    return out


def test_a_write_killed_midway_leaves_the_previous_checkpoint(run, monkeypatch):
    before = snapshot(run)

    def dies_halfway(obj, f, *a, **k):
        f.write(b"partial bytes")
        raise KeyboardInterrupt  # a Ctrl-C (or any death) in the middle of torch.save

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(run / "ckpt.pt", {"x": 1})
    assert snapshot(run) == before and not list(run.glob(".*.tmp"))
    assert checkpoint.load(run)["step"] >= 1


def test_sigkill_mid_training_then_resume_and_leftover_temporaries_are_removed(tmp_path, tiny_toml):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "geoformer", "train", "--config", str(tiny_toml), "--out", str(out), "--quiet",
           "--set", "train.max_iters=100000", "--set", "train.eval_interval=2"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "ckpt.pt").exists():
            time.sleep(0.2)
        time.sleep(1.0)
        assert (out / "ckpt.pt").exists()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (out / ".ckpt.pt.leftover.tmp").write_bytes(b"a killed write")  # what a SIGKILL inside a save leaves
    step = checkpoint.load(out)["step"]
    res = subprocess.run([*cmd[:-4], "--resume", "--set", f"train.max_iters={step + 4}", "--set", "train.eval_interval=2"],
                         env=_env(), capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert checkpoint.load(out)["step"] == step + 4 and not list(out.glob(".*.tmp"))


def test_two_writers_on_one_folder(run, tiny_toml, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from geoformer.train.run_lock import run_lock\n"
         "with run_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)", str(run)],
        env=_env(), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(run)
        code, _, err = run_cli(["train", "--out", str(run), "--resume", "--set", "train.max_iters=40"], capsys)
        assert_one_line_error(code, err, f"is in use by another geoformer train (pid {holder.pid})")
        code, _, err = run_cli(["compare", "--preset", "quick", "--out", str(run), "--resume"], capsys)
        assert_one_line_error(code, err, "is in use by another geoformer")
        assert snapshot(run) == before
    finally:
        holder.kill()
        holder.wait()
    code, _, err = run_cli(["train", "--out", str(run), "--resume", "--set", "train.max_iters=30", "--quiet"], capsys)
    assert code == 0, err  # the lock died with its holder


def test_a_full_disk_is_one_line_and_loses_nothing(run, monkeypatch, capsys):
    before = snapshot(run)
    real = os.fsync

    def full(fd):
        real(fd)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    code, _, err = run_cli(["train", "--out", str(run), "--resume", "--set", "train.max_iters=40", "--quiet"], capsys)
    assert_one_line_error(code, err, "No space left on device")
    monkeypatch.undo()
    after = snapshot(run)
    assert after["ckpt.pt"] == before["ckpt.pt"] and not list(run.glob(".*.tmp"))
    assert checkpoint.load(run)["step"] == checkpoint.load(run)["step"]  # still readable


@pytest.mark.parametrize("damage", ["garbled metrics", "missing metrics", "summary of the wrong type"])
def test_compare_resume_retrains_a_damaged_finished_run(tmp_path, corpus, capsys, damage):
    from geoformer.experiments.compare import run_compare

    toml = tmp_path / "c.toml"
    toml.write_text(
        f'seed = 0\n[model]\nblock_size = 16\nn_layer = 1\nn_head = 2\nn_embd = 16\n[data]\nsource = "{corpus}"\n'
        "[train]\nmax_iters = 4\nbatch_size = 4\neval_interval = 2\neval_iters = 1\nthreads = 1\n"
        "[compare]\nseeds = 1\n[compare.variants.a]\n"
    )
    out = tmp_path / "cmp"
    run_compare(preset=None, config=str(toml), sets=None, data=None, variants=None, seeds=None, out=out, quiet=True)
    rd = out / "runs" / "a" / "seed0"
    if damage == "garbled metrics":
        (rd / "metrics.jsonl").write_text('{"step": 0, "val_lo')
    elif damage == "missing metrics":
        (rd / "metrics.jsonl").unlink()
    else:
        (rd / "summary.json").write_text("[1, 2, 3]")
    capsys.readouterr()
    res = run_compare(preset=None, config=str(toml), sets=None, data=None, variants=None, seeds=None, out=out,
                      quiet=True, resume=True)  # fmt: skip
    assert "damaged" in capsys.readouterr().out
    assert res["variants"]["a"]["runs"][0]["summary"]["completed"]
    assert json.loads((rd / "summary.json").read_text())["completed"]


def test_circuits_retrain_a_truncated_cached_model(tmp_path, capsys):
    from geoformer.circuits import continual as CL

    tiny = CL.CircuitsConfig(n_layer=1, n_head=2, n_embd=16, n_train=60, n_test=40, steps=6, steps_a=6, steps_b=4,
                             steps_extra=0, attrib_examples=20, fisher_examples=20, canary_examples=10, batch_size=16)  # fmt: skip
    out = tmp_path / "m"
    CL.train_all(tiny, 0, out, quiet=True)
    blob = (out / "ckpt.pt").read_bytes()
    (out / "ckpt.pt").write_bytes(blob[: len(blob) // 2])
    _, res = CL.train_all(tiny, 0, out, quiet=False)
    assert "unreadable" in capsys.readouterr().out and res["steps"] >= 6
    from geoformer import gitstate

    assert res["code"] == [gitstate.git_state()]  # the code that trained it
    assert torch.load(out / "ckpt.pt", weights_only=True)["done"]
