"""Ablation and patching through hooks: locality, batching equals one-at-a-time, estimates."""

from __future__ import annotations

import pytest
import torch

from geoformer.circuits import attribution as A
from geoformer.circuits.canaries import make_suite, vocab_size
from geoformer.models.gpt import GPT, GPTConfig


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = GPT(
        GPTConfig(vocab_size=vocab_size(), block_size=16, n_layer=2, n_head=4, n_embd=32, attention="naive")
    )
    return m.eval()


@pytest.fixture
def suite():
    return make_suite("modus_ponens", "train", 24, seed=0)


def test_ablating_a_head_changes_output_only_through_that_head(model, suite):
    """Zeroing head h of layer l moves layer l's attention output by exactly -W_O[:, h] z_h."""
    layer, h, D = 1, 2, 8
    attn = model.blocks[layer].attn
    seen = {}
    hook = attn.register_forward_hook(lambda m, a, o: seen.setdefault("out", []).append(o.detach()))
    with A.capture(model, "z") as z:
        model(suite.inputs)
    with A.ablated(model, heads=[(layer, h)]):
        model(suite.inputs)
    hook.remove()
    clean_out, abl_out = seen["out"]
    zh = z[layer][..., h, :]  # capture gives (B, T, H, D)
    expected = clean_out - zh @ attn.c_proj.weight[:, h * D : (h + 1) * D].T
    torch.testing.assert_close(abl_out, expected, rtol=1e-5, atol=1e-6)
    # other heads of the same layer see identical inputs (z of other heads unchanged)
    with A.ablated(model, heads=[(layer, h)]), A.capture(model, "z") as z2:
        model(suite.inputs)
    other = [i for i in range(4) if i != h]
    for i in other:
        torch.testing.assert_close(z2[layer][..., i, :], z[layer][..., i, :])
    assert (z2[layer][..., h, :] == 0).all()
    torch.testing.assert_close(z2[0], z[0])  # earlier layer untouched


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_batched_head_ablation_equals_one_at_a_time(model, suite, mode):
    res = A.ablate_heads(model, suite, mode)
    means = A.site_means(model, suite)
    for layer, h in [(0, 1), (1, 3)]:
        with A.ablated(model, heads=[(layer, h)], means=None if mode == "zero" else means), torch.no_grad():
            logits, _ = model(suite.inputs)
        lp = A.answer_logprob(logits, suite.targets).mean()
        torch.testing.assert_close(res["logprob"][layer, h], lp, rtol=1e-5, atol=1e-5)


def test_batched_neuron_ablation_equals_one_at_a_time(model, suite):
    res = A.ablate_neurons(model, suite, "zero", chunk=16)
    assert res["acc"].shape == (2, 128)
    for layer, i in [(0, 5), (1, 100)]:
        with A.ablated(model, neurons=[(layer, i)]), torch.no_grad():
            logits, _ = model(suite.inputs)
        lp = A.answer_logprob(logits, suite.targets).mean()
        torch.testing.assert_close(res["logprob"][layer, i], lp, rtol=1e-5, atol=1e-5)


def test_patching_all_heads_of_last_layer_is_consistent(model, suite):
    res = A.patch_heads(model, suite)
    assert res["restoration"].shape == (2, 4)
    assert torch.isfinite(res["restoration"]).all()


def test_grad_x_act_matches_small_ablation_to_first_order(model, suite):
    """Scaling a head by (1 - eps) changes the metric by eps * (zero-ablation estimate) to first order."""
    est = A.grad_x_act(model, suite)["head_zero"]
    layer, h, eps = 1, 0, 1e-3
    base = A.answer_logprob(model(suite.inputs)[0], suite.targets).mean()

    def edit(z):
        z = z.clone()
        z[..., h, :] *= 1 - eps
        return z

    with A.edit_site(model, "z", layer, edit), torch.no_grad():
        lp = A.answer_logprob(model(suite.inputs)[0], suite.targets).mean()
    torch.testing.assert_close((lp - base) / eps, est[layer, h], rtol=2e-2, atol=2e-3)


def test_param_importance_and_bridges(model, suite):
    imp = A.param_importance(model, suite)
    assert set(imp) == {k for k, _ in model.named_parameters()}
    assert all((v >= 0).all() for v in imp.values())
    drops = torch.tensor([[0.5, 0.2, 0.0], [0.05, 0.0, 0.3]])
    assert A.bridge_scores(drops, 0.1).tolist() == [2, 1]
    assert A.spearman(torch.tensor([1.0, 2, 3]), torch.tensor([10.0, 20, 30])) == pytest.approx(1.0)
    assert A.head_param_norms(model).shape == (2, 4)
