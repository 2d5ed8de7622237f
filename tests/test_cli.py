"""The `iclab` command as a user runs it: a subprocess, one-line errors, exit codes, files on disk."""

import csv
import os
import subprocess
import sys

import pytest
from conftest import TINY

SET = [a for item in TINY for a in ("--set", item)]


def iclab(*args, cwd=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "iclab.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    config = root / "c.yaml"
    config.write_text("task: {name: linear}\ntrain: {steps: 6}\n")
    result = iclab("train", "--config", config, "--out", root / "run", "--quiet", *SET)
    assert result.returncode == 0, result.stderr
    assert "trained" in result.stdout
    return root / "run"


def test_train_writes_a_run_folder(run):
    assert (run / "config.json").is_file() and (run / "metrics.jsonl").is_file()
    assert (run / "checkpoints" / "step-0000006" / "model.safetensors").is_file()


def test_eval_writes_curves_plot_and_report(run):
    result = iclab("eval", run, "--quiet")
    assert result.returncode == 0, result.stderr
    with open(run / "eval" / "curves.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["task", "estimator", "k", "mean", "lo", "hi", "icl_score"]
    # zero and the oracle the config's evaluation adds give every k > 0 a score; k = 0 has none
    assert all(bool(r["icl_score"]) == (r["k"] != "0") for r in rows if r["estimator"] == "transformer")
    estimators = {r["estimator"] for r in rows}
    assert {"transformer", "least_squares", "zero", "knn", "averaging", "ridge", "lasso"} <= estimators
    assert len([r for r in rows if r["estimator"] == "transformer"]) == 7  # k = 0..6
    for r in rows:
        assert float(r["lo"]) <= float(r["mean"]) <= float(r["hi"])
    assert (run / "eval" / "curves.png").stat().st_size > 1000
    assert "## Evaluation: linear" in (run / "report.md").read_text()


def test_eval_on_another_task_and_shift_adds_rows(run):
    assert (
        iclab("eval", run, "--task", "sparse_linear:nnz=1", "--baselines", "least_squares", "--quiet").returncode == 0
    )
    assert iclab("eval", run, "--shift", "scaled_x:factor=2", "--baselines", "", "--quiet").returncode == 0
    with open(run / "eval" / "curves.csv") as f:
        tasks = {r["task"] for r in csv.DictReader(f)}
    assert {"linear", "sparse_linear:nnz=1", "linear@scaled_x:factor=2"} <= tasks
    assert (run / "eval" / "curves-sparse_linear_nnz=1.png").is_file()
    assert iclab("report", run).returncode == 0


def test_resume_of_a_finished_run_does_nothing(run):
    result = iclab("train", "--resume", run, "--quiet")
    assert result.returncode == 0 and "nothing to do" in result.stdout


def test_list_and_config():
    out = iclab("list").stdout
    assert "sparse_linear" in out and "lasso" in out and "half_subspace" in out
    assert '"dims": 5' in iclab("config", "demo").stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--config", "missing.yaml", "--out", "x"], "config file not found: missing.yaml"),
        (["eval", "not-a-run"], "not-a-run is not a run directory"),
        (["train", "--out", "x"], "give --config FILE and --out RUN_DIR"),
        (["config", "--set", "task.name=nope"], "unknown task 'nope'"),
        (["config", "--set", "dims=-1"], "config key 'dims': must be >= 1, got -1"),
    ],
)
def test_user_errors_are_one_line_with_exit_2(args, message, tmp_path):
    result = iclab(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert message in result.stderr


def test_eval_errors(run):
    for args, message in [
        (["--task", "nope"], "unknown task 'nope'"),
        (["--shift", "tilted"], "unknown shift 'tilted'"),
        (["--baselines", "least_squares,knnn"], "unknown estimator 'knnn'"),
        (["--task", "sparse_linear:nnz=99"], "config key '--task.nnz': must be <= dims (3)"),
    ]:
        result = iclab("eval", run, *args)
        assert result.returncode == 2 and message in result.stderr, result.stderr


def test_existing_run_refused(run):
    result = iclab("train", "--config", run / "config.json", "--out", run)
    assert result.returncode == 2 and "already holds a run" in result.stderr
