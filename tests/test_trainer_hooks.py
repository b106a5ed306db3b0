"""Trainer features continual learning and reports build on: starting from another run's weights
(train.init_from, data.tokenizer_from), the batch hook, callbacks checking their own options, bits per byte and
the background load recorded with every run."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from geoformer import config as C
from geoformer.errors import GeoformerError
from geoformer.train import callbacks as CB
from geoformer.train.trainer import Trainer

from .conftest import tiny_config


def _train(cfg, out):
    return Trainer(cfg, out, progress=False, quiet=True).fit()


def _with(cfg, **kw):
    """``cfg`` with train and data fields replaced (``data_<name>`` for data), validated again."""
    d = cfg.to_dict()
    for k, v in kw.items():
        sec, key = ("data", k[5:]) if k.startswith("data_") else ("train", k)
        d[sec][key] = v
    return C.build_config(d)


def test_init_from_starts_at_the_source_runs_weights(corpus, tmp_path):
    cfg = tiny_config(corpus, max_iters=10)
    a = _train(cfg, tmp_path / "a")
    b_cfg = _with(cfg, init_from=str(tmp_path / "a"), max_iters=5)
    trainer = Trainer(b_cfg, tmp_path / "b", progress=False, quiet=True)
    saved = torch.load(tmp_path / "a" / "ckpt.pt", weights_only=True)["model"]
    for k, v in trainer.raw_model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    trainer.fit()
    first = json.loads((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()[0])
    # same seed, so the same fixed validation batches: B's step-0 loss is A's final loss, to the bit
    assert first["step"] == 0 and first["val_loss"] == a["final_val_loss"]
    # and the optimizer started fresh (a resume would have carried A's step count on)
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["step"] == 5


def test_init_from_refuses_another_model_or_tokenizer_in_one_line(corpus, tmp_path):
    cfg = tiny_config(corpus, max_iters=2)
    _train(cfg, tmp_path / "a")
    wider = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, n_embd=64))
    with pytest.raises(GeoformerError, match=r"model\.n_embd is 32, this run's is 64") as e:
        Trainer(_with(wider, init_from=str(tmp_path / "a")), progress=False, quiet=True)
    assert "\n" not in str(e.value)
    other = tmp_path / "other.txt"
    other.write_text(corpus.read_text()[::-1] + "~^", encoding="utf-8")  # two characters A never saw
    with pytest.raises(GeoformerError, match="set data.tokenizer_from"):
        Trainer(_with(cfg, init_from=str(tmp_path / "a"), data_source=str(other)), progress=False, quiet=True)
    with pytest.raises(GeoformerError, match="no checkpoint at"):
        Trainer(_with(cfg, init_from=str(tmp_path / "missing")), progress=False, quiet=True)


def test_tokenizer_from_lets_a_run_go_on_training_on_another_text(corpus, tmp_path):
    cfg = tiny_config(corpus, max_iters=2)
    _train(cfg, tmp_path / "a")
    other = tmp_path / "other.txt"
    other.write_text(corpus.read_text()[::-1], encoding="utf-8")  # the same characters, another text
    b = _with(cfg, init_from=str(tmp_path / "a"), data_source=str(other), data_tokenizer_from=str(tmp_path / "a"))
    trainer = Trainer(b, tmp_path / "b", progress=False, quiet=True)
    assert trainer.data.tokenizer.to_dict() == json.loads((tmp_path / "a" / "tokenizer.json").read_text())
    trainer.fit()
    # a character the given tokenizer does not have is one line naming it
    bad = tmp_path / "bad.txt"
    bad.write_text(corpus.read_text() + "\u00e9", encoding="utf-8")
    with pytest.raises(GeoformerError, match="not in the tokenizer's vocabulary"):
        Trainer(_with(cfg, data_source=str(bad), data_tokenizer_from=str(tmp_path / "a")), progress=False, quiet=True)
    with pytest.raises(GeoformerError, match="holds a char tokenizer; set data.tokenizer=char"):
        Trainer(_with(cfg, data_tokenizer="bpe", data_tokenizer_from=str(tmp_path / "a")), progress=False, quiet=True)


class _Swap(CB.Callback):
    """Replaces every training batch by a constant one and counts the calls."""

    def __init__(self):
        self.calls = 0

    def on_batch(self, trainer, x, y):
        self.calls += 1
        return torch.zeros_like(x), torch.zeros_like(y)


def test_on_batch_replaces_the_micro_batches_the_model_trains_on(corpus, tmp_path):
    cfg = tiny_config(corpus, max_iters=30, grad_accum=2, eval_interval=30)
    swap = _Swap()
    Trainer(cfg, callbacks=[swap], progress=False, quiet=True).fit()
    assert swap.calls == 30 * 2
    # trained only on "predict token 0 after token 0": the model now puts most of its mass there
    trainer = Trainer(cfg, callbacks=[_Swap()], progress=False, quiet=True)
    trainer.fit()
    with torch.no_grad():
        logits, _ = trainer.raw_model(torch.zeros(1, 16, dtype=torch.long))
    assert logits.softmax(-1)[0, :, 0].min() > 0.5


@CB.register_callback("_picky_test")
class _Picky(CB.Callback):
    @classmethod
    def check_config(cls, cfg):
        if cfg.train.max_iters > 100:
            raise GeoformerError("_picky_test runs at most 100 iterations")

    def __init__(self, cfg):
        pass


def test_each_callback_checks_its_own_options_when_the_config_is_built(corpus):
    d = tiny_config(corpus).to_dict()
    d["train"].update(callbacks=["_picky_test"], max_iters=100)
    C.build_config(d)
    d["train"]["max_iters"] = 101
    with pytest.raises(GeoformerError, match="_picky_test runs at most 100 iterations"):
        C.build_config(d)


def test_bits_per_byte_and_background_load_are_recorded(corpus, tmp_path):
    text = corpus.read_text(encoding="utf-8")
    assert len(text.encode("utf-8")) == len(text)  # ASCII: one byte per character token
    s = _train(tiny_config(corpus, max_iters=4, eval_interval=2), tmp_path / "r")
    assert s["final_val_bpb"] == pytest.approx(s["final_val_loss"] / math.log(2), rel=1e-12)
    recs = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["val_bpb"] == pytest.approx(r["val_loss"] / math.log(2), rel=1e-12) for r in recs)
    assert s["background_cores"] is None or s["background_cores"] >= 0.0


def test_bits_per_byte_counts_utf8_bytes_for_bpe(tmp_path):
    """A BPE run's loss per token is divided by its bytes per token (here text with 2- and 3-byte characters)."""
    rng = np.random.default_rng(0)
    words = ["héllo", "wörld", "naïve", "€uro", "plain", "ascii"]
    (tmp_path / "u.txt").write_text(" ".join(rng.choice(words, 3000)) + "\n", encoding="utf-8")
    cfg = tiny_config(tmp_path / "u.txt", max_iters=2, eval_interval=2)
    cfg = _with(cfg, data_tokenizer="bpe", data_bpe_vocab_size=300, data_cache_dir=str(tmp_path / "c"))
    trainer = Trainer(cfg, progress=False, quiet=True)
    s = trainer.fit()
    d = trainer.data
    text = (tmp_path / "u.txt").read_text(encoding="utf-8")
    assert d.val_bytes == len(text[int(len(text) * 0.9):].encode("utf-8"))
    assert s["final_val_bpb"] == pytest.approx(s["final_val_loss"] / math.log(2) * len(d.val) / d.val_bytes)
