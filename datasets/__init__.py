"""Text corpora and the GPT-2 tokenizer, all offline (data comes from installed packages)."""
from .shakespeare import shakespeare, play_names, render_play, TINY_PLAYS
from .text import load_text
from .tokenizer import gpt2_encoding, EOT, EOT_ID, VOCAB_SIZE, GPT2_PATTERN
from .tokens import (BatchSampler, TokenData, cache_dir, encode_cached, load_tokens, split_tokens)

__all__ = ["shakespeare", "play_names", "render_play", "TINY_PLAYS", "load_text", "gpt2_encoding", "EOT",
           "EOT_ID", "VOCAB_SIZE", "GPT2_PATTERN", "BatchSampler", "TokenData", "cache_dir", "encode_cached",
           "load_tokens", "split_tokens"]
