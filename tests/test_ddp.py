"""Data-parallel training through torchrun (gloo on CPU) follows the single-process loss curve."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import TINY


@pytest.mark.slow
def test_torchrun_two_ranks_matches_single_process(tmp_path, corpus):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY.replace("max_iters = 6", "max_iters = 12") + f'[data]\nsource = "{corpus}"\n')
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    common = ["train", "--config", str(cfg), "--quiet"]
    single = subprocess.run(
        [sys.executable, "-m", "geoformer", *common, "--out", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr
    multi = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "geoformer",
            *common,
            "--out",
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert multi.returncode == 0, multi.stderr[-3000:]

    def curve(d):
        return [json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]

    one, two = curve("one"), curve("two")
    assert [r["step"] for r in one] == [r["step"] for r in two] == [0, 3, 6, 9, 12]
    # same global batches, gradients averaged over ranks: equal up to float reduction order
    for a, b in zip(one, two, strict=True):
        assert abs(a["val_loss"] - b["val_loss"]) < 1e-4, (a, b)
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-4, (a, b)
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["world_size"] == 2
