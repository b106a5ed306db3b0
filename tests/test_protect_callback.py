"""The "protect" Trainer callback: GPM subspace protection and replay for any preset (train.protect.*)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from geoformer import config as C
from geoformer.errors import GeoformerError
from geoformer.train.callbacks import Callback
from geoformer.train.trainer import Trainer

from .conftest import make_text, tiny_config


@pytest.fixture
def texts(tmp_path):
    """A (the skill to keep) and B (the new text): the same words, other sentences."""
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(make_text(seed=0), encoding="utf-8")
    b.write_text(make_text(seed=1), encoding="utf-8")
    return a, b


def _phase_b(a_run, b_text, protect, **train):
    d = tiny_config(b_text, **train).to_dict()
    d["data"]["tokenizer_from"] = str(a_run)
    d["train"].update(init_from=str(a_run), callbacks=["protect"], protect=protect)
    return C.build_config(d)


def _a_run(a_text, out, **train):
    Trainer(tiny_config(a_text, **train), out, progress=False, quiet=True).fit()
    return out


@pytest.mark.parametrize(
    ("protect", "match"),
    [
        ({}, "train.protect.data is required"),
        ({"data": "x", "method": "gem"}, "method must be one of none, subspace, replay, subspace\\+replay, ewc"),
        ({"data": "x", "method": "ewc", "ewc_lambda": -1.0}, "ewc_lambda must be a finite number >= 0"),
        ({"data": "x", "threshold": 0.0}, "threshold must be in \\(0, 1\\]"),
        ({"data": "x", "replay_mix": 1.0}, "replay_mix must be in \\[0, 1\\)"),
        ({"data": "x", "sample": 3}, "unknown key train.protect.sample"),
    ],
)
def test_bad_options_are_one_line_when_the_config_is_built(corpus, protect, match):
    d = tiny_config(corpus).to_dict()
    d["train"].update(callbacks=["protect"], protect=protect)
    with pytest.raises(GeoformerError, match=match) as e:
        C.build_config(d)
    assert "\n" not in str(e.value)


def test_options_without_the_callback_are_refused_not_ignored(corpus):
    d = tiny_config(corpus).to_dict()
    d["train"]["protect"] = {"data": "x"}
    with pytest.raises(GeoformerError, match='train.callbacks has no "protect"'):
        C.build_config(d)


def test_subspace_keeps_the_outputs_on_a_exactly_while_b_is_learned(texts, tmp_path):
    """threshold 1 with fewer A rows than the layers' widths: every update is orthogonal to A's inputs, so in
    float64 the logits on A's protection windows do not move (to 1e-9) while the weights and B's loss do."""
    a_text, b_text = texts
    a_run = _a_run(a_text, tmp_path / "a", max_iters=10, param_dtype="float64")
    cfg = _phase_b(a_run, b_text, {"data": str(a_text), "threshold": 1.0, "samples": 1}, max_iters=15,
                   param_dtype="float64", lr=1e-2)  # fmt: skip
    trainer = Trainer(cfg, tmp_path / "b", progress=False, quiet=True)
    before = {k: v.clone() for k, v in trainer.raw_model.state_dict().items()}
    trainer.fit()
    x, _ = trainer.callbacks[0].windows
    with torch.no_grad():
        after_logits, _ = trainer.raw_model.eval()(x)
        trainer.raw_model.load_state_dict(before)
        before_logits, _ = trainer.raw_model(x)
    assert (after_logits - before_logits).abs().max() < 1e-9
    moved = max((trainer_w - before[k]).abs().max().item() for k, trainer_w in
                torch.load(tmp_path / "b" / "ckpt.pt", weights_only=True)["model"].items())  # fmt: skip
    assert moved > 1e-3
    recs = [json.loads(r) for r in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert recs[-1]["val_loss"] < recs[0]["val_loss"]
    assert all("protect_a_loss" in r for r in recs)
    s = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert s["protect_method"] == "subspace" and s["protect_basis_dims"]
    assert math.isclose(s["protect_a_forgetting"], s["protect_a_loss_end"] - s["protect_a_loss_start"])


class _Spy(Callback):
    def __init__(self):
        self.batches = []

    def on_batch(self, trainer, x, y):
        self.batches.append((x.clone(), y.clone()))
        return x, y


def test_replay_puts_the_stated_share_of_a_windows_in_every_micro_batch(texts, tmp_path):
    a_text, b_text = texts
    a_run = _a_run(a_text, tmp_path / "a", max_iters=2)
    cfg = _phase_b(a_run, b_text, {"data": str(a_text), "method": "replay", "replay_mix": 0.5, "samples": 8},
                   max_iters=3, grad_accum=2)  # fmt: skip
    spy = _Spy()
    trainer = Trainer(cfg, callbacks=[spy], progress=False, quiet=True)
    trainer.fit()
    bx, by = trainer.callbacks[0].windows
    assert len(spy.batches) == 3 * 2
    rows = {tuple(r.tolist()) for r in bx}
    for x, y in spy.batches:
        assert all(tuple(r.tolist()) in rows for r in x[:2])  # round(0.5 * 4) rows from A's buffer
        assert not any(tuple(r.tolist()) in rows for r in x[2:])
        assert torch.equal(x[:2, 1:], y[:2, :-1])  # targets stay aligned with their inputs


def test_a_protected_run_resumes_bit_identically_with_the_bases_of_its_start(texts, tmp_path):
    a_text, b_text = texts
    a_run = _a_run(a_text, tmp_path / "a", max_iters=4)
    protect = {"data": str(a_text), "method": "subspace+replay", "threshold": 0.9, "samples": 4}
    whole = Trainer(_phase_b(a_run, b_text, protect, max_iters=10), tmp_path / "w", progress=False, quiet=True)
    whole.fit()
    part = Trainer(_phase_b(a_run, b_text, protect, max_iters=10), tmp_path / "p", progress=False, quiet=True)
    part.fit(until=4)
    rest = Trainer(_phase_b(a_run, b_text, protect, max_iters=10), tmp_path / "p", resume=True, progress=False,
                   quiet=True)  # fmt: skip
    rest.fit()
    for k, v in whole.raw_model.state_dict().items():
        assert torch.equal(v, rest.raw_model.state_dict()[k]), k
    bases_w, bases_r = whole.callbacks[0].bases, rest.callbacks[0].bases
    assert len(bases_w) == len(bases_r)
    for bw, br in zip(bases_w, bases_r, strict=True):
        assert (bw["basis"] is None) == (br["basis"] is None)
        if bw["basis"] is not None:
            assert torch.equal(bw["basis"], br["basis"])


def test_method_none_measures_without_changing_the_run(texts, tmp_path):
    """The naive baseline of a comparison: its A loss is logged, and its training is bit-identical to a run
    without the callback (the measurement draws no random numbers and leaves no gradients)."""
    a_text, b_text = texts
    a_run = _a_run(a_text, tmp_path / "a", max_iters=4)
    plain = tiny_config(b_text, max_iters=6).to_dict()
    plain["data"]["tokenizer_from"] = str(a_run)
    plain["train"]["init_from"] = str(a_run)
    p = Trainer(C.build_config(plain), tmp_path / "p", progress=False, quiet=True)
    p.fit()
    n = Trainer(_phase_b(a_run, b_text, {"data": str(a_text), "method": "none"}, max_iters=6), tmp_path / "n",
                progress=False, quiet=True)  # fmt: skip
    s = n.fit()
    for k, v in p.raw_model.state_dict().items():
        assert torch.equal(v, n.raw_model.state_dict()[k]), k
    assert math.isfinite(s["protect_a_forgetting"]) and "protect_basis_dims" not in s


def _canary_cfg(a_run, b_text, **protect):
    d = _phase_b(a_run, b_text, {"data": str(a_run.parent / "a.txt"), **protect}, max_iters=10).to_dict()
    d["train"]["callbacks"] = ["protect", "canary"]
    return C.build_config(d)


def test_canary_needs_protect_before_it(corpus):
    for names in (["canary"], ["canary", "protect"]):
        d = tiny_config(corpus).to_dict()
        d["train"].update(callbacks=names, protect={"data": "x"})
        with pytest.raises(GeoformerError, match='needs "protect" before it'):
            C.build_config(d)


def test_a_canary_that_never_fires_changes_nothing(texts, tmp_path):
    a_text, b_text = texts
    a_run = _a_run(a_text, tmp_path / "a", max_iters=4)
    plain = Trainer(_phase_b(a_run, b_text, {"data": str(a_text), "method": "replay"}, max_iters=10), progress=False,
                    quiet=True)  # fmt: skip
    plain.fit()
    guarded = Trainer(_canary_cfg(a_run, b_text, method="replay", canary_every=2, canary_tol=1e9), progress=False,
                      quiet=True)  # fmt: skip
    s = guarded.fit()
    assert s["canary_checks"] == 5 and s["canary_rollbacks"] == 0
    for k, v in plain.raw_model.state_dict().items():
        assert torch.equal(v, guarded.raw_model.state_dict()[k]), k


@pytest.mark.parametrize("repair", [False, True])
def test_a_canary_with_no_tolerance_ends_on_a_state_no_worse_on_a(texts, tmp_path, repair):
    """Checked after every step with tol 0: each step that raised A's loss was undone, so the final model's
    loss on A's windows is at most the loss it started with (the last check accepted it or restored one that was)."""
    a_text, _ = texts
    b_text = tmp_path / "reversed.txt"  # the same characters read backwards: learning it costs A
    b_text.write_text(a_text.read_text(encoding="utf-8")[::-1], encoding="utf-8")
    a_run = _a_run(a_text, tmp_path / "a", max_iters=20)
    t = Trainer(_canary_cfg(a_run, b_text, method="none", canary_every=1, canary_tol=0.0, canary_repair=repair),
                progress=False, quiet=True)  # fmt: skip
    s = t.fit()
    x, y = (w.to(t.device) for w in t.callbacks[1].windows)
    assert not torch.equal(t.callbacks[1].windows[0], t.callbacks[0].windows[0])  # not the replay buffer's
    with torch.no_grad():
        end = float(t.raw_model.eval()(x, y)[1])
    start = -t.callbacks[1].monitor.reference["A"]
    assert s["canary_rollbacks"] > 0 and end <= start + 1e-6
    assert (s["canary_retries"] > 0) == repair


