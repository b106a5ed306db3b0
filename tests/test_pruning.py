"""Structured and unstructured pruning: masks, scores against explicit references, persistence."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from geoformer.circuits import pruning as P
from geoformer.errors import GeoformerError
from geoformer.models import GPT, GPTConfig, LevelGPT


def make_model(arch: str = "gpt", seed: int = 0):
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, arch=arch)
    if arch == "levels":
        cfg = GPTConfig(**{**cfg.__dict__, "n_layer": 3, "levels": {"window": 3, "k": 2}})
    m = GPT(cfg) if arch == "gpt" else LevelGPT(cfg)
    with torch.no_grad():  # GPT-2 init leaves tiny residual branches: make units matter
        for p in m.parameters():
            p.normal_(0, 0.3)
    return m.eval()


def batch(seed: int = 1, b: int = 3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 11, (b, 8), generator=g)
    return x, torch.randint(0, 11, (b, 8), generator=g)


def loss(model, x, y):
    with torch.no_grad():
        return float(F.cross_entropy(model(x)[0].flatten(0, 1), y.flatten()))


def test_prune_counts_and_ties():
    s = torch.tensor([[3.0, 1.0, 2.0], [0.5, 5.0, 1.0]])
    keep = P.prune(s, 0.5)
    assert keep.tolist() == [[True, False, True], [False, True, False]]
    assert P.prune(torch.zeros(2, 5), 0.3).flatten().tolist() == [False] * 3 + [True] * 7
    d = P.prune({"a": torch.arange(10.0), "b": -torch.arange(4.0)}, 0.5)  # within each matrix
    assert d["a"].sum() == 5 and d["b"].tolist() == [True, True, False, False]
    with pytest.raises(GeoformerError):
        P.prune(s, 1.5)


@pytest.mark.parametrize("arch", ["gpt", "levels"])
def test_neuron_and_head_masks_equal_zeroed_activations(arch):
    m = make_model(arch)
    x, _ = batch()
    L, H = P.n_units(m, "neuron")
    keep = torch.ones(L, H, dtype=torch.bool)
    keep[0, [1, 5]] = False
    keep[-1, 0] = False
    ref = copy.deepcopy(m)
    hooks = [
        b.mlp.c_proj.register_forward_pre_hook(lambda mod, a, k=keep[i]: (a[0] * k,))
        for i, b in enumerate(ref.blocks)
    ]
    pruned = P.pruned_copy(m, "neuron", keep)
    torch.testing.assert_close(pruned(x)[0], ref(x)[0])
    for h in hooks:
        h.remove()
    assert not torch.equal(pruned(x)[0], m(x)[0])  # the original is untouched

    hk = torch.ones(*P.n_units(m, "head"), dtype=torch.bool)
    hk[1, 1] = False
    D = m.blocks[1].attn.c_proj.in_features // 2
    cols = torch.ones(2 * D)
    cols[D:] = 0
    ref = copy.deepcopy(m)
    ref.blocks[1].attn.c_proj.register_forward_pre_hook(lambda mod, a: (a[0] * cols,))
    torch.testing.assert_close(P.pruned_copy(m, "head", hk)(x)[0], ref(x)[0])


@pytest.mark.parametrize("unit", ["neuron", "head"])
def test_batched_ablation_equals_one_at_a_time(unit):
    m = make_model()
    x, y = batch()
    scores = P.unit_scores(m, unit, "ablation", x, y, chunk=5)
    base = loss(m, x, y)
    L, U = P.n_units(m, unit)
    for layer in range(L):
        for u in range(U):
            keep = torch.ones(L, U, dtype=torch.bool)
            keep[layer, u] = False
            want = loss(P.pruned_copy(m, unit, keep), x, y) - base
            assert scores[layer, u].item() == pytest.approx(want, abs=1e-5)


def test_wanda_and_magnitude_against_explicit_formulas():
    m = make_model()
    x, y = batch()
    acts = {}
    m.blocks[0].mlp.c_proj.register_forward_pre_hook(lambda mod, a: acts.setdefault("a", a[0].detach()))
    m(x)
    norms = P.input_norms(m, x)
    a = acts["a"].flatten(0, 1)
    torch.testing.assert_close(norms["blocks.0.mlp.c_proj"], a.norm(dim=0))
    W = m.blocks[0].mlp.c_proj.weight.detach()
    w = P.unit_scores(m, "weight", "wanda", x)
    torch.testing.assert_close(w["blocks.0.mlp.c_proj"], W.abs() * a.norm(dim=0)[None, :])
    n = P.unit_scores(m, "neuron", "wanda", x)
    torch.testing.assert_close(n[0], W.abs().sum(0) * a.norm(dim=0))
    mag = P.unit_scores(m, "neuron", "magnitude", x)
    fc = m.blocks[0].mlp.c_fc.weight.detach()
    torch.testing.assert_close(mag[0, 3], (fc[3].square().sum() + W[:, 3].square().sum()).sqrt())
    hm = P.unit_scores(m, "head", "magnitude", x)
    at = m.blocks[1].attn
    D = 4
    rows = torch.cat([at.c_attn.weight[i * 8 + D : i * 8 + 2 * D] for i in range(3)])
    want = (rows.square().sum() + at.c_proj.weight[:, D:].square().sum()).sqrt()
    torch.testing.assert_close(hm[1, 1], want.detach())


def test_weight_ablation_is_first_order_and_random_is_seeded():
    m = make_model()
    x, y = batch()
    s = P.unit_scores(m, "weight", "ablation", x, y)
    assert set(s) == set(P.block_matrices(m)) and all((v >= 0).all() for v in s.values())
    assert all(p.grad is None for p in m.parameters())
    r1 = P.unit_scores(m, "head", "random", x, seed=3)
    assert torch.equal(r1, P.unit_scores(m, "head", "random", x, seed=3))


def test_weight_masks_and_curve_endpoints():
    m = make_model()
    x, y = batch()
    s = P.unit_scores(m, "weight", "magnitude", x)
    keep = P.prune(s, 0.4)
    pm = P.pruned_copy(m, "weight", keep)
    for name, lin in P.block_matrices(pm).items():
        zeros = (lin.weight == 0).sum().item()
        assert zeros == round(0.4 * lin.weight.numel())
        assert (lin.weight[~keep[name]] == 0).all()
    val = [batch(7), batch(8)]
    curve = P.pruning_curve(m, "neuron", "magnitude", [0.0, 1.0], (x, y), val)
    assert curve[0] == pytest.approx(P.eval_loss(m, val))
    no_mlp = copy.deepcopy(m)
    for b in no_mlp.blocks:
        b.mlp.c_proj.weight.data.zero_()
    assert curve[1] == pytest.approx(P.eval_loss(no_mlp, val))


def test_errors():
    m = make_model()
    x, _ = batch()
    with pytest.raises(GeoformerError, match="unknown pruning unit"):
        P.unit_scores(m, "layer", "magnitude", x)
    with pytest.raises(GeoformerError, match="unknown pruning score"):
        P.unit_scores(m, "head", "vibes", x)
    with pytest.raises(GeoformerError, match="targets"):
        P.unit_scores(m, "head", "ablation", x)


def test_studies_on_trained_runs(corpus, tmp_path, monkeypatch):
    """The ledger's pruning / precision / exactness / circuit-size analyses run end to end on tiny trained runs."""
    from geoformer import config as C
    from geoformer.circuits import studies as S
    from geoformer.claims.seed002 import composite_ratios
    from geoformer.train.trainer import Trainer
    from tests.conftest import tiny_config

    monkeypatch.setattr(S, "EVAL_BATCHES", 2)
    monkeypatch.setattr(S, "CALIB_BATCH", 4)
    for variant, sets in [
        ("gpt", []),
        ("levels", [("model.arch", "levels"), ("model.levels.exactness", 1.0)]),
    ]:
        for seed in (0, 1):
            cfg = C.build_config(
                tiny_config(corpus, max_iters=4, eval_interval=4).to_dict(),
                [("model.n_layer", 3), ("seed", seed), *sets],
            )
            Trainer(cfg, tmp_path / "runs" / variant / f"seed{seed}", quiet=True).fit()
    pr = S.precision_study(tmp_path, [0, 1])
    assert len(pr["per_seed"]) == 2 and pr["group_sizes"]["attn"] == pr["group_sizes"]["ffn_fc"]
    assert all(abs(r["attn+ffn@int8"]) < 0.05 for r in pr["per_seed"])
    st = S.pruning_study(tmp_path, [0, 1], sparsities=[0.0, 0.5])
    for unit, by in st["curves"].items():
        for score, runs in by.items():
            assert len(runs) == 2 and runs[0][0] == pytest.approx(st["base"][0], abs=1e-6), (unit, score)
    S.plot_pruning(st, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
    ratios = composite_ratios(str(tmp_path), "levels", [0, 1])
    assert len(ratios) == 2 and all(0.0 <= r < 10 for r in ratios)


def test_minimal_breaking_set_finds_the_one_weight_that_matters():
    """A model whose answers all hang on one weight (w scales a stored answer table; three other weights do
    nothing): the search returns k = 1 of 4 elements, and zeroing it breaks the suite."""
    from geoformer.circuits import studies as S
    from geoformer.circuits.canaries import IGNORE, make_suite, score, vocab_size

    suite = make_suite("copy", "test", 64, seed=0)
    V = vocab_size()

    class Table(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(5.0))
            self.idle = torch.nn.Parameter(torch.zeros(3))
            self.register_buffer("answers", F.one_hot(suite.targets.clamp_min(0), V).float())

        def forward(self, x, y=None):
            return self.w * self.answers[: x.size(0)] + self.idle.sum(), None

    m = Table()
    assert score(m, suite) == 1.0 and (suite.targets != IGNORE).any()
    res = S.minimal_breaking_set(m, suite)
    assert res["k"] == 1 and res["total"] == 4 and res["fraction"] == 0.25 and res["acc_at_k"] <= 0.5
