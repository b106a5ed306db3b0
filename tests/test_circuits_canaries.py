"""Capability suites: determinism, disjoint splits, well-formed answers, batched scoring."""

from __future__ import annotations

import pytest
import torch

from geoformer.circuits import canaries as C
from geoformer.errors import GeoformerError


@pytest.mark.parametrize("name", C.SUITES)
def test_deterministic_for_a_seed(name):
    a = C.make_suite(name, "train", 50, seed=3)
    b = C.make_suite(name, "train", 50, seed=3)
    c = C.make_suite(name, "train", 50, seed=4)
    for f in ("inputs", "targets", "corrupt_inputs", "corrupt_targets", "keys"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    assert not torch.equal(a.inputs, c.inputs)
    d = C.make_suite(name, "train", 50, seed=3, stream=7)  # another draw from the same split
    assert not torch.equal(a.inputs, d.inputs)
    train_pairs = {tuple(r) for r in C.key_pairs(name, "train", seed=3).tolist()}
    assert {tuple(r) for r in d.keys.tolist()} <= train_pairs


@pytest.mark.parametrize("name", C.SUITES)
def test_splits_disjoint_by_key_pair(name):
    tr = C.key_pairs(name, "train", seed=1)
    te = C.key_pairs(name, "test", seed=1)
    as_set = lambda p: {tuple(r) for r in p.tolist()}  # noqa: E731
    assert not as_set(tr) & as_set(te)
    assert len(tr) + len(te) == 20 * 19
    s_tr = C.make_suite(name, "train", 400, seed=1)
    s_te = C.make_suite(name, "test", 400, seed=1)
    assert not as_set(s_tr.keys) & as_set(s_te.keys)
    assert as_set(s_te.keys) <= as_set(te)
    rows_tr = {tuple(r) for r in s_tr.inputs.tolist()}
    assert not rows_tr & {tuple(r) for r in s_te.inputs.tolist()}


def test_answers_are_what_the_prompt_implies():
    s = C.make_suite("modus_ponens", "train", 200, seed=0)
    x, y = s.inputs, s.targets
    pos = (y != C.IGNORE).nonzero()[:, 1]
    assert (pos == 9).all()
    q = x[:, 8]  # the asserted symbol; its rule's consequent is the answer
    ante = torch.stack([x[:, 0], x[:, 4]], 1)
    cons = torch.stack([x[:, 2], x[:, 6]], 1)
    which = (ante == q[:, None]).long().argmax(1)
    assert ((ante == q[:, None]).sum(1) == 1).all()
    assert torch.equal(y[:, 9], cons.gather(1, which[:, None])[:, 0])
    c = C.make_suite("copy", "test", 50, seed=0)
    assert torch.equal(c.targets[:, 6:12], c.inputs[:, :6])
    assert C.decode(c.inputs[0])[6] == "|"
    # corrupted twins keep the answer positions
    for name in C.SUITES:
        s = C.make_suite(name, "train", 30, seed=2)
        assert torch.equal(s.targets != C.IGNORE, s.corrupt_targets != C.IGNORE)
        assert not torch.equal(s.inputs, s.corrupt_inputs)


def test_exact_match_needs_every_answer_token():
    y = torch.full((3, 4), C.IGNORE)
    y[:, 1:3] = torch.tensor([[5, 6], [5, 6], [5, 6]])
    logits = torch.zeros(3, 4, 10)
    logits[0, 1, 5] = logits[0, 2, 6] = 1  # both right
    logits[1, 1, 5] = logits[1, 2, 7] = 1  # one wrong
    logits[2, 0, 9] = 1  # only non-answer positions set
    assert C.exact_match(logits, y).tolist() == [True, False, False]


def test_bad_input_is_a_geoformer_error():
    with pytest.raises(GeoformerError, match="known suites"):
        C.make_suite("nope", "train", 5)
    with pytest.raises(GeoformerError):
        C.make_suite("copy", "valid", 5)


def test_float64_logits_keep_float64():
    """A float64 model's answer log-probs and loss stay float64 (a .float() cast made float64 HVPs agree to 5e-8)."""
    import torch

    from geoformer.circuits import canaries as C

    s = C.make_suite("copy", "test", 8, seed=0)
    logits = torch.randn(*s.targets.shape, C.vocab_size(), dtype=torch.float64)
    assert C.answer_logprob(logits, s.targets).dtype == torch.float64
    assert C.answer_loss(logits, s.targets).dtype == torch.float64
