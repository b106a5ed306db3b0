"""Ablation and patching through hooks: locality, batching equals one-at-a-time, estimates."""

from __future__ import annotations

import math

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


# ------------------------------------------------------------------------------------------ properties
def gpt(dtype=torch.float64, bias=False, seed=0):
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=vocab_size(), block_size=16, n_layer=2, n_head=4, n_embd=32, attention="naive", bias=bias)
    return GPT(cfg).to(dtype).eval()


def head_cols(layer, h, D=8):
    return slice(h * D, (h + 1) * D)


def logits_of(model, x):
    with torch.no_grad():
        return model(x)[0]


def test_ablating_a_head_with_zero_output_columns_changes_nothing(suite):
    """W_O[:, h] = 0: head h reaches nothing, so zero- and mean-ablating it leaves the logits bit-identical
    (c_proj then sums exact zeros either way); the batched ablation reports a drop of exactly 0."""
    model = gpt()
    with torch.no_grad():
        model.blocks[1].attn.c_proj.weight[:, head_cols(1, 2)] = 0
        model.blocks[0].attn.c_proj.weight[:, head_cols(0, 1)] = 0
    clean = logits_of(model, suite.inputs)
    means = A.site_means(model, suite)
    for comp in [(1, 2), (0, 1)]:
        for m in (None, means):
            with A.ablated(model, heads=[comp], means=m):
                assert torch.equal(logits_of(model, suite.inputs), clean)
    for mode in ("zero", "mean"):
        res = A.ablate_heads(model, suite, mode)
        drop = res["clean_logprob"] - res["logprob"]
        assert drop[1, 2] == 0 and drop[0, 1] == 0
        assert drop.abs().max() > 1e-4  # the other heads do matter
    with A.ablated(model, heads=[(1, 3)]):  # not vacuous: a head with its columns moves the logits
        assert (logits_of(model, suite.inputs) - clean).abs().max() > 1e-3


def test_mean_ablating_a_constant_head_changes_nothing(suite):
    """With W_V = 0 for head h, its output is the value bias b_h at every position of every example
    (softmax weights sum to 1), so its suite mean is b_h and mean-ablation is the identity (to float64
    round-off of the weight sums and the mean: 1e-12); zero-ablation is not."""
    model = gpt(bias=True)
    layer, h, C = 1, 1, 32
    attn = model.blocks[layer].attn
    with torch.no_grad():
        attn.c_attn.weight[2 * C :][head_cols(layer, h)] = 0
        attn.c_attn.bias[2 * C :][head_cols(layer, h)] = torch.linspace(-1, 1, 8, dtype=torch.float64)
    with A.capture(model, "z") as z:
        clean = logits_of(model, suite.inputs)
    zh = z[layer][..., h, :]
    torch.testing.assert_close(zh, attn.c_attn.bias[2 * C :][head_cols(layer, h)].expand_as(zh), rtol=0, atol=1e-15)
    means = A.site_means(model, suite)
    with A.ablated(model, heads=[(layer, h)], means=means):
        torch.testing.assert_close(logits_of(model, suite.inputs), clean, rtol=0, atol=1e-12)
    res = A.ablate_heads(model, suite, "mean", means)
    assert abs(res["logprob"][layer, h] - res["clean_logprob"]) <= 1e-6  # results are stored in float32
    with A.ablated(model, heads=[(layer, h)]):
        assert (logits_of(model, suite.inputs) - clean).abs().max() > 1e-3


def single_path_model(dtype):
    """Every head's output columns zeroed except head 3 of layer 1 (scaled up so that it dominates): the answer
    position then depends on earlier tokens only through that head (layer 0's heads write nothing and the
    MLPs are per position)."""
    model = gpt(dtype)
    with torch.no_grad():  # an untied, 100x output embedding: answer log-probs that move by O(1), not 1e-3
        model.lm_head.weight = torch.nn.Parameter(100 * model.wte.weight.detach())
        for layer in range(2):
            for h in range(4):
                w = model.blocks[layer].attn.c_proj.weight[:, head_cols(layer, h)]
                w.mul_(20.0 if (layer, h) == (1, 3) else 0.0)
    return model


