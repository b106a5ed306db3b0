"""D4 acting on grids: group laws on square and non-square grids, regular representation, colours."""

from __future__ import annotations

import itertools

import pytest
import torch

from geoformer.geometry import d4

SHAPES = [(5, 5), (4, 4), (3, 7), (4, 6)]  # odd/even, square/non-square


@pytest.mark.parametrize("shape", SHAPES)
def test_action_is_a_homomorphism(shape):
    x = torch.randn(2, 3, *shape)
    for a, b in itertools.product(range(8), repeat=2):
        assert torch.equal(d4.act(x, d4.compose(a, b)), d4.act(d4.act(x, b), a)), (a, b)


@pytest.mark.parametrize("shape", SHAPES)
def test_inverse_identity_and_shapes(shape):
    x = torch.randn(3, *shape)
    for g in range(8):
        assert torch.equal(d4.act(d4.act(x, g), d4.inverse(g)), x)
        assert d4.compose(g, d4.inverse(g)) == d4.IDENTITY == d4.compose(d4.inverse(g), g)
        assert tuple(d4.act(x, g).shape[-2:]) == d4.act_shape(shape, g)
    assert torch.equal(d4.act(x, d4.IDENTITY), x)


def test_elements_are_distinct_and_table_is_a_group():
    x = torch.arange(12.0).view(3, 4)
    imgs = {d4.act(x, g).numpy().tobytes() + bytes(d4.act(x, g).shape) for g in range(8)}
    assert len(imgs) == 8
    t = d4.cayley()
    for row in list(t) + list(t.T):  # Latin square
        assert sorted(row.tolist()) == list(range(8))
    for a, b, c in itertools.product(range(8), repeat=3):  # associativity
        assert t[t[a, b], c] == t[a, t[b, c]]
    assert d4.element(1) == (1, 0) and d4.element(4) == (0, 1)
    with pytest.raises(ValueError):
        d4.element(8)


def test_specific_elements():
    x = torch.tensor([[1, 2, 3], [4, 5, 6]])
    assert torch.equal(d4.act(x, 1), torch.tensor([[3, 6], [2, 5], [1, 4]]))  # quarter turn counter-clockwise
    assert torch.equal(d4.act(x, 4), torch.tensor([[3, 2, 1], [6, 5, 4]]))  # left-right flip


@pytest.mark.parametrize("shape", [(5, 5), (3, 6)])
def test_regular_action_is_a_homomorphism(shape):
    f = torch.randn(2, 3, 8, *shape)
    for a, b in itertools.product(range(8), repeat=2):
        assert torch.equal(d4.act_regular(f, d4.compose(a, b)), d4.act_regular(d4.act_regular(f, b), a))
    with pytest.raises(ValueError):
        d4.act_regular(torch.randn(2, 3, 4, 5), 1)


def test_colour_permutations_fix_background_and_commute():
    g = torch.Generator().manual_seed(0)
    grid = torch.randint(0, 10, (4, 6), generator=g)
    for _ in range(5):
        perm = d4.random_colour_perm(g)
        assert perm[0] == 0 and sorted(perm.tolist()) == list(range(10))
        out = d4.permute_colours(grid, perm)
        assert torch.equal(out == 0, grid == 0)
        for h in range(8):
            assert torch.equal(d4.permute_colours(d4.act(grid, h), perm), d4.act(out, h))


def test_equivariance_error_helper():
    x, m = torch.randn(1, 1, 3, 5), torch.ones(1, 1, 3, 5)
    assert d4.equivariance_error(lambda t, _: t * 2, x, m) == 0.0
    assert d4.equivariance_error(lambda t, _: t.sum(dim=(-1, -2)), x, m, rep_out="invariant") < 1e-5
    assert d4.equivariance_error(lambda t, _: torch.roll(t, 1, dims=-1), x, m) > 0.1
