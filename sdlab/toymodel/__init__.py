"""The shipped toy Stable Diffusion: its tokenizer, architecture, training and weights."""

from .architecture import TINY, TOY, Architecture, build_pipeline
from .tokenizer import build_tokenizer, check_prompts, is_toy_tokenizer, unknown_words, warn_unknown_words

__all__ = ["TINY", "TOY", "Architecture", "build_pipeline", "build_tokenizer", "check_prompts", "is_toy_tokenizer", "unknown_words", "warn_unknown_words"]
