"""The seed's precision estimate (004, "HNF Theorem 4.7"): p >= log2(c * kappa * D^2 / eps) mantissa bits."""

from __future__ import annotations

import math

# mantissa bits (explicit stored bits) of the formats one might train in
MANTISSA_BITS = {"float64": 52, "float32": 23, "tf32": 10, "bfloat16": 7, "float16": 10}


def precision_bits(kappa: float, diameter: float, eps: float, c: float = 1.0) -> float:
    """Mantissa bits the seed's bound asks for: log2(c * kappa * diameter^2 / eps).

    Assumptions (the seed's, stated rather than endorsed): ``kappa`` is a curvature of the map being
    computed (here the trainer's kappa = ||H|| / ||g||^2 on a probe batch), ``diameter`` bounds the
    region the parameters move in (e.g. the parameter-vector norm or its change over training), ``eps``
    is the target accuracy of the result, and ``c`` is an unspecified constant taken as 1. It is a
    sufficient-condition heuristic, not a measured requirement: compare it with what bf16/fp16 training
    actually does before believing it. No dtype is switched automatically.
    """
    if kappa < 0 or diameter < 0 or eps <= 0 or c <= 0:
        raise ValueError("precision_bits needs kappa >= 0, diameter >= 0, eps > 0, c > 0")
    x = c * kappa * diameter**2 / eps
    return math.log2(x) if x > 0 else -math.inf


def formats_sufficient(bits: float) -> dict[str, bool]:
    """Which formats the bound calls sufficient (mantissa bits >= required bits)."""
    return {name: m >= bits for name, m in MANTISSA_BITS.items()}
