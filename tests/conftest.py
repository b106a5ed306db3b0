"""Shared fixtures: a small deterministic corpus, a private data cache and tiny run configs."""

from __future__ import annotations

import random

import pytest
import torch

from geoformer import config as C

WORDS = (
    "the king is dead long live the king to be or not to be that is the question "
    "all the world's a stage and all the men and women merely players what light through yonder window breaks"
).split()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Prepared token arrays go to a per-session temp folder, never the user's cache."""
    monkeypatch.setenv("GEOFORMER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(autouse=True)
def _one_thread():
    """Test tensors are tiny: a second intra-op thread only adds barriers (up to 100x slower on a busy
    2-core machine). Subprocesses (torchrun, benchmarks) choose their own threads."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_text(n_words: int = 6000, seed: int = 0) -> str:
    rng = random.Random(seed)
    lines = []
    for _ in range(n_words // 12):
        lines.append(" ".join(rng.choice(WORDS) for _ in range(12)).capitalize() + ".")
    return "\n".join(lines) + "\n"


@pytest.fixture
def corpus(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text(make_text(), encoding="utf-8")
    return p


def tiny_config(source, **train) -> C.RunConfig:
    raw = {
        "seed": 0,
        "model": {"block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 32},
        "data": {"source": str(source)},
        "train": {
            "max_iters": 20,
            "batch_size": 4,
            "lr": 3e-3,
            "min_lr": 3e-4,
            "warmup_iters": 2,
            "eval_interval": 5,
            "eval_iters": 2,
            "threads": 1,
            **train,
        },
    }
    return C.build_config(raw)


def run_cli(argv, capsys):
    """Run ``geoformer ARGV`` in-process; returns (exit status, stdout, stderr)."""
    from geoformer.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    out, err = capsys.readouterr()
    return e.value.code, out, err


def assert_one_line_error(code, err, match):
    """The CLI's bad-input contract: exit status 2, one line on stderr containing ``match``, no traceback."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert match in lines[0], lines[0]


TINY = """
seed = 0
[model]
block_size = 16
n_layer = 1
n_head = 2
n_embd = 16
[train]
max_iters = 6
batch_size = 4
eval_interval = 3
eval_iters = 2
threads = 1
"""


@pytest.fixture
def tiny_toml(tmp_path, corpus):
    """A 1-layer width-16 run of 6 iterations on the test corpus, as a TOML file."""
    p = tmp_path / "tiny.toml"
    p.write_text(TINY + f'[data]\nsource = "{corpus}"\n')
    return p
