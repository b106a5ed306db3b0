"""Tests for the `geoformer compare` reporting: small-sample statistics, summary table, report files."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from geoformer.experiments import report, stats
from geoformer.experiments.report import format_table, summarize, write_report

# ---------------------------------------------------------------------------------------------
# synthetic results
# ---------------------------------------------------------------------------------------------


def _run(seed: int, final: float, tps: float, *, n_evals: int = 6, tokens: int = 245_760, extra: bool = True):
    rng = np.random.default_rng(1000 + seed)
    metrics = []
    for i in range(n_evals):
        frac = i / (n_evals - 1)
        val = final + (4.2 - final) * math.exp(-4 * frac) + 0.01 * rng.standard_normal()
        m = {
            "step": 10 * i,
            "tokens": int(tokens * frac),
            "train_loss": val - 0.05,
            "val_loss": val,
            "lr": 1e-3,
            "tokens_per_s": 0.0 if i == 0 else tps,
            "wall_s": 0.1 + 5 * i,
        }
        if extra:
            m["kappa"] = 1.0 + frac + 0.05 * rng.standard_normal()
            m["note"] = "not numeric"  # must be ignored by the extra-metric panels
        metrics.append(m)
    metrics[-1]["val_loss"] = final
    summary = {
        "final_val_loss": final,
        "best_val_loss": final - 0.01,
        "params": 12345,
        "wall_s": 30.0,
        "tokens_per_s": tps,
        "peak_rss_mb": 512.0,
    }
    return {"seed": seed, "summary": summary, "metrics": metrics}


def make_results(
    finals: dict[str, list[float]], seeds=(0, 1, 2), tps: dict[str, float] | None = None
) -> dict:
    tps = tps or {}
    variants = {}
    for name, per_seed in finals.items():
        runs = [_run(s, f, tps.get(name, 8000.0) + 10 * s) for s, f in zip(seeds, per_seed, strict=True)]
        variants[name] = {"overrides": {"model.attention": name}, "runs": runs}
    return {
        "preset": "quick",
        "baseline": next(iter(finals)),
        "seeds": list(seeds),
        "tokens": 245_760,
        "machine": "Linux x86_64, 2 CPUs, torch 2.13.0",
        "created": "2026-11-23T12:00:00Z",
        "command": "geoformer compare --preset quick --variants sdpa,local,wide",
        "variants": variants,
    }


@pytest.fixture
def results():
    # local: consistently ~0.1 lower than sdpa -> better; wide: consistently ~0.2 higher -> worse
    return make_results(
        {"sdpa": [2.10, 2.20, 2.15], "local": [2.00, 2.11, 2.04], "wide": [2.30, 2.41, 2.35]},
        tps={"sdpa": 8000.0, "local": 6000.0, "wide": 4000.0},
    )


# ---------------------------------------------------------------------------------------------
# stats
# ---------------------------------------------------------------------------------------------


def test_t_quantiles_are_exact_for_every_df():
    # reference values of Student's t (two-sided 95%: 0.975 quantile), to 4 decimals
    for df, ref in ((1, 12.7062), (2, 4.3027), (10, 2.2281), (30, 2.0423), (31, 2.0395), (60, 2.0003)):
        assert stats.t_quantile_975(df) == pytest.approx(ref, abs=1e-4), df
    # large df tends to the normal 1.95996, never jumps to it
    assert 1.96 < stats.t_quantile_975(1000) < 1.9624
    # non-integer df (Welch): exact, not a linear interpolation (the old table gave 8.50 at df 1.5)
    assert stats.t_quantile_975(1.5) == pytest.approx(6.0167, abs=1e-3)
    assert math.isnan(stats.t_quantile_975(0)) and math.isnan(stats.t_quantile_975(-1))
    # other levels: the 99% value at df 4, and a Bonferroni level over three looks (1 - 0.05/3)
    assert stats.t_quantile(4, 0.99) == pytest.approx(4.6041, abs=1e-4)
    assert stats.t_quantile(2, 1 - 0.05 / 3) == pytest.approx(7.6488, abs=1e-3)
    vals = [stats.t_quantile_975(d) for d in (0.5, 1, 1.5, 2, 5, 30, 100)]
    assert all(a > b for a, b in zip(vals, vals[1:], strict=False))


def test_mean_std():
    m, s = stats.mean_std([1.0, 2.0, 3.0])
    assert m == pytest.approx(2.0) and s == pytest.approx(1.0)
    assert stats.mean_std([5.0]) == (5.0, 0.0)
    assert stats.mean_std([2.0, float("nan"), 4.0])[0] == pytest.approx(3.0)
    assert all(math.isnan(v) for v in stats.mean_std([]))


def test_paired_diff_ci_hand_computed():
    # diffs [1, 2, 3]: mean 2, sd 1, half-width t(2) * 1 / sqrt(3)
    ci = stats.paired_diff_ci([11.0, 12.0, 13.0], [10.0, 10.0, 10.0])
    half = 4.302653 * 1.0 / math.sqrt(3)
    assert ci["n"] == 3
    assert ci["mean"] == pytest.approx(2.0)
    assert ci["lo"] == pytest.approx(2.0 - half, abs=1e-3)
    assert ci["hi"] == pytest.approx(2.0 + half, abs=1e-3)


def test_paired_diff_ci_small_n_and_nan():
    one = stats.paired_diff_ci([3.0], [1.0])
    assert one["mean"] == 2.0 and one["n"] == 1 and math.isnan(one["lo"]) and math.isnan(one["hi"])
    # a NaN pair (diverged seed) is dropped
    ci = stats.paired_diff_ci([1.0, float("nan"), 3.0], [0.0, 0.0, 0.0])
    assert ci["n"] == 2 and ci["mean"] == pytest.approx(2.0) and ci["nonfinite"] == 1
    with pytest.raises(ValueError):
        stats.paired_diff_ci([1.0], [1.0, 2.0])


def test_welch_ci():
    from scipy import stats as sps

    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0]
    w = stats.welch_ci(a, b)
    # reference: scipy's Welch t-test and its own confidence interval
    ref = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert w["mean"] == pytest.approx(2.5 - 4.0)
    assert w["lo"] == pytest.approx(ref.low, abs=1e-10) and w["hi"] == pytest.approx(ref.high, abs=1e-10)
    ref99 = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.99)
    w99 = stats.welch_ci(a, b, level=0.99)
    assert w99["lo"] == pytest.approx(ref99.low, abs=1e-10) and w99["hi"] == pytest.approx(ref99.high, abs=1e-10)
    assert math.isnan(stats.welch_ci([1.0], [1.0, 2.0])["lo"])


def test_pearson():
    assert stats.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert stats.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    x, y = [1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 5.0]
    assert stats.pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert math.isnan(stats.pearson([1, 1, 1], [1, 2, 3]))
    assert math.isnan(stats.pearson([1], [1]))
    # a constant series whose float mean is inexact (mean([0.001] * 10) != 0.001) is still constant
    assert float(np.mean([0.001] * 10)) != 0.001
    assert math.isnan(stats.pearson([0.001] * 10, list(range(10))))
    assert math.isnan(stats.pearson(list(range(10)), [0.1] * 10))


# ---------------------------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------------------------


def test_summarize_rows(results):
    rows = summarize(results)
    assert [r["name"] for r in rows] == ["sdpa", "local", "wide"]
    by = {r["name"]: r for r in rows}

    base = by["sdpa"]
    assert base["is_baseline"] and base["vs_baseline"] == "baseline"
    assert base["n_seeds"] == 3 and base["n_ok"] == 3 and base["status"] == "ok"
    assert base["params"] == 12345
    assert base["final_val_loss_mean"] == pytest.approx(2.15)
    assert base["final_val_loss_std"] == pytest.approx(0.05)
    assert base["best_val_loss_mean"] == pytest.approx(2.14)
    assert base["perplexity"] == pytest.approx(math.exp(2.15))
    assert base["throughput_ratio"] == pytest.approx(1.0)
    assert base["peak_rss_mb_mean"] == pytest.approx(512.0)
    assert base["wall_s_mean"] == pytest.approx(30.0)
    assert math.isnan(base["delta_mean"])

    local = by["local"]
    expected = stats.paired_diff_ci([2.00, 2.11, 2.04], [2.10, 2.20, 2.15])
    assert local["delta_mean"] == pytest.approx(expected["mean"])
    assert local["delta_lo"] == pytest.approx(expected["lo"])
    assert local["delta_hi"] == pytest.approx(expected["hi"])
    assert local["delta_n"] == 3 and local["delta_method"] == "paired"
    assert local["vs_baseline"] == "better"
    assert local["throughput_ratio"] == pytest.approx(6010.0 / 8010.0)
    assert by["wide"]["vs_baseline"] == "worse"


def test_no_significant_difference():
    # differences +0.1, -0.1, +0.02: the interval straddles 0
    res = make_results({"sdpa": [2.1, 2.2, 2.15], "noisy": [2.2, 2.1, 2.17]})
    row = summarize(res)[1]
    assert row["delta_lo"] < 0 < row["delta_hi"]
    assert row["vs_baseline"] == "no significant difference"


def test_pairing_is_by_seed_not_position():
    res = make_results({"sdpa": [2.1, 2.2, 2.15], "local": [2.0, 2.1, 2.05]})
    res["variants"]["local"]["runs"].reverse()  # same seeds, listed in another order
    row = summarize(res)[1]
    assert row["delta_mean"] == pytest.approx(-0.1)
    assert row["delta_hi"] - row["delta_lo"] == pytest.approx(0.0, abs=1e-9)  # identical diffs
    assert row["vs_baseline"] == "better"


def test_format_table(results):
    text = format_table(results)
    for name in results["variants"]:
        assert name in text
    assert "2.150 ± 0.050" in text
    assert "better" in text and "worse" in text and "baseline" in text
    header, sep, *body = text.splitlines()
    assert set(sep) <= {"-", " "} and len(body) == 4  # 3 rows + the footnote
    assert body[0].startswith("sdpa") and "Variant" in header


# ---------------------------------------------------------------------------------------------
# report files
# ---------------------------------------------------------------------------------------------


def _check_report(paths, out_dir, *, extra: bool):
    expected = {"loss_curves", "final_loss", "throughput", "report_md", "report_html"}
    if extra:
        expected.add("extra_metrics")
    assert set(paths) == expected
    for p in paths.values():
        assert p.exists() and p.stat().st_size > 0 and p.parent == out_dir
    for key in expected - {"report_md", "report_html"}:
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = paths["report_html"].read_text(encoding="utf-8")
    assert "data:image/png;base64," in page
    assert 'src="http' not in page and "<link" not in page and "<script" not in page
    assert page.count("data:image/png;base64,") == len(expected) - 2
    return paths["report_md"].read_text(encoding="utf-8"), page


def test_write_report(results, tmp_path):
    json.dumps(results)  # the input is JSON-able, as the caller writes it as results.json
    paths = write_report(results, tmp_path)
    md, page = _check_report(paths, tmp_path, extra=True)
    assert report.extra_metric_keys(results) == ["kappa"]
    for name in results["variants"]:
        assert name in md and name in page
    for needle in ("| Variant |", "![", "loss_curves.png", results["command"], results["machine"],
                   results["created"], "paired", "How to read"):  # fmt: skip
        assert needle in md
    assert "<table>" in page and "How to read" in page


def test_write_report_without_extra_metrics(tmp_path):
    res = make_results({"sdpa": [2.1, 2.2, 2.15], "local": [2.0, 2.1, 2.05]})
    for v in res["variants"].values():
        for run in v["runs"]:
            for m in run["metrics"]:
                m.pop("kappa"), m.pop("note")
    paths = write_report(res, tmp_path)
    _check_report(paths, tmp_path, extra=False)
    assert not (tmp_path / "extra_metrics.png").exists()


def test_single_seed(tmp_path):
    res = make_results({"sdpa": [2.1], "local": [2.0], "wide": [2.3]}, seeds=(0,))
    rows = summarize(res)
    assert [r["vs_baseline"] for r in rows] == ["baseline", "n/a", "n/a"]
    assert rows[1]["delta_mean"] == pytest.approx(-0.1) and math.isnan(rows[1]["delta_lo"])
    assert rows[0]["final_val_loss_std"] == 0.0
    text = format_table(res)
    assert "2.100" in text and "2.100 ±" not in text  # no ± with a single seed
    _check_report(write_report(res, tmp_path), tmp_path, extra=True)


def test_diverged_runs(results, tmp_path):
    res = copy.deepcopy(results)
    # a whole variant diverged: NaN loss on one seed, missing summary on the others
    bad = copy.deepcopy(res["variants"]["wide"])
    bad["runs"][0]["summary"]["final_val_loss"] = float("nan")
    for run in bad["runs"][0]["metrics"][3:]:
        run["val_loss"] = float("nan")
    del bad["runs"][1]["summary"]
    bad["runs"][2]["summary"]["final_val_loss"] = None
    res["variants"]["exploding"] = bad
    # one seed of another variant diverged
    res["variants"]["local"]["runs"][1].pop("summary")

    rows = {r["name"]: r for r in summarize(res)}
    assert rows["exploding"]["status"] == "diverged" and rows["exploding"]["vs_baseline"] == "diverged"
    assert rows["exploding"]["n_ok"] == 0 and rows["exploding"]["diverged_seeds"] == [0, 1, 2]
    assert math.isnan(rows["exploding"]["final_val_loss_mean"])
    loc = rows["local"]
    assert loc["status"] == "partial" and loc["n_ok"] == 2 and loc["diverged_seeds"] == [1]
    assert loc["final_val_loss_mean"] == pytest.approx(2.02)
    assert loc["delta_n"] == 2 and loc["delta_mean"] == pytest.approx(-0.105)

    text = format_table(res)
    assert "exploding" in text and "diverged" in text and "2/3" in text
    md, page = _check_report(write_report(res, tmp_path), tmp_path, extra=True)
    assert "exploding" in md and "diverged" in md.lower() and "exploding" in page


def test_baseline_diverged_and_empty_variant(tmp_path):
    res = make_results({"sdpa": [2.1, 2.2, 2.15], "local": [2.0, 2.1, 2.05]})
    for run in res["variants"]["sdpa"]["runs"]:
        run["summary"]["final_val_loss"] = float("nan")
    res["variants"]["empty"] = {"overrides": {}, "runs": []}
    rows = summarize(res)
    assert [r["vs_baseline"] for r in rows] == ["baseline", "n/a", "diverged"]
    format_table(res)
    write_report(res, tmp_path)


def test_unpaired_seeds_fall_back_to_welch():
    res = make_results({"sdpa": [2.1, 2.2, 2.15]})
    other = make_results({"local": [2.0, 2.1, 2.05]}, seeds=(3, 4, 5))
    res["variants"]["local"] = other["variants"]["local"]
    row = summarize(res)[1]
    assert row["delta_method"] == "welch" and row["delta_mean"] == pytest.approx(-0.1)
    assert "(welch)" in format_table(res)


def test_extra_metric_keys_ignore_non_numeric():
    res = make_results({"sdpa": [2.1, 2.2, 2.15]})
    m = res["variants"]["sdpa"]["runs"][0]["metrics"]
    m[0]["flag"] = True
    m[0]["grad_norm"] = None  # not logged at this step
    m[1]["grad_norm"] = 3
    m[1]["mixed"], m[2]["mixed"] = 1.0, "x"
    assert report.extra_metric_keys(res) == ["kappa", "grad_norm"]


def test_deltas_are_signed_and_best_shows_only_when_it_differs(results):
    text = format_table(results)
    deltas = [c for c in text.split() if c.startswith(("+0.", "-0.", "[+", "[-"))]
    assert deltas and all(c[0] in "+-[" for c in deltas)
    assert not any("= final" in row for row in text.splitlines()[2:-1])  # best = final - 0.01 in every run here
    for v in results["variants"].values():
        for r in v["runs"]:
            r["summary"]["best_val_loss"] = r["summary"]["final_val_loss"]
    rows = format_table(results).splitlines()[2:-1]
    assert all("= final" in row for row in rows)


def test_background_load_line_and_bits_per_byte_column(results, tmp_path):
    """Runs that recorded background_cores give the report one line on the load (mean, max, a warning when
    loaded); runs with final_val_bpb show it in the table; without either, neither appears."""
    assert report.background_load(results) is None
    assert all(c == "n/a" for c in (report._cells(r)[6] for r in summarize(results)))
    loaded = copy.deepcopy(results)
    for k, (_, v) in enumerate(loaded["variants"].items()):
        for j, run in enumerate(v["runs"]):
            run["summary"]["background_cores"] = 0.05 * (k + j)
            run["summary"]["final_val_bpb"] = run["summary"]["final_val_loss"] / math.log(2)
    line = report.background_load(loaded)
    assert line.startswith("other processes kept 0.10 cores busy on average") and "(max 0.20" in line
    assert "loaded machine" in line  # 0.20 > NOISY_CORES
    quiet = copy.deepcopy(loaded)
    for v in quiet["variants"].values():
        for run in v["runs"]:
            run["summary"]["background_cores"] = 0.0
    assert "loaded machine" not in report.background_load(quiet)
    sdpa = next(r for r in summarize(loaded) if r["name"] == "sdpa")
    assert report._cells(sdpa)[6] == f"{np.mean([2.10, 2.20, 2.15]) / math.log(2):.3f} ± {np.std([2.10, 2.20, 2.15], ddof=1) / math.log(2):.3f}"
    md = write_report(loaded, tmp_path)["report_md"].read_text()
    assert "Background load" in md and "Bits/byte" in md
