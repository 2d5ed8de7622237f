"""The training loop: AdamW or Muon (optim.py) with warm-up and decay, gradient clipping, Garg's curriculum,
checkpoints, resume.

Resuming restores model, optimizer and the data generator, so the loss sequence of an interrupted and resumed
run equals that of an uninterrupted one (on the same device and thread count). Ctrl-C (SIGINT) and SIGTERM stop
training between two steps, never inside one (interrupts.py): the loop saves that step's checkpoint, exactly as a
scheduled one, and raises `Interrupted` (exit status 130 / 143 from `iclab`).

Under `torchrun --nproc_per_node N` the same loop trains data-parallel (see distributed.py): every rank draws the
same global batch and trains on its slice, DDP averages gradients, rank 0 alone writes files. One process runs
exactly the code path of a plain run, so its numbers do not change.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..config import Config, TrainConfig
from ..errors import UserError
from ..files import atomic_write_json, atomic_write_text
from ..interrupts import Interrupted, deferred, received, signal_name
from ..scoring import make_eval_set, prompt_errors
from ..tasks import index_params, make_inputs, make_task, sample_prompts
from . import distributed, loggers
from .checkpoint import latest_checkpoint, load_training_state, save_checkpoint
from .flops import step_flops
from .guard import refuse_training
from .optim import Optimizers, make_optimizer
from .runs import RunDir, build_model, device_of, read_config, read_metrics, set_threads, torch_dtype


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    loss: float
    seconds: float
    parameters: int


def learning_rate(train: TrainConfig, step: int) -> float:
    """Linear warm-up over `warmup` steps, then constant, cosine or linear decay to lr * min_lr_ratio."""
    if step < train.warmup:
        return train.lr * (step + 1) / train.warmup
    if train.schedule == "constant":
        return train.lr
    progress = (step - train.warmup) / max(1, train.steps - train.warmup)
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if train.schedule == "cosine" else 1 - progress
    return train.lr * (train.min_lr_ratio + (1 - train.min_lr_ratio) * shape)


def join(config: Config) -> distributed.Context:
    """This process's place in a (possibly data-parallel) run of `config`; joins the process group under torchrun.
    A batch that does not divide among the processes fails here, on every rank, before anything is written."""
    ctx = distributed.context()
    distributed.batch_rows(config.train.batch_size, ctx)
    distributed.join(ctx, distributed.local_device(device_of(config), ctx))
    return ctx


class Trainer:
    """Owns the model, optimizer and data stream of one run directory (this rank's share of it under torchrun).

    It trains the ICL transformer on prompts of the run's task. A subclass trains something else with the same
    loop, logging, checkpoints, resume and data parallelism by overriding the methods marked "subclasses" that
    differ and the run kind's `read_config` and `resume_command` (see text.train.TextTrainer, and the recipes
    lsa_gd and icl_vs_ft, whose layer and keywords LM keep their own optimizer or schedule)."""

    read_config = staticmethod(read_config)  # reads a run folder's config.json
    resume_command = "iclab train --resume"

    def __init__(self, config: Config, run_dir: Path):
        refuse_training(f"a model in {run_dir}")  # e.g. under `iclab reproduce --pretrained` (guard.py)
        self.config, self.run_dir = config, Path(run_dir)
        set_threads(config)
        self.ctx = join(config)
        loggers.require(config.train.loggers)  # on every rank, so that a missing package stops them all
        self.rows = distributed.batch_rows(config.train.batch_size, self.ctx)
        self.device, self.dtype = distributed.local_device(device_of(config), self.ctx), torch_dtype(config)
        with torch.random.fork_rng(devices=[]):  # initialise from the run's seed, leaving global RNG state alone
            torch.manual_seed(config.seed)
            self.model = self.build_model()
        self.model.to(self.device, self.dtype)
        self.optimizer = self.build_optimizer()
        # what a training step calls: the model, wrapped for gradient averaging and/or compiled on request;
        # checkpoints and validation use the plain model (same weights, no wrapper state)
        self.forward = self.model
        if self.ctx.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = DistributedDataParallel(self.model, device_ids=ids)
        if config.train.compile:
            self.forward = torch.compile(self.forward)
        # data stream: its own generator, saved in checkpoints so that resumed runs see the same prompts
        self.generator = torch.Generator(self.device).manual_seed(config.seed + 1)
        self.step, self.seconds, self.flops = 0, 0.0, 0  # flops: of every training step so far (flops.py)
        self.forward_flops: dict[int, int] = {}  # prompt length -> FLOPs of one forward pass
        self.val = self.validation_set() if config.train.eval_every and self.ctx.is_main else None
        self.val_note = ""  # the progress bar's latest validation error (progress_note)

    def build_model(self) -> torch.nn.Module:
        """The model to train (subclasses). Prompts come from the run's task and input distribution."""
        self.task = make_task(self.config.task, self.config.dims)
        self.inputs = make_inputs(self.config.inputs, self.config.dims)
        return build_model(self.config)

    def build_optimizer(self) -> torch.optim.Optimizer | Optimizers:
        """The optimizer of `train.optimizer` (subclasses), built after the model."""
        return make_optimizer(self.model, self.config.train)

    def lr_at(self, step: int) -> float:
        """The learning rate of training step `step` (subclasses): train.warmup, then train.schedule."""
        return learning_rate(self.config.train, step)

    def describe(self) -> str:
        """The line printed as training starts (subclasses): the model's shape and size."""
        return f"model: {self.model.describe()}"

    def validation_set(self):
        """What validation_curve scores, built once, on rank 0 (subclasses)."""
        return make_eval_set(self.config, prompts=self.config.train.eval_prompts, seed=self.config.eval.seed + 1)

    def batch_loss(self) -> torch.Tensor:
        """The loss on this rank's rows of the next global batch (subclasses). Every rank draws the whole batch,
        keeping the one generator in step, so any number of processes sees the same batches."""
        cfg = self.config
        dims = cfg.curriculum.dims.at(self.step) if cfg.curriculum.dims else None
        points = cfg.curriculum.points.at(self.step) if cfg.curriculum.points else cfg.points
        xs, ys, params = sample_prompts(self.task, self.inputs, cfg.train.batch_size, points, self.generator, dims)
        xs, ys = xs[self.rows].to(self.dtype), ys[self.rows].to(self.dtype)
        with self.autocast():
            preds = self.forward(xs, ys)
            # each class's own loss (squared error, or logistic for classification), per prompt in a mixture
            losses = self.task.training_loss(preds, ys, index_params(params, self.rows), cfg.train.loss == "normalized")
            return losses.mean()

    @torch.no_grad()
    def validation_curve(self) -> list[float]:
        """Logged as `val_error` (subclasses): the error at every k on the validation prompts."""
        self.model.eval()
        preds = self.model(self.val.xs.to(self.dtype), self.val.ys.to(self.dtype))
        self.model.train()
        return prompt_errors(preds, self.val).mean(0).tolist()

    def step_flops(self, step: int) -> int:
        """FLOPs of training step `step` (subclasses): its global batch of prompts at that step's length."""
        cfg = self.config
        points = cfg.curriculum.points.at(step) if cfg.curriculum.points else cfg.points
        if points not in self.forward_flops:  # counted once per prompt length (a real pass for most backbones)
            self.forward_flops[points] = self.model.forward_flops(points)
        return step_flops(self.forward_flops[points], cfg.train.batch_size)

    def restore(self) -> None:
        state = load_training_state(latest_checkpoint(self.run_dir), self.model, self.optimizer, self.generator)
        self.step, self.seconds = state["step"], state["elapsed_seconds"]
        # a checkpoint from before FLOPs were logged: they follow from the config and the step alone
        self.flops = state["flops"] if "flops" in state else sum(self.step_flops(s) for s in range(self.step))

    def save(self) -> None:
        if self.ctx.is_main:
            save_checkpoint(
                self.run_dir,
                self.step,
                self.model,
                self.optimizer,
                self.generator,
                {
                    "elapsed_seconds": self.seconds,
                    "flops": self.flops,
                    "steps": self.config.train.steps,
                    "processes": self.ctx.world_size,
                },
                keep=self.config.train.keep_checkpoints,
            )

    def progress_note(self, loss: float, row: dict | None) -> str:
        """The progress bar's note after a step (subclasses): the latest validation error at the largest k as the
        reports measure it (squared error / E[y^2], or the 0-1 error; predicting 0 scores 1), and the training
        loss (under train.loss mse the raw squared error, which the reports do not show)."""
        if row is not None and "val_error" in row:
            curve = row["val_error"]
            self.val_note = f"val error {curve[-1]:.3f} at k={len(curve) - 1} (zero predictor 1), "
        return f"{self.val_note}train loss {loss:.4f}"

    def stop_signal(self) -> int:
        """The SIGINT or SIGTERM that stops training at this step boundary, or 0. The same on every rank: under
        torchrun a signal that reached any rank stops them all after the same step."""
        return distributed.maximum(received() or 0, self.ctx)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.config.train.autocast == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self) -> float:
        train = self.config.train
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step)
        loss = self.batch_loss()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), train.grad_clip)
        self.optimizer.step()
        self.flops += self.step_flops(self.step)
        self.step += 1
        return distributed.mean(loss, self.ctx)  # the loss of the global batch, the same on every rank

    def log_row(self, loss: float) -> dict | None:
        """This step's line of metrics.jsonl: the loss every log_every steps, a validation curve every eval_every."""
        cfg = self.config.train
        last = self.step == cfg.steps
        row = None
        if self.step % cfg.log_every == 0 or last:
            lr = self.optimizer.param_groups[0]["lr"]
            row = {"step": self.step, "loss": loss, "lr": lr, "seconds": round(self.seconds, 3), "flops": self.flops}
        if self.val is not None and (self.step % cfg.eval_every == 0 or last):
            row = (row or {"step": self.step, "seconds": round(self.seconds, 3), "flops": self.flops}) | {
                "val_error": [round(e, 5) for e in self.validation_curve()]
            }
        return row

    def run(self, progress: bool = True) -> TrainResult:
        cfg = self.config.train
        main = self.ctx.is_main  # only rank 0 logs, shows progress and writes files
        live = loggers.open_loggers(cfg.loggers, self.run_dir, self.config.to_dict(), self.step) if main else []
        metrics = (self.run_dir / "metrics.jsonl").open("a") if main else None
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            disable=not (progress and main),
            desc="train",
            unit="step",
            dynamic_ncols=True,
            mininterval=0.5 if sys.stderr.isatty() else 30,  # a log file gets a line every 30 s, not a flood
        )
        loss = float("nan")
        if progress and main:
            tqdm.write(
                self.describe()
                + (f"; data-parallel over {self.ctx.world_size} processes" if self.ctx.distributed else "")
            )
        started = time.perf_counter() - self.seconds
        signum = 0  # a SIGINT or SIGTERM received during a step: training stops after that step
        try:
            with deferred():  # signals only record themselves here; the loop acts on them between steps
                while self.step < cfg.steps and not signum:
                    loss = self.train_step()
                    if not math.isfinite(loss):
                        raise UserError(
                            f"training diverged at step {self.step} (loss {loss}); lower train.lr or raise train.warmup"
                        )
                    self.seconds = time.perf_counter() - started
                    row = self.log_row(loss) if main else None
                    if row is not None:
                        metrics.write(json.dumps(row) + "\n")
                        metrics.flush()
                        for logger in live:
                            logger.log(row)
                    bar.update(1)
                    bar.set_postfix_str(self.progress_note(loss, row), refresh=False)
                    signum = self.stop_signal()
                    if self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps and not signum:
                        self.save()
                self.save()  # the last step, or the step a signal stopped at
                signum = signum or self.stop_signal()  # one that came during the last step or its save
        finally:
            bar.close()
            if metrics is not None:
                metrics.close()
            for logger in live:
                logger.close()
        if signum:
            distributed.leave(self.ctx)  # the other ranks wait until rank 0 has written the checkpoint
            raise Interrupted(
                signum,
                f"interrupted by {signal_name(signum)} at step {self.step}; checkpoint saved, continue with: "
                f"{self.resume_command} {self.run_dir}",
            )
        return TrainResult(self.run_dir, self.step, loss, self.seconds, self.model.num_parameters())


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from, so the log never holds a step twice."""
    rows = [r for r in read_metrics(run_dir) if r["step"] <= step]
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def train_in(config: Config, target: Path, progress: bool = True, kind: type[Trainer] = Trainer, **data) -> TrainResult:
    """Start a fresh run in the empty folder `target` (`data`: what a Trainer subclass takes besides the config)."""
    trainer = kind(config, target, **data)
    if trainer.ctx.is_main:
        atomic_write_json(target / "config.json", config.to_dict())
        (target / "metrics.jsonl").unlink(missing_ok=True)
    return trainer.run(progress)


def train(
    config: Config,
    run_dir: str | Path,
    overwrite: bool = False,
    progress: bool = True,
    kind: type[Trainer] = Trainer,
    **data,
) -> TrainResult:
    """Train a new run in `run_dir`: an existing run is refused unless `overwrite`, and then replaced only once
    the new one has finished (RunDir.fresh). Rank 0 holds the run's lock until then. `kind` and `data`: a Trainer
    subclass and what it takes besides the config, as for `resume`."""
    run_dir = Path(run_dir)
    ctx = join(config)
    run = RunDir(run_dir, kind.read_config, kind.resume_command)
    with contextlib.ExitStack() as held:
        target = distributed.on_main(lambda: str(held.enter_context(run.fresh(overwrite))), ctx)
        result = train_in(config, Path(target), progress, kind, **data)
    distributed.leave(ctx)  # after rank 0 has moved the finished run into place
    result.run_dir = run_dir
    return result


def resume(
    run_dir: str | Path, progress: bool = True, steps: int | None = None, kind: type[Trainer] = Trainer, **data
) -> TrainResult:
    """Continue the run in `run_dir` from its latest checkpoint (optionally to a new total of `steps`).

    The number of processes may differ from the one the checkpoint was written under: the data stream is one
    generator whatever the number of processes."""
    run_dir = Path(run_dir)
    config = kind.read_config(run_dir)
    if steps is not None:
        config.train.steps = steps
    run = RunDir(run_dir, kind.read_config, kind.resume_command)
    ctx = join(config)
    with contextlib.ExitStack() as held:  # rank 0 holds the run's lock while it trains
        distributed.on_main(lambda: held.enter_context(run.lock()), ctx)
        trainer = kind(config, run_dir, **data)
        trainer.restore()  # every rank reads the checkpoint; only rank 0 writes below
        if trainer.ctx.is_main:
            if steps is not None:
                atomic_write_json(run_dir / "config.json", config.to_dict())
            truncate_metrics(run_dir, trainer.step)
            if trainer.step >= config.train.steps:
                print(f"{run_dir} is complete ({trainer.step} of {config.train.steps} steps); nothing to do")
        result = trainer.run(progress)
    distributed.leave(ctx)
    return result
