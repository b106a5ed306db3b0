"""`geoformer arc eval --method search|hybrid` and `--jobs`: what each attempt records, hybrid's one ranking,
parallel runs equal serial ones, and the error and show paths."""

from __future__ import annotations

import json

import numpy as np

from geoformer.data import arc as A
from geoformer.experiments import arc_eval as E

from .conftest import assert_one_line_error, run_cli

IDS = "007bbfb7,25ff71a9,3c9b0459,6150a2bd"  # arc1 training tasks a short search solves


def flip_task(n_train: int = 3, seed: int = 0) -> A.ArcTask:
    rng = np.random.default_rng(seed)
    grids = [rng.integers(0, 4, size=(4, 5)) for _ in range(n_train + 1)]
    pairs = tuple((g, g[:, ::-1].copy()) for g in grids)
    return A.ArcTask(id="flip", train=pairs[:n_train], test=pairs[n_train:])


def noise_task(seed: int = 1) -> A.ArcTask:
    """Outputs unrelated to the inputs: no program explains them."""
    rng = np.random.default_rng(seed)
    pairs = tuple((rng.integers(0, 10, (6, 6)), rng.integers(0, 10, (3, 4))) for _ in range(3))
    return A.ArcTask(id="noise", train=pairs[:2], test=pairs[2:])


def test_search_attempts_record_program_and_method():
    task = flip_task()
    res = E.search_attempts(task, budget_cpu_s=5.0)
    assert E.score_attempts(res["attempts"], task) == [True]
    assert res["programs"][0][0] == "x |> flip(axis=1)" and res["methods"] == [["search", "search"]]
    assert res["costs"][0][0] is not None and res["search"]["found"]


def _stub_learner(calls):
    def solve_task(task, cfg=None, *, seed=0, budget_s=None, budget_cpu_s=None):
        calls.append(budget_cpu_s)
        guess = np.full((3, 4), 7)
        return {"attempts": [[guess, guess + 1] for _ in task.test], "size_rules": ["stub"], "fit": {"steps": 0}}

    return solve_task


def test_hybrid_skips_the_learner_when_programs_explain_the_task(monkeypatch):
    import geoformer.models.arc_learner as L

    calls: list = []
    monkeypatch.setattr(L, "solve_task", _stub_learner(calls))
    task = flip_task()
    res = E.hybrid_attempts(task, steps=3, budget_s=None, budget_cpu_s=6.0, search_budget_cpu_s=3.0, seed=0)
    assert E.score_attempts(res["attempts"], task) == [True]
    assert res["methods"][0] == ["search", "search"] and calls == [] and "fit" not in res


def test_hybrid_ranks_programs_then_learner_then_fallbacks(monkeypatch):
    import geoformer.models.arc_learner as L

    calls: list = []
    monkeypatch.setattr(L, "solve_task", _stub_learner(calls))
    task = noise_task()
    res = E.hybrid_attempts(task, steps=3, budget_s=None, budget_cpu_s=3.0, search_budget_cpu_s=1.0, seed=0)
    assert len(calls) == 1 and 0 < calls[0] <= 3.0 - 0.9  # the learner gets what the search left
    assert res["methods"] == [["learner", "learner"]] and res["programs"] == [[None, None]]
    assert np.array_equal(res["attempts"][0][0], np.full((3, 4), 7)) and res["fit"] == {"steps": 0}
    # one consistent program for the test input: it comes first, the learner's first guess second
    monkeypatch.setattr(
        E,
        "search_attempts",
        lambda task, budget_cpu_s: {
            "attempts": [[np.zeros((3, 4), int), np.ones((3, 4), int)]],
            "programs": [["x |> crop_bbox", "x (fallback)"]],
            "methods": [["search", "search"]],
            "costs": [[1.0, None]],
            "search": {"found": True},
        },
    )
    res = E.hybrid_attempts(task, steps=3, budget_s=None, budget_cpu_s=3.0, search_budget_cpu_s=1.0, seed=0)
    assert res["methods"] == [["search", "learner"]] and res["programs"] == [["x |> crop_bbox", None]]


def _rows(folder):
    keep = ("id", "score", "correct", "attempts", "programs", "methods", "right_by")
    return {p.name: {k: v for k, v in json.loads(p.read_text()).items() if k in keep}
            for p in sorted(folder.glob("*.json")) if p.name not in ("config.json", "summary.json")}  # fmt: skip


