"""The claims ledger mechanism: registration, verdict rules, rendering and the CLI's error paths."""

from __future__ import annotations

import json
import math

import pytest

from geoformer.errors import GeoformerError
from geoformer.experiments import claims as L


def test_ci_verdict_rules():
    assert L.ci_verdict(-0.3, -0.1, want="negative") == "reproduced"
    assert L.ci_verdict(0.1, 0.3, want="negative") == "not reproduced"
    assert L.ci_verdict(-0.1, 0.3, want="negative") == "inconclusive"
    assert L.ci_verdict(0.1, 0.3, want="positive") == "reproduced"
    assert L.ci_verdict(math.nan, 0.3, want="negative") == "inconclusive"


def test_verdict_must_be_known():
    with pytest.raises(ValueError):
        L.Verdict(measured="x", verdict="sort of")


def test_arena_claim_is_registered_with_every_field():
    claims = L.all_claims()
    c = claims["004-constant-beats-cosine"]
    assert c.claim and c.source.startswith("seeds/004") and c.experiment and c.rule


def test_run_claims_writes_ledger_and_survives_a_broken_check(tmp_path, monkeypatch):
    fake = {
        "t-ok": L.Claim("t-ok", "x is 1", "seeds/x", "exp", "rule", lambda ctx: L.Verdict("1.0", "reproduced")),
        "t-broken": L.Claim("t-broken", "y | z", "seeds/y", "exp", "rule", lambda ctx: 1 / 0),
    }
    monkeypatch.setattr(L, "all_claims", lambda: fake)
    rows = L.run_claims(out=tmp_path, quick=True, only=None, quiet=True)
    assert [r["verdict"] for r in rows] == ["reproduced", "inconclusive"]
    assert "ZeroDivisionError" in rows[1]["measured"]
    md = (tmp_path / "CLAIMS.md").read_text()
    assert "| t-ok | x is 1 |" in md and "y \\| z" in md and "1 reproduced, 0 not reproduced, 1 inconclusive" in md
    data = json.loads((tmp_path / "claims.json").read_text())
    assert data["meta"]["quick"] is True and len(data["claims"]) == 2
    with pytest.raises(GeoformerError, match="already holds a claims run"):
        L.run_claims(out=tmp_path, quick=True, only=None, quiet=True)
    # --only updates the named rows of an existing ledger and keeps the others
    fake["t-broken"] = L.Claim("t-broken", "y | z", "seeds/y", "exp", "rule", lambda ctx: L.Verdict("2", "not reproduced"))
    rows = L.run_claims(out=tmp_path, quick=False, only=["t-broken"], quiet=True)
    assert [(r["id"], r["verdict"], r["mode"]) for r in rows] == [
        ("t-ok", "reproduced", "quick"), ("t-broken", "not reproduced", "full")]
    assert "0 inconclusive" in (tmp_path / "CLAIMS.md").read_text()
    with pytest.raises(GeoformerError, match="unknown claim 'nope'; known claims: t-broken, t-ok"):
        L.run_claims(out=tmp_path / "o", quick=True, only=["nope"], quiet=True)


def test_merge_ledgers_copies_rows_and_keeps_their_dates(tmp_path, monkeypatch):
    fake = {
        i: L.Claim(i, f"claim {i}", "seeds/x", "exp", "rule", lambda ctx, i=i: L.Verdict(i, "reproduced"))
        for i in ("t-a", "t-b", "t-c")
    }
    monkeypatch.setattr(L, "all_claims", lambda: fake)
    L.run_claims(out=tmp_path / "main", quick=False, only=["t-a", "t-b"], quiet=True)
    L.run_claims(out=tmp_path / "side", quick=True, only=["t-c", "t-a"], quiet=True)
    side = {r["id"]: r for r in json.loads((tmp_path / "side" / "claims.json").read_text())["claims"]}
    rows = L.merge_ledgers(tmp_path / "main", [tmp_path / "side"])
    assert [(r["id"], r["mode"]) for r in rows] == [("t-a", "quick"), ("t-b", "full"), ("t-c", "quick")]
    assert rows[2]["created"] == side["t-c"]["created"]
    assert "| t-c | claim t-c |" in (tmp_path / "main" / "CLAIMS.md").read_text()
    with pytest.raises(GeoformerError, match="holds no claims ledger"):
        L.merge_ledgers(tmp_path / "main", [tmp_path / "nothing"])
