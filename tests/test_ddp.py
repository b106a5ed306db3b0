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


def test_collective_timeout_is_configurable_and_a_failed_collective_is_one_line(monkeypatch, capsys):
    """A frozen peer must not hold the other ranks for torch's default 30 minutes: the process group gets
    train.dist_timeout_s; when a collective gives up, the CLI prints one line (exit 2), not a traceback."""
    import datetime

    import torch
    import torch.distributed as dist

    from geoformer import cli
    from geoformer.train import distributed

    seen = {}
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: seen.update(kw))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    distributed.init(distributed.DistInfo(rank=0, world_size=2), torch.device("cpu"), timeout_s=42.0)
    assert seen["timeout"] == datetime.timedelta(seconds=42) and seen["backend"] == "gloo"

    def frozen_peer(args):
        raise dist.DistBackendError("[Rank 0] Timed out waiting 42000ms for recv\nlong torch details")

    monkeypatch.setattr(cli, "cmd_compare", frozen_peer)
    with pytest.raises(SystemExit) as e:
        cli.main(["compare", "--preset", "quick", "--out", "x"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "a rank froze or died" in err and "Timed out" in err
