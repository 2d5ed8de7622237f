"""The architectures an in-context learner can have: `model: {name: ..., layers, width, ...}` in a run config.

`MODELS` is the registry (`iclab list models`); importing this package registers every built-in architecture.
Each lives in one module: its config dataclass (extending `ModelConfig`) and the `ICLModel` it builds.
"""

from . import hf, hf_recurrent, hybrid, mamba, mambaformer, rnn, transformer  # noqa: F401  (each module registers its architectures)
from .base import MODELS, ICLModel, ModelConfig, interleave
from .transformer import ICLTransformer, TransformerConfig

__all__ = [
    "MODELS",
    "ICLModel",
    "ICLTransformer",
    "ModelConfig",
    "TransformerConfig",
    "interleave",
]
