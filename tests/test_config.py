"""Presets, TOML files and --set overrides: valid input builds a RunConfig, bad input is one clear line."""

from __future__ import annotations

import pytest

from geoformer import config as C
from geoformer.errors import GeoformerError


def test_every_preset_builds():
    assert {"quick", "shakespeare_char", "schedules"} <= set(C.preset_names())
    for name in C.preset_names():
        cfg = C.build_config(C.load_raw(preset=name))
        assert cfg.model.n_embd % cfg.model.n_head == 0


def test_shakespeare_char_is_the_nanogpt_recipe():
    cfg = C.build_config(C.load_raw(preset="shakespeare_char"))
    m, t = cfg.model, cfg.train
    assert (m.n_layer, m.n_head, m.n_embd, m.block_size) == (4, 4, 128, 64)
    assert (t.batch_size, t.max_iters, t.lr, t.min_lr, t.warmup_iters) == (12, 2000, 1e-3, 1e-4, 100)
    assert t.schedule == "warmup_cosine" and (t.beta1, t.beta2) == (0.9, 0.99)


@pytest.mark.parametrize(
    "text,value",
    [("3", 3), ("1e-3", 1e-3), ("true", True), ('"x"', "x"), ("plain", "plain"), ("[1, 2]", [1, 2])],
)
def test_parse_value(text, value):
    assert C.parse_value(text) == value


def test_overrides_apply_and_coerce():
    raw = C.load_raw(preset="quick")
    cfg = C.build_config(raw, C.parse_sets(["train.lr=1", "model.attention=local", "model.attn.window=4"]))
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.model.attention == "local" and cfg.model.attn == {"window": 4}


@pytest.mark.parametrize(
    "sets,match",
    [
        (["train.lrr=1"], r"unknown key config.train.lrr; known keys: .*lr"),
        (["train.max_iters=ten"], r"train.max_iters must be int"),
        (["train.max_iters=1.5"], r"train.max_iters must be int"),
        (["model.dropout=true"], r"model.dropout must be float"),
        (["model.attention=nope"], r"unknown attention kind 'nope'; known kinds: .*sdpa"),
        (["train.schedule=nope"], r"unknown schedule 'nope'; known schedules: constant, cosine"),
        (["model.attention=local", "model.attn.win=3"], r"known keys: window"),
        (["data.tokenizer=words"], r"unknown tokenizer"),
        (["model.n_head=3"], r"multiple of model.n_head"),
        (["novalue"], r"key=value"),
        (["train..lr=1"], r"malformed --set key"),
        (["bogus=1"], r"unknown key config.bogus"),
    ],
)
def test_bad_overrides_are_one_line(sets, match):
    with pytest.raises(GeoformerError, match=match) as e:
        C.build_config(C.load_raw(preset="quick"), C.parse_sets(sets))
    assert "\n" not in str(e.value)


def test_unknown_preset_lists_known():
    with pytest.raises(GeoformerError, match=r"unknown preset 'nope'; known presets: .*quick"):
        C.load_raw(preset="nope")


def test_malformed_toml(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[model\nn_layer = 2\n")
    with pytest.raises(GeoformerError, match="malformed TOML"):
        C.load_raw(config=str(p))
    with pytest.raises(GeoformerError, match="not found"):
        C.load_raw(config=str(tmp_path / "missing.toml"))


def test_roundtrip_through_dict():
    cfg = C.build_config(C.load_raw(preset="shakespeare_char"), C.parse_sets(["model.attention=topk"]))
    assert C.RunConfig.from_dict(cfg.to_dict()) == cfg
