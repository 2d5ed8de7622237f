"""`iclab tabular FILE.csv --target COLUMN`: the cross-validated comparison on a user's CSV, its files, and the
one-line refusals of input it cannot use."""

import csv
import json

import numpy as np
import pytest
from test_figures import problems

from iclab.cli import main
from iclab.plotting import plt
from iclab.sklearn import DEFAULT_MODEL
from iclab.tabular import TableComparison, cross_validate_table, read_table


def write_csv(path, header, rows):
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def linear_rows(n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = X @ [1.0, -2.0, 0.5] + 0.05 * rng.normal(size=n)
    return [[*map(float, x), float(t)] for x, t in zip(X, y, strict=True)]


def refused(capsys, *argv) -> str:
    """Run the command, expect exit 2 and exactly one line on stderr; return it."""
    assert main(["tabular", *map(str, argv)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_a_small_table_is_compared_and_written(tmp_path, capsys):
    rows = [[*r[:3], "red" if i % 3 else "blue", r[3]] for i, r in enumerate(linear_rows(30))]
    path = write_csv(tmp_path / "t.csv", ["a", "b", "c", "colour", "y"], rows)
    out = tmp_path / "out"
    assert main(["tabular", str(path), "--target", "y", "--folds", "2", "--repeats", "1", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"| ICL ({DEFAULT_MODEL}) |" in captured.out and "| RidgeCV |" in captured.out
    assert "one-hot encoded: colour" in captured.err
    with (out / "tabular.csv").open() as f:
        summary = {r["method"]: r for r in csv.DictReader(f)}
    assert len(summary) == 7 and all(int(r["n"]) == 2 for r in summary.values())
    assert float(summary["RidgeCV"]["r2_mean"]) > 0.95  # y is nearly linear in a, b, c
    with (out / "tabular_folds.csv").open() as f:
        folds = list(csv.DictReader(f))
    assert len(folds) == 7 * 2
    assert (out / "tabular.png").stat().st_size > 0 and (out / "tabular.md").read_text().startswith("| method |")


def test_every_method_sees_the_same_folds_and_the_summary_is_over_them():
    X = np.arange(40, dtype=float)[:, None]
    y = X[:, 0] * 2.0

    class Recorder:  # a regressor that records which rows it was fitted on
        seen: list = []

        def get_params(self, deep=True):
            return {}

        def set_params(self, **params):
            return self

        def fit(self, X, y):
            Recorder.seen.append(tuple(X[:, 0]))
            self.mean = y.mean()
            return self

        def predict(self, X):
            return np.full(len(X), self.mean)

    result = cross_validate_table(X, y, {"one": Recorder(), "two": Recorder()}, folds=4, repeats=2, seed=3)
    first, second = Recorder.seen[:8], Recorder.seen[8:]
    assert first == second and len(set(first)) == 8  # the same 8 splits, in the same order, for both methods
    summary = result.summary()["one"]["mse"]
    mses = [r["mse"] for r in result.rows if r["method"] == "one"]
    assert summary.n == 8 and summary.mean == pytest.approx(np.mean(mses))
    assert summary.se == pytest.approx(np.std(mses, ddof=1) / np.sqrt(8))
    assert json.loads(json.dumps(result.to_dict()))["summary"]["two"]["r2"]["n"] == 8


def test_the_figure_keeps_the_figure_rules(tmp_path, monkeypatch):
    kept = []
    monkeypatch.setattr(plt, "close", kept.append)
    rows = [
        {"method": m, "repeat": 0, "fold": f, "mse": 1.0 + f, "r2": 0.5 - 0.1 * i + 0.01 * f, "seconds": 0.01 * 10**i}
        for i, m in enumerate(["ICL", "RidgeCV", "forest"])
        for f in range(3)
    ]
    TableComparison(rows, 3, 1, 0, 30, 2).plot(tmp_path / "f.png")
    assert problems(kept[0]) == []
    plt.close(kept[0])


def test_missing_target_column_suggests_the_nearest(tmp_path, capsys):
    path = write_csv(tmp_path / "t.csv", ["a", "b", "c", "price"], linear_rows(12))
    line = refused(capsys, path, "--target", "prise")
    assert "no column 'prise'" in line and "did you mean 'price'" in line


def test_a_text_column_with_too_many_values_is_refused(tmp_path, capsys):
    rows = [[f"id{i}", *r] for i, r in enumerate(linear_rows(12))]
    path = write_csv(tmp_path / "t.csv", ["name", "a", "b", "c", "y"], rows)
    line = refused(capsys, path, "--target", "y")
    assert "column 'name' is not numeric" in line and "12 distinct values" in line


def test_a_text_target_is_refused(tmp_path, capsys):
    rows = [[*r[:3], "big" if r[3] > 0 else "small"] for r in linear_rows(12)]
    path = write_csv(tmp_path / "t.csv", ["a", "b", "c", "y"], rows)
    assert "target column 'y' is not numeric" in refused(capsys, path, "--target", "y")


def test_fewer_than_ten_rows_are_refused(tmp_path, capsys):
    path = write_csv(tmp_path / "t.csv", ["a", "b", "c", "y"], linear_rows(9))
    assert "has 9 data rows" in refused(capsys, path, "--target", "y")


def test_empty_cells_are_refused_unless_imputed(tmp_path, capsys):
    rows = linear_rows(20)
    rows[4][1] = ""
    path = write_csv(tmp_path / "t.csv", ["a", "b", "c", "y"], rows)
    line = refused(capsys, path, "--target", "y")
    assert "1 empty or NaN feature cells" in line and "column 'b', row 6" in line and "--impute" in line
    table = read_table(path, "y", impute=True)
    assert np.isnan(table.X[4, 1]) and np.isfinite(np.delete(table.X, 4, axis=0)).all()
    result = cross_validate_table(table.X, table.y, None, folds=2, repeats=1, impute=True)
    assert all(np.isfinite(r["mse"]) for r in result.rows)


def test_an_unknown_model_is_refused_before_fitting(tmp_path, capsys):
    path = write_csv(tmp_path / "t.csv", ["a", "b", "c", "y"], linear_rows(12))
    assert "did you mean 'dense'" in refused(capsys, path, "--target", "y", "--model", "dens")
