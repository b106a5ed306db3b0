"""A per-task ARC learner: shared D4-equivariant encoder, per-example adapters, sparse attention among
the demonstration pairs, a canonical morphism f*, and the group-aware homotopy distance.

For a task with N demonstration pairs (x_i, y_i), all pairs are one padded batch:

    h_j      = E(x_j)                               shared equivariant encoder, (C, 8, H, W) per pair
    z_i      = W_z [pool(h_i), hist(x_i), hist(y_i)] D4-invariant summary of pair i
    a        = z + SparseAttn(z)                    top-k attention among the pairs (no self-edges)
    f_i(x)   = head(E(x) + U_i D_i a_i)             individual morphism: low-rank adapter D_i (D x r), U_i (r x C)
    f*(x)    = head*(E(x) + W_c mean_i a_i)         canonical morphism (its own head); predicts test outputs

Both heads may break the symmetry (``GridHead(breaking=True)``); the encoder never does. The
homotopy distance (``homotopy_distance``) is

    d_H(f*, f_i) = E_{x, g in D4} [ ||f*(x) - f_i(x)||^2 + ||f*(g.x) - g.f*(x)||^2 ],

x over the task's demonstration inputs, g uniform over all 8 elements (an exact mean, so the value
does not depend on how many elements are sampled), ||.||^2 the squared Euclidean norm over the 10
colour logits averaged over the grid's pixels. It is not a metric: d_H(f, f) is f's equivariance
defect, 0 only for an equivariant f.

Training (``fit``) minimises  l_r * CE(f_i(x_i), y_i) + l_h * mean_i d_H(f*, f_i) + l_c * CE(f*(x_i), y_i)
with (l_r, l_h, l_c) = (50, 0.01, 1) in phase 1 (fit each example) and (1, 100, 50) in phase 2 (pull
the f_i onto f*); Adam, gradient norm clipped to 1. Cross-entropy replaces the write-up's MSE because
ARC colours are categorical.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from geoformer.data import arc as A
from geoformer.geometry import d4
from geoformer.models.d4_layers import D4Encoder, GridHead, invariant_pool


@dataclass
class LearnerConfig:
    channels: int = 8  # encoder width per orientation (x 8 orientation slots)
    depth: int = 4  # residual group-conv blocks, dilations 1, 2, 4, ...
    hidden: int = 32  # head width
    feat_dim: int = 32  # example summary width
    adapter_rank: int = 4
    top_k: int = 5  # neighbours per example; dense when top_k >= N - 1
    tau: float = 1.0  # attention temperature
    steps: int = 300  # step budget per task (phase 1 + phase 2); deterministic
    phase1_frac: float = 0.5
    lr: float = 3e-3  # shared encoder, attention, individual head
    lr_individual: float = 3e-3  # adapters
    lr_canonical: float = 3e-3  # canonical head and projection
    clip: float = 1.0
    weight_decay: float = 0.0  # decoupled (AdamW); 0 = Adam as in the write-up
    w_phase1: tuple[float, float, float] = (50.0, 0.01, 1.0)  # (l_r, l_h, l_c)
    w_phase2: tuple[float, float, float] = (1.0, 100.0, 50.0)
    breaking: bool = True  # heads may learn direction-dependent rules
    early_stop: bool = True  # stop once f* reproduces every demonstration output exactly ...
    margin_steps: int = 60  # ... and has kept training this many steps since it first did
    check_every: int = 10
    tta: bool = True  # D4 test-time augmentation + voting
    skip: bool = True  # the heads also see each pixel's input colour (see D4Encoder)

    def to_dict(self) -> dict:
        return asdict(self)


class ExampleAttention(nn.Module):
    """``a = z + softmax(mask(QK^T / (tau sqrt(D)))) V`` over the N example summaries; the diagonal is
    masked and, when ``top_k < N - 1``, each row keeps only its ``top_k`` largest scores."""

    def __init__(self, dim: int, top_k: int, tau: float = 1.0):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.top_k, self.tau = top_k, tau

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        n, d = z.shape
        s = self.q(z) @ self.k(z).T / (self.tau * math.sqrt(d))
        s = s.masked_fill(torch.eye(n, dtype=torch.bool, device=z.device), float("-inf"))
        if self.top_k < n - 1:
            kth = s.topk(self.top_k, dim=-1).values[:, -1:]
            s = s.masked_fill(s < kth, float("-inf"))
        return s

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape[0] == 1:  # no other example to attend to
            return z
        return z + torch.softmax(self.scores(z), dim=-1) @ self.v(z)


class ArcLearner(nn.Module):
    def __init__(self, n_examples: int, cfg: LearnerConfig | None = None):
        super().__init__()
        cfg = cfg or LearnerConfig()
        self.cfg, self.n = cfg, n_examples
        d, r = cfg.feat_dim, cfg.adapter_rank
        self.encoder = D4Encoder(A.IN_CHANNELS, cfg.channels, cfg.depth, skip=cfg.skip)
        c = self.encoder.out_channels
        self.embed = nn.Linear(c + 2 * A.N_COLOURS, d)
        self.attention = ExampleAttention(d, cfg.top_k, cfg.tau)
        # random (not zero) adapters: the individual morphisms start apart, as in the write-up
        self.adapter_down = nn.Parameter(torch.randn(n_examples, d, r) / math.sqrt(d))
        self.adapter_up = nn.Parameter(torch.randn(n_examples, r, c) / math.sqrt(r))
        self.canonical_proj = nn.Linear(d, c)
        self.head = GridHead(c, A.N_COLOURS, cfg.hidden, cfg.breaking)
        self.canonical_head = GridHead(c, A.N_COLOURS, cfg.hidden, cfg.breaking)

    def param_groups(self) -> list[dict]:
        cfg = self.cfg
        individual = [self.adapter_down, self.adapter_up]
        canonical = [*self.canonical_proj.parameters(), *self.canonical_head.parameters()]
        ids = {id(p) for p in individual + canonical}
        shared = [p for p in self.parameters() if id(p) not in ids]
        return [
            {"params": shared, "lr": cfg.lr},
            {"params": individual, "lr": cfg.lr_individual},
            {"params": canonical, "lr": cfg.lr_canonical},
        ]

    def context(self, f, mask, hist_in, hist_out) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example biases ``(N, C)`` for the f_i and the canonical bias ``(C,)`` for f*."""
        z = self.embed(torch.cat([invariant_pool(f, mask), hist_in, hist_out], dim=1))
        a = self.attention(z)
        bias = torch.einsum("nd,ndr,nrc->nc", a, self.adapter_down, self.adapter_up)
        return bias, self.canonical_proj(a.mean(dim=0))

    def individual(self, f, mask, bias):
        """f_i on encoded grids ``f (B, C, 8, H, W)`` with per-grid biases ``(B, C)``."""
        return self.head(f + bias[:, :, None, None, None], mask)

    def canonical(self, f, mask, bias_star):
        return self.canonical_head(f + bias_star[None, :, None, None, None], mask)

    def homotopy_terms(self, f, mask, bias, bias_star, can_logits):
        """``d_H(f*, f_i)`` for every i, shape (N,), with x over the N encoded demonstration inputs.

        Uses the encoder's exact equivariance, ``E(g.x) = g.E(x)``, so the 8 transformed inputs need no
        second encoder pass (tests check this equals :func:`homotopy_distance`)."""
        n = f.shape[0]
        fb = (f.unsqueeze(0) + bias[:, None, :, None, None, None]).flatten(0, 1)  # (i, j) pairs
        ind = self.head(fb, mask.repeat(n, 1, 1, 1)).view(n, n, *can_logits.shape[1:])
        geo = per_pixel_sq(ind - can_logits.unsqueeze(0), mask.unsqueeze(0)).mean(dim=1)  # (N,)
        eq = can_logits.new_zeros(())
        for g in range(1, d4.ORDER):  # g = e contributes 0; the mean is still over all 8
            mg = d4.act(mask, g)
            lhs = self.canonical(d4.act_regular(f, g), mg, bias_star)
            eq = eq + per_pixel_sq(lhs - d4.act(can_logits, g), mg).mean()
        return geo + eq / d4.ORDER


