r"""Adaptive tiled attention: full resolution where the attention mass is, one summary token per tile elsewhere.

The sequence is cut into ``nT = ceil(T / L)`` tiles of ``L = tile`` positions. For query tile ``i``:

1. **Score the causal key tiles cheaply.** Tile ``j`` is summarised by its mean key :math:`\bar k_j` and its
   size :math:`L_j`; the query tile by :math:`\bar q_i`, the mean of the ``L`` queries ending at the tile's
   first position :math:`iL` (queries :math:`iL-L+1 \dots iL`). The tile score is

   .. math:: S_{ij} = s\,\bar q_i\cdot\bar k_j + \log L_j, \qquad j < i,

   the logit a single token carrying the whole tile would get (``s`` the softmax scale). :math:`\bar q_i`
   uses no query after :math:`iL`, so the choice of tiles for a query at :math:`t \ge iL` depends on
   nothing after ``t``: the kernel stays causal (the mean over the *whole* query tile would leak the
   future of the tile into the selection).
2. **Refine.** The diagonal tile ``i`` (causal inside) and the ``refine - 1`` past tiles with the largest
   :math:`S_{ij}` are attended at full resolution.
3. **Summarise the rest.** Every other past tile ``j`` enters as one token with key :math:`\bar k_j`, value
   :math:`\bar v_j` (tile means) and logit :math:`s\,q_t\cdot\bar k_j + \log L_j`. The summary is exact when
   the keys of the tile are equal, and in general it is the logit of the mean key: the ``log L_j`` makes
   its weight that of ``L_j`` tokens at the tile's mean logit, a lower bound (Jensen) on the tile's true
   softmax mass.

With ``refine >= nT`` every causal tile is refined and no summary remains: the result *is* dense causal
attention (the tests check it to 1e-12 in float64). Per query there are ``refine * L + nT`` keys, so
memory is :math:`O(T(\mathrm{refine}\cdot L + T/L))`: linear in ``T`` while ``T <= refine * L^2``, and the
summary row grows as ``T/L`` beyond (a second, coarser level would be needed to stay linear for ever).

**Backends.** ``"gather"`` (the default, and the tested path on CPU) gathers the selected key tiles per
query tile, (B, H, nT, refine*L + nT, D), and runs one batched SDPA call with a per-block additive mask.
``"flex"`` builds a :class:`torch.nn.attention.flex_attention.BlockMask` from the same selection
(``BlockMask.from_kv_blocks``: O(nT^2) to build) with the summary tokens appended as extra key blocks and
their ``log L_j`` in a ``score_mod``. On CPU flex runs in eager mode, which materialises the full score
matrix (correct -- the tests compare it with ``"gather"`` -- but not sparse); on CUDA it is compiled with
``torch.compile`` into a block-sparse kernel. No GPU was available when this was written, so the CUDA flex
path is untested here.

**Left out, on purpose.**

* *Geometric (Ricci) flow on the tiling.* Ollivier-Ricci curvature of the attention graph needs an
  optimal-transport problem per edge (O(T^2) transport problems of size T each per head and layer), and
  the write-up gives neither a definition of how the flow should change the tiles nor a number to
  reproduce (its own implementation returns 0 without a connection). A flow that is neither cheap nor
  testable against a claim is not built; the density signal used here is the pooled-score softmax mass.
* *CPU/GPU routing by operation size.* Routing needs a measured crossover on the target GPU; none was
  available, so there is no threshold to encode and nothing is routed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from geoformer.attention.base import QKVAttention, causal_mask
from geoformer.attention.registry import register
from geoformer.errors import GeoformerError

BACKENDS = ("gather", "flex")


def _tiles(x: torch.Tensor, tile: int) -> torch.Tensor:
    """(..., T, D) -> (..., nT, L, D), zero-padded at the end."""
    T = x.size(-2)
    pad = -T % tile
    if pad:
        x = F.pad(x, (0, 0, 0, pad))
    return x.unflatten(-2, (x.size(-2) // tile, tile))


def tile_counts(T: int, tile: int, device=None) -> torch.Tensor:
    """Number of real positions in each tile, (nT,) (the last tile may be partial)."""
    nT = -(-T // tile)
    return (T - torch.arange(nT, device=device) * tile).clamp(max=tile)


def tile_summaries(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tile: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Per-tile summaries: selection queries :math:`\bar q_i` (mean of queries :math:`iL-L+1 \dots iL`),
    mean keys :math:`\bar k_j`, mean values :math:`\bar v_j` (each (..., nT, D)) and tile sizes (nT,)."""
    T = q.size(-2)
    counts = tile_counts(T, tile, q.device)
    n = counts.to(q.dtype).unsqueeze(-1)
    kbar = _tiles(k, tile).sum(-2) / n
    vbar = _tiles(v, tile).sum(-2) / n
    cs = q.cumsum(-2)
    start = torch.arange(counts.numel(), device=q.device) * tile
    hi = cs.index_select(-2, start)
    lo_idx = start - tile
    lo = cs.index_select(-2, lo_idx.clamp_min(0)) * (lo_idx >= 0).to(q.dtype).unsqueeze(-1)
    qn = (start - lo_idx.clamp_min(-1)).to(q.dtype).unsqueeze(-1)
    return (hi - lo) / qn, kbar, vbar, counts


