"""gpt2lab: learn GPT-2 from the inside.

Subpackages map onto the repository's top-level folders (see pyproject.toml):
``gpt2lab.datasets`` (datasets/), ``gpt2lab.kernels`` (kernels/), ``gpt2lab.gpt2`` (gpt2/),
``gpt2lab.explain`` (explain/), ``gpt2lab.widgets`` (widgets/).
"""

__version__ = "0.1.0"