def per_pixel_sq(d: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``||d||^2`` per grid: squared norm over the channel axis (-3), mean over the mask's pixels."""
    return (d.pow(2).sum(dim=-3) * mask.squeeze(-3)).sum(dim=(-1, -2)) / mask.sum(dim=(-1, -2, -3)).clamp_min(
        1.0
    )


def homotopy_distance(f_star, f_i, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Reference ``d_H(f*, f_i) = E_{x, g}[ ||f*(x) - f_i(x)||^2 + ||f*(g.x) - g.f*(x)||^2 ]``.

    ``f_star`` and ``f_i`` map ``(x (B, C_in, H, W), mask (B, 1, H, W))`` to logits ``(B, K, H, W)``;
    the mean runs over the B grids and all 8 elements of D4."""
    ys = f_star(x, mask)
    geo = per_pixel_sq(ys - f_i(x, mask), mask).mean()
    eq = torch.stack(
        [
            per_pixel_sq(f_star(d4.act(x, g), d4.act(mask, g)) - d4.act(ys, g), d4.act(mask, g)).mean()
            for g in range(d4.ORDER)
        ]
    ).mean()
    return geo + eq


# ----------------------------------------------------------------------------- one task


@dataclass
class TaskBatch:
    """The demonstration pairs of one task as one padded batch."""

    x: torch.Tensor  # (N, 21, H, W)
    mask: torch.Tensor  # (N, 1, H, W) canvas
    y: torch.Tensor  # (N, H, W) colour targets, -100 off the output
    out_mask: torch.Tensor  # (N, 1, H, W)
    hist_in: torch.Tensor  # (N, 10)
    hist_out: torch.Tensor  # (N, 10)

    @classmethod
    def from_pairs(cls, pairs) -> TaskBatch:
        x, mask = A.encode([A.canvas(i, o.shape) for i, o in pairs])
        y, out_mask = A.encode_targets([o for _, o in pairs], tuple(x.shape[-2:]))
        return cls(
            x, mask, y, out_mask, A.colour_hist([i for i, _ in pairs]), A.colour_hist([o for _, o in pairs])
        )


def _ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over each output's pixels, then over outputs (grids weigh the same)."""
    ce = F.cross_entropy(logits, y, ignore_index=-100, reduction="none")
    n = (y != -100).sum(dim=(-1, -2)).clamp_min(1)
    return (ce.sum(dim=(-1, -2)) / n).mean()


@dataclass
class FitResult:
    steps: int
    fitted: bool  # f* reproduces every demonstration output exactly
    stopped_by: str  # "steps" | "fitted" | "time"
    seconds: float
    trajectory: list[dict] = field(default_factory=list)


def fit(
    model: ArcLearner,
    batch: TaskBatch,
    *,
    deadline: float | None = None,
    cpu_deadline: float | None = None,
    log_every: int = 0,
) -> FitResult:
    """The two-phase schedule for ``cfg.steps`` steps, or until ``deadline`` (a ``time.perf_counter()``
    value: wall clock) or ``cpu_deadline`` (a ``time.process_time()`` value: this process's CPU time)."""
    cfg = model.cfg
    opt = torch.optim.AdamW(model.param_groups(), weight_decay=cfg.weight_decay)
    n1 = int(round(cfg.steps * cfg.phase1_frac))
    t0 = time.perf_counter()
    traj: list[dict] = []
    fitted, stopped, step, first_fit = False, "steps", 0, None
    for step in range(cfg.steps + 1):
        phase = 1 if step < n1 else 2
        lr_, lh, lc = cfg.w_phase1 if phase == 1 else cfg.w_phase2
        f = model.encoder(batch.x, batch.mask)
        bias, bias_star = model.context(f, batch.mask, batch.hist_in, batch.hist_out)
        ind = model.individual(f, batch.mask, bias)
        can = model.canonical(f, batch.mask, bias_star)
        l_r, l_c = _ce(ind, batch.y), _ce(can, batch.y)
        d_h = model.homotopy_terms(f, batch.mask, bias, bias_star, can).mean()
        check = step % cfg.check_every == 0 or step == cfg.steps
        if check or (log_every and step % log_every == 0):
            with torch.no_grad():
                valid = batch.y != -100
                fitted = bool(((can.argmax(1) == batch.y) | ~valid).all())
            if log_every and (step % log_every == 0 or step == cfg.steps):
                traj.append(
                    dict(
                        step=step,
                        phase=phase,
                        d_h=d_h.item(),
                        loss_r=l_r.item(),
                        loss_c=l_c.item(),
                        fitted=fitted,
                    )
                )
            if fitted and first_fit is None:
                first_fit = step
            if cfg.early_stop and fitted and step - first_fit >= cfg.margin_steps:
                stopped = "fitted"
                break
        if step == cfg.steps:
            break
        if (deadline is not None and time.perf_counter() > deadline) or (
            cpu_deadline is not None and time.process_time() > cpu_deadline
        ):
            stopped = "time"
            break
        loss = lr_ * l_r + lh * d_h + lc * l_c
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
    return FitResult(
        steps=step, fitted=fitted, stopped_by=stopped, seconds=time.perf_counter() - t0, trajectory=traj
    )


def _act_np(grid: np.ndarray, g: int) -> np.ndarray:
    return d4.act(torch.from_numpy(np.ascontiguousarray(grid)), g).numpy()


@torch.no_grad()
def predict(
    model: ArcLearner,
    batch: TaskBatch,
    test_input: np.ndarray,
    out_shape: tuple[int, int],
    *,
    tta: bool = True,
    attempts: int = 2,
) -> list[np.ndarray]:
    """Up to ``attempts`` distinct grids of ``out_shape`` from f*, voted over the 8 D4 views of the test
    input (each prediction mapped back by g^{-1}); ties go to the higher mean confidence."""
    model.eval()
    f = model.encoder(batch.x, batch.mask)
    _, bias_star = model.context(f, batch.mask, batch.hist_in, batch.hist_out)
    gs = list(range(d4.ORDER)) if tta else [d4.IDENTITY]
    shapes = [d4.act_shape(out_shape, g) for g in gs]
    x, mask = A.encode([A.canvas(_act_np(test_input, g), s) for g, s in zip(gs, shapes, strict=True)])
    logits = model.canonical(model.encoder(x, mask), mask, bias_star)
    prob, pred = torch.softmax(logits, dim=1).max(dim=1)
    votes: Counter = Counter()
    conf: dict[bytes, float] = {}
    grids: dict[bytes, np.ndarray] = {}
    for k, (g, (h, w)) in enumerate(zip(gs, shapes, strict=True)):  # 8 views, not pixels
        grid = d4.act(pred[k, :h, :w], d4.inverse(g)).numpy()
        key = grid.tobytes() + bytes(grid.shape)
        votes[key] += 1
        conf[key] = conf.get(key, 0.0) + float(prob[k, :h, :w].mean())
        grids[key] = grid
    ranked = sorted(votes, key=lambda k: (-votes[k], -conf[k]))
    model.train()
    return [grids[k] for k in ranked[:attempts]]


def solve_task(
    task: A.ArcTask,
    cfg: LearnerConfig | None = None,
    *,
    seed: int = 0,
    budget_s: float | None = None,
    budget_cpu_s: float | None = None,
) -> dict:
    """Test-time training on the demonstration pairs, then 2 attempts per test input.

    ``budget_s`` caps wall-clock seconds and ``budget_cpu_s`` this process's CPU seconds (load-independent
    on a shared machine); training stops at 90% of either, after ``cfg.steps`` steps, or on early stop."""
    cfg = cfg or LearnerConfig()
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    batch = TaskBatch.from_pairs(task.train)
    model = ArcLearner(len(task.train), cfg)
    # 90% of either budget for training, the rest for prediction
    deadline = None if budget_s is None else t0 + 0.9 * budget_s
    cpu_deadline = None if budget_cpu_s is None else time.process_time() + 0.9 * budget_cpu_s
    res = fit(model, batch, deadline=deadline, cpu_deadline=cpu_deadline)
    attempts, rules = [], []
    for test_in, _ in task.test:
        shape, rule = A.predict_size(task.train, test_in)
        attempts.append(predict(model, batch, test_in, shape, tta=cfg.tta))
        rules.append(rule)
    return {
        "attempts": attempts,
        "size_rules": rules,
        "fit": {
            "steps": res.steps,
            "fitted": res.fitted,
            "stopped_by": res.stopped_by,
            "seconds": res.seconds,
        },
    }