def test_a_canary_run_resumes_bit_identically(texts, tmp_path):
    a_text, _ = texts
    b_text = tmp_path / "reversed.txt"
    b_text.write_text(a_text.read_text(encoding="utf-8")[::-1], encoding="utf-8")
    a_run = _a_run(a_text, tmp_path / "a", max_iters=20)
    kw = {"method": "replay", "samples": 4, "canary_every": 2, "canary_tol": 0.0}
    whole = Trainer(_canary_cfg(a_run, b_text, **kw), tmp_path / "w", progress=False, quiet=True)
    sw = whole.fit()
    part = Trainer(_canary_cfg(a_run, b_text, **kw), tmp_path / "p", progress=False, quiet=True)
    part.fit(until=5)
    rest = Trainer(_canary_cfg(a_run, b_text, **kw), tmp_path / "p", resume=True, progress=False, quiet=True)
    sr = rest.fit()
    for k, v in whole.raw_model.state_dict().items():
        assert torch.equal(v, rest.raw_model.state_dict()[k]), k
    assert sw["canary_rollbacks"] == sr["canary_rollbacks"] > 0 and sw["canary_checks"] == sr["canary_checks"]


def test_bad_protect_data_is_one_line_and_leaves_no_run_folder(texts, tmp_path, capsys):
    from .conftest import assert_one_line_error, run_cli

    a_text, b_text = texts
    a_run = _a_run(a_text, tmp_path / "a", max_iters=2)
    cfg = tmp_path / "b.toml"
    d = tiny_config(b_text).to_dict()
    lines = [f'seed = {d["seed"]}', "[model]", *(f"{k} = {v}" for k, v in (("block_size", 16), ("n_layer", 2),
             ("n_head", 2), ("n_embd", 32))), "[data]", f'source = "{b_text}"', f'tokenizer_from = "{a_run}"',
             "[train]", "max_iters = 2", f'init_from = "{a_run}"', 'callbacks = ["protect"]',
             f'protect = {{ data = "{tmp_path / "missing.txt"}" }}']  # fmt: skip
    cfg.write_text("\n".join(lines) + "\n")
    code, _, err = run_cli(["train", "--config", str(cfg), "--out", str(tmp_path / "b")], capsys)
    assert_one_line_error(code, err, "data source not found")
    assert not (tmp_path / "b").exists()


