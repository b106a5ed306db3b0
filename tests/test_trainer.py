"""Trainer: learning happens, resume is bit-identical, divergence stops cleanly, outputs are complete."""

from __future__ import annotations

import json

import pytest
import torch

from geoformer.errors import GeoformerError, TrainingDiverged
from geoformer.train import checkpoint
from geoformer.train.callbacks import Callback
from geoformer.train.trainer import Trainer, load_model, prepare_out_dir

from .conftest import tiny_config


def params(trainer):
    return {k: v.detach().clone() for k, v in trainer.raw_model.state_dict().items()}


def test_training_lowers_loss_and_writes_run_files(corpus, tmp_path, capsys):
    cfg = tiny_config(corpus, max_iters=40, eval_interval=10)
    summary = Trainer(cfg, tmp_path / "run", progress=False, quiet=True).fit()
    assert capsys.readouterr().out == ""  # quiet: no per-evaluation lines
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "metrics.jsonl", "summary.json", "ckpt.pt", "tokenizer.json"} <= files
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [0, 10, 20, 30, 40]
    assert set(recs[0]) >= {"step", "tokens", "train_loss", "val_loss", "lr", "tokens_per_s", "wall_s"}
    assert recs[-1]["val_loss"] < recs[0]["val_loss"] - 0.5
    assert recs[-1]["tokens"] == 40 * 4 * 16
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    for key in ("final_val_loss", "best_val_loss", "params", "wall_s", "tokens_per_s", "peak_rss_mb"):
        assert key in s
    assert s == summary and s["completed"]


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_resume_is_bit_identical(corpus, tmp_path, dropout):
    cfg = tiny_config(corpus, max_iters=20)
    cfg.model.dropout = dropout
    a = Trainer(cfg, tmp_path / "a", progress=False, quiet=True)
    a.fit()
    cfg_b = tiny_config(corpus, max_iters=20)
    cfg_b.model.dropout = dropout
    b = Trainer(cfg_b, tmp_path / "b", progress=False, quiet=True)
    b.fit(until=7)  # stops between evaluations
    assert b.step == 7
    b2 = Trainer(
        tiny_config(corpus, max_iters=20) if dropout == 0 else cfg_b,
        tmp_path / "b",
        resume=True,
        progress=False,
        quiet=True,
    )
    b2.fit()
    pa, pb = params(a), params(b2)
    assert pa.keys() == pb.keys()
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k
    va = [json.loads(x)["val_loss"] for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    recs_b = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    vb = [r["val_loss"] for r in recs_b if r["step"] != 7]
    assert va == vb


class PoisonAt(Callback):
    def __init__(self, step):
        self.at = step

    def on_step_end(self, trainer, step, loss):
        if step == self.at:
            with torch.no_grad():
                trainer.raw_model.wte.weight.fill_(float("nan"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(corpus, tmp_path):
    cfg = tiny_config(corpus, max_iters=20)
    tr = Trainer(cfg, tmp_path / "run", callbacks=[PoisonAt(7)], progress=False, quiet=True)
    with pytest.raises(TrainingDiverged, match="loss became nan at step 7; the last good checkpoint"):
        tr.fit()
    state = checkpoint.load(tmp_path / "run" / "ckpt.pt")
    assert state["step"] == 5
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    model, _, _ = load_model(tmp_path / "run")
    assert torch.isfinite(model.wte.weight).all()


def test_out_dir_refuses_existing_run(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("keep me\n")
    # killed before its first checkpoint: the message names what works (--force), not --resume
    with pytest.raises(GeoformerError, match="stopped before its first checkpoint.*use --force"):
        prepare_out_dir(tmp_path, resume=False, force=False)
    assert (tmp_path / "metrics.jsonl").read_text() == "keep me\n"
    with pytest.raises(GeoformerError, match="nothing to resume.*start it again with --force"):
        prepare_out_dir(tmp_path, resume=True, force=False)
    (tmp_path / "ckpt.pt").write_bytes(b"x")
    with pytest.raises(GeoformerError, match="already holds a run.*use --resume"):
        prepare_out_dir(tmp_path, resume=False, force=False)
    prepare_out_dir(tmp_path, resume=False, force=True)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_grad_accumulation_equals_big_batch(corpus, tmp_path):
    """accum=2 over two micro-batches of 4 gives the same update as one batch of 8 with the same rows."""
    from geoformer.models import GPT

    cfg = tiny_config(corpus)
    cfg.model.vocab_size = 64
    torch.manual_seed(0)
    m1 = GPT(cfg.model).double()
    m2 = GPT(cfg.model).double()
    m2.load_state_dict(m1.state_dict())
    x = torch.randint(0, 64, (8, 16))
    y = torch.randint(0, 64, (8, 16))
    m1(x, y)[1].backward()
    for sl in (slice(0, 4), slice(4, 8)):
        (m2(x[sl], y[sl])[1] / 2).backward()
    for p1, p2 in zip(m1.parameters(), m2.parameters(), strict=True):
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-10, atol=1e-12)


def test_checkpoint_write_is_atomic(tmp_path):
    path = tmp_path / "ckpt.pt"
    checkpoint.save(path, {"step": 1})

    def boom(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        checkpoint.atomic_write_bytes(path, boom)
    assert checkpoint.load(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_float64_model_returns_float64_loss(corpus):
    from geoformer.models import GPT

    cfg = tiny_config(corpus)
    m = GPT(cfg.model.__class__(**{**cfg.model.__dict__, "vocab_size": 11})).double()
    x = torch.randint(0, 11, (2, 8))
    assert m(x, x)[1].dtype == torch.float64
    assert m.float()(x, x)[1].dtype == torch.float32


def test_pre_clip_gradient_norms_are_logged(corpus, tmp_path):
    cfg = tiny_config(corpus, max_iters=6, eval_interval=3, grad_clip=0.5)
    Trainer(cfg, tmp_path / "r", quiet=True).fit()
    recs = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert "train_grad_norm" not in recs[0]  # step 0: no step taken yet
    for r in recs[1:]:
        assert r["train_grad_norm_max"] >= r["train_grad_norm"] > 0
