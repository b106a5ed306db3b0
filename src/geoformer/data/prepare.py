"""Tokenise a corpus once and cache the token arrays on disk as memory maps.

The cache folder ``<root>/<key>/`` holds ``train.bin`` / ``val.bin`` (raw uint16 or uint32 ids),
``tokenizer.json`` and ``meta.json``. The key hashes everything the arrays depend on (the corpus
contents, the tokenizer settings, the split, the file format), so a changed input never reads stale
tokens. Folders are built in a temporary sibling and renamed into place, so a reader never sees a
half-written cache, and several processes (torchrun ranks) may prepare the same data at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from geoformer.data.corpus import corpus_fingerprint, load_text
from geoformer.data.tokenize import TOKENIZERS, BPETokenizer, CharTokenizer, load_tokenizer
from geoformer.errors import GeoformerError

if TYPE_CHECKING:  # only for annotations: the data layer need not import the model code that config pulls in
    from geoformer.config import DataConfig

FORMAT_VERSION = 3  # bump when the cached files change meaning, so old caches are not read


@dataclass
class TokenData:
    """A prepared corpus: the token memmaps of both splits and the tokenizer that made them."""

    train: np.ndarray
    val: np.ndarray
    tokenizer: CharTokenizer | BPETokenizer
    vocab_size: int
    dir: Path
    val_bytes: int = 0  # UTF-8 bytes of the validation text (for bits per byte)
    key: str = ""  # the cache key (corpus contents, tokenizer, split): "" for data built by hand


def cache_root(cfg: DataConfig) -> Path:
    """``cfg.cache_dir``, else ``$GEOFORMER_CACHE``, else ``~/.cache/geoformer``."""
    root = cfg.cache_dir or os.environ.get("GEOFORMER_CACHE") or "~/.cache/geoformer"
    return Path(root).expanduser()


def given_tokenizer(cfg: DataConfig) -> CharTokenizer | BPETokenizer | None:
    """The tokenizer of ``data.tokenizer_from`` (a run folder or a tokenizer.json), or None to train one."""
    if not cfg.tokenizer_from:
        return None
    path = Path(cfg.tokenizer_from).expanduser()
    tok = load_tokenizer(path / "tokenizer.json" if path.is_dir() else path)
    if tok.kind != cfg.tokenizer:
        raise GeoformerError(f"data.tokenizer_from {path} holds a {tok.kind} tokenizer; set data.tokenizer={tok.kind}")
    return tok


def cache_key(cfg: DataConfig, fingerprint: str, given: CharTokenizer | BPETokenizer | None = None) -> str:
    """A short hash of everything the token arrays depend on."""
    bpe_vocab = cfg.bpe_vocab_size if cfg.tokenizer == "bpe" and given is None else None
    ident = [FORMAT_VERSION, fingerprint, cfg.tokenizer, bpe_vocab, cfg.val_fraction]
    if given is not None:  # the tokenizer's own contents, not its path
        ident.append(hashlib.sha256(json.dumps(given.to_dict(), sort_keys=True).encode()).hexdigest())
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 65535 else np.uint32)


def _memmap(path: Path, dtype: np.dtype, n: int) -> np.ndarray:
    if path.stat().st_size != n * dtype.itemsize:
        raise ValueError(f"{path} does not hold {n} tokens")
    if n == 0:  # mmap cannot map an empty file
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(n,))


def _open(folder: Path, cfg: DataConfig, fingerprint: str) -> TokenData | None:
    """The cached data in ``folder``, or None when it is missing, incomplete or inconsistent."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        expected = {"format": FORMAT_VERSION, "fingerprint": fingerprint, "tokenizer": cfg.tokenizer}
        if any(meta[k] != v for k, v in expected.items()):
            return None
        dtype = np.dtype(meta["dtype"])
        tok = load_tokenizer(folder / "tokenizer.json")
        if tok.kind != cfg.tokenizer or tok.vocab_size != meta["vocab_size"]:
            return None
        if dtype != token_dtype(tok.vocab_size):
            return None
        train = _memmap(folder / "train.bin", dtype, int(meta["n_train"]))
        val = _memmap(folder / "val.bin", dtype, int(meta["n_val"]))
        # right size is not enough: the contents must be the tokens that were written (ids in the vocabulary)
        crc = meta["crc32"]
        if zlib.crc32(np.asarray(train).tobytes()) != crc["train"] or zlib.crc32(np.asarray(val).tobytes()) != crc["val"]:
            return None
        val_bytes = int(meta["val_bytes"])
    except (OSError, ValueError, KeyError, TypeError, GeoformerError):
        return None
    return TokenData(train=train, val=val, tokenizer=tok, vocab_size=tok.vocab_size, dir=folder,
                     val_bytes=val_bytes, key=folder.name)  # fmt: skip


def data_key(cfg: DataConfig) -> str:
    """The cache key of ``cfg``'s token data as the corpus stands now, without tokenising it: a run that
    recorded another key was trained on other contents (a file of ``data.source`` changed)."""
    _check_config(cfg)
    return cache_key(cfg, corpus_fingerprint(cfg.source, cfg.include, cfg.exclude), given_tokenizer(cfg))


