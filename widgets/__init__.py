"""gpt2lab.widgets."""
