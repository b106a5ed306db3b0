"""row_std / entropy diagnostics against closed forms."""

from __future__ import annotations

import math

import torch

from geoformer.diagnostics.attention_stats import attention_stats, row_stats, self_weight
from geoformer.models import GPT, GPTConfig


def test_uniform_rows_have_zero_std_and_unit_entropy():
    T = 8
    w = torch.ones(T, T, dtype=torch.float64).tril()
    w = (w / w.sum(-1, keepdim=True)).expand(2, 3, T, T)
    std, ent = row_stats(w)
    torch.testing.assert_close(std, torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(ent, torch.ones(3, dtype=torch.float64), atol=1e-12, rtol=0)


def test_one_hot_rows_match_closed_form():
    T = 8
    w = torch.zeros(1, 1, T, T, dtype=torch.float64)
    w[..., torch.arange(T), 0] = 1.0  # every row attends to the first token
    std, ent = row_stats(w)
    expected = sum(math.sqrt(n - 1) / n for n in range(2, T + 1)) / (T - 1)
    assert abs(std.item() - expected) < 1e-12 and abs(ent.item()) < 1e-12


def test_callback_keys_per_head_and_label():
    m = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8))
    stats = attention_stats(m, torch.randint(0, 11, (2, 8)))
    assert {"row_std/L0.0.h0", "row_std/L1.1.h1", "row_std/h0", "entropy/h1"} <= set(stats)
    assert all(math.isfinite(v) for v in stats.values())


def test_self_weight_closed_forms():
    T = 8
    uniform = torch.ones(T, T, dtype=torch.float64).tril()
    uniform = (uniform / uniform.sum(-1, keepdim=True)).expand(2, 3, T, T)
    expected = sum(1 / n for n in range(2, T + 1)) / (T - 1)
    torch.testing.assert_close(self_weight(uniform), torch.full((3,), expected, dtype=torch.float64))
    first = torch.zeros(1, 2, T, T, dtype=torch.float64)
    first[..., 0] = 1.0  # every row on the first token: no self weight after row 0
    eye = torch.eye(T, dtype=torch.float64).expand(1, 2, T, T)
    assert self_weight(first).abs().max() == 0 and torch.equal(self_weight(eye), torch.ones(2, dtype=torch.float64))
    m = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
    assert "self_weight/L0.1.h1" in attention_stats(m, torch.randint(0, 11, (2, 8)))
