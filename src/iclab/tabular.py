"""A pretrained in-context learner against scikit-learn's regressors on one table: repeated K-fold cross-validation
with the same folds for every method, MSE, R^2 and fit + predict seconds as mean ± standard error over the folds,
a Markdown table, CSV files and a figure. `iclab tabular FILE.csv --target COLUMN` runs it on a user's CSV.

    from sklearn.datasets import load_diabetes
    from iclab.tabular import cross_validate_table

    result = cross_validate_table(*load_diabetes(return_X_y=True), folds=5, repeats=2)
    print(result)                      # the Markdown table
    result.save("out")                 # out/tabular.csv, tabular_folds.csv, tabular.md, tabular.png

Needs scikit-learn (`pip install iclab[baselines]`).
"""

from __future__ import annotations

import csv
import difflib
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError
from .files import atomic_write_text
from .markdown import table
from .stats import Summary, summarize

MEASURES = ("mse", "r2", "seconds")
MIN_ROWS = 10
MAX_LEVELS = 10  # a text column with at most this many distinct values is one-hot encoded
MISSING = {"", "na", "nan", "null", "none"}
FOLD_COLUMNS = ("method", "repeat", "fold", "mse", "r2", "seconds")


def _sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise UserError("the tabular comparison needs scikit-learn: pip install iclab[baselines]") from None


def default_methods(model: str | None = None, seed: int = 0) -> dict[str, Any]:
    """The compared methods by name, unfitted: the in-context learner (`model`, default the estimator's default)
    and RidgeCV, LassoCV, k-NN, a random forest, HistGradientBoosting and a Gaussian process. Every method but the
    trees sees standardised features (the trees do not need them)."""
    _sklearn()
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
    from sklearn.linear_model import LassoCV, RidgeCV
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from .sklearn import DEFAULT_MODEL, ICLRegressor

    model = model or DEFAULT_MODEL
    # a smooth function plus noise, each scaled to the data (normalize_y); one length scale per feature
    kernel = ConstantKernel(1.0) * RBF(1.0) + WhiteKernel(0.1)
    return {
        f"ICL ({Path(str(model)).name})": ICLRegressor(model=str(model), random_state=seed),
        "RidgeCV": make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13))),
        "LassoCV": make_pipeline(StandardScaler(), LassoCV(random_state=seed)),
        "k-NN (k = 5)": make_pipeline(StandardScaler(), KNeighborsRegressor(n_neighbors=5)),
        "random forest": RandomForestRegressor(random_state=seed),
        "HistGradientBoosting": HistGradientBoostingRegressor(random_state=seed),
        "Gaussian process": make_pipeline(
            StandardScaler(), GaussianProcessRegressor(kernel, normalize_y=True, random_state=seed)
        ),
    }


