"""gpt2lab.widgets: thin ipywidgets views over gpt2lab.explain.

Names are imported lazily (PEP 562): `from gpt2lab.widgets import TrainingDashboard` loads only its module.
Exporting a widget here is one line in _EXPORTS (name -> module) and one TYPE_CHECKING import, so that static
tools (Pylance, code maps) see where it lives; tests/test_packaging.py checks the two lists agree.
"""
from importlib import import_module
from typing import TYPE_CHECKING

_EXPORTS = {
    "TokenizerPlayground": "tokenizer", "MergeStepper": "tokenizer",              # lesson 1
    "NeighbourExplorer": "embeddings", "PositionSimilarityView": "embeddings",    # lesson 2
    "AttentionStepper": "attention",                                              # lesson 3
    "LayerNormExplorer": "layernorm", "ReductionStepper": "layernorm",            # lesson 4
    "BackpropStepper": "backprop", "GradFlowView": "backprop",                    # lesson 5
    "GeluExplorer": "mlp",                                                        # lesson 6
    "SamplingLab": "sampling",                                                    # lesson 7
    "TrainingDashboard": "dashboard",                                             # lesson 8
}

if TYPE_CHECKING:  # what static tools (Pylance, code maps) read: where each name really lives
    from .tokenizer import TokenizerPlayground, MergeStepper
    from .embeddings import NeighbourExplorer, PositionSimilarityView
    from .attention import AttentionStepper
    from .layernorm import LayerNormExplorer, ReductionStepper
    from .backprop import BackpropStepper, GradFlowView
    from .mlp import GeluExplorer
    from .sampling import SamplingLab
    from .dashboard import TrainingDashboard

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