def test_patching_the_only_carrier_head_restores_exactly(suite):
    """Clean and corrupted prompts differ before the answer position only (same token there). Patching the
    single carrier head's clean output into the corrupted run gives the clean answer logits, restoration 1;
    patching any other head (which writes nothing) restores 0. float32 here: the restoration is exact to a few
    ulp of lp divided by lp_clean - lp_corrupt (asserted to be O(1))."""
    answer_pos = suite.answer_mask.nonzero()[:, 1]
    rows = torch.arange(len(suite))
    assert torch.equal(suite.inputs[rows, answer_pos], suite.corrupt_inputs[rows, answer_pos])
    assert suite.answer_mask.sum(1).eq(1).all() and not torch.equal(suite.inputs, suite.corrupt_inputs)
    model = single_path_model(torch.float32)
    res = A.patch_heads(model, suite)
    denom = (res["lp_clean"] - res["lp_corrupt"]).abs().item()
    assert denom > 0.1
    tol = 8 * torch.finfo(torch.float32).eps * res["lp_clean"].abs().item() / denom
    expected = torch.zeros(2, 4)
    expected[1, 3] = 1.0
    torch.testing.assert_close(res["restoration"], expected, rtol=0, atol=tol)
    # patching a run with its own activations (clean = corrupt) restores it bit for bit
    with A.capture(model, "z") as cz:
        clean = logits_of(model, suite.inputs)
    for layer in range(2):
        frozen = cz[layer].detach().clone()
        with A.edit_site(model, "z", layer, lambda z, frozen=frozen: frozen.view_as(z)):
            assert torch.equal(logits_of(model, suite.inputs), clean)


def test_patching_restores_exactly_in_float64(suite):
    model = single_path_model(torch.float64)
    res = A.patch_heads(model, suite)
    expected = torch.zeros(2, 4, dtype=torch.float64)
    expected[1, 3] = 1.0
    torch.testing.assert_close(res["restoration"].double(), expected, rtol=0, atol=1e-10)
    assert res["restoration"].dtype == torch.float64


def test_grad_x_act_is_the_exact_directional_derivative(suite):
    """Attribution patching is m'(a) . (a_new - a): in float64 it must equal the derivative of the metric along
    that direction, d/dt m(a + t (a_new - a)) at t = 0, measured by a central difference (error O(t^2) ~1e-10
    plus round-off ~1e-11 at t = 1e-5), for every head (zero, mean, patch) and a sample of neurons."""
    model = gpt()
    means = A.site_means(model, suite)
    est = A.grad_x_act(model, suite, means)
    with torch.no_grad(), A.capture(model, "z") as cz:
        model(suite.inputs)
    cz = [a.clone() for a in cz]

    def metric(inputs, site, layer, idx, target, t):
        def edit(a):
            a = a.clone()
            new = target(a) if callable(target) else target
            sel = (..., idx, slice(None)) if site == "z" else (..., idx)
            a[sel] = a[sel] + t * (new[sel] - a[sel])
            return a

        with A.edit_site(model, site, layer, edit), torch.no_grad():
            return A.answer_logprob(model(inputs)[0], suite.targets).mean().item()

    def deriv(*args, t=1e-5):
        return (metric(*args, t) - metric(*args, -t)) / (2 * t)

    zero = lambda a: torch.zeros_like(a)
    for layer in range(2):
        mean_z = means["z"][layer][None].expand_as(cz[layer])  # (B, T, H, D): per-position suite means
        with A.capture(model, "neurons") as nrn, torch.no_grad():
            model(suite.inputs)
        mean_n = means["neurons"][layer][None].expand_as(nrn[layer])
        for h in range(4):
            torch.testing.assert_close(deriv(suite.inputs, "z", layer, h, zero), est["head_zero"][layer, h].item(),
                                       rtol=1e-6, atol=1e-9)  # fmt: skip
            torch.testing.assert_close(deriv(suite.inputs, "z", layer, h, mean_z),
                                       est["head_mean"][layer, h].item(), rtol=1e-6, atol=1e-9)  # fmt: skip
            torch.testing.assert_close(deriv(suite.corrupt_inputs, "z", layer, h, cz[layer]),
                                       est["head_patch"][layer, h].item(), rtol=1e-6, atol=1e-9)  # fmt: skip
        for i in (0, 37, 100):
            torch.testing.assert_close(deriv(suite.inputs, "neurons", layer, i, zero),
                                       est["neuron_zero"][layer, i].item(), rtol=1e-6, atol=1e-9)  # fmt: skip
            torch.testing.assert_close(deriv(suite.inputs, "neurons", layer, i, mean_n),
                                       est["neuron_mean"][layer, i].item(), rtol=1e-6, atol=1e-9)  # fmt: skip
    assert est["head_zero"].abs().max() > 1e-3


