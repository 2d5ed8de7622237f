"""Run configuration: YAML files plus `--set key=value` overrides, validated into dataclasses.

Every run directory stores the resolved config as `config.json`; that file alone rebuilds the model and data.

Configs are data, and old ones keep their meaning. `version` 2 made Garg et al.'s definitions the defaults (see
`pin_version_1`); a config.json without a `version` key was written before, and reads with iclab's earlier
definitions written into it explicitly. A YAML file without one is current (version 2); `version: 1` in it asks
for the earlier definitions.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.resources
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError
from .models import ModelConfig, TransformerConfig
from .spec import build, key_error, parse_value, unknown_key_error, yaml_problem
from .tasks import make_inputs, make_task


@dataclass
class Ramp:
    """A curriculum variable: start, then +inc every `every` steps, capped at end."""

    start: int = field(metadata={"min": 1})  # the value at step 0
    end: int = field(metadata={"min": 1})  # the final value, reached and kept
    inc: int = field(default=1, metadata={"min": 0})  # added every `every` steps
    every: int = field(default=2000, metadata={"min": 1})  # steps between increments

    def check(self, prefix: str) -> None:
        if self.end < self.start:
            raise key_error(f"{prefix}.end", f"must be >= start ({self.start}), got {self.end}")

    def at(self, step: int) -> int:
        return min(self.start + self.inc * (step // self.every), self.end)


@dataclass
class Curriculum:
    """Garg et al.'s curriculum on the active input dimensions and the number of points per prompt."""

    dims: Ramp | None = None  # the active input dimensions (the rest of x is zero); none: all `dims` from the start
    points: Ramp | None = None  # points per training prompt; none: `points` from the start


LOGGERS = ("tensorboard", "wandb")


@dataclass
class TrainConfig:
    steps: int = field(default=2000, metadata={"min": 0})  # optimizer steps
    batch_size: int = field(default=256, metadata={"min": 1})  # prompts per step
    lr: float = field(default=1e-3, metadata={"gt": 0.0})  # peak learning rate, after warm-up
    schedule: str = field(default="cosine", metadata={"choices": ["constant", "cosine", "linear"]})  # lr after warm-up
    min_lr_ratio: float = field(default=0.1, metadata={"min": 0.0, "max": 1.0})  # final lr / lr for decays
    warmup: int = field(default=200, metadata={"min": 0})  # steps of linear lr warm-up from 0
    # the regression classes' loss (classification classes train with their own, see the task's `loss`). mse:
    # squared error of y, as in Garg et al. normalized: each prompt's squared error divided by its class's E[y^2],
    # the evaluation's metric, so that in a mixture a class with small outputs weighs as much as the rest
    loss: str = field(default="mse", metadata={"choices": ["mse", "normalized"]})
    # adamw: AdamW for every parameter. muon: Muon for the blocks' 2-D weights, AdamW for embeddings, read-in/out,
    # biases and norms (see training/optim.py); both take lr, the schedule and weight_decay
    optimizer: str = field(default="adamw", metadata={"choices": ["adamw", "muon"]})
    weight_decay: float = field(default=0.01, metadata={"min": 0.0})  # AdamW's decoupled weight decay
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # Adam's moment decays
    grad_clip: float = field(default=1.0, metadata={"min": 0.0})  # 0 turns clipping off
    log_every: int = field(default=10, metadata={"min": 1})  # steps between lines of metrics.jsonl
    checkpoint_every: int = field(default=500, metadata={"min": 1})  # steps between checkpoints
    keep_checkpoints: int = field(default=2, metadata={"min": 1})  # newest checkpoints kept; older pruned
    # a quick error curve on a fixed validation set, logged to metrics.jsonl (0 turns it off)
    eval_every: int = field(default=100, metadata={"min": 0})
    eval_prompts: int = field(default=512, metadata={"min": 1})  # prompts of that validation set
    # GPU speed-ups, off by default: bf16 autocast of the forward pass (fast on CUDA; ~50x slower on CPUs without
    # bf16 units), and torch.compile of the training forward (pays its compile time back only on long runs)
    autocast: str = field(default="none", metadata={"choices": ["none", "bf16"]})
    compile: bool = False  # torch.compile the training forward (see autocast above)
    # live views of metrics.jsonl (which stays the record) for long runs: tensorboard, wandb (offline unless
    # WANDB_MODE says otherwise); each needs its package installed (training/loggers.py)
    loggers: list[str] = field(default_factory=list)

    def check(self, prefix: str) -> None:
        for i, name in enumerate(self.loggers):
            if name not in LOGGERS:
                raise key_error(f"{prefix}.loggers[{i}]", f"unknown logger {name!r}; choose from {', '.join(LOGGERS)}")


