"""gpt2lab.gpt2."""
