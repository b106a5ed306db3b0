"""Symmetry-aware program search for ARC tasks.

Modules: :mod:`~geoformer.arc.grid` (D4 group, objects, hashing), :mod:`~geoformer.arc.prims` (the grid
transforms), :mod:`~geoformer.arc.dsl` (typed primitives, program text, cost, canonical form),
:mod:`~geoformer.arc.rules` and :mod:`~geoformer.arc.fit` (steps fitted to the demonstrations) and
:mod:`~geoformer.arc.search` (the search and ``solve``).

Public API::

    from geoformer.arc import solve, parse, show, run
    res = solve(train_pairs, test_inputs, budget_cpu_s=15.0)
    res["attempts"][i]   # two grids for test input i
    res["programs"][i]   # their programs, e.g. "x |> crop_object(conn=4) |> flip(axis=1)"
    run(parse(res["programs"][i][0]), test_input)   # replays attempt 1 (for a found program)

Score a split (pass@2): ``geoformer arc eval --method search --split training --out DIR``.
"""

from geoformer.arc.dsl import parse, run, show
from geoformer.arc.search import solve

__all__ = ["parse", "run", "show", "solve"]
