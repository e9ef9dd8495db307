"""gpt2lab.kernels."""
