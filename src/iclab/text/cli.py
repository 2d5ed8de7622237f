"""`iclab text ...`: train and evaluate language models on text. Only argparse at import time: the CLI must start
fast."""

from __future__ import annotations

import argparse
import json


def _print_perplexity(result: dict) -> None:
    lengths = result["lengths"]
    print("context  " + "".join(f"{n:>9}" for n in lengths))
    print("ppl      " + "".join(f"{p:>9.2f}" for p in result["perplexity"]))


def _cmd_train(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from .config import load_text_config
    from .train import evaluate_run, resume_text, train_text

    if args.resume:
        if args.config or args.out or args.set:
            raise UserError("--resume takes only the run directory (and optionally --steps): its config is stored")
        result = resume_text(args.resume, steps=args.steps, progress=not args.quiet)
    else:
        if not args.out:
            raise UserError("give --out RUN_DIR (and optionally --config FILE), or --resume RUN_DIR")
        overrides = list(args.set) + ([f"train.steps={args.steps}"] if args.steps is not None else [])
        config = load_text_config(args.config, overrides)
        result = train_text(config, args.out, overwrite=args.overwrite, progress=not args.quiet)
    print(
        f"trained {result.run_dir}: {result.parameters:,} parameters, step {result.step}, loss {result.loss:.4f}, "
        f"{result.seconds:.0f} s"
    )
    _print_perplexity(evaluate_run(result.run_dir, progress=not args.quiet))
    print(f"wrote {result.run_dir}/perplexity.json")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .train import evaluate_run

    _print_perplexity(evaluate_run(args.run_dir, progress=not args.quiet))
    print(f"wrote {args.run_dir}/perplexity.json")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from .config import load_text_config

    print(json.dumps(load_text_config(args.config, args.set).to_dict(), indent=2))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `iclab text train|eval|config`."""
    text = sub.add_parser("text", help="language models on text: train (softmax, linear or momentum attention), eval")
    commands = text.add_subparsers(dest="text_command", required=True, metavar="COMMAND")
    overrides = {"action": "append", "default": [], "metavar": "KEY=VALUE", "help": "override a config key"}

    p = commands.add_parser("train", help="train a TokenLM on a corpus (default: Shakespeare), then score perplexity")
    p.add_argument("--config", help="YAML config (keys: `iclab text config`); defaults: the CPU Shakespeare model")
    p.add_argument("--out", help="run directory to create")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint")
    p.add_argument("--steps", type=int, help="total number of steps (overrides train.steps; extends a resumed run)")
    p.add_argument("--set", **overrides)
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out once this one finishes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    p = commands.add_parser("eval", help="validation perplexity at eval.lengths -> RUN_DIR/perplexity.json")
    p.add_argument("run_dir")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_eval)

    p = commands.add_parser("config", help="print a resolved text config (the defaults, a file, overrides)")
    p.add_argument("--config", help="YAML config file")
    p.add_argument("--set", **overrides)
    p.set_defaults(func=_cmd_config)
