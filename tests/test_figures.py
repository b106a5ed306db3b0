"""`geoformer plot curves`: a comparison's val-loss curves with reference lines; bad input is one line."""

from __future__ import annotations

import json

import pytest

from geoformer.errors import GeoformerError
from geoformer.experiments import figures

from .conftest import assert_one_line_error, run_cli


def _results():
    def run(seed, shift):
        metrics = [{"step": s, "tokens": 64 * s, "val_loss": 3.0 - s / 100 + shift, "train_loss": 3.0} for s in (0, 50, 100)]
        return {"seed": seed, "summary": {"final_val_loss": metrics[-1]["val_loss"]}, "metrics": metrics}

    return {"preset": "t", "baseline": "a", "variants": {
        "a": {"overrides": {}, "runs": [run(0, 0.0), run(1, 0.02)]},
        "b": {"overrides": {}, "runs": [run(0, -0.1), run(1, -0.08)]}}}  # fmt: skip


def test_curves_plot_and_reference_parsing(tmp_path):
    png = figures.plot_curves(_results(), tmp_path / "f" / "c.png", references=[figures.parse_reference("1.87=nano")])
    assert png.stat().st_size > 5000
    assert figures.parse_reference("1.5") == (1.5, "1.5")
    with pytest.raises(GeoformerError, match="VALUE\\[=LABEL\\]"):
        figures.parse_reference("x=1")
    with pytest.raises(GeoformerError, match="unknown variant 'c'; this comparison has: a, b"):
        figures.plot_curves(_results(), tmp_path / "x.png", variants=["c"])


def test_plot_cli(tmp_path, capsys):
    (tmp_path / "cmp").mkdir()
    (tmp_path / "cmp" / "results.json").write_text(json.dumps(_results()))
    code, out, _ = run_cli(["plot", "curves", "--results", str(tmp_path / "cmp"), "--variants", "b",
                            "--reference", "1.87=nanoGPT", "--out", str(tmp_path / "c.png")], capsys)  # fmt: skip
    assert code == 0 and (tmp_path / "c.png").is_file() and "wrote" in out
    code, _, err = run_cli(["plot", "curves", "--results", str(tmp_path / "none"), "--out", "x.png"], capsys)
    assert_one_line_error(code, err, "holds no comparison")
    (tmp_path / "bad.json").write_text("[1]")
    code, _, err = run_cli(["plot", "curves", "--results", str(tmp_path / "bad.json"), "--out", "x.png"], capsys)
    assert_one_line_error(code, err, "is not a comparison")
