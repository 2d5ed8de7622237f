"""`iclab tabular FILE.csv --target COLUMN [--model M] [--folds K] [--repeats R] [--out DIR] [--impute]`: the
in-context learner against scikit-learn's regressors on a user's table, cross-validated (tabular.py). Only
argparse at import time."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DESCRIPTION = (
    "Cross-validate a pretrained in-context learner (iclab.sklearn.ICLRegressor) against RidgeCV, LassoCV, k-NN, a "
    "random forest, HistGradientBoosting and a Gaussian process on a CSV table, with the same folds for every "
    "method. The target is a numeric column; every other column is a feature (a text column of at most 10 values "
    "is one-hot encoded). Prints MSE, R² and seconds as mean ± s.e. over the folds and writes OUT/tabular.csv, "
    "tabular_folds.csv, tabular.md and tabular.png."
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `iclab tabular`."""
    p = sub.add_parser("tabular", help="an ICL model against scikit-learn's regressors on your CSV, cross-validated",
                       description=DESCRIPTION)  # fmt: skip
    p.add_argument("file", metavar="FILE.csv")
    p.add_argument("--target", required=True, metavar="COLUMN", help="the column to predict (numeric)")
    p.add_argument("--model", help="a run folder or a shipped model's name (default: ICLRegressor's default)")
    p.add_argument("--folds", type=int, default=5, metavar="K", help="K of K-fold cross-validation (default 5)")
    p.add_argument("--repeats", type=int, default=3, metavar="R", help="repeats with fresh folds (default 3)")
    p.add_argument("--seed", type=int, default=0, help="the folds' and the methods' seed (default 0)")
    p.add_argument("--out", help="output folder (default: FILE's name without .csv, plus '-tabular', beside it)")
    p.add_argument(
        "--impute",
        action="store_true",
        help="replace empty or NaN feature cells by the column mean of each training fold",
    )
    p.set_defaults(func=_cmd_tabular)


def _cmd_tabular(args: argparse.Namespace) -> int:
    from ..sklearn import resolve_model
    from ..tabular import cross_validate_table, default_methods, read_table

    table = read_table(args.file, args.target, args.impute)
    if args.model:
        resolve_model(args.model)  # a wrong name fails here, in one line, before any fitting
    if table.encoded:
        print(f"one-hot encoded: {', '.join(table.encoded)}", file=sys.stderr)
    methods = default_methods(args.model, args.seed)
    result = cross_validate_table(table.X, table.y, methods, args.folds, args.repeats, args.seed, args.impute,
                                  progress=lambda line: print(line, file=sys.stderr))  # fmt: skip
    print(result)
    file = Path(args.file)
    out = Path(args.out) if args.out else file.with_name(f"{file.stem}-tabular")
    paths = result.save(out)
    print(f"wrote {', '.join(p.name for p in paths)} in {out}")
    return 0
