"""The data layer: corpus loading, tokenizers, cached token arrays and batch sampling."""

from geoformer.data.batches import fixed_batches, sample_batch
from geoformer.data.corpus import load_text
from geoformer.data.prepare import TokenData, check_block_size, prepare_data
from geoformer.data.tokenize import BPETokenizer, CharTokenizer, load_tokenizer

__all__ = [
    "BPETokenizer",
    "CharTokenizer",
    "TokenData",
    "check_block_size",
    "fixed_batches",
    "load_text",
    "load_tokenizer",
    "prepare_data",
    "sample_batch",
]
