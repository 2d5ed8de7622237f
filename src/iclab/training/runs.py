"""Run directories: where a run keeps its config, metrics, checkpoints, evaluations and report.

RUN_DIR/config.json        the resolved config (rebuilds model and data)
RUN_DIR/metrics.jsonl      training log, one JSON object per line
RUN_DIR/checkpoints/       step-NNNNNNN/ folders (see checkpoint.py)
RUN_DIR/eval/curves.csv    error curves: task,estimator,k,mean,lo,hi
RUN_DIR/report.md          the readable summary
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import Config, config_from_json
from ..errors import UserError
from ..model import ICLTransformer
from .checkpoint import latest_checkpoint, load_model_weights, read_state


def build_model(config: Config) -> ICLTransformer:
    return ICLTransformer(config.model, config.dims, config.points)


def set_threads(config: Config) -> None:
    """Small models run fastest with few threads; a busy 2-core machine punishes oversubscription."""
    if config.threads > 0:
        torch.set_num_threads(config.threads)


def torch_dtype(config: Config) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[config.dtype]


def device_of(config: Config) -> torch.device:
    try:
        device = torch.device(config.device)
    except RuntimeError:
        raise UserError(
            f"config key 'device': {config.device!r} is not a torch device (cpu, cuda, cuda:1, mps)"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("config key 'device': cuda requested but no CUDA device is available; use --set device=cpu")
    return device


def read_config(run_dir: Path) -> Config:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.json); create one with iclab train")
    return config_from_json(path)


def load_model(run_dir: Path, config: Config | None = None) -> tuple[ICLTransformer, dict]:
    """The run's latest checkpointed model (eval mode, on the config's device) and that checkpoint's state."""
    config = config or read_config(run_dir)
    set_threads(config)
    ckpt = latest_checkpoint(run_dir)
    state = read_state(ckpt)
    model = build_model(config)
    load_model_weights(model, ckpt)
    return model.to(device_of(config), torch_dtype(config)).eval(), state


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a crash: everything before it is still good
            break
    return rows


def run_status(run_dir: Path, read=read_config) -> tuple[int, int] | None:
    """(step reached, steps planned) of the run in `run_dir` (its config read by `read`), or None when it holds
    no run."""
    if not (Path(run_dir) / "config.json").is_file():
        return None
    config = read(run_dir)
    try:
        step = read_state(latest_checkpoint(run_dir))["step"]
    except UserError:
        step = 0
    return step, config.train.steps