def tile_selection(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, tile: int, refine: int, scale: float
) -> dict[str, torch.Tensor]:
    """Which key tiles each query tile sees at full resolution.

    Returns ``sel`` (..., nT, R) tile indices (the diagonal first, then the best ``R - 1`` past tiles by
    score), ``valid`` (..., nT, R) (False where a query tile has fewer than ``R - 1`` past tiles),
    ``refined`` (..., nT, nT) boolean, the tile ``scores`` (..., nT, nT) (``-inf`` where not a past tile),
    the summaries ``kbar``, ``vbar`` and the tile sizes ``counts``. ``R = min(refine, nT)``.
    """
    qbar, kbar, vbar, counts = tile_summaries(q, k, v, tile)
    nT = counts.numel()
    R = min(refine, nT)
    idx = torch.arange(nT, device=q.device)
    past = idx[None, :] < idx[:, None]  # (nT, nT): key tile j strictly before query tile i
    scores = scale * (qbar @ kbar.transpose(-2, -1)) + counts.to(q.dtype).log()
    scores = scores.masked_fill(~past, float("-inf"))
    diag = idx.view(nT, 1).expand(*scores.shape[:-2], nT, 1)
    if R > 1:
        best = scores.detach().topk(R - 1, dim=-1).indices
        sel = torch.cat([diag, best], dim=-1)
        valid = torch.cat([torch.ones_like(diag, dtype=torch.bool), best < idx.view(nT, 1)], dim=-1)
    else:
        sel, valid = diag, torch.ones_like(diag, dtype=torch.bool)
    # invalid slots (a query tile with fewer past tiles than R - 1) may hold any index, even the diagonal's:
    # point them at the diagonal so the scatter cannot clear a real entry
    refined = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, torch.where(valid, sel, diag), True)
    return {
        "sel": sel,
        "valid": valid,
        "refined": refined,
        "scores": scores,
        "kbar": kbar,
        "vbar": vbar,
        "counts": counts,
    }


