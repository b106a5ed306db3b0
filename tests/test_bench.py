"""`geoformer bench`: the attention and trainer benchmarks write their files, ratios are sane, bad input is one line."""

from __future__ import annotations

import json
import math

import pytest

from geoformer import attention
from geoformer.bench import attention as A
from geoformer.errors import GeoformerError

from .conftest import run_cli

TINY = ["--batch", "2", "--embd", "16", "--heads", "2", "--repeats", "2", "--warmup", "1"]


def test_attention_bench_without_seq_measures_the_readme_lengths(tmp_path, capsys):
    """`bench attention` needs no --seq: sequence lengths default to the README's 128..1024."""
    args = ["bench", "attention", "--kinds", "naive", "--no-memory", *TINY, "--out", str(tmp_path)]
    code, _, _ = run_cli(args, capsys)
    assert code == 0
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert sorted({r["seq"] for r in rows}) == [128, 256, 512, 1024]


def test_attention_bench_writes_files_and_ratios(tmp_path, capsys):
    code, out, _ = run_cli(
        ["bench", "attention", "--seq", "16,32", "--no-memory", *TINY, "--out", str(tmp_path)], capsys
    )
    assert code == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    rows = result["rows"]
    timed = [k for k in attention.names() if not getattr(attention.get(k), "control", False)]
    assert {"none", "uniform", "self_only"}.isdisjoint(timed)  # the controls only when named
    assert {(r["kind"], r["seq"]) for r in rows} == {(k, n) for k in timed for n in (16, 32)}
    assert all(r["error"] is None for r in rows)
    for r in rows:
        if r["kind"] == "sdpa":
            assert r["ratio_time_vs_sdpa"] == 1.0
        assert math.isfinite(r["ratio_time_vs_sdpa"]) and r["ratio_time_vs_sdpa"] > 0
        assert r["median_ms"] > 0 and r["iqr_ms"] >= 0 and r["peak_mb"] is None
        assert r["q1_ms"] <= r["median_ms"] <= r["q3_ms"] and r["iqr_ms"] == pytest.approx(r["q3_ms"] - r["q1_ms"])
    assert {"platform", "cpu_count", "torch", "device_name"} <= set(result["machine"])
    assert (tmp_path / "bench.png").stat().st_size > 0
    assert "| sdpa | 16 |" in (tmp_path / "bench.md").read_text() and "| naive | 32 |" in out


def test_spread_quartiles():
    from geoformer.bench._common import spread

    assert spread([5.0, 1.0, 3.0, 2.0, 4.0]) == {"median": 3.0, "iqr": 2.0, "q1": 2.0, "q3": 4.0, "min": 1.0, "max": 5.0}
    assert spread([7.0])["iqr"] == 0.0


def test_attention_bench_memory_always_includes_sdpa(tmp_path):
    s = A.AttentionBenchSettings(seqs=[128], kinds=["naive"], batch=2, embd=16, heads=2, repeats=1, warmup=0)
    rows = A.run_attention_bench(s)["rows"]
    assert [r["kind"] for r in rows] == ["sdpa", "naive"]
    sdpa, naive = rows
    assert sdpa["error"] is None and naive["error"] is None
    assert sdpa["peak_mb"] > 0 and sdpa["ratio_mem_vs_sdpa"] == 1.0
    # naive materialises (B, H, T, T) scores; sdpa does not
    assert naive["peak_mb"] > sdpa["peak_mb"] and math.isfinite(naive["ratio_mem_vs_sdpa"])