def test_spearman_equals_scipy():
    """Against scipy.stats.spearmanr on random data, with and without ties (average ranks), to 1e-12."""
    from scipy.stats import spearmanr

    g = torch.Generator().manual_seed(0)
    for trial in range(60):
        n = 3 + trial % 40
        if trial % 3 == 0:  # ties in both
            x, y = torch.randint(0, 4, (n,), generator=g).double(), torch.randint(0, 5, (n,), generator=g).double()
        elif trial % 3 == 1:
            x = torch.randn(n, generator=g, dtype=torch.float64)
            y = x + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
        else:
            x, y = torch.randn(n, generator=g), torch.randint(0, 3, (n,), generator=g).float()
        if x.unique().numel() == 1 or y.unique().numel() == 1:
            continue
        assert A.spearman(x, y) == pytest.approx(spearmanr(x.numpy(), y.numpy()).statistic, rel=0, abs=1e-12)
    assert A.spearman(torch.tensor([1.0, 2, 3]), torch.tensor([3.0, 2, 1])) == -1.0
    assert math.isnan(A.spearman(torch.ones(4), torch.arange(4.0)))  # a constant has no ranks to correlate


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_head_loss_increase_equals_an_explicit_hook_per_head_in_float64(mode):
    """The text measure (no suite): for every (layer, head), an explicit pre-hook on c_proj that replaces that
    head's slice by zero or by its per-position mean over the windows, then the mean cross-entropy minus the
    clean one; the batched version agrees to 1e-12 and leaves the model in the mode it found it."""
    m = gpt()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, vocab_size(), (6, 12), generator=g)
    y = torch.randint(0, vocab_size(), (6, 12), generator=g)
    m.train()
    got = A.head_loss_increase(m, x, y, mode)
    assert m.training and got.shape == (2, 4) and got.dtype == torch.float64
    m.eval()
    F = torch.nn.functional
    with torch.no_grad():
        clean = F.cross_entropy(m(x)[0].flatten(0, 1), y.flatten())
        for layer in range(2):
            seen = {}
            h0 = m.blocks[layer].attn.c_proj.register_forward_pre_hook(lambda _m, a, seen=seen: seen.update(z=a[0].clone()))
            m(x)
            h0.remove()
            mean = seen["z"].mean(0)  # (T, H * D)
            for h in range(4):
                cols = head_cols(layer, h)

                def pre(_m, a, cols=cols, mean=mean):
                    z = a[0].clone()
                    z[..., cols] = 0.0 if mode == "zero" else mean[:, cols]
                    return (z,)

                hook = m.blocks[layer].attn.c_proj.register_forward_pre_hook(pre)
                want = F.cross_entropy(m(x)[0].flatten(0, 1), y.flatten()) - clean
                hook.remove()
                assert abs(got[layer, h].item() - want.item()) < 1e-12, (layer, h)
    assert got.abs().max() > 1e-4  # the heads matter: the comparison is not between zeros
    with pytest.raises(ValueError, match="zero or mean"):
        A.head_loss_increase(m, x, y, "resample")