def test_jobs_2_gives_the_results_of_jobs_1(tmp_path, capsys):
    argv = ["arc", "eval", "--dataset", "arc1", "--split", "training", "--ids", IDS, "--method", "search",
            "--budget-cpu-s", "5", "--quiet"]  # fmt: skip
    code, _, err = run_cli([*argv, "--out", str(tmp_path / "j1")], capsys)
    assert code == 0, err
    code, stdout, err = run_cli([*argv, "--jobs", "2", "--out", str(tmp_path / "j2")], capsys)
    assert code == 0, err and "search: accuracy" in stdout
    one, two = _rows(tmp_path / "j1"), _rows(tmp_path / "j2")
    # the search stops at a CPU-time budget, so on a loaded machine an unsolved task's best guesses (and a solved
    # task's second attempt) can depend on how far it got; what each task scored may not
    outcome = ("id", "score", "correct", "methods")
    assert len(one) == 4 and {k: {f: v[f] for f in outcome} for k, v in one.items()} == {
        k: {f: v[f] for f in outcome} for k, v in two.items()}
    assert all(one[k]["attempts"][0][0] == two[k]["attempts"][0][0] for k in one if one[k]["score"] == 1)
    s = json.loads((tmp_path / "j2" / "summary.json").read_text())
    assert s["tasks"] == 4 and s["solved_by"] == {"search": s["solved_by"]["search"]}
    assert s["cpu_seconds_per_task_max"] <= 5.0 + 1.0  # the per-task budget holds in the workers too
    # arc show renders the program text beside the prediction (and prints it)
    code, stdout, err = run_cli(
        ["arc", "show", "25ff71a9", "--pred", str(tmp_path / "j2"), "--out", str(tmp_path / "t.png")], capsys
    )
    assert code == 0, err
    row = json.loads((tmp_path / "j2" / "25ff71a9.json").read_text())
    assert f"test 1 attempt 1 [search]: {row['programs'][0][0]}" in stdout and (tmp_path / "t.png").stat().st_size


def test_unknown_method_is_one_line_and_baseline_rows_are_unchanged(tmp_path, capsys):
    out = tmp_path / "x"
    code, _, err = run_cli(["arc", "eval", "--ids", "00576224", "--method", "magic", "--out", str(out)], capsys)
    assert_one_line_error(code, err, "unknown method 'magic'")
    assert not out.exists()
    code, _, err = run_cli(["arc", "eval", "--ids", "00576224", "--method", "search", "--jobs", "0",
                            "--out", str(out)], capsys)  # fmt: skip
    assert_one_line_error(code, err, "--jobs must be >= 1")
    code, _, err = run_cli(["arc", "eval", "--dataset", "arc1", "--split", "training", "--ids", "25ff71a9",
                            "--method", "identity", "--out", str(out), "--quiet"], capsys)  # fmt: skip
    assert code == 0, err
    row = json.loads((out / "25ff71a9.json").read_text())
    assert not {"programs", "methods", "search", "right_by"} & set(row)
    summary = json.loads((out / "summary.json").read_text())
    assert "cpu_seconds_per_task_max" not in summary and "attempts_by_method" not in summary
    cfg = json.loads((out / "config.json").read_text())["settings"]
    assert cfg == {"dataset": "arc1", "split": "training", "method": "identity", "seed": 0}


def test_arc_show_draws_cell_lines_and_keeps_titles_clear_of_the_grids():
    """Every grid gets one line per cell border (30x30 included); each title sits above its own grid and
    below the program label of the panel above it."""
    import matplotlib.pyplot as plt
    import numpy as np

    from geoformer.data import arc as A
    from geoformer.experiments.arc_render import draw_task

    big = np.arange(900).reshape(30, 30) % 10
    task = A.ArcTask("synthetic", [(np.zeros((1, 1), int), np.ones((1, 1), int)), (big, big.T)],
                     [(np.zeros((2, 5), int), np.ones((5, 2), int))])  # fmt: skip
    pred = {"attempts": [[np.ones((5, 2), int).tolist(), np.zeros((2, 5), int).tolist()]],
            "programs": [["x |> transpose |> recolour(0->1) " * 4, None]], "methods": [["search", "learner"]]}  # fmt: skip
    fig = draw_task(task, prediction=pred)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    grids = [ax for ax in fig.axes if ax.images]
    assert len(grids) == 2 * 2 + 4
    for ax in grids:
        h, w = ax.images[0].get_array().shape
        assert len(ax.xaxis.get_minorticklocs()) == w + 1 and len(ax.yaxis.get_minorticklocs()) == h + 1
        assert all(line.get_visible() for line in ax.get_xgridlines() + ax.get_ygridlines())
        assert ax.title.get_window_extent(r).y0 >= ax.get_window_extent(r).y1 - 0.5  # above its grid
    cols = {}
    for ax in grids:
        cols.setdefault(round(ax.get_position().x0, 3), []).append(ax)
    for col in cols.values():
        col.sort(key=lambda a: -a.get_position().y0)
        for upper, lower in zip(col, col[1:], strict=False):
            below = upper.get_tightbbox(r).y0  # the upper panel with its label
            assert lower.title.get_window_extent(r).y1 <= below + 0.5, (upper.get_title(), lower.get_title())
    plt.close(fig)
