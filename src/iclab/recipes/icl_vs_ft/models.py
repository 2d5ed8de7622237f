"""The icl-vs-ft recipe's keywords LM: a small TokenLM pretrained on the keyword-classification world
(tasks/keywords.py), trained by iclab's Trainer into an ordinary run folder (config.json, metrics.jsonl,
checkpoints/step-N/), so it resumes after an interruption like any run.

Each training sequence is a fresh task instance: `demos` demonstrations and a query, cross-entropy on the label
positions only. KeywordsTrainer keeps the loop the shipped model was trained with: AdamW decaying every parameter
(the Trainer's decays matrices only) and a warm-up multiplied into a cosine over all steps (the Trainer's cosine
starts after the warm-up). Every checkpoint is kept, the initial weights included: the emergence study measures
the model at CHECKPOINTS of pretraining.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ...config import TrainConfig
from ...errors import UserError
from ...models.transformer import TokenLM, TransformerConfig, lm_forward_flops
from ...tasks.keywords import KeywordClassification
from ...training.checkpoint import checkpoint_dirs, latest_checkpoint, load_model_weights
from ...training.flops import step_flops
from ...training.runs import RunDir
from ...training.trainer import Trainer, TrainResult
from ..dryrun import Planned, trainer_run
from ..models import export_pretrained, pretrained_dir
from ..own_runs import OwnRunConfig, ensure_own_run, read_own_config
from ..sizes import KeywordsLMSize, Sizes
from ..trained import train_info

NAME = "icl-vs-ft"
TASK = KeywordClassification(vocab=64, classes=2, keywords=4, length=4, noise=0.2, prior=0.5)
MODEL = TransformerConfig(layers=2, width=64, heads=2)
TRAIN_DEMOS = 12
MODEL_NAME = "keywords_lm"  # its folder under DIR/models/MODE/ and in the package's pretrained/
SIZES = Sizes(NAME, KeywordsLMSize)  # scales/icl-vs-ft/SCALE.yaml: pretraining steps, instances scored
# the pretraining checkpoints (fractions of the steps; 1: the model itself) at which the emergence study measures
CHECKPOINTS = (0, 0.125, 0.25, 0.5)


@dataclass
class KeywordsLMConfig(OwnRunConfig):
    """A keywords LM's config.json: the world it learns, its shape, and (OwnRunConfig) how it trains."""

    seed: int = 0
    task: KeywordClassification = field(default_factory=lambda: dataclasses.replace(TASK))
    model: TransformerConfig = field(default_factory=lambda: dataclasses.replace(MODEL))
    demos: int = field(default=TRAIN_DEMOS, metadata={"min": 1})  # demonstrations before each training query


def checkpoint_steps(steps: int) -> list[int]:
    return sorted({int(f * steps) for f in CHECKPOINTS} - {steps})


def max_tokens(task: KeywordClassification = TASK, demos: int = TRAIN_DEMOS) -> int:
    return 1 + (demos + 1) * (task.length + 2)


def model_config(steps: int) -> KeywordsLMConfig:
    """The keywords LM of `steps` pretraining steps: batches of 128 instances, AdamW at 2e-3, a 100-step warm-up,
    checkpoints at every step the emergence study reads (and between them, at the same spacing), all kept."""
    every = math.gcd(steps, *checkpoint_steps(steps))
    train = TrainConfig(
        steps=steps, batch_size=128, lr=2e-3, warmup=100, weight_decay=0.01, grad_clip=1.0,
        checkpoint_every=every, keep_checkpoints=steps // every + 1, eval_every=0,
    )  # fmt: skip
    return KeywordsLMConfig(train=train)


def read_model_config(run_dir: Path) -> KeywordsLMConfig:
    return read_own_config(KeywordsLMConfig, run_dir, "keywords LM")


def build_keywords_lm(config: KeywordsLMConfig) -> TokenLM:
    return TokenLM(config.model, config.task.vocab, max_tokens(config.task, config.demos))


