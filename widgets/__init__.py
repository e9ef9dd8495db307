"""gpt2lab.widgets: thin ipywidgets views over gpt2lab.explain.

Names are imported lazily (PEP 562): `from gpt2lab.widgets import TrainingDashboard` loads only its module.
Exporting a widget here is one line in _EXPORTS (name -> module).
"""
from importlib import import_module

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

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
