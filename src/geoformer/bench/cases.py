"""One attention benchmark case: the module and input a JSON spec describes, and the unit of work measured.

Shared by the timing loop (:mod:`geoformer.bench.attention`) and the memory child
(:mod:`geoformer.bench._measure_memory`), which rebuilds the case from its spec in a fresh process.
"""

from __future__ import annotations

from typing import Any

import torch

from geoformer import attention

DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}


def build_case(spec: dict[str, Any], device: torch.device) -> tuple[torch.nn.Module, torch.Tensor]:
    """The attention module (train mode, no dropout) and an input ``x`` (B, T, C) that requires grad."""
    dtype = DTYPES[spec["dtype"]]
    torch.manual_seed(spec["seed"])
    module = (
        attention.build(
            spec["kind"],
            spec["embd"],
            spec["heads"],
            dropout=0.0,
            bias=False,
            block_size=spec["seq"],
            options=spec["options"],
        )
        .to(device=device, dtype=dtype)
        .train()
    )
    x = torch.randn(spec["batch"], spec["seq"], spec["embd"], device=device, dtype=dtype, requires_grad=True)
    return module, x


def fwd_bwd(module: torch.nn.Module, x: torch.Tensor) -> None:
    """The measured unit of work."""
    module(x).sum().backward()


def zero_grads(module: torch.nn.Module, x: torch.Tensor) -> None:
    module.zero_grad(set_to_none=True)
    x.grad = None
