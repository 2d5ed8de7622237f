"""Live monitoring of long runs (`train.loggers`): every row of metrics.jsonl also goes to TensorBoard or W&B.

metrics.jsonl stays the record; these are views of it, written by rank 0 alone. A row becomes scalars: loss, lr,
seconds, flops, and the validation curve as `val_error/k=NN`, each at the row's step.

- tensorboard: event files in RUN_DIR/tensorboard (`tensorboard --logdir RUN_DIR`). A resumed run purges the
  events after its checkpoint's step, as metrics.jsonl drops those lines.
- wandb: a W&B run in RUN_DIR/wandb with the config attached, offline unless WANDB_MODE says otherwise (offline
  needs no account or network; `wandb sync` uploads it later). A resume continues the same W&B run (its id is kept in
  RUN_DIR/wandb/run_id).

Neither package is an iclab requirement: a missing one is a one-line error naming the package to install,
raised on every rank before training starts. They are imported only when asked for, hence inside the classes.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from pathlib import Path

from ..errors import UserError
from ..files import atomic_write_text

PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}  # logger -> the pip package it needs


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def require(names: list[str]) -> None:
    for name in names:
        if not installed(PACKAGES[name]):
            raise UserError(
                f"train.loggers: {name} needs the {PACKAGES[name]} package; pip install {PACKAGES[name]} "
                f"(or drop {name} from train.loggers)"
            )


def scalars(row: dict) -> dict[str, float]:
    """A metrics.jsonl row as named scalars (the step is the x axis, not a scalar)."""
    out = {k: row[k] for k in ("loss", "lr", "seconds", "flops") if k in row}
    for k, error in enumerate(row.get("val_error", [])):
        out[f"val_error/k={k:02d}"] = error
    return out


class TensorBoard:
    def __init__(self, run_dir: Path, config: dict, step: int):
        from torch.utils.tensorboard import SummaryWriter

        # flush every 10 s, not every 120: the point is to watch a run live
        self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=step or None, flush_secs=10)

    def log(self, row: dict) -> None:
        for name, value in scalars(row).items():
            self.writer.add_scalar(name, value, row["step"])

    def close(self) -> None:
        self.writer.close()


def wandb_id(run_dir: Path) -> str:
    """The W&B run id of this run folder: made once, kept in RUN_DIR/wandb/run_id, so a resume logs to the same run."""
    path = run_dir / "wandb" / "run_id"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, uuid.uuid4().hex[:12])
    return path.read_text().strip()


class Wandb:
    def __init__(self, run_dir: Path, config: dict, step: int):
        import wandb

        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "iclab"),
            name=Path(run_dir).name,
            id=wandb_id(Path(run_dir)),
            resume="allow",  # a resumed run continues the same W&B run instead of opening a new one
            dir=str(run_dir),
            config=config,
            mode=os.environ.get("WANDB_MODE", "offline"),
        )

    def log(self, row: dict) -> None:
        self.run.log(scalars(row), step=row["step"])

    def close(self) -> None:
        self.run.finish()


LOGGERS = {"tensorboard": TensorBoard, "wandb": Wandb}


def open_loggers(names: list[str], run_dir: Path, config: dict, step: int) -> list[TensorBoard | Wandb]:
    """The loggers of `names` for a run in `run_dir` that starts (or resumes) at `step`."""
    require(names)
    return [LOGGERS[name](run_dir, config, step) for name in names]