@dataclass
class EvalConfig:
    prompts: int = field(default=1280, metadata={"min": 1})  # fixed evaluation prompts per task
    batch_size: int = field(default=640, metadata={"min": 1})  # prompts per forward pass (memory, not results)
    seed: int = 1234  # a fixed evaluation set, independent of the training seed
    bootstrap: int = field(default=1000, metadata={"min": 1})  # resamples for the confidence band
    confidence: float = field(default=0.9, metadata={"gt": 0.0, "lt": 1.0})  # of the bootstrap band (lo, hi)
    # (x, y) pairs per evaluation prompt; none: the curriculum's final points, as Garg et al. evaluate, or `points`
    # without a points curriculum (iclab evaluated at `points` before version 2). More than `points` evaluates
    # beyond the training length (`iclab eval --points`), for models without a learned position table
    points: int | None = field(default=None, metadata={"min": 1})
    baselines: list[str] = field(
        default_factory=lambda: ["zero", "averaging", "knn", "least_squares", "ridge", "lasso"]
    )  # estimators scored beside the model (`iclab list estimators`)


VERSION = 2  # of the definitions a config means; see pin_version_1


@dataclass
class Config:
    version: int = field(default=VERSION, metadata={"min": 1, "max": VERSION})  # of the definitions (see fidelity)
    seed: int = 0  # model initialisation and training data
    dims: int = field(default=5, metadata={"min": 1})  # d: the dimension of x
    points: int = field(default=11, metadata={"min": 1})  # (x, y) pairs per prompt; the last x is the query
    task: dict = field(default_factory=lambda: {"name": "linear"})  # function class and its parameters
    inputs: dict = field(default_factory=lambda: {"name": "isotropic"})  # distribution of x
    model: ModelConfig = field(default_factory=TransformerConfig)  # the architecture: `iclab list models`
    train: TrainConfig = field(default_factory=TrainConfig)
    curriculum: Curriculum = field(default_factory=Curriculum)
    eval: EvalConfig = field(default_factory=EvalConfig)
    device: str = "cpu"  # cpu, cuda, cuda:N or mps
    dtype: str = field(default="float32", metadata={"choices": ["float32", "float64"]})  # parameters and data
    # torch intra-op threads; small models run fastest on 1 or 2 (benchmarks/ddp.py); 0 keeps torch's default
    threads: int = field(default=1, metadata={"min": 0})

    def check(self, prefix: str) -> None:
        if self.version != VERSION:  # build_config rewrites old versions first; other builders do not
            raise key_error("version", f"a version-{self.version} config is only read by load_config/config_from_json")
        task = make_task(self.task, self.dims)  # validates the task spec (names, parameters, nnz <= dims, ...)
        if task.outputs > 1 and self.eval.baselines:
            raise key_error(
                "eval.baselines",
                f"{self.task['name']}'s outputs are vectors, which no baseline estimator predicts; set it to []",
            )
        make_inputs(self.inputs, self.dims)
        from .baselines import make_estimator

        for i, name in enumerate(self.eval.baselines):
            make_estimator(name, prefix=f"eval.baselines[{i}]")
        for key, ramp, top in (
            ("dims", self.curriculum.dims, self.dims),
            ("points", self.curriculum.points, self.points),
        ):
            if ramp is not None and ramp.end > top:
                raise key_error(f"curriculum.{key}.end", f"must be <= {key} ({top}), got {ramp.end}")
        if self.eval.points is not None and self.eval.points > self.points and self.model.length_limited:
            raise key_error(
                "eval.points",
                f"must be <= points ({self.points}) for a model with a learned position table, got "
                f"{self.eval.points}; models without one (positions: type or none, llama, bloom, mamba, lstm, ...) "
                "evaluate at any length",
            )
        if self.train.autocast != "none" and self.dtype != "float32":
            raise key_error("train.autocast", f"{self.train.autocast} autocast needs dtype float32, got {self.dtype}")

    @property
    def eval_points(self) -> int:
        """The length of evaluation prompts: eval.points, else the curriculum's final points, else points."""
        if self.eval.points is not None:
            return self.eval.points
        return self.curriculum.points.end if self.curriculum.points is not None else self.points

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def pin_version_1(data: dict) -> dict:
    """A version-1 config rewritten as the version-2 config that means the same: every definition that changed
    to follow Garg et al. gets iclab's earlier value explicitly (where the config does not give it)."""
    data = copy.deepcopy(data)
    _pin(data.get("task"), VERSION_1_TASKS)
    _pin(data.get("inputs"), VERSION_1_INPUTS)
    if isinstance(data.get("curriculum"), dict) and data["curriculum"].get("points") is not None:
        data.setdefault("eval", {}).setdefault("points", data.get("points", Config.points))
    return data | {"version": VERSION}


