"""`iclab grid GRID.yaml` (and its old name `iclab sweep-run`): a grid of training runs on an engine, tabulated.
Only argparse at import time: the CLI must start fast."""

from __future__ import annotations

import argparse
import re

from .shared import OVERRIDES

DESCRIPTION = (
    "Expand a grid of config overrides into runs OUT/NAME, run them on an engine (local processes, SLURM through "
    "submitit, Dask), skipping complete runs and resuming half-finished ones, and tabulate them in "
    "OUT/results.csv, results.md and results.png."
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `iclab grid` and `iclab sweep-run`, the same command under its old name."""
    helps = {
        "grid": "train a grid of config overrides as many runs (local processes, SLURM, Dask) and tabulate them",
        "sweep-run": "alias of iclab grid (old name)",
    }
    for name, text in helps.items():
        description = DESCRIPTION if name == "grid" else f"{text.capitalize()}. {DESCRIPTION}"
        p = sub.add_parser(name, help=text, description=description)
        p.add_argument("grid", metavar="GRID.yaml", help="grid file (or a packaged grid name, e.g. demo-lr)")
        p.add_argument("--out", help="folder of the runs and results (default: runs/GRID_NAME)")
        p.add_argument("--engine", default="local", help="local (default), slurm, submitit-local or dask")
        p.add_argument("--jobs", type=int, default=1, help="runs at once for local and local-Dask engines (default 1)")
        p.add_argument("--scheduler", help="address of a running Dask scheduler (--engine dask)")
        p.add_argument("--set", **OVERRIDES | {"help": "override a key in every run"})
        p.add_argument("--no-wait", action="store_true", help="slurm: submit and exit; collect later with --collect")
        p.add_argument("--collect", action="store_true", help="only tabulate the runs already in --out")
        p.add_argument("--dry-run", action="store_true", help="list the runs and what each needs, run nothing")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.set_defaults(func=_cmd_grid)


def _cmd_grid(args: argparse.Namespace) -> int:
    from ..experiments.grid import run_grid

    result = run_grid(
        args.grid,
        args.out,
        args.engine,
        args.jobs,
        args.set,
        args.scheduler,
        wait=not args.no_wait,
        collect_only=args.collect,
        dry_run=args.dry_run,
        progress=not args.quiet,
    )
    if args.dry_run:
        return 0
    rows, outcomes = result["rows"], result["outcomes"]
    out = result["runs"][0].run_dir.parent
    cols = [c for c in rows[0] if c in ("run", "status", "step", "final_loss") or re.fullmatch(r"error_k\d+", c)]
    width = max(len(r["run"]) for r in rows)
    print(f"{'run':<{width}}  " + "  ".join(f"{c:>11}" for c in cols[1:]))
    for r in rows:
        cells = [f"{r[c]:>11.4f}" if isinstance(r[c], float) else f"{r[c]!s:>11}" for c in cols[1:]]
        print(f"{r['run']:<{width}}  " + "  ".join(cells))
    print(f"wrote {out / 'results.csv'} and {out / 'results.md'}")
    failed = [o for o in outcomes.values() if o["status"] in ("failed", "busy")]
    return 1 if failed else 0
