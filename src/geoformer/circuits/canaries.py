"""Capability suites ("canaries"): generated symbolic prompts with exact-match answers.

Each suite is a batch of fixed-length token rows over a tiny vocabulary of our own: ``PAD``, the
operators ``> . ~ ? ! = |`` and ``n_symbols`` atomic symbols (``a``, ``b``, ...). A prompt is
followed by its answer tokens; the loss and the score look only at the answer tokens.

============== ============================ =========  ==================================
suite          prompt                       answer     what it needs
============== ============================ =========  ==================================
modus_ponens   ``a>b. c>d. a?``             ``b``      find the rule whose antecedent is
                                                       asserted, copy its consequent
contrapositive ``a>b. c>d. ~b?``            ``~a``     the reverse lookup, with negation
transitivity   ``b>c. d>e. a>b. a!``        ``c``      two chained lookups (a distractor)
copy           ``a b c d e f|``             ``abcdef`` induction: repeat the sequence
control        ``a>b. c>d. a=``             ``a``      same surface form, no inference
============== ============================ =========  ==================================

Splits are disjoint by *symbol combination*: every suite has a key pair of symbols (the relevant
rule ``(a, b)``, the chain's ends ``(a, c)``, the first two copied symbols), the ordered pairs are
split once per ``(seed, suite)`` into train and test pairs, and an example belongs to the split of
its key pair. Generation is vectorised and deterministic for ``(seed, suite, split, n)``.

Each example also has a *corrupted* twin of the same shape whose query points elsewhere (a
different rule, a different first symbol), for activation patching.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from geoformer.errors import GeoformerError
from geoformer.models.gpt import eval_mode

PAD, IMPLIES, DOT, NOT, ASK, CHAIN, ECHO, SEP = range(8)
OPERATORS = "_>.~?!=|"  # display characters for the ids above
N_OPERATORS = len(OPERATORS)
SUITES = ("modus_ponens", "contrapositive", "transitivity", "copy", "control")
SEQ_LEN = 16  # model input length (rows are SEQ_LEN + 1 tokens: inputs and shifted targets)
IGNORE = -100


def vocab_size(n_symbols: int = 20) -> int:
    return N_OPERATORS + n_symbols


def decode(row: torch.Tensor | list[int]) -> str:
    """Display string of a token row (symbols as letters, PAD as ``_``)."""
    ids = row.tolist() if isinstance(row, torch.Tensor) else row
    return "".join(OPERATORS[i] if i < N_OPERATORS else chr(ord("a") + i - N_OPERATORS) for i in ids)


@dataclass
class Suite:
    """One capability suite: ``inputs`` (N, T) and ``targets`` (N, T) with ``-100`` outside answers.

    ``corrupt_inputs`` / ``corrupt_targets`` are the corrupted twins (same shapes, same answer
    positions); ``keys`` (N, 2) holds each example's key symbol pair (for split checks).
    """

    name: str
    split: str
    inputs: torch.Tensor
    targets: torch.Tensor
    corrupt_inputs: torch.Tensor
    corrupt_targets: torch.Tensor
    keys: torch.Tensor

    def __len__(self) -> int:
        return self.inputs.size(0)

    @property
    def answer_mask(self) -> torch.Tensor:
        return self.targets != IGNORE

    def subset(self, n: int) -> Suite:
        """The first ``n`` examples (a fixed canary subset)."""
        return Suite(
            self.name, self.split, self.inputs[:n], self.targets[:n],
            self.corrupt_inputs[:n], self.corrupt_targets[:n], self.keys[:n],
        )  # fmt: skip


def _gen(seed: int, name: str, split: str) -> torch.Generator:
    salt = zlib.crc32(f"{name}/{split}".encode())
    return torch.Generator().manual_seed((seed * 1_000_003 + salt) % (2**63))


def key_pairs(
    name: str, split: str, *, seed: int, n_symbols: int = 20, test_frac: float = 0.2
) -> torch.Tensor:
    """The ordered symbol pairs (P, 2) whose examples belong to ``split`` of suite ``name``."""
    if split not in ("train", "test"):
        raise GeoformerError(f"split must be 'train' or 'test', got {split!r}")
    return _key_pairs(name, split, seed, n_symbols, test_frac).clone()


@functools.lru_cache(maxsize=256)
def _key_pairs(name: str, split: str, seed: int, n_symbols: int, test_frac: float) -> torch.Tensor:
    a, b = torch.meshgrid(torch.arange(n_symbols), torch.arange(n_symbols), indexing="ij")
    pairs = torch.stack([a.flatten(), b.flatten()], 1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    perm = torch.randperm(len(pairs), generator=_gen(seed, name, "pairs"))
    n_test = max(1, int(round(test_frac * len(pairs))))
    idx = perm[:n_test] if split == "test" else perm[n_test:]
    return pairs[idx.sort().values]


def _distinct_others(key: torch.Tensor, k: int, n_symbols: int, g: torch.Generator) -> torch.Tensor:
    """(N, k) symbols, distinct within a row and different from the row's key pair."""
    scores = torch.rand(key.size(0), n_symbols, generator=g)
    scores.scatter_(1, key, 2.0)  # key symbols sort last
    return scores.argsort(dim=1)[:, :k]


