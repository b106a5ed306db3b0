"""Subspace protection (GPM), replay batches and the repairing canary, as math."""

from __future__ import annotations

import torch

from geoformer.circuits import continual as CL
from geoformer.circuits import subspace as sub
from geoformer.circuits.canaries import SUITES, answer_loss, make_suite, vocab_size
from geoformer.circuits.protection import CanaryMonitor, UpdateScaler, repair_update
from geoformer.circuits.replay import ReplayBuffer, buffer_from_suites
from geoformer.models.gpt import GPT, GPTConfig


def _gpt(seed: int = 0, dtype=torch.float64) -> GPT:
    torch.manual_seed(seed)
    m = GPT(
        GPTConfig(vocab_size=vocab_size(20), block_size=16, n_layer=2, n_head=2, n_embd=16, attention="naive")
    )
    return m.to(dtype)


def _a_inputs(n: int = 40) -> torch.Tensor:
    return torch.cat([make_suite(s, "train", n, seed=0).inputs for s in ("modus_ponens", "contrapositive")])


def test_energy_basis_is_the_smallest_span_holding_the_energy():
    g = torch.Generator().manual_seed(0)
    for thr in (0.5, 0.8, 0.95, 0.999, 1.0):
        a = torch.randn(200, 12, generator=g, dtype=torch.float64) * torch.logspace(
            0, -2, 12, dtype=torch.float64
        )
        u = sub.energy_basis(a, thr)
        s = torch.linalg.svdvals(a).square()
        frac = s.cumsum(0) / s.sum()
        k = int(torch.nonzero(frac >= thr * (1 - 1e-12))[0]) + 1
        assert u.shape == (12, k)
        torch.testing.assert_close(u.T @ u, torch.eye(k, dtype=torch.float64), atol=1e-12, rtol=0)
        kept = (a @ u).square().sum() / a.square().sum()  # energy inside the span
        assert kept >= thr * (1 - 1e-12)
        if k > 1:  # one dimension fewer would not hold it
            assert (a @ u[:, : k - 1]).square().sum() / a.square().sum() < thr


def test_project_out_rows_and_freeze():
    g = torch.Generator().manual_seed(1)
    d = torch.randn(6, 5, generator=g, dtype=torch.float64)
    u, _ = torch.linalg.qr(torch.randn(5, 2, generator=g, dtype=torch.float64))
    rows = torch.tensor([True, False, True, False, False, True])
    p = sub.project_out(d, u, rows)
    torch.testing.assert_close(p[rows] @ u, torch.zeros(3, 2, dtype=torch.float64), atol=1e-14, rtol=0)
    assert torch.equal(p[~rows], d[~rows])
    f = sub.project_out(d, None, rows)
    assert torch.equal(f[rows], torch.zeros_like(f[rows])) and torch.equal(f[~rows], d[~rows])


def _steps(model, opt, n=3, seed=5):
    x = make_suite("transitivity", "train", 32, seed=seed).inputs
    y = make_suite("transitivity", "train", 32, seed=seed).targets
    for _ in range(n):
        opt.zero_grad()
        answer_loss(model(x)[0], y).backward()
        opt.step()


def test_projected_updates_are_orthogonal_to_the_protected_subspace():
    model = _gpt()
    xa = _a_inputs()
    prot = sub.gpt_protection(model, xa, threshold=0.9)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    proj = sub.SubspaceProjector(model, opt, prot)
    _steps(model, opt)
    params = dict(model.named_parameters())
    moved = 0.0
    for p in prot:
        delta = params[p.param].detach() - before[p.param]
        rows = p.rows if p.rows is not None else torch.ones(delta.shape[0], dtype=torch.bool)
        if p.basis is None:
            assert torch.equal(delta[rows], torch.zeros_like(delta[rows])), p.source
        else:
            assert p.basis.shape[1] >= 1
            scale = delta.abs().max().clamp_min(1e-300)
            assert float((delta[rows] @ p.basis).abs().max() / scale) < 1e-12, p.source
            moved += float(delta.abs().sum())
    assert moved > 0  # the complement still learns
    proj.remove()


