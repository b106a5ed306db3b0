"""Bounded program search over the DSL (scored by ``geoformer arc eval --method search``).

``solve(train_pairs, test_inputs, budget_cpu_s)`` searches pipelines of up to ``max_depth`` (3)
searched primitives, followed by at most one fitted step -- a colour map, a tiling layout, a fixed
window, a periodic continuation (these after any prefix), or a local rule (after the identity and the
best depth-1 prefixes) -- for programs that map every demonstration input to its output exactly.

Search design
-------------
* A *state* is the tuple of grids a program prefix makes from the demonstration inputs; the test
  grids ride along, computed only when a state is expanded or solves the demonstrations. States are
  deduplicated by hashing the demonstration grids (memoised per task): prefixes that agree on every
  demonstration are one state, explored once (a duplicate that solves the demonstrations is still
  recorded, since it may predict a different test output).
* Best-first order: a state's priority is its depth plus ``LAMBDA`` times a partial-credit distance to
  the outputs (wrong cells, plain and after the best colour map, relative to what the identity gets
  wrong; a wrong shape counts 1 if one step could fix it, else 1.5), so when the budget cannot cover
  everything, promising prefixes are extended first. Ties go to the cheaper prefix.
* Canonical forms prune before running anything: no D4 step after a D4 step (a run of D4 steps is one
  element, tried at a shorter depth); no D4-equivariant or -covariant primitive after a D4 step
  (``g |> f`` equals ``f' |> g``, which is also enumerated; ``tests/test_arc_search.py`` checks every
  such declaration); no step twice in a row; colour parameters respect value precedence within each
  class of colours the task cannot tell apart (colours whose swap maps the task onto itself, e.g. all
  unused colours): a program may use the second colour of a class only after the first, so
  colour-permuted copies of a program are skipped.
* At the last depth, a primitive that keeps the shape is not tried on a state of the wrong shape (nor
  a shape-changing one on a state of the right shape), and candidates are checked one demonstration
  at a time (exact, colour map or a shape fit still possible), stopping at the first that fails.
* The CPU budget (``time.process_time()``) is checked between candidates; after the first solution
  the search goes on for ``max(0.5 s, 15% of the budget)`` for cheaper or different programs, and
  only extends prefixes no more expensive than the best solution.

Ranking: a solution's description length is :func:`geoformer.arc.dsl.cost` (one per primitive plus
parameter costs; a local rule failing leave-one-out costs 3 more and does not end the search); per
test input, the two attempts are the predictions of the two cheapest solutions that predict different
grids. Fallback when nothing explains the demonstrations (``found`` False): attempt 1 is the
prediction of the explored state closest to the outputs among those whose shapes matched every
demonstration output (the identity if none), attempt 2 the test input itself; a found task with only
one distinct prediction gets the fallback as its second attempt. The programs of fallback attempts
are their text with `` (fallback)`` appended.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass

import numpy as np

from geoformer.arc import dsl
from geoformer.arc.dsl import REGISTRY, SEARCHED, Step, cost, run_step, show
from geoformer.arc.fit import (
    ColourMapCheck,
    fit_local,
    fit_period,
    fit_recolor,
    fit_tiling,
    fit_window,
    fixed_shape,
    tiling_ratio,
)
from geoformer.arc.grid import N_COLOURS, as_grid, colours, grid_key, most_common, same
from geoformer.arc.prims import clear_caches

LAMBDA = 1.0
MAX_QUEUE = 40_000
LOCAL_DEPTH = 1  # local rules are fitted after the identity and after the best states of this depth
LOCAL_TOP = 60  # at most this many of those states (closest to the outputs first) ...
LOCAL_SHARE = 0.15  # ... within this share of the budget
COLOUR_KINDS = ("colour", "paint", "paint1", "paint_same", "mask")


# ----------------------------------------------------------------------------- task context


def _swap(g: np.ndarray, a: int, b: int) -> np.ndarray:
    lut = np.arange(256, dtype=np.uint8)
    lut[a], lut[b] = b, a
    return lut[g]


def colour_classes(ins, outs, tests) -> list[tuple[int, ...]]:
    """Classes of colours that the task cannot tell apart: unions of colour transpositions (a b) under
    which the set of demonstration pairs and the set of test inputs are unchanged."""
    parent = list(range(N_COLOURS))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    pairs = {(grid_key(i), grid_key(o)) for i, o in zip(ins, outs, strict=True)}
    tset = {grid_key(t) for t in tests}
    present = set().union(*(colours(g) for g in [*ins, *outs, *tests]))
    for a in range(N_COLOURS):
        for b in range(a + 1, N_COLOURS):
            if find(a) == find(b):
                continue
            if a not in present and b not in present:
                parent[find(b)] = find(a)
                continue
            if (a in present) != (b in present):
                continue
            sp = {
                (grid_key(_swap(i, a, b)), grid_key(_swap(o, a, b))) for i, o in zip(ins, outs, strict=True)
            }
            st = {grid_key(_swap(t, a, b)) for t in tests}
            if sp == pairs and st == tset:
                parent[find(b)] = find(a)
    groups: dict[int, list[int]] = {}
    for c in range(N_COLOURS):
        groups.setdefault(find(c), []).append(c)
    return sorted(tuple(sorted(g)) for g in groups.values())


@dataclass
class Ctx:
    bg: int
    paints: tuple[int, ...]
    cls_of: dict[int, tuple[int, ...]]
    colours: tuple[int, ...] = ()
    masks: tuple[int, ...] = ()


def _colour_values(s: Step) -> list[int]:
    prim = REGISTRY[s.name]
    return [
        v
        for spec, (_, v) in zip(prim.params, s.args, strict=True)
        if spec.kind in COLOUR_KINDS and isinstance(v, int) and v >= 0
    ]


def _precedence_ok(vals: list[int], used: frozenset, cls_of) -> bool:
    used = set(used)
    for v in vals:
        cls = cls_of[v]
        if len(cls) > 1 and v not in used:
            first_free = min(c for c in cls if c not in used)
            if v != first_free:
                return False
        used.add(v)
    return True


# ----------------------------------------------------------------------------- nodes


class Node:
    """A program prefix and the grids it makes from the demonstration inputs (``train``) and the test
    inputs (``tests``, computed only when the node is expanded or solves the demonstrations)."""

    __slots__ = ("prog", "train", "_tests", "parent", "cost", "used")

    def __init__(self, prog, train, tests, cost, used=frozenset(), parent=None):
        self.prog = prog
        self.train = train
        self._tests = tests
        self.parent = parent
        self.cost = cost
        self.used = used

    @property
    def depth(self) -> int:
        return len(self.prog)

    def tests(self):
        """The test grids (None if the last step does not apply to one of them)."""
        if self._tests is None:
            parent = self.parent.tests()
            if parent is None:
                return None
            out = []
            for g in parent:
                r = run_step(self.prog[-1], g)
                if r is None:
                    self._tests = False
                    return None
                out.append(r)
            self._tests = tuple(out)
            self.parent = None
        return self._tests or None


def _state_key(grids) -> int:
    return hash(tuple(grid_key(g) for g in grids))


def _compatible(shape, out_shape) -> bool:
    (h, w), (oh, ow) = shape, out_shape
    return (oh % h == 0 and ow % w == 0) or (h % oh == 0 and w % ow == 0) or (oh <= h and ow <= w)


def distance(grids, outs, base) -> float:
    """Partial credit, 0 when every grid equals its output. Right shape: wrong cells (plain and after
    the best colour map) relative to ``base`` (per pair: the cells the identity gets wrong, or the
    output's size), so the identity scores about 1; wrong shape: 1 if one step could fix the shape
    (whole multiple, divisor, or the output fits inside), else 1.5."""
    total = 0.0
    for g, o, b in zip(grids, outs, base, strict=True):
        if g.shape != o.shape:
            total += 1.0 if _compatible(g.shape, o.shape) else 1.5
            continue
        wrong = float((g != o).sum())
        table = np.bincount(g.ravel().astype(np.int64) * 16 + o.ravel(), minlength=256).reshape(16, 16)
        mapped = g.size - float(table.max(axis=1).sum())
        total += min(2.0, (0.5 * wrong + 0.5 * mapped) / b)
    return total / len(outs)


# ----------------------------------------------------------------------------- the search


class _Search:
    def __init__(self, train, tests, budget_cpu_s: float, max_depth: int):
        self.t0 = time.process_time()
        self.budget = float(budget_cpu_s)
        self.max_depth = max_depth
        self.ins = [as_grid(i) for i, _ in train]
        self.outs = [as_grid(o) for _, o in train]
        self.tests = [as_grid(t) for t in tests]
        self.n = len(self.ins)
        self.bg = most_common(self.ins + self.tests)
        out_cols: dict[int, int] = {}
        for o in self.outs:
            for c, k in enumerate(np.bincount(o.ravel(), minlength=N_COLOURS)[:N_COLOURS]):
                if k and c != self.bg:
                    out_cols[c] = out_cols.get(c, 0) + int(k)
        paints = sorted(out_cols, key=lambda c: (-out_cols[c], c))
        everything = set().union(*(colours(g) for g in [*self.ins, *self.outs, *self.tests]))
        spare = [c for c in range(N_COLOURS) if c not in everything]
        if spare:
            paints.append(spare[0])
        classes = colour_classes(self.ins, self.outs, self.tests)
        self.cls_of = {c: cls for cls in classes for c in cls}
        self.paints = tuple(paints)
        self.out_shapes = [o.shape for o in self.outs]
        self.base = [
            max(1.0, float((i != o).sum())) if i.shape == o.shape else float(o.size)
            for i, o in zip(self.ins, self.outs, strict=True)
        ]
        self.seen: set[int] = set()
        self.solutions: list[tuple[float, int, tuple[Step, ...], tuple[np.ndarray, ...]]] = []
        self.sol_keys: set[int] = set()
        self.searched = 0
        self.best_partial: tuple[float, Node] | None = None
        self.queue: list = []
        self.counter = 0
        self.first_found: float | None = None
        self._inst_cache: dict = {}
        self.prims = [REGISTRY[n] for n in SEARCHED]
        self.local_pool: list = []
        self.fixed_out = fixed_shape(self.outs)

    # -- time
    def elapsed(self) -> float:
        return time.process_time() - self.t0

    def out_of_time(self) -> bool:
        e = self.elapsed()
        if e >= self.budget:
            return True
        if self.first_found is not None:
            extra = max(0.5, 0.15 * self.budget)
            return e >= min(self.budget, self.first_found + extra)
        return False

    # -- instances
    def _instances(self, node: Node) -> list[Step]:
        train = node.train
        cols = sorted(set().union(*(colours(g) for g in train)) - {self.bg})
        every = set.intersection(*(colours(g) for g in (*train, *node.tests()))) - {self.bg}
        masks = (self.bg, *sorted(every))
        key = (tuple(cols), masks)
        hit = self._inst_cache.get(key)
        if hit is None:
            ctx = Ctx(self.bg, self.paints, self.cls_of, tuple(cols), masks)
            hit = []
            for prim in self.prims:
                for s in dsl.instances(prim, ctx):
                    hit.append((prim, s, dsl.step_cost(s), _colour_values(s)))
            self._inst_cache[key] = hit
        return hit

    def _allowed(self, node: Node, prim, s: Step, last: bool, shapes_ok: bool) -> bool:
        if node.prog:
            prev = node.prog[-1]
            if prev == s:
                return False
            if REGISTRY[prev.name].d4 == "element" and prim.d4 in ("element", "equivariant", "covariant"):
                return False
        if last:
            if prim.same_shape and not shapes_ok:
                return False
            if shapes_ok and not prim.same_shape and prim.d4 != "element":
                return False
        return True

    # -- solutions
    def _add_solution(self, prog: tuple[Step, ...], preds: tuple[np.ndarray, ...]) -> None:
        k = _state_key(preds)
        c = cost(prog)
        for i, (c0, order, _, p0) in enumerate(self.solutions):
            if k in self.sol_keys and _state_key(p0) == k:
                if c < c0:
                    self.solutions[i] = (c, order, prog, preds)
                return
        self.sol_keys.add(k)
        self.solutions.append((c, len(self.solutions), prog, preds))
        if self.first_found is None and not dsl.is_weak(prog):
            self.first_found = self.elapsed()

    def _fitted(self, node: Node, local: bool) -> None:
        train = node.train
        if all(same(g, o) for g, o in zip(train, self.outs, strict=True)):
            tests = node.tests()
            if tests is not None:
                self._add_solution(node.prog, tests)
            return
        fits: list[tuple[Step, ...]] = []
        if all(g.shape == o.shape for g, o in zip(train, self.outs, strict=True)):
            s = fit_recolor(train, self.outs)
            if s is not None:
                fits.append((s,))
            elif local:
                fits.extend((r,) for r in fit_local(train, self.outs, self.bg))
        else:
            if tiling_ratio(train, self.outs) is not None:
                s = fit_tiling(train, self.outs, self.bg)
                if s is not None:
                    fits.append((s,))
            if self.fixed_out is not None:
                s = fit_window(train, self.outs)
                if s is not None:
                    fits.append((s,))
                ps = fit_period(train, self.outs)
                if ps:
                    fits.append(tuple(ps))
        tests = node.tests() if fits else None
        if tests is None:
            return
        for extra in fits:
            preds = tests
            for s in extra:
                preds = tuple(None if p is None else run_step(s, p) for p in preds)
            if all(p is not None for p in preds):
                self._add_solution((*node.prog, *extra), preds)

    # -- expansion
    def _push(self, node: Node, dist: float) -> None:
        if len(self.queue) >= MAX_QUEUE:
            return
        self.counter += 1
        heapq.heappush(self.queue, (node.depth + LAMBDA * dist, node.cost, self.counter, node))

    def _consider_partial(self, node: Node, dist: float) -> None:
        if any(g.shape != s for g, s in zip(node.train, self.out_shapes, strict=True)):
            return
        if self.best_partial is None or dist < self.best_partial[0]:
            if node.tests() is not None:
                self.best_partial = (dist, node)

    def _full_child(self, node: Node, s: Step, c: float, vals) -> None:
        train = []
        for g in node.train:
            r = run_step(s, g)
            if r is None:
                return
            train.append(r)
        key = _state_key(train)
        child = Node((*node.prog, s), tuple(train), None, node.cost + c, node.used | frozenset(vals), node)
        if key in self.seen:
            # equal on the demonstrations to a state already seen: only a new prediction can matter
            if all(same(g, o) for g, o in zip(train, self.outs, strict=True)):
                self._fitted(child, local=False)
            return
        self.seen.add(key)
        self._fitted(child, local=False)
        dist = distance(child.train, self.outs, self.base)
        if child.depth <= LOCAL_DEPTH and all(
            g.shape == o.shape for g, o in zip(train, self.outs, strict=True)
        ):
            self.local_pool.append((dist, self.counter, child))
        self._consider_partial(child, dist)
        self._push(child, dist)

    def _last_child(self, node: Node, s: Step, c: float) -> None:
        """A candidate at the last depth: checked one demonstration at a time."""
        train = []
        cmap = ColourMapCheck()
        exact = tiling = True
        for g, o in zip(node.train, self.outs, strict=True):
            r = run_step(s, g)
            if r is None:
                return
            if r.shape == o.shape:
                tiling = False
                exact = exact and bool(np.array_equal(r, o))
                if not exact:
                    cmap.add(r, o)
            else:
                exact = False
                cmap.ok = False
                if o.shape[0] % r.shape[0] or o.shape[1] % r.shape[1]:
                    tiling = self.fixed_out is not None  # a window or a periodic continuation may fit
            if not (exact or cmap.ok or tiling):
                return
            train.append(r)
        key = _state_key(train)
        if key in self.seen and not exact:
            return
        self.seen.add(key)
        child = Node((*node.prog, s), tuple(train), None, node.cost + c, frozenset(), node)
        self._fitted(child, local=False)

    def expand(self, node: Node) -> bool:
        """Try every allowed step after ``node``; False when the budget ran out."""
        if node.tests() is None:
            return True
        last = node.depth + 1 >= self.max_depth
        shapes_ok = all(g.shape == s for g, s in zip(node.train, self.out_shapes, strict=True))
        for prim, s, c, vals in self._instances(node):
            if not self._allowed(node, prim, s, last, shapes_ok):
                continue
            if vals and not _precedence_ok(vals, node.used, self.cls_of):
                continue
            if self.searched % 64 == 0 and self.out_of_time():
                return False
            self.searched += 1
            if last:
                self._last_child(node, s, c)
            else:
                self._full_child(node, s, c, vals)
        return True

    def run(self) -> None:
        root = Node((), tuple(self.ins), tuple(self.tests), 0.0)
        self.seen.add(_state_key(root.train))
        self._fitted(root, local=True)
        self._consider_partial(root, distance(root.train, self.outs, self.base))
        if self.max_depth < 1:
            return
        self._push(root, 0.0)
        local_done = False
        while self.queue:
            if self.out_of_time():
                return
            if not local_done and not any(n.depth < LOCAL_DEPTH for *_, n in self.queue):
                local_done = True
                self.local_pool.sort(key=lambda x: (x[0], x[1]))
                stop = self.elapsed() + LOCAL_SHARE * self.budget
                for _, _, n in self.local_pool[:LOCAL_TOP]:
                    if self.out_of_time() or self.elapsed() > stop:
                        break
                    self._fitted(n, local=True)
                self.local_pool = []
            *_, node = heapq.heappop(self.queue)
            strong = [sol[0] for sol in self.solutions if not dsl.is_weak(sol[2])]
            if strong and node.cost > min(strong):
                continue
            if not self.expand(node):
                return


def _attempts(search: _Search):
    """Per test input: two grids, their program texts and their description lengths (None: fallback)."""
    ranked = sorted(search.solutions, key=lambda s: (s[0], s[1]))
    fallback_prog: tuple[Step, ...] = ()
    fallback = tuple(search.tests)
    if search.best_partial is not None:
        fallback_prog = search.best_partial[1].prog
        fallback = search.best_partial[1].tests()
    attempts, programs, costs = [], [], []
    for i, t in enumerate(search.tests):
        att: list[np.ndarray] = []
        txt: list[str] = []
        dl: list[float | None] = []
        for c, _, prog, preds in ranked:
            if not any(same(preds[i], a) for a in att):
                att.append(preds[i])
                txt.append(show(prog))
                dl.append(round(c, 6))
            if len(att) == 2:
                break
        for grid, prog in ((fallback[i], fallback_prog), (t, ())):
            if len(att) < 2 and not any(same(grid, a) for a in att):
                att.append(grid)
                txt.append(show(prog) + " (fallback)")
                dl.append(None)
        while len(att) < 2:  # everything coincides: repeat the first attempt
            att.append(att[0])
            txt.append(txt[0])
            dl.append(dl[0])
        attempts.append([a.astype(np.int64) for a in att])
        programs.append(txt)
        costs.append(dl)
    return attempts, programs, costs


def solve(
    task_pairs_train: list[tuple[np.ndarray, np.ndarray]],
    test_inputs: list[np.ndarray],
    budget_cpu_s: float = 60.0,
    max_depth: int = 3,
) -> dict:
    """Search programs for a task; see the module docstring.

    Returns ``{"attempts": [[grid, grid] per test input], "programs": [[text, text] per test input],
    "costs": [[description length, or None for a fallback attempt, ...] per test input], "found": bool, "searched": programs tried, "cpu_s": CPU seconds used, "solutions": number of
    consistent programs with distinct predictions}``; attempts are int64 grids.
    """
    if not task_pairs_train:
        raise ValueError("solve needs at least one demonstration pair")
    clear_caches()
    s = _Search(task_pairs_train, test_inputs, budget_cpu_s, max_depth)
    s.run()
    clear_caches()
    attempts, programs, costs = _attempts(s)
    return {
        "attempts": attempts,
        "programs": programs,
        "costs": costs,
        "found": bool(s.solutions),
        "searched": s.searched,
        "cpu_s": s.elapsed(),
        "solutions": len(s.solutions),
    }