# ------------------------------------------------------------------------------------------ ewc
def test_ewc_hooks_give_the_gradient_of_the_loss_plus_the_penalty_exactly():
    """The hooks add lam F (theta - anchor) / grad_accum per micro-batch: over grad_accum micro-batches the
    gradient equals autograd's of (mean loss + EWC penalty) in float64 (ewc.EWC is the reference); inactive
    hooks leave a gradient as its own loss made it."""
    from geoformer.circuits.ewc import EWC
    from geoformer.circuits.protect import EWCHooks

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2)).double()
    fisher = {k: torch.rand_like(p) for k, p in model.named_parameters()}
    anchor = {k: p.detach().clone() for k, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))  # away from the anchor
    xs = [torch.randn(5, 4, dtype=torch.float64) for _ in range(2)]
    loss = lambda x: model(x).square().mean()  # noqa: E731
    ref = EWC(model, fisher, 0.7, anchor=anchor)
    model.zero_grad()
    (sum(loss(x) for x in xs) / 2 + ref.penalty(model)).backward()
    want = {k: p.grad.clone() for k, p in model.named_parameters()}
    hooks = EWCHooks(model, EWC(model, fisher, 0.7, anchor=anchor), grad_accum=2)
    model.zero_grad()
    hooks.active = True
    for x in xs:
        (loss(x) / 2).backward()
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.grad, want[k], rtol=1e-13, atol=1e-13)
    assert hooks.penalty() == pytest.approx(float(ref.penalty(model).detach()), rel=1e-12)
    hooks.active = False
    model.zero_grad()
    loss(xs[0]).backward()
    plain = {k: p.grad.clone() for k, p in model.named_parameters()}
    hooks.remove()
    model.zero_grad()
    loss(xs[0]).backward()
    for k, p in model.named_parameters():
        assert torch.equal(p.grad, plain[k])