@dataclass
class TableComparison:
    """The folds' results: `rows` of FOLD_COLUMNS, one per method, repeat and fold, all methods on the same
    folds; `folds` and `repeats`, the `seed` that drew them, and the table's shape (`n_rows`, `n_features`)."""

    rows: list[dict]
    folds: int
    repeats: int
    seed: int
    n_rows: int
    n_features: int

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(r["method"] for r in self.rows))

    def summary(self) -> dict[str, dict[str, Summary]]:
        """{method: {measure: mean, sd, se, n over the folds}} for MSE, R^2 and seconds."""
        return {m: {k: summarize(r[k] for r in self.rows if r["method"] == m) for k in MEASURES} for m in self.methods}

    def to_markdown(self) -> str:
        header = ["method", "MSE", "R²", "fit + predict seconds"]
        body = [[m, *(_cell(s[k]) for k in MEASURES)] for m, s in self.summary().items()]
        caption = (
            f"{self.n_rows} rows × {self.n_features} features; {self.repeats} × {self.folds}-fold cross-validation, "
            f"the same folds for every method (seed {self.seed}); mean ± s.e. over the {self.folds * self.repeats} "
            "folds"
        )
        return "\n".join([*table(header, body), "", caption])

    def __str__(self) -> str:
        return self.to_markdown()

    def to_dict(self) -> dict:
        """Everything as plain JSON-able data: the settings, the summary (mean, sd, se, n) and the fold rows."""
        summary = {m: {k: s.to_dict() for k, s in measures.items()} for m, measures in self.summary().items()}
        settings = {k: getattr(self, k) for k in ("folds", "repeats", "seed", "n_rows", "n_features")}
        return settings | {"summary": summary, "folds_rows": self.rows}

    def summary_csv(self) -> str:
        lines = [["method", *(f"{k}_{s}" for k in MEASURES for s in ("mean", "se")), "n"]]
        for method, measures in self.summary().items():
            lines.append([method, *(_num(getattr(measures[k], s)) for k in MEASURES for s in ("mean", "se"))])
            lines[-1].append(measures["mse"].n)
        return _csv(lines)

    def folds_csv(self) -> str:
        return _csv([list(FOLD_COLUMNS), *([r[c] for c in FOLD_COLUMNS] for r in self.rows)])

    def plot(self, path: str | Path, title: str | None = None) -> Path:
        """R^2 and seconds per method, mean ± s.e. over the folds, as two panels; written atomically."""
        from .plotting import finish, plt, save_figure

        summary = self.summary()
        names = list(summary)
        at = np.arange(len(names))[::-1]  # the first method on top
        fig, axes = plt.subplots(1, 2, figsize=(9, 0.45 * len(names) + 1.6), sharey=True)
        for ax, key, label in ((axes[0], "r2", "R² (higher is better)"), (axes[1], "seconds", "fit + predict seconds")):
            means = [summary[m][key].mean for m in names]
            ax.errorbar(means, at, xerr=[summary[m][key].se for m in names], fmt="o", color="C0", capsize=3)
            if key == "seconds":
                ax.set_xscale("log")
            ax.set_yticks(at, names)
            finish(ax, label, "method", legend=False)
        axes[1].tick_params(labelleft=False)
        fig.suptitle(title or self._caption(), fontsize=9)
        fig.tight_layout()
        return save_figure(fig, Path(path))

    def _caption(self) -> str:
        return f"{self.n_rows} × {self.n_features} table, {self.repeats} × {self.folds}-fold CV: mean ± s.e. over folds"

    def save(self, out: str | Path, name: str = "tabular") -> list[Path]:
        """Write OUT/NAME.csv (the summary), NAME_folds.csv, NAME.md and NAME.png, each atomically."""
        out = Path(out)
        paths = [out / f"{name}.csv", out / f"{name}_folds.csv", out / f"{name}.md"]
        for path, text in zip(paths, (self.summary_csv(), self.folds_csv(), self.to_markdown() + "\n"), strict=True):
            atomic_write_text(path, text)
        return [*paths, self.plot(out / f"{name}.png")]


def _cell(s: Summary) -> str:
    digits = 3 if abs(s.mean) < 100 else 1
    return f"{s.mean:.{digits}f} ± {s.se:.{digits}f}"


def _num(v: float) -> str:
    return f"{v:.6g}"


