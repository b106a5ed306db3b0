"""Models: the GPT baseline that every attention kind plugs into."""

from geoformer.models.gpt import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig"]
