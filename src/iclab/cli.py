"""The `iclab` command. User mistakes print one line and exit with status 2; Ctrl-C during training saves a
checkpoint and exits with status 130."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from .errors import UserError


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .train import resume, train

    if args.resume:
        if args.config or args.out or args.set:
            raise UserError("--resume takes only the run directory (and optionally --steps): its config is stored")
        result = resume(args.resume, progress=not args.quiet, steps=args.steps)
    else:
        if not args.config or not args.out:
            raise UserError("give --config FILE and --out RUN_DIR (or --resume RUN_DIR)")
        overrides = list(args.set) + ([f"train.steps={args.steps}"] if args.steps is not None else [])
        config = load_config(args.config, overrides)
        result = train(config, args.out, overwrite=args.overwrite, progress=not args.quiet)
    print(
        f"trained {result.run_dir}: {result.parameters:,} parameters, step {result.step}, loss {result.loss:.4f}, "
        f"{result.seconds:.0f} s"
    )
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate, merge_curves
    from .report import plot_curves, plot_path, render_report
    from .runs import load_model, read_config

    run_dir = Path(args.run_dir)
    config = read_config(run_dir)
    model, _ = load_model(run_dir, config)
    baselines = None if args.baselines is None else [b for b in args.baselines.split(",") if b.strip()]
    rows = evaluate(model, config, args.task, args.shift, baselines, progress=not args.quiet)
    path = run_dir / "eval" / "curves.csv"
    merged = merge_curves(path, rows)
    task = rows[0]["task"]
    png = plot_curves(merged, task, plot_path(run_dir / "eval", task, config.task["name"]), config.dims)
    render_report(run_dir)
    _print_summary(rows, config.dims)
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
    from .demo import run_demo

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
    from .report import render_report

    print(f"wrote {render_report(Path(args.run_dir))}")
    return 0


def _describe(cls: type) -> str:
    doc = (cls.__doc__ or "").strip().splitlines()
    params = [
        f"{f.name}={f.default!r}"
        for f in dataclasses.fields(cls)
        if f.name != "dims" and f.default is not dataclasses.MISSING
    ]
    return f"{cls.registry_name:<22} {doc[0] if doc else ''}" + (f"  [{', '.join(params)}]" if params else "")


def _cmd_list(args: argparse.Namespace) -> int:
    from .baselines import ESTIMATORS
    from .tasks import FUNCTION_CLASSES, INPUT_DISTRIBUTIONS, SHIFTS

    registries = {"tasks": FUNCTION_CLASSES, "inputs": INPUT_DISTRIBUTIONS, "shifts": SHIFTS, "estimators": ESTIMATORS}
    for kind in [args.kind] if args.kind else list(registries):
        print(f"{kind}:")
        for name in registries[kind].names():
            print("  " + _describe(registries[kind].get(name)))
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from .config import load_config, packaged_config

    path = packaged_config(args.name) if args.name else None
    config = load_config(path, args.set)
    print(json.dumps(config.to_dict(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iclab", description="In-context learning laboratory.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    overrides = {"action": "append", "default": [], "metavar": "KEY=VALUE", "help": "override a config key"}

    p = sub.add_parser("train", help="train a run from a YAML config, or resume one")
    p.add_argument("--config", help="YAML config file (see configs/ and `iclab config`)")
    p.add_argument("--out", help="run directory to create")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint")
    p.add_argument("--steps", type=int, help="total number of steps (overrides train.steps; extends a resumed run)")
    p.add_argument("--set", **overrides)
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out once this one finishes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="error curves of a trained run and the baselines -> RUN_DIR/eval/curves.csv")
    p.add_argument("run_dir")
    p.add_argument("--task", help="evaluate on another task, e.g. sparse_linear:nnz=2 (default: the run's task)")
    p.add_argument("--shift", help="a distribution shift, e.g. skewed or scaled_x:factor=3 (`iclab list shifts`)")
    p.add_argument("--baselines", help="comma-separated estimators (default: the config's eval.baselines)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("demo", help="the CPU default: train d=5 linear regression, evaluate, check, report")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--set", **overrides)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("report", help="re-render RUN_DIR/report.md and plots from stored results")
    p.add_argument("run_dir")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("list", help="list task, input, shift and estimator names with their parameters")
    p.add_argument("kind", nargs="?", choices=["tasks", "inputs", "shifts", "estimators"])
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("config", help="print a resolved config (a packaged one by name, or the defaults)")
    p.add_argument("name", nargs="?", help="packaged config name, e.g. demo")
    p.add_argument("--set", **overrides)
    p.set_defaults(func=_cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as e:
        print(f"iclab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("iclab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
