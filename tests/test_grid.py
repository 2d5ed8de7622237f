"""`iclab grid` (old name `iclab sweep-run`): grid expansion and its errors, the engines (local processes,
submitit's local executor, Dask), skipping complete runs, resuming half-finished ones, never running one run twice,
and the results table."""

import csv
import fcntl
import os
import shutil
import subprocess
import sys

import pytest
from conftest import TINY

from iclab.cli.commands import build_parser, main
from iclab.config import load_config
from iclab.errors import UserError
from iclab.experiments.engines import run_job
from iclab.experiments.grid import run_grid
from iclab.experiments.gridfile import expand, read_grid, run_name
from iclab.training.checkpoint import checkpoint_dirs
from iclab.training.runs import read_metrics
from iclab.training.trainer import train

BASE = "\n".join(f"{k}: {v}" for k, v in (item.split("=", 1) for item in TINY if "." not in item.split("=")[0]))
# TINY as YAML: the dotted keys go under `set:` of the grid file
SET = {k: v for k, v in (item.split("=", 1) for item in TINY if "." in item.split("=")[0])}


def write_grid(folder, grid: str, extra: str = "", fixed: dict | None = None) -> str:
    (folder / "base.yaml").write_text(BASE + "\neval: {baselines: [least_squares]}\n")
    fixed = ", ".join(f"{k}: {v}" for k, v in (SET | {"train.steps": "6"} | (fixed or {})).items())
    path = folder / "grid.yaml"
    path.write_text(f"base: base.yaml\nset: {{{fixed}}}\ngrid:\n{grid}\n{extra}")
    return path


def losses(run_dir):
    return [(m["step"], m["loss"]) for m in read_metrics(run_dir) if "loss" in m]


def one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_grid_expands_to_every_combination_with_readable_names(tmp_path):
    path = write_grid(tmp_path, "  train.lr: [1.0e-3, 3.0e-3]\n  seed: [0, 1, 2]")
    runs = expand(read_grid(path), tmp_path / "out")
    assert [r.name for r in runs][:4] == ["lr=0.001_seed=0", "lr=0.001_seed=1", "lr=0.001_seed=2", "lr=0.003_seed=0"]
    assert len(runs) == 6 and len({r.run_dir for r in runs}) == 6
    assert runs[4].config["train"]["lr"] == 3e-3 and runs[4].config["seed"] == 1
    assert runs[4].config["train"]["steps"] == 6 and runs[4].config["dims"] == 3  # from `set` and the base
    assert (
        run_name({"task": {"name": "sparse_linear", "nnz": 2}, "model.layers": 2})
        == "task=sparse_linear_nnz=2_layers=2"
    )
    assert run_name({"train.lr": 1, "model.lr": 2}) == "train.lr=1_model.lr=2"  # same last part: full keys


@pytest.mark.parametrize(
    "grid, extra, overrides, expected",
    [
        ("  train.lrr: [1, 2]", "", [], "unknown config key 'train.lrr' (did you mean 'lr'?)"),
        ("  train.lr: [1.0e-3, -1]", "", [], "run lr=-1: config key 'train.lr': must be > 0.0, got -1"),
        ("  seed: 3", "", [], "grid key 'seed' needs a non-empty list of values"),
        ("  seed: [0]", "gird: {}\n", [], "unknown grid file key 'gird' (did you mean 'grid'?)"),
        ("  seed: [0]", "", ["seed=4"], "--set seed conflicts with the grid key 'seed'"),
        ("  seed: [0]", "collect: {k: [99]}\n", [], "collect.k 99: the prompts have k = 0 .. 6"),
        ("  seed: [0]", "slurm: {partitionn: gpu}\n", [], "unknown submitit parameter 'slurm.partitionn'"),
        ("  seed: [0]", "slurm: {tasks_per_node: 2}\n", [], "slurm.tasks_per_node: each sweep run is one process"),
    ],
)
def test_bad_grids_fail_before_anything_runs(tmp_path, grid, extra, overrides, expected):
    path = write_grid(tmp_path, grid, extra)
    message = one_line_error(run_grid, path, tmp_path / "out", "submitit-local", overrides=overrides, progress=False)
    assert expected in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "engine, expected",
    [
        ("slurmm", "unknown engine 'slurmm' (did you mean 'slurm'?); allowed: dask, local, slurm, submitit-local"),
        pytest.param(
            "slurm",
            "--engine slurm: no SLURM here (srun not found)",
            marks=pytest.mark.skipif(shutil.which("srun") is not None, reason="a SLURM cluster is reachable"),
        ),
    ],
)
def test_an_engine_that_cannot_run_fails_before_anything_runs(tmp_path, engine, expected):
    path = write_grid(tmp_path, "  seed: [0]")
    assert expected in one_line_error(run_grid, path, tmp_path / "out", engine, progress=False)
    assert not (tmp_path / "out").exists()


def test_a_folder_trained_with_other_settings_stops_the_sweep(tmp_path):
    path = write_grid(tmp_path, "  seed: [0, 1]")
    run = expand(read_grid(path), tmp_path / "out")[1]
    train(load_config(base=run.config | {"dims": 4}), run.run_dir, progress=False)
    message = one_line_error(run_grid, path, tmp_path / "out", progress=False)
    assert message.startswith(f"{run.run_dir} was trained with other settings (dims: 4 there, 3 here)")
    assert not (tmp_path / "out" / "logs").exists()  # nothing started, not even the good run


