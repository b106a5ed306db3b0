"""A GPT in one file (the nanoGPT recipe), with self-attention looked up by name.

pre-norm blocks: x + attn(ln(x)), x + mlp(ln(x)); tied input/output embeddings; GPT-2 init
(N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layer)). The attention kind is any
name in :mod:`geoformer.attention`; its own options go in ``GPTConfig.attn``.

The defaults are nanoGPT's recipe. The modern recipe (modded-nanogpt's small-scale changes; presets
``*_modern``) is ``norm = "rmsnorm"``, ``pos = "rope"`` (rotary q/k instead of learned positions), ``qk_norm``,
``mlp = "relu2"`` (ReLU squared) and ``zero_init_proj`` (residual projections start at zero), trained with
``train.optimizer = "muon"``. Rotary embeddings and QK-norm need a kind whose logits are q . k; the others
(gauge_kl, hyperbolic, fisher_rao, quantum) keep learned positions (``pos = "learned"``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from geoformer import attention


@dataclass
class GPTConfig:
    vocab_size: int = 0  # 0 = take it from the data
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False  # biases in Linear and LayerNorm layers
    attention: str = "sdpa"  # a registered attention kind
    attn: dict[str, Any] = field(default_factory=dict)  # that kind's own options
    init_std: float = 0.02
    arch: str = "gpt"  # a registered model (geoformer.models.names()): "gpt" | "levels"
    levels: dict[str, Any] = field(default_factory=dict)  # LevelOptions for arch = "levels"
    norm: str = "layernorm"  # layernorm | rmsnorm
    pos: str = "learned"  # learned (position embeddings) | rope (rotary q/k) | none
    qk_norm: bool = False  # RMS-normalise q and k per head
    mlp: str = "gelu"  # gelu | relu2 (ReLU squared)
    zero_init_proj: bool = False  # residual projections (attn and MLP c_proj) start at zero

    def validate(self) -> None:
        """One-line errors for the recipe options."""
        from geoformer.errors import GeoformerError

        for key, value, known in (("norm", self.norm, NORMS), ("pos", self.pos, POSITIONS), ("mlp", self.mlp, ACTIVATIONS)):
            if value not in known:
                raise GeoformerError(f"unknown model.{key} {value!r}; known: {', '.join(known)}")
        if (self.pos == "rope" or self.qk_norm) and not getattr(attention.get(self.attention), "dot_product", False):
            raise GeoformerError(
                f"model.pos = rope and model.qk_norm need an attention kind with q . k logits; {self.attention!r} has "
                "none (use model.pos = learned and model.qk_norm = false)"
            )


NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "rope", "none")
ACTIVATIONS = ("gelu", "relu2")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run a block with ``model`` in eval mode (no dropout), then restore its train/eval flag, also on error."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (``nn.LayerNorm`` cannot drop only the bias)."""

    def __init__(self, ndim: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class RMSNorm(nn.Module):
    """x / rms(x) * gain (no centring, no bias)."""

    def __init__(self, ndim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.weight.shape, self.weight, 1e-6)


def make_norm(cfg: GPTConfig, ndim: int | None = None) -> nn.Module:
    ndim = ndim or cfg.n_embd
    return RMSNorm(ndim) if cfg.norm == "rmsnorm" else LayerNorm(ndim, cfg.bias)


class ReLU2(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x).square()


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or 4 * cfg.n_embd
        self.c_fc = nn.Linear(cfg.n_embd, hidden, bias=cfg.bias)
        self.gelu = ReLU2() if cfg.mlp == "relu2" else nn.GELU()  # named gelu: state dicts keep their keys
        self.c_proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


def build_attention(cfg: GPTConfig, kind: str | None = None, options: dict[str, Any] | None = None) -> nn.Module:
    """The attention of one block, with the model's rotary / QK-norm settings applied."""
    attn = attention.build(
        kind or cfg.attention,
        cfg.n_embd,
        cfg.n_head,
        dropout=cfg.dropout,
        bias=cfg.bias,
        block_size=cfg.block_size,
        options=cfg.attn if options is None else options,
    )
    if cfg.pos == "rope" or cfg.qk_norm:
        attn.set_qk_features(rope=cfg.pos == "rope", qk_norm=cfg.qk_norm, max_len=cfg.block_size)
    return attn


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = make_norm(cfg)
        self.attn = build_attention(cfg)
        self.ln_2 = make_norm(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        if cfg.vocab_size < 1:
            raise ValueError("GPTConfig.vocab_size must be set (>= 1)")
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.pos == "learned" else None
        self.drop = nn.Dropout(cfg.dropout)
        self._build_layers(cfg)
        self.ln_f = make_norm(cfg)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2: residual projections shrink with depth
                nn.init.normal_(p, mean=0.0, std=cfg.init_std / math.sqrt(2 * cfg.n_layer))
                if cfg.zero_init_proj:  # after the draw, so the other weights' init is the same either way
                    nn.init.zeros_(p)

    def _build_layers(self, cfg: GPTConfig) -> None:
        """The trunk between the embeddings and the final norm (subclasses add their own modules here, so
        they are created, registered and initialised in the same order as the blocks)."""
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)

    def num_params(self) -> int:
        """Trainable parameters (tied weights counted once)."""
        return sum(p.numel() for p in self.parameters())

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self._embed(idx)
        for block in self.blocks:
            x = block(x)
        return self._head(x, targets)

    def _embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Token plus position embeddings (B, T) -> (B, T, C), with dropout."""
        T = idx.size(1)
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T, device=idx.device))
        return self.drop(x)

    def _head(
        self, x: torch.Tensor, targets: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Final norm, tied output projection and the cross-entropy loss (None without targets)."""
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            flat = logits.view(-1, logits.size(-1))
            if flat.dtype in (torch.float16, torch.bfloat16):  # the loss in float32; float64 stays float64
                flat = flat.float()
            loss = F.cross_entropy(flat, targets.reshape(-1))
        return logits, loss

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups as in nanoGPT: decay matrices and embeddings, not gains and biases."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample ``max_new_tokens`` continuations of ``idx`` (B, T) autoregressively."""
        for _ in range(max_new_tokens):
            ctx = idx[:, -self.config.block_size :]
            logits, _ = self(ctx)
            logits = logits[:, -1, :] / max(temperature, 1e-8)
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("inf")
            probs = F.softmax(logits, dim=-1)
            nxt = torch.multinomial(probs, num_samples=1, generator=generator)
            idx = torch.cat((idx, nxt), dim=1)
        return idx
