"""argparse pieces that `iclab train` and `iclab text train` share: --set overrides and the train/resume command."""

from __future__ import annotations

import argparse
import os

from ..errors import UserError


def key_value(text: str) -> str:
    """The argparse type of --set: 'train.steps 100' (a space for the '=') is refused here, in one line, not later
    as an unrecognised '100' under the top-level usage."""
    key, eq, _ = text.partition("=")
    if not eq or not key.strip():
        raise UserError(f"--set expects key=value, got '{text}' (e.g. --set train.steps=500)")
    return text


OVERRIDES = {
    "action": "append",
    "default": [],
    "type": key_value,
    "metavar": "KEY=VALUE",
    "help": "override a config key (repeatable)",
}


def run_training(args: argparse.Namespace, load, train, resume, require_config: bool = True):
    """A `train` command (see add_train_arguments): a new run from `load(--config, overrides)` or --resume of a
    stored one; prints one summary line (on the main process of a torchrun job) and returns the TrainResult."""
    if args.resume:
        if args.config or args.out or args.set:
            raise UserError("--resume takes only the run directory (and optionally --steps): its config is stored")
        check_steps(args.resume, args.steps)
        result = resume(args.resume, progress=not args.quiet, steps=args.steps)
    else:
        if not args.out or (require_config and not args.config):
            need = "--config FILE and --out RUN_DIR" if require_config else "--out RUN_DIR (and optionally --config)"
            raise UserError(f"give {need}, or --resume RUN_DIR")
        overrides = list(args.set) + ([f"train.steps={args.steps}"] if args.steps is not None else [])
        result = train(load(args.config, overrides), args.out, overwrite=args.overwrite, progress=not args.quiet)
    if is_main_process():
        print(
            f"trained {result.run_dir}: {result.parameters:,} parameters, step {result.step}, "
            f"loss {result.loss:.4f}, {result.seconds:.0f} s"
        )
    return result


def check_steps(run_dir: str, steps: int | None) -> None:
    """Refuse `--resume RUN --steps N` below the step the run has reached: nothing would train, and its config
    would claim N steps."""
    from ..training.checkpoint import checkpoint_dirs

    done = checkpoint_dirs(run_dir)
    reached = int(done[-1].name[5:]) if done else 0  # step-0001234
    if steps is not None and steps < reached:
        raise UserError(
            f"--steps {steps}: {run_dir} is already at step {reached}; give --steps above {reached} to train on, "
            "or leave --steps out"
        )


def add_train_arguments(p: argparse.ArgumentParser, config_help: str) -> None:
    """The arguments of a `train` command: a new run from a config, or --resume of a stored one."""
    p.add_argument("--config", help=config_help)
    p.add_argument("--out", help="run directory to create")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint")
    p.add_argument("--steps", type=int, help="total number of steps (overrides train.steps; extends a resumed run)")
    p.add_argument("--set", **OVERRIDES)
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out once this one finishes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")



def is_main_process() -> bool:
    """False on the other ranks of a torchrun job, which stay quiet so that a message shows once."""
    return os.environ.get("RANK", "0") == "0"