def test_local_sweep_skips_complete_runs_and_resumes_half_finished_ones(tmp_path):
    path = write_grid(tmp_path, "  train.lr: [1.0e-3, 3.0e-3]")
    out = tmp_path / "out"
    first = run_grid(path, out, "local", jobs=2, progress=False)
    assert {o["status"] for o in first["outcomes"].values()} == {"done"}
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["run"], r["train.lr"], r["status"], r["step"]) for r in rows] == [
        ("lr=0.001", "0.001", "complete", "6"),
        ("lr=0.003", "0.003", "complete", "6"),
    ]
    assert float(rows[0]["error_k3"]) > 0 and rows[0]["error_from"] == "validation"
    assert (out / "results.png").is_file() and "| lr=0.003 |" in (out / "results.md").read_text()
    # the same sweep again: nothing to do
    assert run_grid(path, out, "local", progress=False)["outcomes"] == {}
    # a run that died after its step-5 checkpoint resumes, with the loss sequence of an uninterrupted run
    straight = losses(out / "lr=0.003")
    shutil.rmtree(checkpoint_dirs(out / "lr=0.003")[-1])
    again = run_grid(path, out, "local", progress=False)
    assert list(again["outcomes"]) == ["lr=0.003"]
    assert losses(out / "lr=0.003") == straight
    assert (out / "logs" / "lr=0.003.log").read_text().count("--- ") == 2  # one log, appended


def test_a_run_being_trained_elsewhere_is_skipped_and_a_failure_is_reported(tmp_path):
    path = write_grid(tmp_path, "  train.lr: [1.0e30]", fixed={"train.warmup": 0, "train.grad_clip": 0})
    (run,) = expand(read_grid(path), tmp_path / "out")
    job = {"name": run.name, "run_dir": str(run.run_dir), "config": run.config, "evaluate": False}
    job["log"] = str(tmp_path / "out" / "logs" / "run.log")
    os.makedirs(tmp_path / "out" / "logs")
    with open(job["log"], "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as another sweep process training the same run would
        assert run_job(job)["status"] == "busy"
    assert not run.run_dir.exists()
    outcome = run_job(job)
    assert outcome["status"] == "failed" and outcome["error"].startswith("training diverged at step")
    assert "iclab: error: training diverged" in (tmp_path / "out" / "logs" / "run.log").read_text()


def test_submitit_local_executor_trains_and_evaluates(tmp_path):
    pytest.importorskip("submitit")
    path = write_grid(tmp_path, "  seed: [0, 1]", "collect: {k: [2, 3], evaluate: true}\nslurm: {timeout_min: 10}\n")
    result = run_grid(path, tmp_path / "out", "submitit-local", progress=False)
    assert {o["status"] for o in result["outcomes"].values()} == {"done"}
    assert [r["error_from"] for r in result["rows"]] == ["eval", "eval"]
    for run in result["runs"]:
        assert (run.run_dir / "eval" / "curves.csv").is_file() and (run.run_dir / "report.md").is_file()
    assert set((tmp_path / "out" / "jobs.json").read_text().split('"')) >= {"seed=0", "seed=1"}


def test_dask_local_cluster(tmp_path):
    pytest.importorskip("distributed")
    path = write_grid(tmp_path, "  seed: [0]")
    result = run_grid(path, tmp_path / "out", "dask", jobs=1, progress=False)
    assert result["outcomes"]["seed=0"]["status"] == "done"
    assert result["rows"][0]["status"] == "complete"


def test_cli_one_line_error_and_dry_run(tmp_path):
    path = write_grid(tmp_path, "  train.lrr: [1, 2]")
    cmd = [sys.executable, "-m", "iclab.cli", "grid", str(path), "--out", str(tmp_path / "out")]
    bad = subprocess.run(cmd, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "unknown config key 'train.lrr'" in bad.stderr
    write_grid(tmp_path, "  seed: [0, 1]")
    dry = subprocess.run(cmd + ["--dry-run"], capture_output=True, text=True)
    assert dry.returncode == 0 and "2 runs" in dry.stdout and "new       seed=1" in dry.stdout


def test_sweep_run_is_the_old_name_of_grid(tmp_path, capsys):
    path = write_grid(tmp_path, "  seed: [0, 1]")
    argv = [str(path), "--out", str(tmp_path / "out"), "--jobs", "2", "--set", "train.lr=0.002", "--dry-run"]
    parser = build_parser()
    new, old = (vars(parser.parse_args([name] + argv)) for name in ("grid", "sweep-run"))
    assert new.pop("command") == "grid" and old.pop("command") == "sweep-run" and new == old
    printed = []
    for name in ("grid", "sweep-run"):
        assert main([name] + argv) == 0
        printed.append(capsys.readouterr().out)
    assert printed[0] == printed[1] and "2 runs" in printed[0] and "new       seed=1" in printed[0]
    assert "sweep-run alias of iclab grid (old name)" in " ".join(parser.format_help().split())
