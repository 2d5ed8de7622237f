"""Language modelling on text with iclab's own transformer: corpora and a fixed split, a locally trained BPE
tokenizer, training with iclab's loop, and validation perplexity at several context lengths."""

from .config import TextConfig, load_text_config, read_text_config
from .corpus import CorpusConfig
from .data import TokenData, prepare_data
from .train import evaluate_run, load_text_model, resume_text, train_text

__all__ = [
    "CorpusConfig",
    "TextConfig",
    "TokenData",
    "evaluate_run",
    "load_text_config",
    "load_text_model",
    "prepare_data",
    "read_text_config",
    "resume_text",
    "train_text",
]