def _csv(lines: Sequence[Sequence]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(lines)
    return buffer.getvalue()


def cross_validate_table(
    X: Any,
    y: Any,
    methods: dict[str, Any] | None = None,
    folds: int = 5,
    repeats: int = 3,
    seed: int = 0,
    impute: bool = False,
    progress: Callable[[str], None] | None = None,
) -> TableComparison:
    """Repeated K-fold cross-validation of every method on (X, y), with the same folds for each.

    `methods` maps a name to an unfitted scikit-learn regressor (default: `default_methods(seed=seed)`); each is
    cloned afresh for every fold. `folds` K, `repeats` R and `seed` draw the splits (RepeatedKFold). With `impute`,
    each method is preceded by a mean imputer fitted on the fold's training rows, so NaN features are allowed.
    `progress`, when given, is called with one line per method. Returns a TableComparison."""
    _sklearn()
    from sklearn.base import clone
    from sklearn.impute import SimpleImputer
    from sklearn.metrics import mean_squared_error, r2_score
    from sklearn.model_selection import RepeatedKFold
    from sklearn.pipeline import make_pipeline

    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or y.shape != (len(X),):
        raise UserError(f"X must be (rows, features) and y (rows,), got {X.shape} and {y.shape}")
    if not 2 <= folds <= len(X):
        raise UserError(f"folds must be from 2 to the number of rows ({len(X)}), got {folds}")
    if repeats < 1:
        raise UserError(f"repeats must be at least 1, got {repeats}")
    methods = default_methods(seed=seed) if methods is None else methods
    splits = list(RepeatedKFold(n_splits=folds, n_repeats=repeats, random_state=seed).split(X))
    rows = []
    for name, method in methods.items():
        for i, (train, test) in enumerate(splits):
            estimator = clone(make_pipeline(SimpleImputer(), method) if impute else method)
            start = time.perf_counter()
            pred = estimator.fit(X[train], y[train]).predict(X[test])
            seconds = time.perf_counter() - start
            mse, r2 = float(mean_squared_error(y[test], pred)), float(r2_score(y[test], pred))
            rows.append({"method": name, "repeat": i // folds, "fold": i % folds, "mse": mse, "r2": r2,
                         "seconds": seconds})  # fmt: skip
        if progress:
            s = summarize(r["r2"] for r in rows if r["method"] == name)
            progress(f"{name}: R² {s.mean:.3f} ± {s.se:.3f}")
    return TableComparison(rows, folds, repeats, seed, X.shape[0], X.shape[1])


@dataclass
class Table:
    """A CSV read for the comparison: features X (rows, features; NaN where a cell was empty), target y, and the
    feature names (a one-hot column is named COLUMN=VALUE)."""

    X: np.ndarray
    y: np.ndarray
    features: list[str]
    encoded: list[str]  # the text columns that were one-hot encoded


def read_table(path: str | Path, target: str, impute: bool = False) -> Table:
    """Read a CSV with a header row for `cross_validate_table`: the numeric `target` column and every other column
    as a feature; a text column of at most MAX_LEVELS distinct values is one-hot encoded. Refused in one line: a
    missing file or column, a non-numeric target, a text column it cannot encode, fewer than MIN_ROWS rows, and
    empty or NaN feature cells unless `impute`."""
    path = Path(path)
    try:
        with path.open(newline="") as f:
            lines = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"cannot read {path} as a CSV file: {e}") from None
    if not lines:
        raise UserError(f"{path} is empty; it needs a header row and at least {MIN_ROWS} rows")
    header, body = [h.strip() for h in lines[0]], lines[1:]
    for number, row in enumerate(body, 2):
        if len(row) != len(header):
            raise UserError(f"{path}, row {number}: {len(row)} cells, but the header has {len(header)} columns")
    if target not in header:
        close = difflib.get_close_matches(target, header, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"{path} has no column '{target}'{hint}; its columns: {', '.join(header)}")
    if len(body) < MIN_ROWS:
        raise UserError(f"{path} has {len(body)} data rows; cross-validation needs at least {MIN_ROWS}")
    if len(header) < 2:
        raise UserError(f"{path} has no feature columns besides the target '{target}'")
    columns = {name: [row[i].strip() for row in body] for i, name in enumerate(header)}
    y = _numeric(columns.pop(target), f"{path}, column '{target}'")
    if isinstance(y, str):
        raise UserError(f"{path}: the target column '{target}' is not numeric ({y}); pick a numeric column")
    if np.isnan(y).any():
        rows = ", ".join(str(i + 2) for i in np.flatnonzero(np.isnan(y))[:5])
        raise UserError(f"{path}: the target '{target}' is empty in {int(np.isnan(y).sum())} rows (rows {rows}…); "
                        "drop those rows")  # fmt: skip
    parts, names, encoded = [], [], []
    for name, cells in columns.items():
        values = _numeric(cells, f"{path}, column '{name}'")
        if isinstance(values, str):
            levels = sorted({c for c in cells if c.lower() not in MISSING})
            if len(levels) > MAX_LEVELS:
                raise UserError(
                    f"{path}: column '{name}' is not numeric ({values}) and has {len(levels)} distinct values, too "
                    f"many to one-hot encode (at most {MAX_LEVELS}); drop it or encode it as numbers"
                )
            missing = np.array([c.lower() in MISSING for c in cells])
            for level in levels:
                parts.append(np.where(missing, np.nan, [float(c == level) for c in cells]))
                names.append(f"{name}={level}")
            encoded.append(name)
        else:
            parts.append(values)
            names.append(name)
    X = np.stack(parts, axis=1)
    if not impute and np.isnan(X).any():
        row, col = np.argwhere(np.isnan(X))[0]
        raise UserError(
            f"{path}: {int(np.isnan(X).sum())} empty or NaN feature cells (the first: column '{names[col]}', "
            f"row {row + 2}); fill them, or pass --impute to replace them by the column mean of each training fold"
        )
    return Table(X, y, names, encoded)


def _numeric(cells: list[str], where: str) -> np.ndarray | str:
    """The cells as floats (NaN for a missing one), or a description of the first cell that is not a number; an
    infinite value is refused (`where` names the column)."""
    out = []
    for number, cell in enumerate(cells, 2):
        if cell.lower() in MISSING:
            out.append(math.nan)
            continue
        try:
            out.append(float(cell))
        except ValueError:
            return f"'{cell}' in row {number}"
        if math.isinf(out[-1]):
            raise UserError(f"{where}: '{cell}' in row {number} is infinite; replace it by a finite number")
    return np.array(out)
