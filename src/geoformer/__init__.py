"""geoformer: structure-aware transformers measured against a plain GPT baseline."""

from geoformer.errors import GeoformerError

__version__ = "0.1.0"
__all__ = ["GeoformerError", "__version__"]
