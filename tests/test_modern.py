"""The modern recipe (RMSNorm, rotary q/k, QK-norm, ReLU^2, zero-initialised projections, Muon): math properties,
every q . k kind stays exact and causal with it, and the trainer trains and resumes with Muon bit for bit."""

from __future__ import annotations

import pytest
import torch

from geoformer import attention
from geoformer import config as C
from geoformer.attention.base import apply_rotary, qk_rms_norm, rotary_tables
from geoformer.errors import GeoformerError
from geoformer.models import GPT, GPTConfig, build_model, validate_config

from .conftest import tiny_config

F64 = {"dtype": torch.float64}
MODERN = {"norm": "rmsnorm", "pos": "rope", "qk_norm": True, "mlp": "relu2", "zero_init_proj": True}


def test_rotary_is_a_rotation_that_depends_on_relative_position_only():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, 16, 8, generator=g, **F64), torch.randn(2, 3, 16, 8, generator=g, **F64)
    cos, sin = rotary_tables(32, 8)
    rq, rk = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rk.norm(dim=-1), k.norm(dim=-1), rtol=1e-12, atol=1e-12)
    # the same vector at positions (m, n) and (m + s, n + s): equal dot products
    v, w = q[0, 0, 0], k[0, 0, 0]
    rot = lambda x, t: apply_rotary(x.expand(32, -1), cos, sin)[t]
    for m, n, s in ((3, 1, 5), (10, 10, 7), (0, 9, 20)):
        assert torch.dot(rot(v, m), rot(w, n)).item() == pytest.approx(torch.dot(rot(v, m + s), rot(w, n + s)).item(), abs=1e-12)
    assert torch.equal(apply_rotary(q[..., :1, :], cos, sin), q[..., :1, :])  # position 0: identity
    with pytest.raises(GeoformerError, match="even head dimension"):
        rotary_tables(4, 7)


def test_qk_norm_gives_unit_rms():
    x = torch.randn(2, 3, 5, 8, **F64) * 7
    torch.testing.assert_close(qk_rms_norm(x).square().mean(-1), torch.ones(2, 3, 5, **F64), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["sdpa", "naive", "local", "topk", "tiled"])
def test_every_dot_product_kind_with_rope_and_qk_norm_matches_its_reference_and_is_causal(kind):
    opts = {"local": {"window": 5}, "topk": {"k": 3}, "tiled": {"tile": 4, "refine": 2}}.get(kind, {})
    torch.manual_seed(0)
    m = attention.build(kind, 24, 3, bias=True, block_size=16, options=opts).double().eval()
    m.set_qk_features(rope=True, qk_norm=True, max_len=16)
    x = torch.randn(2, 16, 24, **F64)
    q, k, v = m.split_heads(x)
    ref = m.c_proj(m.naive(q, k, v).transpose(1, 2).reshape(2, 16, 24))
    torch.testing.assert_close(m(x), ref, rtol=1e-12, atol=1e-12)
    y = m(x)
    x2 = x.clone()
    x2[:, 9:] = torch.randn_like(x2[:, 9:])
    torch.testing.assert_close(m(x2)[:, :9], y[:, :9], rtol=1e-12, atol=1e-12)


def test_sdpa_with_rope_equals_naive_with_rope():
    a = attention.build("sdpa", 24, 3, bias=True, block_size=16).double().eval()
    b = attention.build("naive", 24, 3, bias=True, block_size=16).double().eval()
    b.load_state_dict(a.state_dict())
    for m in (a, b):
        m.set_qk_features(rope=True, qk_norm=False, max_len=16)
    x = torch.randn(2, 16, 24, **F64)
    torch.testing.assert_close(a(x), b(x), rtol=1e-12, atol=1e-12)


def test_kinds_without_dot_products_refuse_rope_in_one_line():
    with pytest.raises(GeoformerError, match="model.pos = rope .* 'gauge_kl' has none"):
        validate_config(GPTConfig(vocab_size=11, attention="gauge_kl", pos="rope"))
    for key, value in (("norm", "batchnorm"), ("pos", "alibi"), ("mlp", "swiglu")):
        with pytest.raises(GeoformerError, match=f"unknown model.{key}"):
            validate_config(GPTConfig(vocab_size=11, **{key: value}))
    with pytest.raises(GeoformerError, match="no rotary"):
        attention.build("hyperbolic", 24, 3, block_size=8).set_qk_features(rope=True, qk_norm=False, max_len=8)


def test_defaults_are_the_nanogpt_model_and_modern_options_change_what_they_say():
    base = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16))
    assert base.wpe is not None and type(base.ln_f).__name__ == "LayerNorm"
    torch.manual_seed(0)
    modern = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16, **MODERN))
    assert modern.wpe is None and type(modern.ln_f).__name__ == "RMSNorm"
    assert all(not p.any() for n, p in modern.named_parameters() if n.endswith("c_proj.weight"))
    assert type(modern.blocks[0].mlp.gelu).__name__ == "ReLU2"
    x = torch.randint(0, 11, (2, 8))
    logits, loss = modern(x, x)
    assert torch.isfinite(loss) and logits.shape == (2, 8, 11)
    lv = build_model(GPTConfig(vocab_size=11, block_size=8, n_layer=3, n_head=2, n_embd=16, arch="levels", **MODERN))
    assert type(lv.blocks[0].ln_1).__name__ == "RMSNorm" and lv.blocks[0].attn.rope


def test_muon_trains_and_resumes_bit_identically(corpus, tmp_path):
    from geoformer.train.trainer import Trainer

    raw = tiny_config(corpus, max_iters=8, eval_interval=4, optimizer="muon", lr=3e-3).to_dict()
    raw["model"].update(MODERN)
    cfg = C.build_config(raw)
    full = Trainer(cfg, tmp_path / "full", quiet=True)
    full.fit()
    part = Trainer(cfg, tmp_path / "part", quiet=True)
    part.fit(until=4)
    resumed = Trainer(cfg, tmp_path / "part", resume=True, quiet=True)
    resumed.fit()
    for (n, a), (_, b) in zip(full.raw_model.state_dict().items(), resumed.raw_model.state_dict().items(), strict=True):
        assert torch.equal(a, b), n
    losses = [r["val_loss"] for r in full.history]
    assert losses[-1] < losses[0]
    kinds = {g["optimizer"] for g in full.optimizer.param_groups}
    assert kinds == {"muon", "adamw"}
    muon_params = {id(p) for g in full.optimizer.param_groups if g["optimizer"] == "muon" for p in g["params"]}
    assert id(full.raw_model.wte.weight) not in muon_params  # embeddings and the tied head stay with AdamW
