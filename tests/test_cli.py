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
    assert result.stderr == ""  # no progress bars
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


def test_resume_to_fewer_steps_than_reached_is_refused(run):
    config = (run / "config.json").read_text()
    result = iclab("train", "--resume", run, "--steps", 3, "--quiet")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert f"--steps 3: {run} is already at step 6" in result.stderr
    assert (run / "config.json").read_text() == config  # the run still says 6 steps


def test_a_run_that_learned_nothing_gets_the_budget_that_learns(run):
    """The fixture's 6 steps learn nothing: `train` printed a hint with a budget read from a shipped config."""
    from iclab.training.hints import reference
    from iclab.training.runs import read_config, read_metrics

    assert read_metrics(run)[-1]["val_error"][-1] >= 0.9  # the premise: no learning in 6 steps
    what, ref = reference(read_config(run))
    assert ref.task["name"] == "linear" and ref.train.steps >= 1000  # a shipped linear model, not an invented number
    result = iclab("train", "--resume", run, "--quiet")  # the hint also follows a resume
    hint = [line for line in result.stdout.splitlines() if line.startswith("hint:")]
    assert len(hint) == 1 and f"learned with {ref.train.steps:,} steps" in hint[0] and what in hint[0]
    assert f"iclab train --resume {run} --steps {ref.train.steps}" in hint[0]


def test_list_and_config():
    out = iclab("list").stdout
    assert "sparse_linear" in out and "lasso" in out and "half_subspace" in out
    assert '"dims": 5' in iclab("config", "demo").stdout


def cli_output(capsys, *argv):
    """stdout of the `iclab` command run in this process (a --help or --version ends in SystemExit 0)."""
    from iclab.cli import main

    try:
        assert main(list(argv)) == 0
    except SystemExit as e:
        assert e.code == 0
    return capsys.readouterr().out


def test_list_shows_whole_descriptions_and_every_parameter(capsys):
    from iclab.baselines import ESTIMATORS
    from iclab.cli.commands import _first_paragraph

    out = cli_output(capsys, "list", "baselines")  # the synonym the flag --baselines suggests
    assert out.startswith("estimators:") and "tasks:" not in out
    text = " ".join(out.split())
    for name in ESTIMATORS.names():  # each description whole, wrapped but never cut
        assert _first_paragraph(ESTIMATORS.get(name).__doc__) in text, name
    assert "lasso_cv" in text and "alphas=[" in text and "prompts=256" in text
    assert "nnz=[], weights=[], noise=0.0" in text  # bayes
    tasks = " ".join(cli_output(capsys, "list", "tasks").split())
    assert "parameters: components=[]" in tasks  # mixture
    assert "parameters: first={name: linear}, second={name: sinusoid}, alpha=0.5" in tasks  # convex
    assert max(map(len, out.splitlines())) <= 120


def test_version_and_quiet_help(capsys):
    import iclab

    assert cli_output(capsys, "--version").strip() == f"iclab {iclab.__version__}"
    help_text = " ".join(cli_output(capsys, "eval", "--help").split())
    assert "--quiet no progress bars" in help_text


def test_reproduce_help_lists_the_recipe_registry(capsys, monkeypatch):
    from iclab import recipes

    monkeypatch.setitem(recipes.RECIPES, "my-recipe", recipes.RECIPES["sparsity"])
    monkeypatch.setenv("COLUMNS", "1000")  # no line breaks inside hyphenated names
    help_text = " ".join(cli_output(capsys, "reproduce", "--help").split())
    assert f"a recipe ({', '.join(recipes.RECIPES)})" in help_text and "my-recipe" in help_text


def test_the_progress_bar_shows_the_normalised_validation_error(tmp_path, capsys):
    from iclab.config import load_config
    from iclab.training.runs import read_metrics
    from iclab.training.trainer import train

    train(load_config(None, TINY + ["train.steps=5"]), tmp_path / "run", progress=True)
    err = capsys.readouterr().err
    last = read_metrics(tmp_path / "run")[-1]["val_error"]
    assert f"val error {last[-1]:.3f} at k=6 (zero predictor 1)" in err  # the reports' measure, at the last k


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--config", "missing.yaml", "--out", "x"], "config file not found: missing.yaml"),
        (["eval", "not-a-run"], "not-a-run is not a run directory"),
        (["train", "--out", "x"], "give --config FILE and --out RUN_DIR"),
        (["config", "--set", "task.name=nope"], "unknown task 'nope'"),
        (["config", "--set", "dims=-1"], "config key 'dims': must be >= 1, got -1"),
        (["config", "--set", "train.steps", "100"], "--set expects key=value, got 'train.steps'"),  # not the usage
        (["train", "--out", "x", "--set", "train.steps"], "--set expects key=value, got 'train.steps'"),
        (["--import", "no_such_module_xyz", "list"], "--import no_such_module_xyz: no module named"),
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
        (["--task", "sparse_linear:nnz=99"], "--task sparse_linear:nnz=99: parameter 'nnz': must be <= dims (3)"),
        (["--task", "linear:nnz=2"], "--task linear:nnz=2: 'linear' takes no parameter 'nnz'; it takes none"),
        (["--shift", "scaled_x:fator=2"], "--shift scaled_x:fator=2: 'scaled_x' takes no parameter 'fator'"),
        (["--baselines", "lasso:alpah=1"], "--baselines lasso:alpah=1: 'lasso' takes no parameter 'alpah'"),
    ]:
        result = iclab("eval", run, *args)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert "config key" not in result.stderr and result.stderr.count("\n") == 1


def test_existing_run_refused(run):
    result = iclab("train", "--config", run / "config.json", "--out", run)
    assert result.returncode == 2 and "already holds a run" in result.stderr


def test_lm_alias_names_a_missing_package_before_announcing_the_conversion(tmp_path, monkeypatch, capsys):
    pytest.importorskip("transformers")  # the lm extra
    from iclab.errors import UserError
    from iclab.lm import loading

    monkeypatch.setenv("ICLAB_CACHE", str(tmp_path))
    monkeypatch.setitem(loading.ALIASES, "tiny", ("no_such_package_xyz", "tiny.gguf", "pip install no-such-xyz"))
    with pytest.raises(UserError, match="model alias 'tiny' needs the package no_such_package_xyz: pip install"):
        loading.load("tiny", progress=True)
    assert "converting" not in capsys.readouterr().out


def test_a_reader_that_leaves_early_stops_the_command_quietly():
    """`iclab list | head -1`: no BrokenPipeError traceback, and the shell's status for a closed pipe."""
    cmd = f"set -o pipefail; {sys.executable} -m iclab.cli list | head -1"
    result = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True)
    assert result.stdout == "tasks:\n"
    assert result.stderr == ""
    assert result.returncode == 141
