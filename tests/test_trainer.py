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


def test_resume_refuses_a_checkpoint_trained_on_other_corpus_contents(corpus, tmp_path):
    """config.json names the corpus, not its contents: the checkpoint's data key tells them apart."""
    folder = tmp_path / "texts"
    folder.mkdir()
    text = corpus.read_text(encoding="utf-8")
    (folder / "a.txt").write_text(text, encoding="utf-8")
    run = tmp_path / "run"
    Trainer(tiny_config(folder, max_iters=20), run, progress=False, quiet=True).fit(until=7)
    (folder / "a.txt").write_text(text[::-1], encoding="utf-8")
    with pytest.raises(GeoformerError, match="other contents of .*texts.*start a new run"):
        Trainer(tiny_config(folder, max_iters=20), run, resume=True, progress=False, quiet=True)
    (folder / "a.txt").write_text(text, encoding="utf-8")  # back as it was: resumes
    Trainer(tiny_config(folder, max_iters=20), run, resume=True, progress=False, quiet=True).fit()
    assert json.loads((run / "summary.json").read_text())["completed"]


def test_a_run_records_the_code_that_trained_it_and_each_commit_it_was_resumed_at(corpus, tmp_path, monkeypatch):
    from geoformer import gitstate

    run = tmp_path / "run"
    Trainer(tiny_config(corpus, max_iters=20), run, progress=False, quiet=True).fit(until=7)
    now = gitstate.git_state()
    state = checkpoint.load(run / "ckpt.pt")
    assert state["code"] == [now]
    earlier = {"commit": "0" * 40, "dirty": False, "version": "0"}  # as if trained up to step 7 at another commit
    state["code"] = [earlier]
    checkpoint.save(run / "ckpt.pt", state)
    Trainer(tiny_config(corpus, max_iters=20), run, resume=True, progress=False, quiet=True).fit()
    assert json.loads((run / "summary.json").read_text())["code"] == [earlier, now]
    # resumed again at the same commit: listed once
    monkeypatch.setattr(gitstate, "git_state", lambda: dict(earlier))
    t = Trainer(tiny_config(corpus, max_iters=20), run, resume=True, progress=False, quiet=True)
    assert t.code == [earlier, now]


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


def _spied_trainer(corpus, out, **train):
    """A float64 CPU Trainer whose ``next_batch`` (the real one) also records the rows it hands out."""
    cfg = tiny_config(corpus, max_iters=20, eval_interval=100, param_dtype="float64", device="cpu", **train)
    tr = Trainer(cfg, out, progress=False, quiet=True)
    seen, real = [], tr.next_batch

    def spy():
        x, y = real()
        seen.append((x.clone(), y.clone()))
        return x, y

    tr.next_batch = spy
    return tr, seen


def test_grad_accumulation_equals_big_batch(corpus, tmp_path):
    """The real Trainer, 3 optimizer steps: grad_accum = 2 over micro-batches of 4 rows against grad_accum = 1
    with batches of 8. Both draw their block starts from the same seeded generator, torch.randint(n, (8,)) gives
    the same numbers as two draws of 4 (checked below on the rows actually served), so each step sees the same
    8 rows, and the mean loss over 8 rows equals the mean of the two 4-row means: the gradients, hence the
    AdamW updates, agree up to float64 summation order. Tolerance 1e-12 on weights of size ~0.1-1: that
    round-off (~1e-16 relative) carried through 3 steps of lr <= 3e-3; different rows move them by ~1e-3."""
    big, seen_big = _spied_trainer(corpus, tmp_path / "big", batch_size=8, grad_accum=1)
    acc, seen_acc = _spied_trainer(corpus, tmp_path / "acc", batch_size=4, grad_accum=2)
    init = params(big)
    assert init.keys() == params(acc).keys() and all(torch.equal(init[k], v) for k, v in params(acc).items())
    assert all(v.dtype == torch.float64 for v in init.values() if v.is_floating_point())
    big.fit(until=3)
    acc.fit(until=3)
    assert big.step == acc.step == 3 and len(seen_big) == 3 and len(seen_acc) == 6
    for s, (xb, yb) in enumerate(seen_big):  # the same rows, in the same order, at every step
        (x1, y1), (x2, y2) = seen_acc[2 * s], seen_acc[2 * s + 1]
        assert xb.shape == (8, 16) and x1.shape == (4, 16)
        assert torch.equal(xb, torch.cat([x1, x2])) and torch.equal(yb, torch.cat([y1, y2]))
    assert len({tuple(x[0].tolist()) for x, _ in seen_big}) == 3  # fresh rows each step
    pb, pa = params(big), params(acc)
    for k in pb:
        torch.testing.assert_close(pa[k], pb[k], rtol=0, atol=1e-12, msg=k)
    moved = max((pb[k] - init[k]).abs().max().item() for k in pb)
    assert moved > 1e-3  # the steps did something
    # not vacuous: the same step count with 4-row batches (other rows) ends measurably elsewhere
    small, _ = _spied_trainer(corpus, tmp_path / "small", batch_size=4, grad_accum=1)
    small.fit(until=3)
    assert max((params(small)[k] - pb[k]).abs().max().item() for k in pb) > 1e-4


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
