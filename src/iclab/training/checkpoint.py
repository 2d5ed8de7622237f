"""Checkpoints.

A checkpoint is a directory `checkpoints/step-NNNNNNN/` holding `model.safetensors`, `optimizer.safetensors`
(the optimizer's moments or momentum buffers and the data-generator state) and `state.json` (step, elapsed time,
optimizer hyper-parameters). Several optimizers (Muon + AdamW) are stored side by side, each under its name.
It is written under a temporary name and renamed into place, so a crash never leaves a half-written checkpoint
under a real name, and older checkpoints are pruned only after the new one exists. Weights load through
safetensors: nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import UserError
from ..files import atomic_write_json, disk_full_error, is_disk_full
from .optim import Optimizers

FORMAT = 1


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if p.is_dir() and p.name[5:].isdigit())


def _parts(optimizer: torch.optim.Optimizer | Optimizers) -> dict[str, torch.optim.Optimizer]:
    """A run's torch optimizers by name (optim.Optimizers); a single optimizer is unnamed, '' (the layout of
    every AdamW checkpoint, unchanged since before Muon)."""
    return getattr(optimizer, "parts", None) or {"": optimizer}


def _optimizer_tensors(optimizer: torch.optim.Optimizer | Optimizers) -> tuple[dict[str, torch.Tensor], dict]:
    """Every optimizer's tensors (moments, momentum buffers) named `[part.]state.INDEX.KEY`, and its JSON rest:
    the param groups and non-tensor state, under the part's name (at the top level for a single optimizer)."""
    tensors, metas = {}, {}
    for part, opt in _parts(optimizer).items():
        state, prefix, scalars = opt.state_dict(), f"{part}." if part else "", {}
        for index, entry in state["state"].items():
            for key, value in entry.items():
                if torch.is_tensor(value):
                    tensors[f"{prefix}state.{index}.{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars[f"{index}.{key}"] = value
        metas[part] = {"param_groups": state["param_groups"], "scalars": scalars}
    return tensors, metas.get("", metas)


def _load_optimizer(
    optimizer: torch.optim.Optimizer | Optimizers, tensors: dict[str, torch.Tensor], meta: dict, ckpt: Path
) -> None:
    for part, opt in _parts(optimizer).items():
        if (part and part not in meta) or (not part and "param_groups" not in meta):
            raise UserError(
                f"checkpoint {ckpt} holds the state of another train.optimizer; "
                "resume it with the config it was trained with"
            )
        prefix, state = f"{part}." if part else "", {}
        for name, value in tensors.items():
            if name.startswith(prefix + "state."):
                _, index, key = name[len(prefix) :].split(".", 2)
                state.setdefault(int(index), {})[key] = value
        part_meta = meta[part] if part else meta
        for name, value in part_meta["scalars"].items():
            index, key = name.split(".", 1)
            state.setdefault(int(index), {})[key] = value
        try:
            opt.load_state_dict({"state": state, "param_groups": part_meta["param_groups"]})
        except ValueError as e:
            raise UserError(f"checkpoint {ckpt} does not fit the run's optimizer: {e}") from None


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | Optimizers,
    generator: torch.Generator,
    info: dict,
    keep: int = 2,
) -> Path:
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-step-{step:07d}-"))
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors, meta = _optimizer_tensors(optimizer)
    tensors["rng.data"] = generator.get_state()
    try:
        save_file(weights, tmp / "model.safetensors")
        save_file(tensors, tmp / "optimizer.safetensors")
        state = {"format": FORMAT, "step": step, "optimizer": meta, "generator_device": str(generator.device)}
        atomic_write_json(tmp / "state.json", state | info)
        if final.exists():  # re-saving the same step (the final save of a resumed run that was complete)
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(e):  # the earlier checkpoints are untouched: pruning comes only after a complete save
            needed = sum(t.numel() * t.element_size() for t in [*weights.values(), *tensors.values()])
            raise disk_full_error(root, needed) from None
        raise
    for old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"checkpoint file missing: {path}")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(
            f"checkpoint file {path} is truncated or corrupt ({e}); delete {path.parent} to fall back "
            "to the previous checkpoint"
        ) from None


def read_state(ckpt: Path) -> dict:
    path = ckpt / "state.json"
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"checkpoint file missing: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(
            f"checkpoint file {path} is corrupt ({e}); delete {ckpt} to fall back to the previous checkpoint"
        ) from None
    if state.get("format") != FORMAT:
        raise UserError(f"checkpoint {ckpt} has format {state.get('format')!r}; this iclab reads format {FORMAT}")
    return state


def latest_checkpoint(run_dir: Path) -> Path:
    dirs = checkpoint_dirs(run_dir)
    if not dirs:
        raise UserError(f"no checkpoint in {Path(run_dir) / 'checkpoints'}: train the run first (iclab train)")
    return dirs[-1]


def load_model_weights(model: torch.nn.Module, ckpt: Path) -> None:
    tensors = _load_tensors(ckpt / "model.safetensors")
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise UserError(
            f"checkpoint {ckpt / 'model.safetensors'} does not fit the run's model config: {first}"
        ) from None


def load_training_state(
    ckpt: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | Optimizers, generator: torch.Generator
) -> dict:
    """Restore model, optimizer and data generator from `ckpt`; return its state.json."""
    state = read_state(ckpt)
    load_model_weights(model, ckpt)
    tensors = _load_tensors(ckpt / "optimizer.safetensors")
    if "rng.data" not in tensors:
        raise UserError(f"checkpoint file {ckpt / 'optimizer.safetensors'} lacks the data-generator state")
    generator.set_state(tensors.pop("rng.data"))
    _load_optimizer(optimizer, tensors, state["optimizer"], ckpt)
    return state