def _gather_tiles(xt: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    """``xt`` (B, H, nT, L, D), ``sel`` (B, H, nT, R) -> (B, H, nT, R*L, D) by advanced indexing (its backward
    is an index_put into a tensor of ``xt``'s size: no (nT, nT) blow-up)."""
    B, H = xt.shape[:2]
    bi = torch.arange(B, device=xt.device).view(B, 1, 1, 1)
    hi = torch.arange(H, device=xt.device).view(1, H, 1, 1)
    g = xt[bi, hi, sel]  # (B, H, nT, R, L, D)
    return g.flatten(3, 4)


def _gather_backend(q, k, v, sel_info, *, tile, scale, coarse, dropout_p, score=None, fq=None):
    B, H, T, D = q.shape
    Dv = v.size(-1)  # the value width may differ from the query/key width (feature maps)
    sel, valid, refined, counts = sel_info["sel"], sel_info["valid"], sel_info["refined"], sel_info["counts"]
    nT = sel.shape[-2]
    qt, kt, vt = _tiles(q, tile), _tiles(k, tile), _tiles(v, tile)
    kf, vf = _gather_tiles(kt, sel), _gather_tiles(vt, sel)
    ar = torch.arange(tile, device=q.device)
    kpos = (sel.unsqueeze(-1) * tile + ar).flatten(-2)  # (B, H, nT, R*L)
    kval = valid.unsqueeze(-1).expand(*valid.shape, tile).flatten(-2)
    qpos = torch.arange(nT, device=q.device).view(nT, 1) * tile + ar  # (nT, L)
    keep = kval.unsqueeze(-2) & (kpos.unsqueeze(-2) <= qpos.unsqueeze(-1))  # (B, H, nT, L, R*L)
    zero = torch.zeros((), dtype=q.dtype, device=q.device)
    ninf = torch.full((), float("-inf"), dtype=q.dtype, device=q.device)
    bias = torch.where(keep, zero, ninf)
    if score is not None:
        return _explicit_tiles(
            qt,
            kf,
            vf,
            bias,
            sel_info,
            T=T,
            tile=tile,
            scale=scale,
            coarse=coarse,
            dropout_p=dropout_p,
            score=score,
            fq=fq,
        )
    if coarse and nT > 1:
        idx = torch.arange(nT, device=q.device)
        ckeep = (idx[None, :] < idx[:, None]) & ~refined  # (B, H, nT, nT)
        cbias = torch.where(ckeep, counts.to(q.dtype).log(), ninf).unsqueeze(-2).expand(B, H, nT, tile, nT)
        kf = torch.cat([kf, sel_info["kbar"].unsqueeze(2).expand(B, H, nT, nT, D)], dim=-2)
        vf = torch.cat([vf, sel_info["vbar"].unsqueeze(2).expand(B, H, nT, nT, Dv)], dim=-2)
        bias = torch.cat([bias, cbias], dim=-1)
    S = kf.size(-2)
    y = F.scaled_dot_product_attention(
        qt.reshape(B, H * nT, tile, D),
        kf.reshape(B, H * nT, S, D),
        vf.reshape(B, H * nT, S, Dv),
        attn_mask=bias.reshape(B, H * nT, tile, S),
        dropout_p=dropout_p,
        scale=scale,
    )
    return y.view(B, H, nT * tile, Dv)[:, :, :T]


def _explicit_tiles(qt, kf, vf, bias, sel_info, *, T, tile, scale, coarse, dropout_p, score, fq):
    """The gather path with refined logits from ``score`` and summary logits from the features ``fq``:
    explicit (B, H, nT, L, refine*L + nT) logits, softmax, values."""
    B, H, nT = qt.shape[:3]
    logits = score(qt, kf) + bias
    vf_all = vf
    if coarse and nT > 1:
        refined, counts = sel_info["refined"], sel_info["counts"]
        idx = torch.arange(nT, device=qt.device)
        ckeep = ((idx[None, :] < idx[:, None]) & ~refined).unsqueeze(-2)  # (B, H, nT, 1, nT)
        kbar = sel_info["kbar"].unsqueeze(2).transpose(-2, -1)  # (B, H, 1, F, nT): no per-tile copy
        cl = scale * (_tiles(fq, tile) @ kbar) + counts.to(qt.dtype).log()
        logits = torch.cat([logits, cl.masked_fill(~ckeep, float("-inf"))], dim=-1)
        vbar = sel_info["vbar"].unsqueeze(2).expand(B, H, nT, nT, vf.size(-1))
        vf_all = torch.cat([vf, vbar], dim=-2)
    p = torch.softmax(logits, dim=-1)
    if dropout_p > 0:
        p = F.dropout(p, dropout_p)
    return (p @ vf_all).flatten(2, 3)[:, :, :T]


_compiled_flex = None


def _flex_backend(q, k, v, sel_info, *, tile, scale, coarse, dropout_p):
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    if dropout_p > 0:
        raise GeoformerError("model.attn.backend='flex' does not support dropout; use backend='gather'")
    B, H, T, D = q.shape
    refined, counts = sel_info["refined"], sel_info["counts"]
    nT = refined.size(-1)
    Tp = nT * tile
    nC = -(-nT // tile) if coarse else 0  # key blocks holding the summary tokens
    pad_q = Tp - T
    qp = F.pad(q, (0, 0, 0, pad_q))
    kp = F.pad(k, (0, 0, 0, pad_q))
    vp = F.pad(v, (0, 0, 0, pad_q))
    if nC:
        cpad = nC * tile - nT
        kp = torch.cat([kp, F.pad(sel_info["kbar"], (0, 0, 0, cpad))], dim=-2)
        vp = torch.cat([vp, F.pad(sel_info["vbar"], (0, 0, 0, cpad))], dim=-2)
    used = torch.cat([refined, refined.new_ones(*refined.shape[:-1], nC)], dim=-1).to(torch.int32)
    kv_num = used.sum(-1).to(torch.int32)
    kv_idx = torch.argsort(1 - used, dim=-1, stable=True).to(torch.int32)
    logc = counts.to(q.dtype).log()
    refined_i = refined

    def mask_mod(b, h, qi, kv):
        qt_ = qi // tile
        fine = kv < Tp
        jf = (kv // tile).clamp(max=nT - 1)
        fine_ok = refined_i[b, h, qt_, jf] & (kv <= qi)
        jc = (kv - Tp).clamp(min=0, max=nT - 1)
        coarse_ok = (kv - Tp < nT) & (jc < qt_) & ~refined_i[b, h, qt_, jc]
        return torch.where(fine, fine_ok, coarse_ok)

    def score_mod(score, b, h, qi, kv):
        jc = (kv - Tp).clamp(min=0, max=nT - 1)
        return torch.where(kv >= Tp, score + logc[jc], score)

    block_mask = BlockMask.from_kv_blocks(
        kv_num, kv_idx, BLOCK_SIZE=(tile, tile), mask_mod=mask_mod, seq_lengths=(Tp, Tp + nC * tile)
    )
    fn = flex_attention
    if q.is_cuda:
        global _compiled_flex
        if _compiled_flex is None:
            _compiled_flex = torch.compile(flex_attention)
        fn = _compiled_flex
    y = fn(qp, kp, vp, score_mod=score_mod, block_mask=block_mask, scale=scale)
    return y[:, :, :T]


def tiled_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    tile: int,
    refine: int,
    scale: float | None = None,
    coarse: bool = True,
    dropout_p: float = 0.0,
    backend: str = "gather",
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    summary: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    r"""Adaptive tiled causal attention of ``q, k, v`` (B, H, T, D) (see the module docstring).

    Returns the output (B, H, T, Dv) and the selection (:func:`tile_selection`'s dict). ``scale`` defaults
    to ``1/sqrt(D)``; ``coarse=False`` drops the summary tokens (pure block-sparse attention).

    Kernels that are not ``q . k`` but a dot product of features, :math:`s(q, k) = \text{scale}\,
    \varphi(q)\cdot\varphi(k)`, pass ``score`` (the refined logits of query tiles (B, H, nT, L, D) against
    gathered keys (B, H, nT, S, D), computed however is cheapest) and ``summary = (phi(q), phi(k))``, used for
    the tile selection and the summary tokens (the mean feature gives the tile's mean logit exactly). Then
    the gather backend runs with explicit logits instead of SDPA, and ``flex`` is not available.
    """
    if tile < 1 or refine < 1:
        raise GeoformerError(
            f"tiled attention needs tile >= 1 and refine >= 1, got tile={tile}, refine={refine}"
        )
    if backend not in BACKENDS:
        raise GeoformerError(f"unknown tiled backend {backend!r}; known: {', '.join(BACKENDS)}")
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    if (score is None) != (summary is None):
        raise ValueError("tiled_attention: give both score and summary, or neither")
    fq, fk = (q, k) if summary is None else summary
    info = tile_selection(fq, fk, v, tile=tile, refine=refine, scale=scale)
    if score is not None:
        if backend != "gather":
            raise GeoformerError("a custom tile score runs on backend='gather' only")
        y = _gather_backend(
            q, k, v, info, tile=tile, scale=scale, coarse=coarse, dropout_p=dropout_p, score=score, fq=fq
        )
        return y, info
    run = _gather_backend if backend == "gather" else _flex_backend
    y = run(q, k, v, info, tile=tile, scale=scale, coarse=coarse, dropout_p=dropout_p)
    return y, info


def tiled_attention_weights(
    q: torch.Tensor,
    k: torch.Tensor,
    info: dict[str, torch.Tensor],
    *,
    tile: int,
    scale: float | None = None,
    coarse: bool = True,
    logits: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""The dense (B, H, T, T) matrix :math:`W` with ``tiled_attention(q, k, v) == W @ v`` (explicit, O(T^2)).

    Refined causal pairs get :math:`\exp(s\,q_t\cdot k_u)`, summarised tiles :math:`L_j\exp(s\,q_t\cdot\bar k_j)`
    shared equally by the tile's positions (since :math:`\bar v_j` is their mean); rows are normalised over
    both. ``logits`` (B, H, T, T) replaces :math:`s\,q_t\cdot k_u` for the refined pairs (a reference that
    computes them its own way). Used as the slow reference in tests and for diagnostics.
    """
    T = q.size(-2)
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    counts, refined = info["counts"], info["refined"]
    nT = counts.numel()
    tile_of = torch.arange(T, device=q.device) // tile  # (T,)
    fine_keep = refined[..., tile_of[:, None], tile_of[None, :]] & causal_mask(T, q.device)
    fine = scale * (q @ k.transpose(-2, -1)) if logits is None else logits
    fine = fine.masked_fill(~fine_keep, float("-inf"))
    parts = [fine]
    if coarse:
        idx = torch.arange(nT, device=q.device)
        ckeep = (idx[None, :] < tile_of[:, None]) & ~refined[..., tile_of, :]  # (..., T, nT)
        cl = scale * (q @ info["kbar"].transpose(-2, -1)) + counts.to(q.dtype).log()
        parts.append(cl.masked_fill(~ckeep, float("-inf")))
    p = torch.softmax(torch.cat(parts, dim=-1), dim=-1)
    w = p[..., :T]
    if coarse:
        w = w + (p[..., T:] / counts.to(q.dtype))[..., tile_of]
    return w


@register("tiled")
class TiledAttention(QKVAttention):
    """Causal attention at full resolution on the ``refine`` most promising key tiles per query tile and one
    summary token for each other past tile (see the module docstring for the equations).

    ``get_metrics()`` describes the last forward: which tiles were refined, for each (batch, head, query
    tile), and how much of the pooled-score mass they hold.
    """

    dot_product = True

    @dataclass
    class Options:
        tile: int = 16  # positions per tile
        refine: int = 2  # key tiles per query tile at full resolution (the diagonal included)
        coarse: bool = True  # one summary token for every other past tile (False: block-sparse only)
        backend: str = "gather"  # "gather" (batched SDPA over gathered tiles) or "flex" (FlexAttention)

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        o = self.opts
        if o.tile < 1:
            raise GeoformerError(f"model.attn.tile must be >= 1, got {o.tile}")
        if o.refine < 1:
            raise GeoformerError(f"model.attn.refine must be >= 1, got {o.refine}")
        if o.backend not in BACKENDS:
            raise GeoformerError(
                f"model.attn.backend must be one of {', '.join(BACKENDS)}, got {o.backend!r}"
            )
        self._last: dict[str, Any] | None = None

    def _run(self, q, k, v, dropout_p):
        o = self.opts
        y, info = tiled_attention(
            q, k, v, tile=o.tile, refine=o.refine, coarse=o.coarse, dropout_p=dropout_p, backend=o.backend
        )
        self._last = {key: t.detach() for key, t in info.items()}
        return y

    def attend(self, q, k, v):
        return self._run(q, k, v, self.dropout_p())

    def _weights(self, q, k):
        o = self.opts
        scale = 1.0 / math.sqrt(q.size(-1))
        info = tile_selection(q, k, k, tile=o.tile, refine=o.refine, scale=scale)
        return tiled_attention_weights(q, k, info, tile=o.tile, scale=scale, coarse=o.coarse)

    def naive(self, q, k, v):
        """Slow reference: the explicit dense weight matrix of the same selection, times ``v``."""
        return self._weights(q, k) @ v

    def mask_for(self, q, k):
        """Keys that reach a query at all (refined or through a summary token): (B, H, T, T)."""
        return self._weights(q, k) > 0

    def attention_weights(self, x):
        q, k, _ = self.split_heads(x)
        return self._weights(q, k)

    def get_metrics(self) -> dict[str, Any]:
        """Selection of the last forward: ``refined`` (B, H, nT, nT) bool, ``refined_tiles`` (B, H, nT, R) tile
        indices (-1 where a query tile has fewer past tiles), ``refined_fraction`` (refined / causal tile
        pairs), ``refined_mass`` (mean share of the pooled-score softmax over past tiles held by the refined
        past tiles; 1 where all are refined), ``tile``, ``refine``, ``n_tiles``."""
        if self._last is None:
            return {}
        return tiling_metrics(self._last, self.opts.tile, self.opts.refine)


def tiling_metrics(info: dict[str, torch.Tensor], tile: int, refine: int) -> dict[str, Any]:
    """Summary of a :func:`tile_selection` result (see :meth:`TiledAttention.get_metrics`)."""
    refined, scores = info["refined"], info["scores"]
    nT = refined.size(-1)
    causal_pairs = nT * (nT + 1) // 2
    sel = info["sel"].masked_fill(~info["valid"], -1)
    past = torch.ones(nT, nT, dtype=torch.bool, device=refined.device).tril(-1)
    has_past = past.any(-1)  # query tiles with at least one past tile
    p = torch.softmax(scores[..., has_past, :], dim=-1)  # pooled-score mass over past tiles
    mass = (p * (refined & past)[..., has_past, :]).sum(-1)
    return {
        "tile": tile,
        "refine": refine,
        "n_tiles": nT,
        "refined": refined,
        "refined_tiles": sel,
        "refined_fraction": refined.sum().item() / (refined[..., 0, 0].numel() * causal_pairs),
        "refined_mass": float(mass.mean()) if mass.numel() else 1.0,
    }


__all__ = [
    "TiledAttention",
    "tile_selection",
    "tile_summaries",
    "tiled_attention",
    "tiled_attention_weights",
    "tiling_metrics",
]
