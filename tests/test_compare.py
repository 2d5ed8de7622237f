"""`iclab compare`: the table's numbers are the runs' curves.csv values, the config differences are exactly the keys
that differ, and a run without an evaluation is a one-line error. Runs here are folders with a config.json and an
eval/curves.csv written by write_curves, the function `iclab eval` writes them with."""

import csv
import json
import math
import subprocess
import sys

import pytest

from iclab.cli import main
from iclab.config import load_config
from iclab.errors import UserError
from iclab.evaluation import compare as compare_module
from iclab.evaluation.compare import compare, config_differences, default_ks, flatten, parse_ks
from iclab.evaluation.curves import write_curves
from iclab.files import atomic_write_json

BASE = ["dims=3", "points=7"]


def make_run(folder, overrides, curves, task="linear"):
    """A run folder with the config of BASE + overrides and curves {estimator: [mean at k = 0..6]}."""
    atomic_write_json(folder / "config.json", load_config(None, BASE + overrides).to_dict())
    rows = [
        {"task": task, "estimator": name, "k": k, "mean": m, "lo": m * 0.9, "hi": m * 1.1}
        for name, means in curves.items()
        for k, m in enumerate(means)
    ]
    write_curves(folder / "eval" / "curves.csv", rows)
    return folder


ZERO = [1.0] * 7
ORACLE = [1.0, 0.7, 0.4, 0.1, 0.05, 0.02, 0.01]


@pytest.fixture
def runs(tmp_path):
    a = make_run(
        tmp_path / "a",
        [],
        {
            "transformer": [1.0, 0.8, 0.6, 0.3, 0.2, 0.15, 0.1],
            "zero": ZERO,
            "posterior_mean": ORACLE,
            "least_squares": [1, 1, 1, 0, 0, 0, 0],
        },
    )
    b = make_run(
        tmp_path / "b",
        ["model.layers=2", "train.lr=0.003"],
        {"transformer": [1.0, 0.9, 0.7, 0.5, 0.4, 0.3, 0.25], "zero": ZERO, "posterior_mean": ORACLE},
    )
    return a, b


def csv_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_the_table_holds_each_runs_curves_csv_values(runs, tmp_path):
    result = compare(runs, out=tmp_path / "out")
    assert result.ks == [3, 6]  # d and 2d = the last k
    for row, run in zip(result.rows, runs, strict=True):
        stored = {(r["estimator"], int(r["k"])): r for r in csv_rows(run / "eval" / "curves.csv")}
        for k in (3, 6):
            assert row[f"error_k{k}"] == float(stored["transformer", k]["mean"])
            assert row[f"score_k{k}"] == float(stored["transformer", k]["icl_score"])
        # the whole curve's score: mean error over k = 1..6 (k = 0 has no score) against zero's and the oracle's
        errors = [float(stored["transformer", k]["mean"]) for k in range(1, 7)]
        expected = (1 - sum(errors) / 6) / (1 - sum(ORACLE[1:]) / 6)
        assert row["score_all"] == pytest.approx(expected)
    assert [r["run"] for r in result.rows] == ["a", "b"]
    written = csv_rows(tmp_path / "out" / "compare.csv")
    assert list(written[0]) == [
        "run", "path", "step", "model.layers", "train.lr",
        "error_k3", "error_k6", "score_k3", "score_k6", "score_all",
    ]  # fmt: skip
    assert [float(r["error_k6"]) for r in written] == [0.1, 0.25]
    assert [r["model.layers"] for r in written] == ["3", "2"]


def test_config_differences_list_exactly_the_keys_that_differ(runs, tmp_path):
    c = make_run(tmp_path / "c", ["task={name: sparse_linear, nnz: 2}"], {"transformer": ORACLE}, "sparse_linear")
    result = compare([*runs, c], out=tmp_path / "out")
    assert result.differences == {
        "task.name": {"a": "linear", "b": "linear", "c": "sparse_linear"},
        "task.nnz": {"a": None, "b": None, "c": 2},
        "model.layers": {"a": 3, "b": 2, "c": 3},
        "train.lr": {"a": 0.001, "b": 0.003, "c": 0.001},
    }
    markdown = (tmp_path / "out" / "compare.md").read_text()
    assert "| model.layers | 3 | 2 | 3 |" in markdown and "| task.nnz | n/a | n/a | 2 |" in markdown
    same = compare([runs[0]], out=tmp_path / "one")
    assert same.differences == {} and "The runs' configs are the same." in same.lines


