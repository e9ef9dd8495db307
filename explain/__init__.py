"""gpt2lab.explain."""