def test_forked_memory_child_measures_what_a_fresh_interpreter_does(monkeypatch):
    """The forkserver child (torch preloaded) and ``python -m _measure_memory`` give the same peak: here at
    least naive's (B, H, T, T) float32 scores (4 MiB) and within 1 MiB + 10% of each other; a bad case is an
    error, a case past its time limit is killed."""
    from geoformer.bench import _measure_memory as M

    if M.forkserver() is None:
        pytest.skip("no forkserver on this platform")
    s = A.AttentionBenchSettings(seqs=[512], kinds=["naive"], batch=2, embd=16, heads=2, repeats=1, warmup=0)
    spec = A.case_spec(s, "naive", 512)
    forked, err = A.cpu_peak_mb(spec)
    assert err is None
    monkeypatch.setenv("GEOFORMER_MEMORY_EXEC", "1")
    fresh, err = A.cpu_peak_mb(spec)
    assert err is None
    scores = 2 * 2 * 512 * 512 * 4 / 2**20
    assert min(forked, fresh) >= scores and abs(forked - fresh) <= 1 + 0.1 * fresh
    monkeypatch.delenv("GEOFORMER_MEMORY_EXEC")
    peak, err = A.cpu_peak_mb({**spec, "kind": "no_such_kind"})
    assert peak is None and err.startswith("memory: ") and "no_such_kind" in err
    assert M.measure_forked(spec, 0.0) == {"error": "timed out after 0 s"}


def test_the_forked_childs_cpu_is_this_process_time_not_background_load(monkeypatch):
    """A forkserver child is not this process's child, so ``RUSAGE_CHILDREN`` never counts it: its CPU seconds
    come back with its answer and are credited (once, not left in the result), and credited seconds are own
    time to :class:`BackgroundLoad` (crediting more than the wall clock leaves no load)."""
    from geoformer import cpuload
    from geoformer.bench import _measure_memory as M

    if M.forkserver() is None:
        pytest.skip("no forkserver on this platform")
    assert M.start_forkserver()
    monkeypatch.setattr(cpuload, "_credited", cpuload._credited)  # restored after the test
    credited = []
    monkeypatch.setattr(M, "credit_cpu", lambda s: (credited.append(s), cpuload.credit_cpu(s)))
    s = A.AttentionBenchSettings(seqs=[256], kinds=["naive"], batch=2, embd=16, heads=2, repeats=1, warmup=0)
    before = cpuload._own_seconds()
    result = M.measure_forked(A.case_spec(s, "naive", 256), 60.0)
    assert "peak_mb" in result and "cpu_s" not in result
    assert len(credited) == 1 and 0 < credited[0] < 60
    assert cpuload._own_seconds() - before >= credited[0]
    with cpuload.BackgroundLoad() as load:
        cpuload.credit_cpu(1e6)
    assert load.cores == 0.0
    total = cpuload._credited
    cpuload.credit_cpu(-5.0)  # never negative
    assert cpuload._credited == total


def test_error_line_is_the_type_and_the_first_line():
    from geoformer.errors import error_line

    assert error_line(ValueError("bad\nmore")) == "ValueError: bad"
    assert error_line(RuntimeError("")) == "RuntimeError"
    assert error_line(KeyError("k")) == "KeyError: 'k'"


def test_attention_failure_is_a_row_not_a_crash(monkeypatch):
    real = A.fwd_bwd

    def flaky(module, x):
        if module.kind == "naive" and x.size(1) == 32:
            raise RuntimeError("out of memory (simulated)\nsecond line")
        real(module, x)

    monkeypatch.setattr(A, "fwd_bwd", flaky)
    s = A.AttentionBenchSettings(
        seqs=[16, 32], kinds=["naive"], batch=1, embd=8, heads=2, repeats=1, warmup=0, memory=False
    )
    rows = {(r["kind"], r["seq"]): r for r in A.run_attention_bench(s)["rows"]}
    assert rows["naive", 32]["error"] == "RuntimeError: out of memory (simulated)"
    assert rows["naive", 32]["ratio_time_vs_sdpa"] is None and rows["naive", 16]["error"] is None