def test_flatten_and_differences_of_nested_values():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1, 2], "e": {}}
    diff = config_differences({"x": {"a": [1, 2], "b": 1}, "y": {"a": [1, 3], "b": 1}})
    assert diff == {"a": {"x": [1, 2], "y": [1, 3]}}


def test_chosen_k_default_k_and_a_score_column_only_where_some_run_has_scores(tmp_path):
    a = make_run(tmp_path / "a", [], {"transformer": [1, 2, 3, 4, 5, 6, 7], "least_squares": ZERO})
    b = make_run(tmp_path / "b", ["seed=1"], {"transformer": [7, 6, 5, 4, 3, 2, 1]})
    result = compare([a, b], parse_ks(["1,5", "2"]), tmp_path / "out")
    assert [(r["error_k1"], r["error_k2"], r["error_k5"]) for r in result.rows] == [(2, 3, 6), (6, 5, 2)]
    assert not any(c.startswith("score") for c in result.rows[0])  # neither run was scored: no zero, no oracle
    assert default_ks([3, 5], 6) == [3, 5, 6] and default_ks([3], 10) == [3, 6, 10]
    with pytest.raises(UserError, match="--k 7: the runs' curves share k = 0 .. 6"):
        compare([a, b], [7], tmp_path / "out")
    with pytest.raises(UserError, match="--k takes whole numbers"):
        parse_ks(["5,x"])


def test_one_line_errors_for_an_unevaluated_run_a_missing_task_and_a_repeated_run(runs, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    atomic_write_json(bare / "config.json", load_config(None, BASE).to_dict())
    with pytest.raises(UserError, match=f"{bare} has not been evaluated .*run `iclab eval {bare}` first"):
        compare([runs[0], bare])
    with pytest.raises(UserError, match="has no model curve on task 'linear@skewed' \\(it has: linear\\)"):
        compare(runs, task="linear@skewed")
    with pytest.raises(UserError, match="given twice"):
        compare([runs[0], runs[0]])
    with pytest.raises(UserError, match="is a run folder"):
        compare(runs, out=runs[1])


def test_the_figure_draws_every_run_and_the_score_ends_once(runs, tmp_path, monkeypatch):
    drawn = {}

    def capture(rows, path, title, dims=None):
        drawn.update(rows=rows, title=title, dims=dims)
        return path

    monkeypatch.setattr(compare_module, "plot_sweep_curves", capture)
    compare(runs, out=tmp_path / "out")
    series = {(r.get("run"), r["estimator"]) for r in drawn["rows"]}
    # a and b were evaluated on the same prompts: a's curves of the score's ends (zero, oracle) stand for both
    assert series == {("a", "transformer"), ("b", "transformer"), (None, "zero"), (None, "posterior_mean")}
    assert drawn["dims"] == 3 and drawn["title"] == "linear: 2 runs"
    other = make_run(tmp_path / "other", ["dims=2"], {"transformer": ORACLE, "zero": ZERO})
    compare([runs[0], other], out=tmp_path / "out2")
    assert {r["estimator"] for r in drawn["rows"]} == {"transformer"} and drawn["dims"] is None


def test_the_command_prints_the_table_and_writes_md_csv_json_png_with_provenance(runs, tmp_path):
    out = tmp_path / "out"
    args = [sys.executable, "-m", "iclab.cli", "compare", *map(str, runs), "--k", "3", "--out", str(out)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| a | 0 | 0.300 | " in done.stdout and "| model.layers | 3 | 2 |" in done.stdout
    assert (out / "compare.png").stat().st_size > 1000
    record = json.loads((out / "compare.json").read_text())
    assert record["provenance"]["command"].startswith("iclab compare") and record["provenance"]["commit"]
    assert [r["error_k3"] for r in record["runs"]] == [0.3, 0.5] and record["ks"] == [3]
    assert record["differences"]["train.lr"] == {"a": 0.001, "b": 0.003}
    assert "Written by `iclab compare" in (out / "compare.md").read_text()
    assert math.isfinite(record["runs"][0]["score_all"])


def test_the_command_refuses_a_folder_without_a_run_in_one_line(runs, tmp_path, capsys):
    assert main(["compare", str(runs[0]), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"iclab: error: {tmp_path} is not a run directory")


def test_the_current_folder_as_a_run_is_named_by_its_folder(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(runs[0])
    result = compare([".", "../b"])
    assert [r["run"] for r in result.rows] == ["a", "b"] and result.out == tmp_path / "compare"
