"""Tokenizers: characters (nanoGPT's shakespeare_char) and a byte-level BPE trained locally.

Both share one small interface — ``train``, ``encode``, ``decode``, ``vocab_size``, ``save``/``load`` —
and are saved as one JSON file whose ``kind`` field says which class reads it back
(:func:`load_tokenizer`). Encoding and decoding are vectorised (numpy / the Rust ``tokenizers``
library); there is no Python loop over tokens. (The module is not called ``tokenizers`` so that it
cannot shadow that library.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from geoformer.errors import GeoformerError


def _check_ids(ids: Any, vocab_size: int) -> np.ndarray:
    arr = np.asarray(ids, dtype=np.int64).reshape(-1)
    bad = (arr < 0) | (arr >= vocab_size)
    if bad.any():
        first = int(arr[bad][0])
        raise GeoformerError(f"cannot decode token id {first}: not in the vocabulary (size {vocab_size})")
    return arr


def _codepoints(text: str) -> np.ndarray:
    # surrogatepass: a lone surrogate gets a code point (then fails the vocabulary check) instead of crashing
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


class CharTokenizer:
    """One id per character; the vocabulary is the sorted set of the training text's characters."""

    kind = "char"

    def __init__(self, chars: str):
        self.chars = chars
        self._cps = _codepoints(chars)  # sorted, since str ordering is code-point ordering

    @classmethod
    def train(cls, text: str, **_: Any) -> CharTokenizer:
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode_array(self, text: str) -> np.ndarray:
        cps = _codepoints(text)
        idx = np.searchsorted(self._cps, cps)
        known = idx < len(self._cps)
        known[known] = self._cps[idx[known]] == cps[known]
        if not known.all():
            bad = chr(int(cps[~known][0]))
            raise GeoformerError(f"character {bad!r} is not in the tokenizer's vocabulary")
        return idx.astype(np.int64)

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def decode(self, ids: Any) -> str:
        arr = _check_ids(ids, self.vocab_size)
        return self._cps[arr].astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "chars": self.chars}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CharTokenizer:
        return cls(d["chars"])

    def save(self, path: str | Path) -> None:
        _write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> CharTokenizer:
        return _expect(load_tokenizer(path), cls, path)


# Long texts are cut between an ASCII letter and a newline. The GPT-2 split regex always ends a pre-token
# there and picks that pre-token without looking past it (unlike whitespace runs, whose split depends on
# what follows), so the chunks encode to exactly the ids of the whole text.
_CHUNK_CUT = re.compile(r"[A-Za-z](?=\n)")


class BPETokenizer:
    """Byte-level BPE (GPT-2 style) trained with the ``tokenizers`` library; round-trips any UTF-8 text."""

    kind = "bpe"
    chunk_chars = 1 << 18  # long texts are encoded in chunks of about this size, in parallel

    def __init__(self, tokenizer: Tokenizer):
        self.tok = tokenizer

    @staticmethod
    def _blank() -> Tokenizer:
        tok = Tokenizer(models.BPE())
        # no prefix space: encode(a) + encode(b) decodes to a + b, and decode(encode(s)) == s exactly
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        return tok

    @classmethod
    def train(cls, text: str, vocab_size: int = 1024, **_: Any) -> BPETokenizer:
        """Train on ``text`` (one sequence, so pre-tokenisation is the same as when encoding it whole)."""
        tok = cls._blank()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=[],
            show_progress=False,
        )
        tok.train_from_iterator([text], trainer=trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def _chunks(self, text: str) -> list[str]:
        chunks, start = [], 0
        while len(text) - start > self.chunk_chars:
            m = _CHUNK_CUT.search(text, start + self.chunk_chars)
            if m is None:
                break
            chunks.append(text[start : m.end()])
            start = m.end()
        chunks.append(text[start:])
        return chunks

    def encode_array(self, text: str) -> np.ndarray:
        encodings = self.tok.encode_batch(self._chunks(text), add_special_tokens=False)
        return np.concatenate([np.asarray(e.ids, dtype=np.int64) for e in encodings])

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def decode(self, ids: Any) -> str:
        return self.tok.decode(_check_ids(ids, self.vocab_size).tolist())

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "tokenizer": json.loads(self.tok.to_str())}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BPETokenizer:
        return cls(Tokenizer.from_str(json.dumps(d["tokenizer"])))

    def save(self, path: str | Path) -> None:
        _write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        return _expect(load_tokenizer(path), cls, path)


TOKENIZERS: dict[str, type[CharTokenizer] | type[BPETokenizer]] = {"char": CharTokenizer, "bpe": BPETokenizer}


def _write_json(path: str | Path, d: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(d, ensure_ascii=False), encoding="utf-8")


def _expect(tok: Any, cls: type, path: str | Path) -> Any:
    if not isinstance(tok, cls):
        raise GeoformerError(f"tokenizer file {path} holds a {tok.kind!r} tokenizer, not {cls.kind!r}")
    return tok


def load_tokenizer(path: str | Path) -> CharTokenizer | BPETokenizer:
    """Read a tokenizer saved by either class, choosing the class by the file's ``kind``."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GeoformerError(f"tokenizer file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GeoformerError(f"cannot read tokenizer file {path}: {e.__class__.__name__}") from None
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind not in TOKENIZERS:
        raise GeoformerError(f"tokenizer file {path} has unknown kind {kind!r}; known kinds: bpe, char")
    try:
        return TOKENIZERS[kind].from_dict(d)
    except Exception as e:  # a truncated or hand-edited file: any parse failure is the file's fault
        raise GeoformerError(f"malformed tokenizer file {path}: {e.__class__.__name__}") from None
