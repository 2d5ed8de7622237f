"""The `iclab` command. User mistakes print one line and exit with status 2; Ctrl-C (SIGINT) or SIGTERM during
training saves the checkpoint of the last finished step, says how to continue, and exits with status 130 or 143."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import shutil
import sys
import textwrap
import time
from pathlib import Path

from .. import __version__
from ..errors import UserError
from ..spec import split_specs
from .shared import OVERRIDES, add_train_arguments, is_main_process, run_training

QUIET = {"action": "store_true", "help": "no progress bars (the results and the paths written still print)"}
PROMPTING_HELP = (
    "Garg et al.'s prompting strategy: the k demonstrations and the query from different sets, e.g. "
    "random_quadrants (`iclab list prompting`; default: standard)"
)


def _cmd_train(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..training.hints import learning_hint
    from ..training.trainer import resume, train

    result = run_training(args, load_config, train, resume)
    hint = learning_hint(result.run_dir)  # e.g. a first run of too few steps: what budget is known to learn
    if hint and is_main_process():
        print(hint)
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..api import load_run  # the Python API's evaluation, so that both write the same files

    run = load_run(args.run_dir)
    result = run.evaluate(
        args.task, args.shift, args.baselines, args.prompting, progress=not args.quiet, points=args.points
    )
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
    from ..recipes.outcomes import REGRESSION, UNEXPECTED_PASS, counts, exit_status, label, outcome

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
            print(f"{s['recipe']:<16} {label(c)}  {c['claim']}: {c['detail']}")
    status = exit_status(summaries, args.strict)
    changed = [c for s in summaries for c in s["checks"] if outcome(c) in (REGRESSION, UNEXPECTED_PASS)]
    why = "--strict: a check failed" if args.strict else f"{len(changed)} outcome(s) differ from the record"
    print(counts(summaries) + (f"; exit 1 ({why})" if status else ""))
    print(f"report: {Path(args.out) / 'report.md'} ({time.perf_counter() - started:.0f} s)")
    return status


LIST_KINDS = ["tasks", "inputs", "shifts", "prompting", "estimators", "models", "recipes"]
LIST_SYNONYMS = {"baselines": "estimators"}  # `iclab list baselines`, as the flag --baselines says


def _describe(name: str, text: str, params: list[str], width: int) -> list[str]:
    """A name, its whole description wrapped (never cut) and its parameters, indented under the name."""
    indent = " " * 6
    lines = [f"  {name}"] + textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent)
    if params:
        lines += textwrap.wrap(
            "parameters: " + ", ".join(params), width, initial_indent=indent, subsequent_indent=indent + "  "
        )
    return lines


def _parameters(cls: type) -> list[str]:
    """Every parameter of a registered class with its default ('dims' comes from the config, not the spec)."""
    import yaml

    def shown(value) -> str:  # as one would write it in a spec or a YAML config
        return value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip(". \n")

    params = []
    for f in dataclasses.fields(cls):
        if f.name in ("dims", "name") or not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            params.append(f"{f.name}={shown(f.default)}")
        elif f.default_factory is not dataclasses.MISSING:
            params.append(f"{f.name}={shown(f.default_factory())}")
        else:
            params.append(f"{f.name} (required)")
    return params


def _first_paragraph(doc: str | None) -> str:
    return " ".join(inspect.cleandoc(doc or "").split("\n\n")[0].split())


def _model_size(cls: type) -> str:
    """The weights of an architecture at its default size (d = 5, 11 points), counted without allocating them."""
    import torch

    try:
        with torch.device("meta"):
            model = cls().build(5, 11)
    except UserError as e:  # e.g. a Hugging Face backbone without transformers installed
        return f" ({e})"
    return f" Default size: {model.num_parameters():,} weights (d = 5)."


def _cmd_list(args: argparse.Namespace) -> int:
    from ..baselines import ESTIMATORS
    from ..models import MODELS
    from ..tasks import FUNCTION_CLASSES, INPUT_DISTRIBUTIONS, SHIFTS
    from ..tasks.prompting import PROMPTINGS

    registries = {
        "tasks": FUNCTION_CLASSES,
        "inputs": INPUT_DISTRIBUTIONS,
        "shifts": SHIFTS,
        "prompting": PROMPTINGS,
        "estimators": ESTIMATORS,
        "models": MODELS,
    }
    width = min(shutil.get_terminal_size((100, 24)).columns, 120)
    chosen = LIST_SYNONYMS.get(args.kind, args.kind)
    for kind in [chosen] if chosen else LIST_KINDS:
        print(f"{kind}:")
        if kind == "recipes":  # `iclab reproduce NAME`
            from ..recipes import RECIPES

            for name, recipe in RECIPES.items():
                print("\n".join(_describe(name, recipe.title, [], width)))
            continue
        for name in registries[kind].names():
            cls = registries[kind].get(name)
            text = _first_paragraph(cls.__doc__) + (_model_size(cls) if kind == "models" else "")
            print("\n".join(_describe(name, text, _parameters(cls), width)))
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from ..config import load_config, packaged_config

    path = packaged_config(args.name) if args.name else None
    config = load_config(path, args.set)
    print(json.dumps(config.to_dict(), indent=2))
    return 0


class _RecipeNames:
    """The recipe registry's names as help text, read only when `reproduce --help` prints them (the recipes import
    torch: every other command would start seconds later)."""

    def __str__(self) -> str:
        from ..recipes import RECIPES

        return ", ".join(RECIPES)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iclab", description="In-context learning laboratory.")
    parser.add_argument("--version", action="version", version=f"iclab {__version__}")
    parser.add_argument(  # read before parsing, anywhere on the line (split_imports); listed here for --help
        "--import",
        metavar="MODULE",
        action="append",
        help="import a module of your own first, so that the tasks, inputs, shifts and estimators it registers "
        "work in every command (repeatable, before or after the command; see also ICLAB_IMPORT and the "
        "iclab.plugins entry points in plugins.py)",
    )
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
    p.add_argument(
        "--points", type=int, help="(x, y) pairs per prompt (default: eval.points); more than the run's `points` "
        "evaluates beyond its training length (task label NAME@points=N), for models without a learned position table",
    )
    p.add_argument("--quiet", **QUIET)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("demo", help="the CPU default: train d=5 linear regression, evaluate, check, report")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--set", **OVERRIDES)
    p.add_argument("--quiet", **QUIET)
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
    p.add_argument("--quiet", **QUIET)
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("reproduce", help="a paper figure end to end, checked against the paper's claim")
    name = p.add_argument("name", help="a recipe (%(recipes)s), several separated by commas, or all")
    name.recipes = _RecipeNames()  # read from the recipe registry when the help is printed
    p.add_argument("--out", help="folder for models, curves, figures and report.md (required unless --dry-run)")
    p.add_argument(
        "--scale",
        choices=["quick", "full", "paper"],
        help="the recipes' sizes (src/iclab/recipes/scales/): quick (CI), full (the default, the README's CPU "
        "numbers) or paper (the papers' settings, for GPUs)",
    )
    p.add_argument("--quick", action="store_true", help="--scale quick: small models, few steps")
    p.add_argument(
        "--pretrained",
        action="store_true",
        help="use the checkpoints shipped with iclab and train nothing: a recipe whose models do not ship is "
        "refused (skipped under 'all'). 'all' takes minutes, not seconds, mostly icl-vs-ft's study (the docs' "
        "recipe overview gives the measured seconds of each recipe)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 if any check fails. By default the exit status is 1 only when a check's outcome differs "
        "from the one recorded for its scale (src/iclab/recipes/scales/expected/): a documented miss (a FAIL "
        "the record and README state) exits 0, so CI catches regressions, not known limits",
    )
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
    p.add_argument(
        "--jobs", type=int, default=1, help="train the recipes' iclab runs N at a time, one process each (default 1)"
    )
    p.add_argument("--quiet", **QUIET)
    p.set_defaults(func=_cmd_reproduce)

    # command groups with modules of their own (each imports only argparse at load time)
    from .compare import add_parser as add_compare_parser
    from .grid import add_parser as add_grid_parser
    from .lm import add_parser as add_lm_parser
    from .tabular import add_parser as add_tabular_parser
    from .text import add_parser as add_text_parser

    add_grid_parser(sub)
    add_lm_parser(sub)
    add_text_parser(sub)
    add_compare_parser(sub)
    add_tabular_parser(sub)

    p = sub.add_parser("list", help="list tasks, inputs, shifts, prompting, estimators and recipes with parameters")
    p.add_argument("kind", nargs="?", choices=LIST_KINDS + list(LIST_SYNONYMS), help="one kind (default: all)")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("config", help="print a resolved config (a packaged one by name, or the defaults)")
    p.add_argument("name", nargs="?", help="packaged config name, e.g. demo")
    p.add_argument("--set", **OVERRIDES)
    p.set_defaults(func=_cmd_config)
    return parser


def split_imports(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the modules of every `--import MODULE` or `--import=MODULE`, the rest of the command line)."""
    modules, rest = [], []
    words = iter(argv)
    for word in words:
        if word == "--import":
            module = next(words, None)
            if module is None or module.startswith("-"):
                raise UserError("--import expects a module name, e.g. --import my_tasks")
            modules.append(module)
        elif word.startswith("--import="):
            modules.append(word.partition("=")[2])
        else:
            rest.append(word)
    return modules, rest


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's namespace, parsed once the plugins and the --import modules are imported (their names
    are valid everywhere). A mistake found here exits as argparse's own do, with status 2, in one line."""
    from ..plugins import load_plugins

    try:
        modules, argv = split_imports(sys.argv[1:] if argv is None else list(argv))
        load_plugins(modules)
        return build_parser().parse_args(argv)
    except UserError as e:
        print(f"iclab: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> int:
    from ..interrupts import exit_status, raising

    args = parse(argv)
    with raising():  # SIGTERM, like Ctrl-C, unwinds the command; a second one is ignored (interrupts.py)
        try:
            return args.func(args)
        except UserError as e:
            if is_main_process():
                print(f"iclab: error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM; training saved the step it stopped after
            if is_main_process():
                print(f"iclab: {e or 'interrupted'}", file=sys.stderr)
            return exit_status(e)
        except BrokenPipeError:  # the reader left (`iclab list | head`): stop quietly, as Unix tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error as Python flushes
            return 141  # 128 + SIGPIPE, the shell's status for a command a closed pipe stopped

