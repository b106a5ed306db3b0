"""Models: the GPT baseline that every attention kind plugs into, and the level-structured GPT.

``build_model(cfg)`` picks the class by ``cfg.arch`` ("gpt" | "levels"); an unknown name is a one-line
error listing the known ones.
"""

from __future__ import annotations

import torch.nn as nn

from geoformer.errors import GeoformerError
from geoformer.models.gpt import GPT, GPTConfig, eval_mode
from geoformer.models.levels import LevelGPT, LevelOptions

_MODELS: dict[str, type[nn.Module]] = {"gpt": GPT, "levels": LevelGPT}


def names() -> list[str]:
    """The registered model architectures, sorted."""
    return sorted(_MODELS)


def get(arch: str) -> type[nn.Module]:
    try:
        return _MODELS[arch]
    except KeyError:
        raise GeoformerError(f"unknown model.arch {arch!r}; known: {', '.join(names())}") from None


def validate_config(cfg: GPTConfig) -> None:
    """Check ``model.arch`` and (for "levels") ``model.levels``; each problem is a one-line error."""
    cls = get(cfg.arch)
    cfg.validate()  # norm / pos / mlp and what the attention kind supports
    if cfg.levels and cls is not LevelGPT:
        raise GeoformerError(f'model.levels is only used with model.arch = "levels" (got {cfg.arch!r})')
    if cls is LevelGPT:
        LevelGPT.check_config(cfg)


def build_model(cfg: GPTConfig) -> nn.Module:
    """Instantiate the model named by ``cfg.arch``."""
    return get(cfg.arch)(cfg)


__all__ = ["GPT", "GPTConfig", "LevelGPT", "LevelOptions", "build_model", "eval_mode", "names", "validate_config"]
