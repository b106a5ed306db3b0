"""`geoformer arc show`: an ARC task (and a prediction's attempts, with the programs behind them) as a PNG.

One column per demonstration pair (input over output), then per test input the input, the true output and the
attempts, each marked correct or not, with its program's text under it. Every grid is drawn with its cell lines
(so a 30x30 grid can be counted) and ARC's ten colours; titles sit above the grids, never on them.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from geoformer.data import arc as A

ARC_COLOURS = (
    "#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00",
    "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF", "#870C25",
)  # fmt: skip
GRID_LINE = "#555555"


def program_label(method: str, program: str | None, width: int = 34, lines: int = 6) -> str:
    """A program's text wrapped under its attempt (long fitted tables are cut with an ellipsis)."""
    if program is None:
        return f"[{method}]"
    text = textwrap.wrap(program.removeprefix("x |> "), width) or [""]
    if len(text) > lines:
        text = [*text[: lines - 1], text[lines - 1][: width - 3] + "..."]
    return "\n".join([f"[{method}]", *text])


def panels(task: A.ArcTask, prediction: dict | None = None) -> list[list[tuple[str, np.ndarray | None]]]:
    """The figure's columns: ``(name, grid)`` from top to bottom; a name's second line onward is the label."""
    cols: list[list[tuple[str, np.ndarray | None]]] = [
        [(f"demo {k + 1} in", i), (f"demo {k + 1} out", o)] for k, (i, o) in enumerate(task.train)
    ]
    for t, (ti, to) in enumerate(task.test):
        col = [(f"test {t + 1} in", ti), (f"test {t + 1} truth", to)]
        if prediction is not None:
            atts = prediction["attempts"][t] if t < len(prediction["attempts"]) else []
            progs, methods = prediction.get("programs", []), prediction.get("methods", [])
            for a_i, a in enumerate(atts[:2]):
                a = np.asarray(a)
                ok = to is not None and a.shape == to.shape and bool((a == to).all())
                name = f"attempt {a_i + 1} {'✓' if ok else '✗'}"
                if t < len(methods):
                    name += "\n" + program_label(methods[t][a_i], progs[t][a_i])
                col.append((name, a))
        cols.append(col)
    return cols


def draw_grid(ax, grid: np.ndarray, title: str, label: str = "") -> None:
    """One grid: ARC colours, a line around every cell, the title above it and the label below it."""
    from matplotlib.colors import BoundaryNorm, ListedColormap

    h, w = grid.shape
    ax.imshow(grid, cmap=ListedColormap(ARC_COLOURS), norm=BoundaryNorm(np.arange(-0.5, 10.5, 1), 10),
              interpolation="nearest")  # fmt: skip
    ax.set_xticks(np.arange(-0.5, w, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, h, 1), minor=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(which="minor", color=GRID_LINE, linewidth=0.4 if max(h, w) > 15 else 0.7)
    ax.tick_params(which="both", length=0)
    ax.set_title(f"{title} {h}x{w}", fontsize=7, pad=4)
    if label:
        ax.set_xlabel(label, fontsize=5.5, family="monospace", loc="left")


def draw_task(task: A.ArcTask, *, prediction: dict | None = None, title: str = ""):
    """The figure (matplotlib, Agg); :func:`render_task` saves it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = panels(task, prediction)
    rows = max(len(c) for c in cols)
    labelled = prediction is not None and "programs" in prediction  # program text below the attempts
    width = 2.6 if labelled else 2.0
    fig, axes = plt.subplots(rows, len(cols), figsize=(width * len(cols), 2.2 * rows + (1.5 if labelled else 0)),
                             squeeze=False)  # fmt: skip
    for ci, col in enumerate(cols):
        for ri in range(rows):
            ax = axes[ri][ci]
            if ri >= len(col) or col[ri][1] is None:
                ax.axis("off")
                continue
            name, grid = col[ri]
            head, _, label = name.partition("\n")
            draw_grid(ax, np.asarray(grid), head, label)
    fig.suptitle(title or task.id, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig


def render_task(task: A.ArcTask, png: Path, *, prediction: dict | None = None, title: str = "") -> Path:
    """Draw the task (and ``prediction``) and write it to ``png``."""
    import matplotlib.pyplot as plt

    fig = draw_task(task, prediction=prediction, title=title)
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png