def test_full_basis_keeps_the_function_on_a_exactly():
    """Threshold 1: every layer's update annihilates A's inputs, so the logits on A do not change at all."""
    model = _gpt(1)
    xa = _a_inputs(30)
    with torch.no_grad():
        ref = model(xa)[0].clone()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
    sub.SubspaceProjector(model, opt, sub.gpt_protection(model, xa, threshold=1.0, pad=None))
    _steps(model, opt, n=4)
    with torch.no_grad():
        out = model(xa)[0]
    torch.testing.assert_close(out, ref, atol=1e-9, rtol=0)
    # and without protection the same steps change them
    free = _gpt(1)
    _steps(free, torch.optim.AdamW(free.parameters(), lr=3e-2), n=4)
    with torch.no_grad():
        assert float((free(xa)[0] - ref).abs().max()) > 1e-3


def test_circuit_mode_protects_only_the_circuit_heads_rows():
    model = _gpt(2)
    xa = _a_inputs(20)
    prot = sub.gpt_protection(model, xa, threshold=0.9, layers="circuit", heads=[(1, 0)])
    by = {p.source: p for p in prot}
    assert "blocks.0.attn.c_attn" not in by and "blocks.0.mlp.c_fc" not in by
    rows = by["blocks.1.attn.c_attn"].rows
    width, hd = 16, 8
    want = torch.zeros(3 * width, dtype=torch.bool)
    for part in range(3):
        want[part * width : part * width + hd] = True
    assert torch.equal(rows, want)
    drops = torch.zeros(2, 2, 3)
    drops[1, 0, 2] = 0.3
    drops[0, 1, 0] = 0.05
    assert sub.circuit_heads(drops, 0.1) == [(1, 0)]
    assert sub.circuit_heads(torch.zeros(2, 2, 3).index_put_((torch.tensor([0]), torch.tensor([1]), torch.tensor([0])),
                                                             torch.tensor(0.01)), 0.1) == [(0, 1)]  # fmt: skip


def test_replay_batches_contain_the_stated_mix():
    cfg = CL.CircuitsConfig(**{**CL.CircuitsConfig().__dict__, "batch_size": 20})
    train_a = {s: make_suite(s, "train", 30, seed=0) for s in CL.SUITES_A}
    buf = buffer_from_suites(train_a, 10, 0.25, seed=3)
    assert buf.inputs.shape[0] == 30 and buf.count(20) == 5
    model = GPT(
        GPTConfig(vocab_size=vocab_size(20), block_size=16, n_layer=1, n_head=2, n_embd=16, attention="naive")
    )
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    CL.train_suites(model, CL.SUITES_B, steps=3, lr=1e-3, seed=0, cfg=cfg, replay=buf, quiet=True)
    assert len(seen) == 3
    for step, x in enumerate(seen, start=1):
        xr, _ = buf.draw(5, step)
        assert x.shape[0] == 20
        assert torch.equal(x[-5:], xr)  # the last 5 rows are the buffer's, drawn for this step
        buffer_rows = {tuple(r.tolist()) for r in buf.inputs}
        assert all(tuple(r.tolist()) in buffer_rows for r in x[-5:])
    assert ReplayBuffer(buf.inputs, buf.targets, 0.0).count(20) == 0


def test_repair_update_removes_the_harmful_component_only():
    g = torch.Generator().manual_seed(0)
    guide = {
        "a": torch.randn(4, 3, generator=g, dtype=torch.float64),
        "b": torch.randn(5, generator=g, dtype=torch.float64),
    }
    bad = {
        k: v + 0.1 * torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in guide.items()
    }  # g.d > 0
    out = repair_update(bad, guide)
    dot = sum((guide[k] * out[k]).sum() for k in guide)
    assert abs(float(dot)) < 1e-12
    good = {k: -v for k, v in bad.items()}  # lowers the canary loss: untouched
    assert all(torch.equal(repair_update(good, guide)[k], good[k]) for k in good)
    half = repair_update(good, guide, 0.5)
    assert all(torch.equal(half[k], 0.5 * good[k]) for k in good)


