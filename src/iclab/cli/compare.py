"""`iclab compare RUN RUN … [--k K,…] [--task LABEL] [--out DIR]`: evaluated runs side by side in one table and
one figure, with the config keys on which they differ (evaluation/compare.py). Only argparse at import time."""

from __future__ import annotations

import argparse

DESCRIPTION = (
    "Put evaluated runs side by side: the transformer's error and ICL score at chosen k (default d, 2d and the "
    "last k) from each run's eval/curves.csv, and the config keys on which the runs differ. Prints the table and "
    "writes OUT/compare.md, compare.csv, compare.json and compare.png. A run needs `iclab eval RUN` first."
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `iclab compare`."""
    p = sub.add_parser(
        "compare",
        help="evaluated runs side by side: errors, ICL scores, config differences, a plot",
        description=DESCRIPTION,
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--k", action="append", metavar="K[,K...]", help="numbers of examples to tabulate, e.g. --k 5,10")
    p.add_argument("--task", help="the evaluated task to compare, as curves.csv names it (default: each run's task)")
    p.add_argument("--out", help="output folder (default: a `compare` folder beside the first run)")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    from ..evaluation.compare import compare, parse_ks

    result = compare(args.runs, parse_ks(args.k), args.out, args.task)
    print(result)
    names = ", ".join(f"compare.{ext}" for ext in ("md", "csv", "json", "png"))
    print(f"wrote {names} in {result.out}")
    return 0
