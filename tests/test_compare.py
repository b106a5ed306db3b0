"""`compare --resume` reuses finished runs, and only those trained with the same configuration."""

from __future__ import annotations

from geoformer import config as C
from geoformer.data.prepare import data_key
from geoformer.experiments.compare import run_compare

TOML = """
seed = 0
[model]
block_size = 16
n_layer = 1
n_head = 2
n_embd = 16
[train]
max_iters = 6
batch_size = 2
eval_interval = 3
eval_iters = 1
warmup_iters = 1
threads = 1
[compare]
baseline = "sdpa"
seeds = 1
[compare.variants.sdpa]
[compare.variants.narrow]
"model.attn.width" = 4
"""


def _compare(cfg, corpus, out, sets=()):
    return run_compare(
        preset=None, config=str(cfg), sets=list(sets), data=str(corpus), variants=None, seeds=None,
        out=out, resume=True, quiet=True, write=False,
    )


def test_resume_reuses_matching_runs_and_retrains_stale_ones(tmp_path, corpus, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TOML, encoding="utf-8")
    out = tmp_path / "cmp"
    first = _compare(cfg, corpus, out)
    stamps = {n: (out / "runs" / n / "seed0" / "summary.json").stat().st_mtime_ns for n in ("sdpa", "narrow")}
    capsys.readouterr()
    again = _compare(cfg, corpus, out)
    assert capsys.readouterr().out == ""  # nothing retrained
    assert again["variants"]["narrow"]["runs"][0]["summary"] == first["variants"]["narrow"]["runs"][0]["summary"]
    cfg.write_text(TOML.replace('"model.attn.width" = 4', '"model.attn.width" = 8'), encoding="utf-8")
    _compare(cfg, corpus, out)
    assert "narrow seed 0" in capsys.readouterr().out  # the changed variant is retrained ...
    assert (out / "runs" / "sdpa" / "seed0" / "summary.json").stat().st_mtime_ns == stamps["sdpa"]  # ... alone
    assert (out / "runs" / "narrow" / "seed0" / "summary.json").stat().st_mtime_ns != stamps["narrow"]


def test_resume_retrains_a_run_whose_corpus_folder_changed(tmp_path, corpus, capsys):
    """Same config, other corpus: data.source names a folder, and a file in it changed after the run."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(TOML, encoding="utf-8")
    folder = tmp_path / "texts"
    folder.mkdir()
    text = corpus.read_text(encoding="utf-8")
    (folder / "a.txt").write_text(text, encoding="utf-8")
    out = tmp_path / "cmp"
    first = _compare(cfg, folder, out)
    run = out / "runs" / "sdpa" / "seed0" / "summary.json"
    key = C.load_json(run)["data_key"]
    assert key and key == data_key(C.RunConfig.from_dict(C.load_json(run.parent / "config.json")).data)
    stamp = run.stat().st_mtime_ns
    capsys.readouterr()
    _compare(cfg, folder, out)
    assert capsys.readouterr().out == "" and run.stat().st_mtime_ns == stamp  # unchanged corpus: reused
    (folder / "a.txt").write_text(text[::-1], encoding="utf-8")  # same size, other contents
    again = _compare(cfg, folder, out)
    assert "changed since this run; training it again" in capsys.readouterr().out
    assert run.stat().st_mtime_ns != stamp and C.load_json(run)["data_key"] != key
    assert again["variants"]["sdpa"]["runs"][0]["summary"] != first["variants"]["sdpa"]["runs"][0]["summary"]
