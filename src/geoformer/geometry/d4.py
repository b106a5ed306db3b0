"""The dihedral group D4 (symmetries of the square) acting exactly on grids; pure tensor functions.

An element is an index ``g`` in ``0..7`` standing for the pair ``(k, r) = (g % 4, g // 4)``, the map
``T(g) = F^r R^k``: rotate by ``k`` quarter turns counter-clockwise (``torch.rot90`` on the last two
dims) and then, if ``r = 1``, flip left-right. The action is a homomorphism,
``T(compose(a, b)) = T(a) ∘ T(b)``, with the product from ``R^k F = F R^{-k}``:

    (k1, r1)·(k2, r2) = ((-1)^{r2} k1 + k2 mod 4, r1 + r2 mod 2).

Features in the regular representation have an orientation axis of size 8 (at ``dim=-3``); ``g`` acts
on them by ``(g·f)[u] = T(g) f[g^{-1} u]``: the grid transforms and the orientation slots permute.
Colour permutations that fix the background colour 0 commute with every ``T(g)``.
"""

from __future__ import annotations

import torch

ORDER = 8
IDENTITY = 0
NAMES = ("e", "r", "r2", "r3", "f", "fr", "fr2", "fr3")  # f r^k: rotate k quarter turns, then flip


def element(g: int) -> tuple[int, int]:
    """``(k, r)``: ``k`` quarter turns counter-clockwise, then a left-right flip if ``r``."""
    if not 0 <= g < ORDER:
        raise ValueError(f"D4 element index must be in 0..7, got {g}")
    return g % 4, g // 4


def index(k: int, r: int) -> int:
    return (k % 4) + 4 * (r % 2)


def compose(a: int, b: int) -> int:
    """The index of ``a·b``, so that ``act(x, compose(a, b)) == act(act(x, b), a)``."""
    k1, r1 = element(a)
    k2, r2 = element(b)
    return index((-k1 if r2 else k1) + k2, r1 + r2)


def inverse(g: int) -> int:
    """``g^{-1}``: reflections are their own inverse, rotations by k invert to 4 - k."""
    k, r = element(g)
    return g if r else index(-k, 0)


def act(x: torch.Tensor, g: int) -> torch.Tensor:
    """``T(g) x`` on the last two dims (works for non-square grids: H x W becomes W x H for odd k)."""
    k, r = element(g)
    y = torch.rot90(x, k, dims=(-2, -1)) if k else x
    return torch.flip(y, dims=(-1,)) if r else y


def act_shape(shape: tuple[int, int], g: int) -> tuple[int, int]:
    """The (H, W) of ``act(x, g)`` for an ``x`` of spatial shape ``shape``."""
    h, w = shape
    return (w, h) if element(g)[0] % 2 else (h, w)


def cayley() -> torch.Tensor:
    """``table[a, b] = compose(a, b)`` as a (8, 8) long tensor."""
    return torch.tensor([[compose(a, b) for b in range(ORDER)] for a in range(ORDER)], dtype=torch.long)


def regular_perm(g: int) -> torch.Tensor:
    """``p[u] = g^{-1} u``: the orientation slot that lands in slot ``u`` under ``g``."""
    gi = inverse(g)
    return torch.tensor([compose(gi, u) for u in range(ORDER)], dtype=torch.long)


def act_regular(f: torch.Tensor, g: int) -> torch.Tensor:
    """``(g·f)[u] = T(g) f[g^{-1} u]`` for features ``(..., 8, H, W)`` in the regular representation."""
    if f.shape[-3] != ORDER:
        raise ValueError(
            f"regular features need an orientation axis of size 8 at dim -3, got {tuple(f.shape)}"
        )
    return act(f.index_select(-3, regular_perm(g).to(f.device)), g)


def permute_colours(grid: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Relabel an integer colour grid: ``out = perm[grid]``. ``perm`` is a permutation of 0..9."""
    return perm.to(grid.device)[grid.long()]


def random_colour_perm(
    generator: torch.Generator | None = None, *, n: int = 10, fix: int = 0
) -> torch.Tensor:
    """A random permutation of ``0..n-1`` that keeps the background colour ``fix`` in place."""
    rest = [c for c in range(n) if c != fix]
    order = torch.randperm(len(rest), generator=generator)
    perm = torch.arange(n)
    perm[torch.tensor(rest)] = torch.tensor(rest)[order]
    return perm


def equivariance_error(
    fn, x: torch.Tensor, mask: torch.Tensor, *, rep_in: str = "scalar", rep_out: str = "scalar"
) -> float:
    """``max_g max |fn(g.x, g.mask) - g.fn(x, mask)|`` over all 8 elements (0 for an equivariant ``fn``).

    ``rep_in`` / ``rep_out``: "scalar" (grids transform by ``act``), "regular" (``act_regular``) or
    "invariant" (outputs that must not change)."""
    acts = {"scalar": act, "regular": act_regular, "invariant": lambda t, g: t}
    err = 0.0
    with torch.no_grad():
        y = fn(x, mask)
        for g in range(ORDER):
            yg = fn(acts[rep_in](x, g), act(mask, g))
            err = max(err, float((yg - acts[rep_out](y, g)).abs().max()))
    return err