class KeywordsTrainer(Trainer):
    """train.Trainer for the keywords LM: fresh task instances every step, the loss on label positions only."""

    read_config = staticmethod(read_model_config)
    resume_command = "iclab reproduce icl-vs-ft with the same --out and scale; it resumes"

    def build_model(self) -> TokenLM:
        self.positions = self.config.task.label_positions(self.config.demos + 1)
        return build_keywords_lm(self.config)

    def build_optimizer(self) -> torch.optim.Optimizer:
        train = self.config.train  # one group: weight decay on every parameter, as the shipped model trained
        return torch.optim.AdamW(
            self.model.parameters(), lr=train.lr, betas=tuple(train.betas), weight_decay=train.weight_decay
        )

    def lr_at(self, step: int) -> float:
        """Linear warm-up times a cosine over all steps, from train.lr down to train.lr * min_lr_ratio."""
        t = self.config.train
        warm = min(1.0, (step + 1) / t.warmup) if t.warmup else 1.0
        return t.lr * warm * (t.min_lr_ratio + (1 - t.min_lr_ratio) * (0.5 * (1 + math.cos(math.pi * step / t.steps))))

    def batch_loss(self) -> torch.Tensor:
        task, g = self.config.task, self.generator
        ex = task.examples(task.instances(self.config.train.batch_size, g), self.config.demos + 1, g)
        ids = task.sequence(ex["inputs"], ex["labels"])[self.rows, :-1].to(self.device)
        with self.autocast():
            logits = self.forward(ids)[:, self.positions]
            return F.cross_entropy(logits.reshape(-1, task.vocab), ex["labels"][self.rows].reshape(-1).to(self.device))

    def step_flops(self, step: int) -> int:
        c = self.config
        forward = lm_forward_flops(c.model, c.task.vocab, max_tokens(c.task, c.demos) - 1)
        return step_flops(forward, c.train.batch_size)

    def run(self, progress: bool = True) -> TrainResult:
        if self.step == 0:
            self.save()  # the initial weights: the emergence study's first checkpoint
        return super().run(progress)


def ensure_model(folder: Path, steps: int, progress: bool) -> tuple[TokenLM, dict]:
    """The keywords LM of `steps` steps in `folder`: trained there, resumed, or reused when finished."""
    ensure_own_run(folder, model_config(steps), KeywordsTrainer, MODEL_NAME, progress)
    return load_model(folder, steps)


def shipped_model(steps: int) -> tuple[TokenLM, dict]:
    """The keywords LM that ships with iclab (scripts/ship_pretrained.py)."""
    folder = pretrained_dir(MODEL_NAME)
    if not (folder / "config.json").is_file():
        raise UserError("no pretrained keywords LM ships with this iclab; run without --pretrained")
    return load_model(folder, steps)


def load_model(folder: Path, steps: int) -> tuple[TokenLM, dict]:
    """The finished keywords LM in `folder` (eval mode) and what the recipe reports of it."""
    config = model_config(steps)
    if RunDir(folder, read_model_config).decide(config) != "reuse":  # and refuses a model of other settings
        raise UserError(f"{folder} holds no finished keywords LM; run icl-vs-ft without --pretrained to train it")
    model = build_keywords_lm(config)
    load_model_weights(model, latest_checkpoint(folder))
    info = {"model": dataclasses.asdict(config.model), "task": dataclasses.asdict(config.task)} | train_info(folder)
    return model.eval(), info | {"parameters": model.num_parameters()}


def saved_steps(folder: Path) -> dict[int, Path]:
    """The checkpoints in `folder` by step."""
    return {int(path.name[len("step-") :]): path for path in checkpoint_dirs(folder)}


def checkpoints(folder: Path, steps: int) -> dict[int, TokenLM]:
    """The models at the emergence study's pretraining checkpoints (none where a checkpoint is missing)."""
    saved = saved_steps(folder)
    if not all(step in saved for step in checkpoint_steps(steps)):
        return {}
    out = {}
    for step in checkpoint_steps(steps):
        out[step] = build_keywords_lm(model_config(steps))
        load_model_weights(out[step], saved[step])
        out[step].eval()
    return out


def export_model(run_dir: Path, dest_root: Path) -> Path:
    """Ship the finished keywords LM in `run_dir` (scripts/ship_pretrained.py): its config and final weights, as
    every shipped model, and the weights of the emergence study's checkpoints (no optimizer state)."""
    dest = export_pretrained(run_dir, MODEL_NAME, dest_root)
    steps = read_model_config(run_dir).train.steps
    saved = saved_steps(run_dir)
    for step in checkpoint_steps(steps):
        (dest / "checkpoints" / saved[step].name).mkdir()
        for name in ("model.safetensors", "state.json"):
            shutil.copy2(saved[step] / name, dest / "checkpoints" / saved[step].name / name)
    return dest


def plan(mode: str) -> list[Planned]:
    """The recipe's one trained run, its keywords LM, for `iclab reproduce --dry-run`."""
    config = model_config(SIZES[mode]["steps"])
    with torch.device("meta"):  # counts parameters without allocating them
        parameters = build_keywords_lm(config).num_parameters()
    return [trainer_run(f"models/{mode}/{MODEL_NAME}", KeywordsTrainer, config, max_tokens(), parameters)]
