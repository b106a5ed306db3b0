"""Update scaling, zones, canary rollback and EWC."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from geoformer.circuits.ewc import EWC, fisher_diag
from geoformer.circuits.protection import CanaryMonitor, UpdateScaler, zone_counts, zone_scales


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


def _loss(m, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 4, generator=g)
    return m(x).pow(2).mean() + m(x).sum() * 0.1


@pytest.mark.parametrize("opt_cls", [torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW])
def test_masked_elements_get_exactly_scale_times_update(opt_cls):
    ref, prot = _net(), _net()
    kw = {"lr": 0.1, "momentum": 0.9} if opt_cls is torch.optim.SGD else {"lr": 0.01}
    o_ref, o_prot = opt_cls(ref.parameters(), **kw), opt_cls(prot.parameters(), **kw)
    g = torch.Generator().manual_seed(1)
    scales = {k: torch.randint(0, 3, p.shape, generator=g).float() / 2 for k, p in prot.named_parameters()}
    scales["0.weight"][0, 0] = 0.01
    UpdateScaler(prot, o_prot, scales)
    old = {k: p.detach().clone() for k, p in prot.named_parameters()}
    for m, o in ((ref, o_ref), (prot, o_prot)):
        o.zero_grad()
        _loss(m, 0).backward()
        o.step()
    for (k, p), (_, q) in zip(prot.named_parameters(), ref.named_parameters(), strict=True):
        s = scales[k]
        upd, full = p.detach() - old[k], q.detach() - old[k]
        assert torch.equal(p.detach(), torch.lerp(old[k], q.detach(), s))  # old + s * (new - old)
        torch.testing.assert_close(upd, s * full, rtol=1e-5, atol=1e-7)  # up to float32 rounding of p
        assert torch.equal(p.detach()[s == 1], q.detach()[s == 1])  # unscaled elements: bit-identical
        assert torch.equal(p.detach()[s == 0], old[k][s == 0])  # frozen elements: untouched


def test_scaler_state_dict_round_trip_and_optimizer_untouched():
    m = _net()
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    sc = UpdateScaler(m, opt, {"2.bias": torch.tensor([0.0, 0.5, 1.0])})
    sc.protect("0.weight", torch.zeros(8, 4, dtype=torch.bool).index_fill_(0, torch.tensor([1]), True), 0.01)
    state = sc.state_dict()
    m2 = _net()
    opt2 = torch.optim.Adam(m2.parameters(), lr=0.01)
    sc2 = UpdateScaler(m2, opt2, {})
    sc2.load_state_dict(state)
    assert sc2.scales.keys() == sc.scales.keys()
    for k in sc.scales:
        assert torch.equal(sc.scales[k], sc2.scales[k])
    assert sc2.n_protected() == 2 + 4
    # the wrapped optimizer's own state_dict round-trips as usual
    opt.zero_grad()
    _loss(m, 0).backward()
    opt.step()
    opt3 = torch.optim.Adam(m.parameters(), lr=0.01)
    opt3.load_state_dict(opt.state_dict())
    assert torch.equal(opt3.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_zone_scales_are_graduated():
    scores = {"a": torch.arange(100.0), "b": torch.arange(100.0)}
    sc = zone_scales(scores, (("core", 0.05, 0.01), ("support", 0.1, 0.1)), normalize=False)
    counts = zone_counts(sc)
    assert counts == {0.01: 10, 0.1: 20, 1.0: 170}
    assert (sc["a"][-5:] == 0.01).all() and (sc["a"][:80] == 1).all()


def _state(m, o):
    return copy.deepcopy({"m": m.state_dict(), "o": o.state_dict()})


def _assert_same(s1, s2):
    for k in s1["m"]:
        assert torch.equal(s1["m"][k], s2["m"][k])
    for pid, st in s1["o"]["state"].items():
        for k, v in st.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(s2["o"]["state"][pid][k])), k


def test_rollback_restores_parameters_and_optimizer_state_bit_exactly():
    m = _net()
    opt = torch.optim.AdamW(m.parameters(), lr=0.05)
    sc = UpdateScaler(m, opt, {})
    scores = iter([{"cap": 1.0}, {"cap": 1.0}, {"cap": 0.5}])  # start, ok at step 2, regression at step 4
    mon = CanaryMonitor(m, opt, lambda _m: next(scores), every=2, tol=0.1, scaler=sc, grow_frac=0.05)
    mon.start()
    saved = None
    for step in range(1, 5):
        opt.zero_grad()
        _loss(m, step).backward()
        opt.step()
        rolled = mon.step(step)
        if step == 2:
            saved = _state(m, opt)
        assert rolled == (step == 4)
    _assert_same(saved, _state(m, opt))
    assert len(mon.events) == 1 and mon.events[0].grown > 0
    assert sc.n_protected() == mon.events[0].grown
    # the next step from the restored state equals a step from the saved state
    m2 = _net()
    m2.load_state_dict(saved["m"])
    opt2 = torch.optim.AdamW(m2.parameters(), lr=0.05)
    opt2.load_state_dict(saved["o"])
    for mm, oo in ((m, opt), (m2, opt2)):
        oo.zero_grad()
        _loss(mm, 9).backward()
    sc.remove()  # compare the plain optimizer step
    opt.step()
    opt2.step()
    _assert_same(_state(m2, opt2), _state(m, opt))


def test_canary_grows_mask_from_most_moved_elements():
    m = _net()
    opt = torch.optim.SGD(m.parameters(), lr=0.0)
    sc = UpdateScaler(m, opt, {})
    scores = iter([{"cap": 1.0}, {"cap": 0.0}])
    mon = CanaryMonitor(m, opt, lambda _m: next(scores), every=1, tol=0.1, scaler=sc, grow_frac=1 / 83)
    mon.start()
    with torch.no_grad():
        m[2].bias[1] += 5.0  # the single element that moved
    assert mon.step(1)
    assert sc.scales["2.bias"][1] == 0.01
    assert sc.n_protected() == 1
    assert m[2].bias[1] == mon._snap["model"]["2.bias"][1]


def test_ewc_penalty_matches_hand_computation():
    m = nn.Linear(2, 1, bias=True)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[1.0, -2.0]]))
        m.bias.fill_(0.5)
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    y = torch.tensor([1.0, 0.0, -1.0])

    def ll(out, t):  # Gaussian log-likelihood up to a constant: -(out - t)^2 / 2
        return -0.5 * (out[0] - t) ** 2

    F = fisher_diag(m, x, ll, y, batch_size=2)
    # per-example grad of ll: -(w.x + b - t) * (x, 1)
    r = x @ torch.tensor([1.0, -2.0]) + 0.5 - y  # residuals: 0.5, -3.5, -1.5
    gw = -r[:, None] * x
    gb = -r
    torch.testing.assert_close(F["weight"], gw.pow(2).mean(0, keepdim=True))
    torch.testing.assert_close(F["bias"], gb.pow(2).mean(0, keepdim=True))
    ewc = EWC(m, F, lam=3.0)
    with torch.no_grad():
        m.weight.add_(torch.tensor([[0.1, -0.2]]))
        m.bias.add_(0.3)
    fw, fb = F["weight"][0], F["bias"][0]
    hand = 1.5 * (fw[0] * 0.1**2 + fw[1] * 0.2**2 + fb * 0.3**2)
    torch.testing.assert_close(ewc.penalty(m), hand)
    ewc.penalty(m).backward()  # differentiable
    torch.testing.assert_close(m.bias.grad, 3.0 * fb * torch.tensor([0.3]))
