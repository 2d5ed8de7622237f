"""The `iclab` command. User mistakes print one line and exit with status 2; Ctrl-C during training saves a
checkpoint and exits with status 130."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from ..errors import UserError
from ..spec import split_specs
from .shared import OVERRIDES, add_train_arguments, is_main_process, run_training

PROMPTING_HELP = (
    "Garg et al.'s prompting strategy: the k demonstrations and the query from different sets, e.g. "
    "random_quadrants (`iclab list prompting`; default: standard)"
)


def _cmd_train(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..training.trainer import resume, train

    run_training(args, load_config, train, resume)
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..api import load_run  # the Python API's evaluation, so that both write the same files

    run = load_run(args.run_dir)
    result = run.evaluate(args.task, args.shift, args.baselines, args.prompting, progress=not args.quiet)
    path, png = result.save()
    _print_summary(result.rows, run.config.dims)
    print(f"wrote {path} and {png}")
    return 0


def _print_summary(rows: list[dict], dims: int) -> None:
    ks = sorted({r["k"] for r in rows})
    show = [k for k in ks if k in {0, 1, dims, 2 * dims, ks[-1]}]
    print(f"{'estimator':<24}" + "".join(f"{'k=' + str(k):>9}" for k in show))
    by = {(r["estimator"], r["k"]): r["mean"] for r in rows}
    for est in dict.fromkeys(r["estimator"] for r in rows):
        print(f"{est:<24}" + "".join(f"{by[est, k]:>9.4f}" for k in show))


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    summary = run_demo(args.out, args.set, progress=not args.quiet)
    for c in summary["checks"]:
        print(f"{'PASS' if c['passed'] else 'FAIL'}  {c['claim']} ({c['detail']})")
    stq = summary["seconds_to_quality"]
    print(
        f"seconds to error <= 0.1 at k = 2d: {stq if stq is not None else 'not reached'}; "
        f"whole demo: {summary['demo_seconds']} s; report: {Path(args.out) / 'report.md'}"
    )
    return 0 if summary["passed"] else 1


def _cmd_report(args: argparse.Namespace) -> int:
    from ..evaluation.report import render_report
    from ..recipes import render_recipes

    folder = Path(args.run_dir)
    path = render_report(folder) if (folder / "config.json").is_file() else render_recipes(folder)
    print(f"wrote {path}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from ..evaluation.report import plot_sweep
    from ..evaluation.sweeps import run_sweep, write_sweep
    from ..training.runs import read_config

    runs = [Path(r) for r in args.runs]
    baselines = None if args.baselines is None else split_specs(args.baselines)
    rows = run_sweep(args.kind, runs, baselines, progress=not args.quiet, prompting=args.prompting)
    out = Path(args.out) if args.out else runs[0] / "sweeps" / args.kind
    write_sweep(out / "curves.csv", rows)
    dims = read_config(runs[0]).dims
    k = args.k if args.k is not None else (dims - 1 if args.kind == "sparsity" else max(r["k"] for r in rows))
    if k not in {r["k"] for r in rows}:
        raise UserError(f"--k {k}: the runs' prompts have k = 0 .. {max(r['k'] for r in rows)}")
    png = plot_sweep(rows, k, out / f"{args.kind}.png", f"{args.kind} sweep", args.kind, log_x=args.kind == "frequency")
    print(f"wrote {out / 'curves.csv'} and {png}")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    import torch

    from ..recipes import dry_run, reproduce, scale_of

    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.dry_run:
        if args.pretrained:
            raise UserError("--pretrained trains nothing; --dry-run lists what a scale trains: drop one of them")
        print("\n".join(dry_run(args.name, scale_of(args.scale, args.quick, False), args.device, not args.quiet)))
        return 0
    if not args.out:
        raise UserError("--out DIR is required (where models, curves, figures and report.md go)")
    started = time.perf_counter()
    summaries = reproduce(
        args.name,
        Path(args.out),
        args.quick,
        args.pretrained,
        not args.quiet,
        args.jobs,
        scale=args.scale,
        device=args.device,
        allow_cpu_paper=args.allow_cpu_paper,
    )
    for s in summaries:
        for c in s["checks"]:
            print(f"{s['recipe']:<16} {'PASS' if c['passed'] else 'FAIL'}  {c['claim']}: {c['detail']}")
    print(f"report: {Path(args.out) / 'report.md'} ({time.perf_counter() - started:.0f} s)")
    return 0 if all(s["passed"] for s in summaries) else 1


def _describe(cls: type) -> str:
    doc = (cls.__doc__ or "").strip().splitlines()
    params = [
        f"{f.name}={f.default!r}"
        for f in dataclasses.fields(cls)
        if f.name != "dims" and f.default is not dataclasses.MISSING
    ]
    return f"{cls.registry_name:<22} {doc[0] if doc else ''}" + (f"  [{', '.join(params)}]" if params else "")


def _cmd_list(args: argparse.Namespace) -> int:
    from ..baselines import ESTIMATORS
    from ..tasks import FUNCTION_CLASSES, INPUT_DISTRIBUTIONS, SHIFTS
    from ..tasks.prompting import PROMPTINGS

    registries = {
        "tasks": FUNCTION_CLASSES,
        "inputs": INPUT_DISTRIBUTIONS,
        "shifts": SHIFTS,
        "prompting": PROMPTINGS,
        "estimators": ESTIMATORS,
    }
    for kind in [args.kind] if args.kind else list(registries):
        print(f"{kind}:")
        for name in registries[kind].names():
            print("  " + _describe(registries[kind].get(name)))
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from ..config import load_config, packaged_config

    path = packaged_config(args.name) if args.name else None
    config = load_config(path, args.set)
    print(json.dumps(config.to_dict(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iclab", description="In-context learning laboratory.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a run from a YAML config, or resume one")
    add_train_arguments(p, "YAML config file (see configs/ and `iclab config`)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="error curves of a trained run and the baselines -> RUN_DIR/eval/curves.csv")
    p.add_argument("run_dir")
    p.add_argument("--task", help="evaluate on another task, e.g. sparse_linear:nnz=2 (default: the run's task)")
    p.add_argument("--shift", help="a distribution shift, e.g. skewed or scaled_x:factor=3 (`iclab list shifts`)")
    p.add_argument("--prompting", help=PROMPTING_HELP)
    p.add_argument("--baselines", help="comma-separated estimators (default: the config's eval.baselines)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("demo", help="the CPU default: train d=5 linear regression, evaluate, check, report")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--set", **OVERRIDES)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("report", help="re-render report.md and plots of a run or reproduce folder from stored files")
    p.add_argument("run_dir", metavar="RUN_OR_DIR")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("sweep", help="error of one or more runs as a task parameter moves -> curves.csv + PNG")
    p.add_argument("kind", choices=["sparsity", "convex", "frequency", "shift"])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", help="output folder (default: FIRST_RUN/sweeps/KIND)")
    p.add_argument("--baselines", help="comma-separated estimators (default depends on the sweep)")
    p.add_argument("--k", type=int, help="number of examples at which the figure reads the error")
    p.add_argument("--prompting", help=PROMPTING_HELP)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("reproduce", help="a paper figure end to end, checked against the paper's claim")
    p.add_argument(
        "name",
        help="model-selection, model-selection-3, sparsity, convex, frequency, lsa-gd, icl-vs-ft, momentum, "
        "task-diversity, algorithm-selection, several of them "
        "separated by commas, or all",
    )
    p.add_argument("--out", help="folder for models, curves, figures and report.md (required unless --dry-run)")
    p.add_argument(
        "--scale",
        choices=["quick", "full", "paper"],
        help="the recipes' sizes (src/iclab/recipes/scales/): quick (CI), full (the default, the README's CPU "
        "numbers) or paper (the papers' settings, for GPUs)",
    )
    p.add_argument("--quick", action="store_true", help="--scale quick: small models, few steps")
    p.add_argument("--pretrained", action="store_true", help="use the checkpoints shipped with iclab (seconds)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list every run of the scale with its steps, size and time estimated from a few timed steps; "
        "train and write nothing",
    )
    p.add_argument(
        "--device", help="where the recipes' iclab runs train (default: cpu; at --scale paper cuda if available)"
    )
    p.add_argument("--allow-cpu-paper", action="store_true", help="train --scale paper on a CPU (weeks per model)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core)")
    p.add_argument("--jobs", type=int, default=1, help="train the sweep recipes' models N at a time (default 1)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_reproduce)

    # command groups with modules of their own (each imports only argparse at load time)
    from .compare import add_parser as add_compare_parser
    from .grid import add_parser as add_grid_parser
    from .lm import add_parser as add_lm_parser
    from .text import add_parser as add_text_parser

    add_grid_parser(sub)
    add_lm_parser(sub)
    add_text_parser(sub)
    add_compare_parser(sub)

    p = sub.add_parser("list", help="list task, input, shift, prompting and estimator names with their parameters")
    p.add_argument("kind", nargs="?", choices=["tasks", "inputs", "shifts", "prompting", "estimators"])
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("config", help="print a resolved config (a packaged one by name, or the defaults)")
    p.add_argument("name", nargs="?", help="packaged config name, e.g. demo")
    p.add_argument("--set", **OVERRIDES)
    p.set_defaults(func=_cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as e:
        if is_main_process():
            print(f"iclab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("iclab: interrupted", file=sys.stderr)
        return 130