def _dist(trainer, start):
    return sum(float((v - start[k]).square().sum()) for k, v in trainer.raw_model.state_dict().items()) ** 0.5


def test_ewc_pulls_the_weights_towards_theta_a_and_resumes_bit_identically(texts, tmp_path):
    """lambda 0 is the unprotected run bit for bit (the Fisher pass draws nothing and leaves no gradients); a
    strong lambda keeps the weights nearer theta_A (under Adam the pull saturates: each step moves every weight
    by about lr whatever the gradient's size, measured 3.86 -> 2.90 -> 2.58 -> 2.58 for lambda 0, 1, 100, 1e4);
    the Fisher and the anchor are saved with the checkpoint, so a resumed run is the uninterrupted one."""
    a_text, b_text = texts
    a_run = _a_run(a_text, tmp_path / "a", max_iters=20)

    def run(out, method, lam, **kw):
        cfg = _phase_b(a_run, b_text, {"data": str(a_text), "method": method, "ewc_lambda": lam, "samples": 8},
                       max_iters=12, lr=1e-2)  # fmt: skip
        return Trainer(cfg, tmp_path / out, progress=False, quiet=True, **kw)

    start = {k: v.clone() for k, v in run("s", "none", 0.0).raw_model.state_dict().items()}
    none, zero, strong = run("n", "none", 0.0), run("z", "ewc", 0.0), run("w", "ewc", 1e4)
    none.fit(), zero.fit()
    s = strong.fit()
    for k, v in none.raw_model.state_dict().items():
        assert torch.equal(v, zero.raw_model.state_dict()[k]), k
    assert _dist(strong, start) < 0.8 * _dist(none, start)
    assert s["protect_ewc_penalty"] > 0 and s["protect_fisher_mean"] > 0
    recs = [json.loads(x) for x in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
    assert all("protect_ewc_penalty" in r for r in recs)
    part = run("p", "ewc", 1e4)
    part.fit(until=5)
    rest = run("p", "ewc", 1e4, resume=True)
    rest.fit()
    for k, v in strong.raw_model.state_dict().items():
        assert torch.equal(v, rest.raw_model.state_dict()[k]), k


@pytest.mark.parametrize(
    ("protect", "match"),
    [
        ({"data": "x", "layers": "some"}, "layers must be all or circuit"),
        ({"data": "x", "method": "replay", "layers": "circuit"}, "chooses the layers of subspace protection"),
        ({"data": "x", "layers": "circuit", "head_threshold": 0.0}, "head_threshold must be a finite number > 0"),
    ],
)
def test_bad_circuit_options_are_one_line(corpus, protect, match):
    d = tiny_config(corpus).to_dict()
    d["train"].update(callbacks=["protect"], protect=protect)
    with pytest.raises(GeoformerError, match=match) as e:
        C.build_config(d)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("head_threshold", [1e-9, 1e9])
def test_circuit_layers_protect_only_the_heads_a_needs_and_project_exactly(texts, tmp_path, head_threshold):
    """layers = circuit: the heads are those whose mean-ablation costs A at least head_threshold nats (all of
    them at 1e-9, the single most costly one at 1e9); the protected rows are those heads' q/k/v rows and their
    blocks' projections, every applied update on them is orthogonal to A's span (float64, 1e-10), and the rows
    and blocks outside the circuit train freely."""
    from geoformer.circuits.attribution import head_loss_increase

    a_text, b_text = texts
    a_run = _a_run(a_text, tmp_path / "a", max_iters=10, param_dtype="float64")
    protect = {"data": str(a_text), "layers": "circuit", "head_threshold": head_threshold, "samples": 2}
    cfg = _phase_b(a_run, b_text, protect, max_iters=8, param_dtype="float64", lr=1e-2)
    trainer = Trainer(cfg, tmp_path / "b", progress=False, quiet=True)
    before = {k: v.clone() for k, v in trainer.raw_model.state_dict().items()}
    trainer.fit()
    cb = trainer.callbacks[0]
    x, y = cb.windows
    rise = torch.tensor(cb.circuit["head_loss_increase"], dtype=torch.float64)
    trainer.raw_model.load_state_dict(before)
    torch.testing.assert_close(rise, head_loss_increase(trainer.raw_model, x, y), rtol=0, atol=1e-12)
    heads = {tuple(h) for h in cb.circuit["heads"]}
    want = {(a, b) for a in range(2) for b in range(2) if rise[a, b] >= head_threshold}
    assert heads == (want or {divmod(int(rise.argmax()), 2)})
    after = torch.load(tmp_path / "b" / "ckpt.pt", weights_only=True)["model"]
    width, hd = 32, 16
    protected_layers = {a for a, _ in heads}
    for b in cb.bases:
        if b["basis"] is None or b["param"] == "wte.weight":
            continue
        layer = int(b["param"].split(".")[1])
        assert layer in protected_layers
        d = after[b["param"]] - before[b["param"]]
        rows = b["rows"] if b["rows"] is not None else torch.ones(d.shape[0], dtype=torch.bool)
        if b["param"].endswith("c_attn.weight"):
            chosen = {h for a, h in heads if a == layer}
            want_rows = torch.zeros(3 * width, dtype=torch.bool)
            for h in chosen:
                for part in range(3):
                    want_rows[part * width + h * hd : part * width + (h + 1) * hd] = True
            assert torch.equal(rows, want_rows)
            if (~rows).any():
                assert d[~rows].abs().max() > 1e-4  # the other heads' rows move freely
        assert (d[rows] @ b["basis"]).abs().max() < 1e-10
    for layer in set(range(2)) - protected_layers:  # a block outside the circuit trains freely
        assert not any(b["param"].startswith(f"blocks.{layer}.") for b in cb.bases if b["source"] != "norm gain")
        w = f"blocks.{layer}.attn.c_attn.weight"
        assert (after[w] - before[w]).abs().max() > 1e-4
    s = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert {tuple(h) for h in s["protect_heads"]} == heads and len(s["protect_head_loss_increase"]) == 2
