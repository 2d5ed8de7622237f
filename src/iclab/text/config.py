"""The config of a language-modelling run: corpus and tokenizer, context length, model, training, evaluation.

It reuses iclab's TransformerConfig (attention: softmax, linear, momentum or ema) and TrainConfig (AdamW, warm-up and
decay, clipping, checkpoints); for text, `train.eval_every` logs the validation loss at `eval.lengths` on the first
`train.eval_prompts` validation windows. YAML files and `--set key=value` overrides work as for ICL runs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..config import TrainConfig, apply_overrides, read_yaml
from ..errors import UserError
from ..models.transformer import TransformerConfig
from ..spec import build, key_error
from .corpus import CorpusConfig


@dataclass
class TextEvalConfig:
    # context lengths (tokens) at which validation perplexity is reported; each <= context
    lengths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    windows: int = field(default=0, metadata={"min": 0})  # validation windows to score (0: the whole split)
    batch_size: int = field(default=64, metadata={"min": 1})  # windows per forward pass


@dataclass
class TextConfig:
    seed: int = 0  # model initialisation and the order of training windows
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    context: int = field(default=128, metadata={"min": 1})  # tokens the model sees (training window length)
    model: TransformerConfig = field(default_factory=lambda: TransformerConfig(layers=3, width=96, heads=3))
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            steps=500, batch_size=32, lr=2e-3, warmup=50, eval_every=100, eval_prompts=64, checkpoint_every=250
        )
    )
    eval: TextEvalConfig = field(default_factory=TextEvalConfig)
    device: str = "cpu"  # cpu, cuda, cuda:N or mps
    dtype: str = field(default="float32", metadata={"choices": ["float32", "float64"]})  # parameters and data
    threads: int = field(default=1, metadata={"min": 0})  # torch intra-op threads; 0 keeps torch's default

    def check(self, prefix: str) -> None:
        lengths = self.eval.lengths
        if not lengths or any(not 1 <= n <= self.context for n in lengths):
            raise key_error("eval.lengths", f"each length must be in 1 .. context ({self.context}), got {lengths}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_text_config(
    path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None
) -> TextConfig:
    """Read a YAML config (or start from `base`), apply `key=value` overrides, validate. Keys not given keep the
    text defaults above, also inside a section: `model.attention=momentum` changes only that key of `model`."""
    data = read_yaml(path) if path is not None else (base or {})
    return build(TextConfig, apply_overrides(merge(TextConfig().to_dict(), data), overrides or []))


def merge(defaults: dict, data: dict) -> dict:
    """`data` laid over `defaults`, section by section."""
    out = dict(defaults)
    for key, value in data.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_text_config(run_dir: Path) -> TextConfig:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a text run directory (no config.json); create one with iclab text train")
    try:
        return build(TextConfig, json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read run config {path}: {e}") from None
