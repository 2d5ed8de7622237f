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
    from ..text.config import load_text_config
    from ..text.train import evaluate_run, resume_text, train_text
    from .shared import run_training

    result = run_training(args, load_text_config, train_text, resume_text, require_config=False)
    _print_perplexity(evaluate_run(result.run_dir, progress=not args.quiet))
    print(f"wrote {result.run_dir}/perplexity.json")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..text.train import evaluate_run

    _print_perplexity(evaluate_run(args.run_dir, progress=not args.quiet))
    print(f"wrote {args.run_dir}/perplexity.json")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from ..text.config import load_text_config

    print(json.dumps(load_text_config(args.config, args.set).to_dict(), indent=2))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `iclab text train|eval|config`."""
    from .shared import OVERRIDES, add_train_arguments

    text = sub.add_parser("text", help="language models on text: train (softmax, linear or momentum attention), eval")
    commands = text.add_subparsers(dest="text_command", required=True, metavar="COMMAND")
    p = commands.add_parser("train", help="train a TokenLM on a corpus (default: Shakespeare), then score perplexity")
    add_train_arguments(p, "YAML config (keys: `iclab text config`); defaults: the CPU Shakespeare model")
    p.set_defaults(func=_cmd_train)

    p = commands.add_parser("eval", help="validation perplexity at eval.lengths -> RUN_DIR/perplexity.json")
    p.add_argument("run_dir")
    p.add_argument("--quiet", action="store_true", help="no progress bars (the perplexities still print)")
    p.set_defaults(func=_cmd_eval)

    p = commands.add_parser("config", help="print a resolved text config (the defaults, a file, overrides)")
    p.add_argument("--config", help="YAML config file")
    p.add_argument("--set", **OVERRIDES)
    p.set_defaults(func=_cmd_config)
