"""A recipe's own Trainer subclass (lsa-gd's layer, icl-vs-ft's keywords LM): what its config holds besides its own
keys, as iclab's run Config does (training, device, dtype, threads), reading it back from a run folder's
config.json, and bringing its run folder to a finished run."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from ..config import TrainConfig
from ..errors import UserError
from ..spec import build
from ..training.trainer import Trainer, resume, train
from .common import ensure_run


@dataclass
class OwnRunConfig:
    train: TrainConfig = field(default_factory=TrainConfig)
    device: str = "cpu"
    dtype: str = field(default="float32", metadata={"choices": ["float32", "float64"]})
    threads: int = field(default=0, metadata={"min": 0})  # torch threads; 0 keeps the process's

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


C = TypeVar("C", bound=OwnRunConfig)


def read_own_config(cls: type[C], run_dir: Path, what: str) -> C:
    """The config of class `cls` in `run_dir`/config.json; `what` names the model in the message if it is missing."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise UserError(f"{run_dir} holds no {what} (no config.json); remove it or choose another --out")
    return build(cls, json.loads(path.read_text()))


def ensure_own_run(run_dir: Path, config: OwnRunConfig, kind: type[Trainer], name: str, progress: bool) -> None:
    """Train `config` with `kind` into `run_dir`, resume it there, or reuse it when finished (common.ensure_run)."""
    ensure_run(
        run_dir,
        config,
        lambda: train(config, run_dir, progress=progress, kind=kind),
        lambda: resume(run_dir, progress, kind=kind),
        kind.read_config,
        name=name,
    )