def test_canary_retry_path_projects_then_halves_then_grows():
    model = _gpt(3, torch.float64)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = UpdateScaler(model, opt, {})
    xc = make_suite("modus_ponens", "train", 16, seed=0)
    calls = {"n": 0}

    def evaluate(_m):  # the first check sets the reference; every later one regresses
        calls["n"] += 1
        return {"a": 1.0 if calls["n"] == 1 else 0.0}

    mon = CanaryMonitor(model, opt, evaluate, every=1, tol=0.1, scaler=scaler, repair=True, max_retries=2,
                        canary_loss=lambda m: answer_loss(m(xc.inputs)[0], xc.targets))  # fmt: skip
    mon.start()
    xb = make_suite("copy", "train", 16, seed=1)
    levels, applied = [], []
    for step in range(1, 5):
        before = {k: p.detach().clone() for k, p in model.named_parameters()}
        opt.zero_grad()
        answer_loss(model(xb.inputs)[0], xb.targets).backward()
        # the scaler acts first (the grown mask), then the repair
        plain = {k: -0.1 * p.grad * scaler.scales.get(k, 1.0) for k, p in model.named_parameters()}
        opt.step()
        delta = {k: p.detach() - before[k] for k, p in model.named_parameters()}
        if mon.level >= 1 and mon._guide is not None:  # this step ran under repair: never up the canary loss
            dot = sum((mon._guide[k] * delta[k]).sum() for k in delta)
            assert float(dot) <= 1e-12
            scale = 0.5 ** max(0, mon.level - 1)
            want = repair_update(plain, mon._guide, scale)
            for k in delta:
                torch.testing.assert_close(delta[k], want[k], atol=1e-12, rtol=0)
            applied.append(scale)
        mon.step(step)
        levels.append(mon.level)
    s = mon.summary()
    assert levels == [1, 2, 2, 2]
    assert s["retries"] == 2 and s["grows"] == 2 and s["rollbacks"] == 4 and s["protected"] > 0
    assert applied == [1.0, 0.5, 0.5]


def test_stall_is_flagged_when_progress_stops():
    model = _gpt(4)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    flat = CanaryMonitor(model, opt, lambda m: {"a": 1.0}, every=1, progress=lambda m: 0.5, stall_checks=3)
    rising = iter([0.1 * i for i in range(20)])
    up = CanaryMonitor(
        model, opt, lambda m: {"a": 1.0}, every=1, progress=lambda m: next(rising), stall_checks=3
    )
    for step in range(1, 8):
        flat.step(step)
        up.step(step)
    assert flat.summary()["stalled"] and flat.stalled_at == 4
    assert not up.summary()["stalled"]


def test_every_method_runs_and_records_its_parts(tmp_path):
    tiny = {"n_layer": 1, "n_head": 2, "n_embd": 16, "n_train": 40, "n_test": 20, "steps_a": 4, "steps_b": 4,
            "batch_size": 8, "fisher_examples": 12, "canary_examples": 8, "canary_every": 2, "gpm_examples": 10, "steps_extra": 4,
            "replay_per_suite": 5}  # fmt: skip
    cfg = CL.CircuitsConfig(**{**CL.CircuitsConfig().__dict__, **tiny})
    model = CL.train_a(cfg, 0, None, True)
    for m in CL.METHODS:
        r = CL.phase_b(model, m, cfg, 0, lr_b=1e-3)
        parts = CL.COMPONENTS[m]
        assert ("replay" in r.extra) == ("replay" in parts)
        assert ("subspace" in r.extra) == ("subspace" in parts)
        assert ("canary" in r.extra) == bool({"canary", "repair"} & parts)
        assert ("circuit_heads" in r.extra) == ("circuit" in parts)
    assert set(SUITES) >= set(CL.SUITES_A) | set(CL.SUITES_B)