def _build(cfg: DataConfig, text: str, fingerprint: str, folder: Path, given=None) -> None:
    """Train the tokenizer (unless ``given``), encode both splits and write every cache file into ``folder``."""
    # nanoGPT's split: by character position, the last val_fraction of the text is validation
    split = int(len(text) * (1 - cfg.val_fraction))
    if given is not None:
        tok = given
    elif cfg.tokenizer == "char":
        tok = CharTokenizer.train(text)  # whole text, as nanoGPT does, so val has no unknown characters
    else:
        # train part only (val stays unseen); byte-level, so val always encodes
        tok = BPETokenizer.train(text[:split], vocab_size=cfg.bpe_vocab_size)
    dtype = token_dtype(tok.vocab_size)
    train = tok.encode_array(text[:split]).astype(dtype)
    val = tok.encode_array(text[split:]).astype(dtype)
    train.tofile(folder / "train.bin")
    val.tofile(folder / "val.bin")
    tok.save(folder / "tokenizer.json")
    meta = {
        "format": FORMAT_VERSION,
        "vocab_size": tok.vocab_size,
        "dtype": dtype.name,
        "n_train": len(train),
        "n_val": len(val),
        "source": cfg.source,
        "tokenizer": tok.kind,
        "bpe_vocab_size": cfg.bpe_vocab_size if tok.kind == "bpe" else None,
        "val_fraction": cfg.val_fraction,
        "train_bytes": len(text[:split].encode("utf-8")),
        "val_bytes": len(text[split:].encode("utf-8")),
        "fingerprint": fingerprint,
        "crc32": {"train": zlib.crc32(train.tobytes()), "val": zlib.crc32(val.tobytes())},
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")


def _discard(folder: Path) -> None:
    """Remove ``folder`` by first renaming it aside, so its name is free at once even if removal is slow."""
    aside = folder.with_name(f".{folder.name}.stale-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(folder, aside)
    except FileNotFoundError:  # another process got there first
        return
    shutil.rmtree(aside, ignore_errors=True)


def _publish(tmp: Path, target: Path, cfg: DataConfig, fingerprint: str) -> None:
    """Rename the finished ``tmp`` to ``target``; if a valid ``target`` appeared meanwhile, keep that one."""
    if target.exists() and _open(target, cfg, fingerprint) is None:
        _discard(target)  # a corrupt cache from an interrupted or tampered-with run
    try:
        os.rename(tmp, target)
    except OSError:
        if not target.exists():
            raise
        # another process published the same data first; the caller removes our copy


def _check_config(cfg: DataConfig) -> None:
    if cfg.tokenizer not in TOKENIZERS:
        known = ", ".join(sorted(TOKENIZERS))
        raise GeoformerError(f"unknown tokenizer {cfg.tokenizer!r}; known tokenizers: {known}")
    if not 0.0 < cfg.val_fraction < 1.0:
        raise GeoformerError("data.val_fraction must be in (0, 1)")
    if cfg.tokenizer == "bpe" and cfg.bpe_vocab_size < 256:
        raise GeoformerError("data.bpe_vocab_size must be >= 256 (the byte alphabet)")


def prepare_data(cfg: DataConfig, *, verbose: bool = False) -> TokenData:
    """The tokenised corpus of ``cfg``: read from the cache, or built and cached on first use."""
    _check_config(cfg)
    fingerprint = corpus_fingerprint(cfg.source, cfg.include, cfg.exclude)
    given = given_tokenizer(cfg)
    root = cache_root(cfg)
    target = root / cache_key(cfg, fingerprint, given)
    data = _open(target, cfg, fingerprint)
    if data is not None:
        if verbose:
            print(f"data: cached tokens in {target}")
        return data

    text = load_text(cfg.source, cfg.include, cfg.exclude)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=root))
    except OSError as e:
        raise GeoformerError(
            f"cannot write the data cache in {root}: {e.strerror}; set data.cache_dir or $GEOFORMER_CACHE"
        ) from None
    try:
        _build(cfg, text, fingerprint, tmp, given)
        _publish(tmp, target, cfg, fingerprint)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    data = _open(target, cfg, fingerprint)
    if data is None:
        raise GeoformerError(f"the data cache {target} is unreadable after writing it; delete it and retry")
    if verbose:
        print(
            f"data: {cfg.source} -> {cfg.tokenizer} tokens (vocab {data.vocab_size}): "
            f"{len(data.train):,} train, {len(data.val):,} val, cached in {target}"
        )
    return data


def check_block_size(data: TokenData, block_size: int) -> None:
    """Fail early, in words, when a split is too short to draw even one training block from."""
    for name, arr in (("training", data.train), ("validation", data.val)):
        if len(arr) <= block_size + 1:
            raise GeoformerError(
                f"block size {block_size} is larger than the {name} split ({len(arr)} tokens); "
                "use a smaller model.block_size or more data"
            )
