"""Symmetric per-channel fake quantisation: error bound, level counts, idempotence, selectivity."""

from __future__ import annotations

import pytest
import torch

from geoformer.circuits import quantize as Q
from geoformer.errors import GeoformerError
from geoformer.models import GPT, GPTConfig


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bits", [4, 8])
def test_error_bound_levels_and_idempotence(bits, dtype):
    g = torch.Generator().manual_seed(bits)
    w = (torch.randn(16, 300, generator=g) * torch.logspace(-3, 1, 16)[:, None]).to(dtype)
    q, s = Q.quantize(w, bits)
    assert torch.equal(q, q.round()) and q.abs().max() <= Q.qmax(bits)
    fq = Q.fake_quantize(w, bits)
    assert fq.dtype == dtype and fq.shape == w.shape
    tol = torch.finfo(dtype).eps * 4 * w.abs().amax(1, keepdim=True)
    assert ((w - fq).abs() <= s / 2 + tol).all()
    n_levels = 255 if bits == 8 else 15
    assert max(len(torch.unique(row)) for row in fq) <= n_levels
    assert Q.qmax(8) == 127 and Q.qmax(4) == 7
    assert len(torch.unique(Q.quantize(torch.linspace(-1, 1, 10001)[None], 8)[0])) == 255
    torch.testing.assert_close(Q.fake_quantize(fq, bits), fq, rtol=0, atol=float(tol.max()))
    # the row maximum is represented exactly
    torch.testing.assert_close(fq.abs().amax(1), w.abs().amax(1))


def test_zero_row_and_high_precision():
    w = torch.randn(3, 50)
    w[1] = 0
    fq = Q.fake_quantize(w, 4)
    assert (fq[1] == 0).all()
    torch.testing.assert_close(Q.fake_quantize(w, 16), w, atol=1e-3, rtol=0)
    with pytest.raises(GeoformerError):
        Q.qmax(1)


def test_only_selected_modules_change():
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    qm = Q.quantize_model(m, ["attn"], 4)
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k])  # the original is untouched
    changed = {k for k, v in qm.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {f"blocks.{i}.attn.{n}.weight" for i in range(2) for n in ("c_attn", "c_proj")}
    changed = {
        k for k, v in Q.quantize_model(m, ["ffn_fc"], 8).state_dict().items() if not torch.equal(v, before[k])
    }
    assert changed == {f"blocks.{i}.mlp.c_fc.weight" for i in range(2)}
    assert Q.group_size(m, ["attn"]) == Q.group_size(m, ["ffn_fc"]) == Q.group_size(m, ["ffn"]) // 2
    with pytest.raises(GeoformerError, match="unknown quantisation group"):
        Q.quantize_model(m, ["embeddings"], 8)