def test_attention_options_reach_the_kind():
    opts = A.parse_attn_sets(["local.window=4", "topk.k=2"])
    assert opts == {"local": {"window": 4}, "topk": {"k": 2}}
    m, _ = A.build_case(
        A.case_spec(A.AttentionBenchSettings(seqs=[8], options=opts), "local", 8), A.torch.device("cpu")
    )
    assert m.opts.window == 4


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--seq", "16", "--kinds", "sdpa,nosuch"], "unknown attention kind 'nosuch'; known kinds: "),
        (["--seq", "16,abc"], "--seq expects comma-separated positive integers"),
        (["--seq", "0"], "--seq expects comma-separated positive integers"),
        (["--seq", "16", "--set-attn", "local.nosuch=1"], "unknown key"),
        (["--seq", "16", "--set-attn", "window=1"], "--set-attn expects kind.key=value"),
        (["--seq", "16", "--embd", "10", "--heads", "4"], "must be a positive multiple"),
    ],
)
def test_attention_bad_input_is_one_line(tmp_path, capsys, argv, needle):
    code, out, err = run_cli(["bench", "attention", *argv, "--no-memory", "--out", str(tmp_path)], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bench.json").exists()
    if "nosuch'" in needle:
        assert all(k in err for k in attention.names())


def test_unknown_kind_raises_geoformer_error():
    with pytest.raises(GeoformerError, match="known kinds"):
        A.parse_kinds("sdpa,flash9")


def test_trainer_bench_writes_a_ratio(tmp_path, corpus, capsys):
    sets = [
        "data.source=" + str(corpus),
        "model.n_layer=1",
        "model.n_embd=16",
        "model.n_head=2",
        "model.block_size=16",
        "train.batch_size=2",
        "train.threads=1",
    ]
    argv = [
        "bench",
        "trainer",
        "--steps",
        "3",
        "--warmup",
        "1",
        "--repeats",
        "1",
        "--out",
        str(tmp_path / "tr"),
    ]
    code, out, _ = run_cli(argv + [a for s in sets for a in ("--set", s)], capsys)
    assert code == 0 and "trainer / hand" in out and "| val " not in out
    s = json.loads((tmp_path / "tr" / "bench.json").read_text())["summary"]
    assert s["ratio_trainer_vs_hand"] > 0 and math.isfinite(s["ratio_trainer_vs_hand"])
    assert s["trainer_tokens_per_s"] > 0 and s["hand_tokens_per_s"] > 0
    assert s["max_last_loss_diff"] < 1e-5  # same model, seed, batches and lr: the loops agree


def test_trainer_bench_bad_steps_is_one_line(tmp_path, corpus, capsys):
    argv = ["bench", "trainer", "--set", f"data.source={corpus}", "--steps", "0", "--out", str(tmp_path)]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "--steps must be >= 1" in err and len(err.strip().splitlines()) == 1


def test_gauge_kl_is_timed_beside_its_floor_and_pairwise_path():
    s = A.AttentionBenchSettings(
        seqs=[8, 16], kinds=["gauge_kl"], batch=1, embd=16, heads=2, repeats=2, warmup=0, memory=False,
        companions=("floor", "pairwise"),
    )
    rows = {(r["kind"], r["seq"]): r for r in A.run_attention_bench(s)["rows"]}
    g = rows["gauge_kl", 16]
    assert set(g["companions"]) == {"floor", "pairwise"}
    for name in ("floor", "pairwise"):
        c = g["companions"][name]
        assert c["error"] is None and c["median_ms"] > 0
        assert g[f"ratio_time_vs_{name}"] == A.ratio(g["median_ms"], c["median_ms"])
    assert rows["sdpa", 16]["companions"] == {}
    assert "time × floor" in A.format_table({"rows": list(rows.values())})


def test_solo_companions_run_after_the_interleaved_rounds(monkeypatch):
    """A heavy companion (gauge_kl's pairwise path, BENCH_SOLO) never runs between the other workloads' calls:
    interleaved, its GiB of tensors evicts their caches. The rest still take turns call by call."""
    import torch

    order = []
    monkeypatch.setattr(A, "time_closure", lambda f, device: (f(), 1.0)[1])
    monkeypatch.setattr(A, "time_call", lambda module, x, device: (order.append(module), 1.0)[1])
    extra = {"k/floor": lambda: order.append("floor")}
    solo = {"k/pairwise": lambda: order.append("pairwise")}
    times = A.time_round_robin({"a": ("a", None), "b": ("b", None)}, {}, 3, 1, torch.device("cpu"), extra, solo)
    assert order[-4:] == ["pairwise"] * 4 and "pairwise" not in order[:-4]  # 1 warm-up + 3 timed, at the end
    assert [order[:3].count(n) for n in ("a", "b", "floor")] == [1, 1, 1]  # one call each per round
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "k/floor": 3, "k/pairwise": 3}
    assert attention.registry.get("gauge_kl").BENCH_SOLO == ("pairwise",)


