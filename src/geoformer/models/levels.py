"""A level-structured GPT: local attention (H0), sparse top-k attention (H1), global attention (H2),
joined by learned linear transition maps that are pushed towards a cochain complex.

The residual stream passes through the levels in order. Level k is a stack of ordinary pre-norm
blocks whose attention kind is ``kinds[k]`` (default ``local``, ``topk``, ``sdpa``). Between level
k and level k+1 the whole stream is carried by a transition map

    x  <-  W_k norm(x),      norm(x) = (x - mean(x)) / std(x)  (LayerNorm without a gain),

with W_k (n_embd x n_embd, no bias) learned. Up to the per-token positive scale 1/std(x), which cannot
change whether a composite vanishes, the linear map the network applies is d_k = W_k P, where
P = I - 11^T/n centres the features. So ``C_0 -d_0-> C_1 -d_1-> C_2`` (C_k = R^n_embd) is a chain of
linear maps and d_1 d_0 = W_1 P W_0 P is exactly the composite of the two transitions as applied
(without the level-1 blocks between them). A cochain complex requires ``d_{k+1} d_k = 0``; the
*exactness penalty* (added to the training loss with weight ``exactness``) measures how far the maps
are from it, scale-free so that shrinking the maps cannot satisfy it:

    E = mean_k ||d_{k+1} d_k||_F^2 / (sigma_max(d_{k+1})^2 ||d_k||_F^2)   in [0, 1].

E = 0 iff im d_k lies in ker d_{k+1}; E = 1 when d_{k+1} passes all of d_k's output at its top gain
(e.g. W_k = I, the initialisation). The norm has no gain because a diagonal gain between d_k and
d_{k+1} would let the network undo a vanishing composite that the penalty sees. The penalty enforces only half of
exactness (im d_k = ker d_{k+1}); :mod:`geoformer.diagnostics.exactness` measures the other half
(the cohomology dimension dim ker d_{k+1} - rank d_k). docs/LEVELS.md discusses the reading.

With ``match_params`` (default) the MLP hidden width shrinks so the parameter count matches a
:class:`~geoformer.models.gpt.GPT` with the same ``n_layer`` and ``n_embd`` (within one hidden unit
per block). ``transitions = false`` drops the maps: a plain GPT with the level attention schedule,
the ablation that separates "three attention kinds" from "transition maps".

``exact = true`` makes the sequence exact by construction instead of by penalty (3 levels only):
with Q (n x r) orthonormal, orthogonal to the all-ones vector, spanning a learned subspace
(Q = QR([1, Z])[:, 1:], Z learned) and Pi = Q Q^T,

    d_0 = Pi W_0 P,     d_1 = W_1 (I - Pi) P,

so d_1 d_0 = W_1 (I - Pi) Pi W_0 P = 0 exactly, and generically ker d_1 = span(Q) + span(1) while
im d_0 = span(Q): exact on the centred space (the extra kernel direction 1 is the norm's centring).
Level 1 then receives an r-dimensional image of level 0, and level 2 sees only what level 1 wrote
outside that image.

The penalty is added only in training mode, so evaluation losses are plain cross-entropy and are
comparable with the baseline's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from geoformer import attention
from geoformer.coerce import coerce_dataclass
from geoformer.errors import GeoformerError
from geoformer.models.gpt import GPT, MLP, GPTConfig, build_attention, make_norm


@dataclass
class LevelOptions:
    kinds: list[str] = field(default_factory=lambda: ["local", "topk", "sdpa"])  # attention kind per level
    layers: list[int] = field(default_factory=list)  # blocks per level; [] = split n_layer evenly
    window: int = 16  # the `local` kind's window
    k: int = 8  # the `topk` kind's kept keys
    exactness: float = 0.1  # weight of the exactness penalty E in the training loss
    transitions: bool = True  # False: no transition maps (attention schedule only; an ablation)
    exact: bool = False  # exact by construction (3 levels): d_1 d_0 = 0 and im d_0 = ker d_1 (see below)
    rank: int = 0  # rank of d_0 when exact; 0 = n_embd // 2
    match_params: bool = True  # shrink the MLP so the parameter count matches GPT(n_layer, n_embd)


def level_options(cfg: GPTConfig) -> LevelOptions:
    return coerce_dataclass(LevelOptions, cfg.levels, where="model.levels")


def split_layers(n_layer: int, n_levels: int) -> list[int]:
    """Blocks per level when not given: as even as possible, lower levels take the remainder."""
    base, rem = divmod(n_layer, n_levels)
    return [base + (i < rem) for i in range(n_levels)]


def exactness_penalty(maps: list[torch.Tensor], eps: float = 1e-12) -> torch.Tensor:
    """E = mean_k ||d_{k+1} d_k||_F^2 / (sigma_max(d_{k+1})^2 ||d_k||_F^2), in [0, 1].

    ``maps[k]`` is the matrix of d_k (out x in, as ``nn.Linear.weight``). Invariant to rescaling
    either map; zero iff every composite d_{k+1} d_k vanishes. Needs at least two maps.
    """
    if len(maps) < 2:
        raise ValueError("the exactness penalty needs at least two consecutive maps")
    terms = []
    for d0, d1 in zip(maps[:-1], maps[1:], strict=True):
        comp = (d1 @ d0).square().sum()
        top = torch.linalg.matrix_norm(d1, ord=2).square()
        terms.append(comp / (top * d0.square().sum()).clamp_min(eps))
    return torch.stack(terms).mean()


class LevelBlock(nn.Module):
    """Pre-norm block (x + attn(ln x), x + mlp(ln x)) with a given attention kind and MLP width."""

    def __init__(self, cfg: GPTConfig, kind: str, options: dict[str, Any], hidden: int) -> None:
        super().__init__()
        self.ln_1 = make_norm(cfg)
        self.attn = build_attention(cfg, kind, options)
        self.ln_2 = make_norm(cfg)
        self.mlp = MLP(cfg, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


def _kind_options(kind: str, opts: LevelOptions) -> dict[str, Any]:
    return {"local": {"window": opts.window}, "topk": {"k": opts.k}}.get(kind, {})


def exact_rank(cfg: GPTConfig, opts: LevelOptions) -> int:
    return opts.rank or cfg.n_embd // 2


def matched_hidden(cfg: GPTConfig, opts: LevelOptions) -> int:
    """MLP hidden width that makes the level model's parameter count match GPT(cfg) most closely."""
    C, L = cfg.n_embd, cfg.n_layer
    if not (opts.match_params and opts.transitions):
        return 4 * C
    extra = (len(opts.kinds) - 1) * C * C  # the W_k (the transition norms have no parameters)
    if opts.exact:
        extra += C * exact_rank(cfg, opts)  # Z
    per_unit = L * (2 * C + (1 if cfg.bias else 0))  # one hidden unit in every block's MLP
    return 4 * C - round(extra / per_unit)