def _rule(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    n = a.size(0)
    return torch.stack([a, torch.full((n,), IMPLIES), b, torch.full((n,), DOT)], 1)


def _tok(v: int, n: int) -> torch.Tensor:
    return torch.full((n, 1), v, dtype=torch.long)


def _swap_rows(r1: torch.Tensor, r2: torch.Tensor, swap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    s = swap[:, None]
    return torch.where(s, r2, r1), torch.where(s, r1, r2)


def _pack(prompt: torch.Tensor, answer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets (N, SEQ_LEN): next-token targets, ``-100`` except at answer tokens."""
    n, lp = prompt.shape
    la = answer.size(1)
    row = torch.cat([prompt, answer], 1)
    if row.size(1) > SEQ_LEN + 1:
        raise ValueError("prompt + answer longer than SEQ_LEN + 1")
    row = F.pad(row, (0, SEQ_LEN + 1 - row.size(1)), value=PAD)
    inputs, targets = row[:, :-1].clone(), row[:, 1:].clone()
    keep = torch.zeros(SEQ_LEN, dtype=torch.bool)
    keep[lp - 1 : lp - 1 + la] = True
    targets[:, ~keep] = IGNORE
    return inputs, targets


def make_suite(
    name: str,
    split: str,
    n: int,
    *,
    seed: int = 0,
    n_symbols: int = 20,
    test_frac: float = 0.2,
    stream: int = 0,
) -> Suite:
    """Generate ``n`` examples of suite ``name`` from ``split`` ("train" or "test").

    ``seed`` fixes the split (which key pairs are train and test); ``stream`` picks an independent
    draw of examples within it (training samples a fresh stream every step, so nothing is memorised
    but the split).
    """
    if name not in SUITES:
        raise GeoformerError(f"unknown suite {name!r}; known suites: {', '.join(SUITES)}")
    if n < 1:
        raise GeoformerError(f"suite size must be >= 1, got {n}")
    if n_symbols < 8:
        raise GeoformerError(f"n_symbols must be >= 8, got {n_symbols}")
    g = _gen(seed, name, f"{split}/{stream}" if stream else split)
    pairs = key_pairs(name, split, seed=seed, n_symbols=n_symbols, test_frac=test_frac)
    key = pairs[torch.randint(len(pairs), (n,), generator=g)]
    other = _distinct_others(key, 5, n_symbols, g)
    sym = key.new_tensor(N_OPERATORS)
    A, B = key[:, 0] + sym, key[:, 1] + sym
    C, D, E = (other[:, i] + sym for i in range(3))
    swap = torch.rand(n, generator=g) < 0.5

    def two_rules() -> torch.Tensor:
        return torch.cat(_swap_rows(_rule(A, B), _rule(C, D), swap), 1)

    if name == "modus_ponens":
        base = two_rules()
        clean = (torch.cat([base, A[:, None], _tok(ASK, n)], 1), B[:, None])
        corrupt = (torch.cat([base, C[:, None], _tok(ASK, n)], 1), D[:, None])
    elif name == "contrapositive":
        base = two_rules()
        clean = (
            torch.cat([base, _tok(NOT, n), B[:, None], _tok(ASK, n)], 1),
            torch.stack([_tok(NOT, n)[:, 0], A], 1),
        )
        corrupt = (
            torch.cat([base, _tok(NOT, n), D[:, None], _tok(ASK, n)], 1),
            torch.stack([_tok(NOT, n)[:, 0], C], 1),
        )
    elif name == "transitivity":
        # chain A>M, M>B with distractor D>E (M = C here); the three rules in a random order
        rules = torch.stack([_rule(A, C), _rule(C, B), _rule(D, E)], 1)  # (n, 3, 4)
        order = torch.rand(n, 3, generator=g).argsort(1)
        base = rules.gather(1, order[:, :, None].expand(-1, -1, 4)).reshape(n, 12)
        clean = (torch.cat([base, A[:, None], _tok(CHAIN, n)], 1), B[:, None])
        corrupt = (torch.cat([base, D[:, None], _tok(CHAIN, n)], 1), E[:, None])
    elif name == "copy":
        seq = torch.stack([A, B, C, D, E, other[:, 4] + sym], 1)
        cseq = seq.clone()
        cseq[:, 0] = _fresh(seq, n_symbols, g) + sym  # a symbol not in the sequence
        clean = (torch.cat([seq, _tok(SEP, n)], 1), seq)
        corrupt = (torch.cat([cseq, _tok(SEP, n)], 1), cseq)
    else:  # control
        base = two_rules()
        clean = (torch.cat([base, A[:, None], _tok(ECHO, n)], 1), A[:, None])
        corrupt = (torch.cat([base, C[:, None], _tok(ECHO, n)], 1), C[:, None])
    x, y = _pack(*clean)
    cx, cy = _pack(*corrupt)
    return Suite(name, split, x, y, cx, cy, key)


def _fresh(seq: torch.Tensor, n_symbols: int, g: torch.Generator) -> torch.Tensor:
    """One symbol per row that does not occur in the row of ``seq`` (symbol ids 0..n_symbols-1 + offset)."""
    scores = torch.rand(seq.size(0), n_symbols, generator=g)
    scores.scatter_(1, seq - N_OPERATORS, 2.0)
    return scores.argmin(dim=1)


def make_suites(
    names: tuple[str, ...] | list[str] = SUITES,
    split: str = "train",
    n: int = 1000,
    *,
    seed: int = 0,
    n_symbols: int = 20,
) -> dict[str, Suite]:
    return {s: make_suite(s, split, n, seed=seed, n_symbols=n_symbols) for s in names}


def answer_logprob(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N,) summed log-probability of each example's answer tokens."""
    mask = targets != IGNORE
    lp = torch.log_softmax(logits if logits.dtype == torch.float64 else logits.float(), dim=-1)  # float64 stays
    picked = lp.gather(-1, targets.clamp_min(0)[..., None])[..., 0]
    return (picked * mask).sum(-1)


def exact_match(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N,) bool: every answer token is the argmax prediction."""
    mask = targets != IGNORE
    return ((logits.argmax(-1) == targets) | ~mask).all(-1)


def answer_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over answer tokens only."""
    flat = logits.reshape(-1, logits.size(-1))
    return F.cross_entropy(
        flat if flat.dtype == torch.float64 else flat.float(), targets.reshape(-1), ignore_index=IGNORE
    )


@torch.no_grad()
def score(model: torch.nn.Module, suite: Suite, batch_size: int = 2048) -> float:
    """Exact-match accuracy of ``model`` on ``suite`` (batched, eval mode restored afterwards)."""
    hits = []
    with eval_mode(model):
        for i in range(0, len(suite), batch_size):
            logits, _ = model(suite.inputs[i : i + batch_size])
            hits.append(exact_match(logits, suite.targets[i : i + batch_size]))
    return torch.cat(hits).float().mean().item()


def score_all(model: torch.nn.Module, suites: dict[str, Suite]) -> dict[str, float]:
    return {k: score(model, s) for k, s in suites.items()}