# name -> (key, its value before version 2)
VERSION_1_TASKS = {
    "sparse_linear": ("nnz", 2),
    "tree": ("splits", "active"),
    "linear_classification": ("loss", "squared"),
    "finite_pool": ("replacement", True),
}
VERSION_1_INPUTS = {"skewed": ("power", 1.0), "half_subspace": ("rounding", "ceil")}


def _pin(spec: Any, old: dict) -> None:
    """Give the spec (and the specs nested in it: pools, mixtures, combinations) its old value, in place."""
    if not isinstance(spec, dict):
        return
    if spec.get("name") in old:
        key, value = old[spec["name"]]
        spec.setdefault(key, value)
    for child in [spec.get("base"), spec.get("first"), spec.get("second"), *(spec.get("components") or [])]:
        _pin(child, old)


def set_key(data: dict, dotted: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict, creating mappings on the way (validation happens afterwards)."""
    node = data
    *parents, last = dotted.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = copy.deepcopy(data)
    for item in overrides:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UserError(f"bad --set '{item}': write --set key=value, e.g. --set train.steps=500")
        set_key(data, key.strip(), parse_value(value))
    return data


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"config file {path} is not valid YAML: {yaml_problem(e)}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def packaged_config(name: str) -> Path:
    """A config shipped with iclab, e.g. 'demo' -> iclab/configs/demo.yaml."""
    path = Path(str(importlib.resources.files("iclab") / "configs" / f"{name}.yaml"))
    if not path.is_file():
        names = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise unknown_key_error(name, names, "packaged config")
    return path


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None) -> Config:
    """Read a YAML config (or start from `base` / the defaults), apply overrides, validate."""
    data = read_yaml(path) if path is not None else copy.deepcopy(base or {})
    return build_config(apply_overrides(data, overrides or []))


def build_config(data: dict) -> Config:
    """Validate a config dict; one of an older `version` is first rewritten to mean what it meant."""
    version = data.get("version", VERSION)
    if isinstance(version, int) and not isinstance(version, bool) and version < VERSION:
        data = pin_version_1(data)
    return build(Config, data)


def config_from_json(path: Path) -> Config:
    """A run's stored config; one written before `version` existed is version 1."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read run config {path}: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"cannot read run config {path}: expected a JSON object, got {type(data).__name__}")
    return build_config({"version": 1} | data)