def test_the_default_bench_times_only_the_fast_companions():
    """The explicit pairwise path takes seconds per call at the README's lengths: timed only when asked."""
    s = A.AttentionBenchSettings(seqs=[8], kinds=["gauge_kl"], batch=1, embd=16, heads=2, repeats=1, warmup=0, memory=False)
    g = [r for r in A.run_attention_bench(s)["rows"] if r["kind"] == "gauge_kl"][0]
    assert set(g["companions"]) == {"floor"} and "ratio_time_vs_pairwise" not in g
    assert A.parse_companions(None) == ("floor",)
    assert A.parse_companions("floor, pairwise,floor") == ("floor", "pairwise")
    assert A.parse_companions("none") == ()
    from geoformer import attention

    m = attention.build("gauge_kl", 16, 2, dropout=0.0, bias=False, block_size=32, options={})
    x = A.torch.randn(1, 8, 16, requires_grad=True)
    assert set(A.companions(m, x, ("all",))) == {"floor", "pairwise"}
    assert set(A.companions(m, x, ("pairwise",))) == {"pairwise"}
    assert A.companions(m, x, ()) == {}


@pytest.mark.parametrize("bad", ["", ",", "none,floor", "floor;pairwise"])
def test_bad_companions_is_one_line(tmp_path, capsys, bad):
    argv = ["bench", "attention", "--seq", "8", "--kinds", "gauge_kl", "--companions", bad, "--out", str(tmp_path)]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "--companions" in err and len(err.strip().splitlines()) == 1


def test_gauge_kl_leaves_out_a_pairwise_path_too_big_to_run(monkeypatch):
    from geoformer import attention

    m = attention.build("gauge_kl", 16, 2, dropout=0.0, bias=False, block_size=32, options={})
    monkeypatch.setattr(type(m), "PAIRWISE_BENCH_BYTES", 1)
    x = A.torch.randn(1, 32, 16, requires_grad=True)
    comps = A.companions(m, x)
    assert set(comps) == {"floor"}
    comps["floor"]()  # runs


def test_a_companion_that_fails_is_noted_not_fatal(monkeypatch):
    from geoformer.attention import gauge_kl

    def broken(self, x):
        return {"floor": lambda: (_ for _ in ()).throw(RuntimeError("no kernel (simulated)"))}

    monkeypatch.setattr(gauge_kl.GaugeKLAttention, "bench_companions", broken, raising=False)
    s = A.AttentionBenchSettings(seqs=[8], kinds=["gauge_kl"], batch=1, embd=8, heads=2, repeats=1, warmup=0, memory=False)
    g = [r for r in A.run_attention_bench(s)["rows"] if r["kind"] == "gauge_kl"][0]
    assert g["error"] is None and g["median_ms"] > 0
    assert g["companions"]["floor"]["error"] == "RuntimeError: no kernel (simulated)"
    assert "ratio_time_vs_floor" not in g