class LevelGPT(GPT):
    """GPT whose blocks are grouped into levels joined by transition maps; see the module docstring.

    Reuses GPT's embeddings, head, init, ``param_groups``, ``num_params`` and ``generate``; overrides
    ``_build_layers`` (the level blocks and the transition maps) and ``forward``.
    """

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__(cfg)  # embeddings, _build_layers, head, GPT-2 init
        with torch.no_grad():
            for d in self.trans:  # start as "no transition": every W_k the identity (E = 1)
                d.weight.copy_(torch.eye(cfg.n_embd))
        self.last_terms: dict[str, torch.Tensor] = {}

    def _build_layers(self, cfg: GPTConfig) -> None:
        """The level blocks, the transition maps W_k and (``exact``) the basis of Z, in that order."""
        self.check_config(cfg)
        self.opts = opts = level_options(cfg)
        self.layers = list(opts.layers) or split_layers(cfg.n_layer, len(opts.kinds))
        self.hidden = matched_hidden(cfg, opts)
        C = cfg.n_embd
        self.level_of: list[int] = [lvl for lvl, n in enumerate(self.layers) for _ in range(n)]
        self.blocks = nn.ModuleList(
            LevelBlock(cfg, opts.kinds[lvl], _kind_options(opts.kinds[lvl], opts), self.hidden)
            for lvl in self.level_of
        )
        n_maps = len(opts.kinds) - 1 if opts.transitions else 0
        self.trans = nn.ModuleList(nn.Linear(C, C, bias=False) for _ in range(n_maps))
        self.basis = (
            nn.Parameter(torch.randn(C, exact_rank(cfg, opts)) / math.sqrt(C)) if opts.exact else None
        )

    @staticmethod
    def check_config(cfg: GPTConfig) -> None:
        """One-line errors for bad ``model.levels`` options."""
        opts = level_options(cfg)
        for kind in opts.kinds:
            attention.get(kind)
        n = len(opts.kinds)
        if n < 2:
            raise GeoformerError("model.levels.kinds needs at least two levels")
        if opts.layers:
            if len(opts.layers) != n or any(x < 1 for x in opts.layers):
                raise GeoformerError(f"model.levels.layers needs {n} positive counts, got {opts.layers}")
            if sum(opts.layers) != cfg.n_layer:
                raise GeoformerError(
                    f"model.levels.layers {opts.layers} sums to {sum(opts.layers)}, not model.n_layer={cfg.n_layer}"
                )
        elif cfg.n_layer < n:
            raise GeoformerError(f"model.n_layer={cfg.n_layer} is fewer than the {n} levels")
        if opts.window < 1 or opts.k < 1:
            raise GeoformerError("model.levels.window and model.levels.k must be >= 1")
        if opts.exactness < 0:
            raise GeoformerError("model.levels.exactness must be >= 0")
        if opts.exact and (n != 3 or not opts.transitions):
            raise GeoformerError("model.levels.exact needs exactly 3 levels and transitions = true")
        if opts.exact and not 1 <= exact_rank(cfg, opts) <= cfg.n_embd - 2:
            raise GeoformerError(f"model.levels.rank must be in 1..n_embd-2, got {opts.rank}")
        if matched_hidden(cfg, opts) < 1:
            raise GeoformerError("model.levels.match_params leaves no MLP width; widen the model")

    def transition_maps(self) -> list[torch.Tensor]:
        """The linear maps d_k = W_k P the network applies between levels (out x in; P centres)."""
        if not self.trans:
            return []
        C = self.config.n_embd
        w = self.trans[0].weight
        eye = torch.eye(C, device=w.device, dtype=w.dtype)
        P = eye - 1.0 / C
        if self.basis is None:
            return [d.weight @ P for d in self.trans]
        pi = self._projector()
        return [pi @ self.trans[0].weight @ P, self.trans[1].weight @ (eye - pi) @ P]

    def _projector(self) -> torch.Tensor:
        """Pi = Q Q^T, Q orthonormal, orthogonal to the all-ones vector, spanning the learned Z."""
        C = self.config.n_embd
        ones = torch.full((C, 1), C**-0.5, device=self.basis.device, dtype=self.basis.dtype)
        q = torch.linalg.qr(torch.cat([ones, self.basis], dim=1)).Q[:, 1:]
        return q @ q.T

    def exactness(self) -> torch.Tensor:
        """The penalty E of the current maps (0 without transitions)."""
        if len(self.trans) < 2:
            return torch.zeros((), device=self.wte.weight.device)
        return exactness_penalty([w.float() for w in self.transition_maps()])

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self._embed(idx)
        pi = self._projector() if self.basis is not None else None
        prev = 0
        for block, lvl in zip(self.blocks, self.level_of, strict=True):
            if lvl != prev and self.trans:
                h = F.layer_norm(x, (x.size(-1),))
                if pi is not None and lvl == 2:
                    h = h - h @ pi  # (I - Pi) P x  (Pi is symmetric)
                x = self.trans[lvl - 1](h)
                if pi is not None and lvl == 1:
                    x = x @ pi  # Pi W_0 P x
            prev = lvl
            x = block(x)
        logits, loss = self._head(x, targets)
        if loss is not None:
            if self.training and self.opts.exactness > 0 and len(self.trans) >= 2 and pi is None:
                pen = self.exactness()
                self.last_terms = {"ce": loss.detach(), "exactness": pen.detach()}
                loss = loss + self.opts.exactness * pen
        return logits, loss


__all__ = ["LevelGPT", "LevelOptions", "exactness_penalty", "matched_hidden", "split_layers"]
