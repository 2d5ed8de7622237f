"""Ctrl-C (SIGINT) and SIGTERM at a random moment of training: real `iclab` processes, real signals.

Each case stops a run with a signal at a step drawn at random (seeded), checks the exit status (130 for SIGINT,
143 for SIGTERM), the one-line message and that the checkpoint is the one of the step the message names, then
resumes and compares the logged losses with a run never interrupted, bit for bit (same CPU, one thread): a state
saved mid-step (the data generator advanced, the optimizer half-way) would change every loss after it.
"""

import glob
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY

from iclab.config import load_config
from iclab.experiments.grid import run_grid
from iclab.training.checkpoint import latest_checkpoint, read_state
from iclab.training.runs import read_config, read_metrics
from iclab.training.trainer import Trainer, resume, train

RNG = random.Random(20)
# TINY, at the size: 1 layer of width 16, d = 3, 7 points, batches of 32, every loss logged
SMALL = TINY + ["train.batch_size=32", "train.eval_every=0", "train.checkpoint_every=50", "threads=1"]
STEPS = 400  # the signals land before step 130: far from the end even when a busy machine makes the test poll late


def sets(overrides: list[str]) -> list[str]:
    return [a for item in overrides for a in ("--set", item)]


def iclab(*args) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "iclab.cli", *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def last_step(pattern: str) -> int:
    """The last logged step of the run(s) whose metrics.jsonl match `pattern` (0 before the first line)."""
    steps = [0]
    for path in glob.glob(pattern):
        lines = Path(path).read_text().splitlines()
        if lines and lines[-1].endswith("}"):
            steps.append(json.loads(lines[-1])["step"])
    return max(steps)


def wait_for(proc: subprocess.Popen, metrics: str, step: int) -> None:
    """Until the run has logged `step`."""
    while last_step(metrics) < step:
        assert proc.poll() is None, f"exited before step {step}: {proc.communicate()}"
        time.sleep(0.005)


def stop_at(proc: subprocess.Popen, metrics: str, step: int, *signums: int) -> tuple[int, str]:
    """Send `signums` once the run has logged `step`, the later ones 0 to 50 ms after the first (during the step,
    the checkpoint or the exit); the exit status and stderr."""
    wait_for(proc, metrics, step)
    for i, s in enumerate(signums):
        time.sleep(RNG.uniform(0, 0.05) if i else 0)
        if proc.poll() is None:
            proc.send_signal(s)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err.strip()


def stopped_step(err: str, by: str, resume_with: str) -> int:
    """The step named by the one-line message."""
    pattern = rf"iclab: interrupted by {re.escape(by)} at step (\d+); checkpoint saved, continue with: {resume_with}"
    assert "\n" not in err and re.fullmatch(pattern, err), err
    return int(re.fullmatch(pattern, err).group(1))


def losses(run_dir) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(run_dir) if "loss" in r]


def checkpoint_step(run_dir) -> int:
    return read_state(latest_checkpoint(run_dir))["step"]


def test_train_stopped_twice_resumes_bit_identically(tmp_path):
    reference = train(load_config(None, SMALL + [f"train.steps={STEPS}"]), tmp_path / "straight", progress=False)
    config = tmp_path / "c.yaml"
    config.write_text("task: {name: linear}\n")
    run = tmp_path / "run"
    metrics = str(run / "metrics.jsonl")

    proc = iclab("train", "--config", config, "--out", run, "--steps", STEPS, "--quiet", *sets(SMALL))
    code, err = stop_at(proc, metrics, RNG.randint(10, 60), signal.SIGINT)
    first = stopped_step(err, "Ctrl-C (SIGINT)", f"iclab train --resume {run}")
    assert code == 130 and checkpoint_step(run) == first

    # SIGTERM twice (a scheduler, then its user): one stop, one checkpoint, the status of the first
    proc = iclab("train", "--resume", run, "--quiet")
    code, err = stop_at(proc, metrics, RNG.randint(first + 10, first + 60), signal.SIGTERM, signal.SIGTERM)
    second = stopped_step(err, "SIGTERM", f"iclab train --resume {run}")
    assert code == 143 and checkpoint_step(run) == second > first

    assert resume(run, progress=False).step == STEPS
    assert losses(run) == losses(tmp_path / "straight") and len(losses(run)) == STEPS
    assert reference.loss == losses(run)[-1][1]


def test_text_train_stopped_by_sigterm_resumes_bit_identically(tmp_path):
    from iclab.text import load_text_config, prepare_data, resume_text, train_text

    tiny = ["corpus.source=tempest", "corpus.vocab=300", "context=16", "eval.lengths=[4,16]", "eval.windows=10"]
    tiny += ["model.layers=1", "model.width=16", "model.heads=2", "train.batch_size=8", "threads=1"]
    tiny += ["train.eval_every=0", "train.warmup=2", "train.log_every=1", "train.checkpoint_every=20"]
    tiny += ["train.steps=120"]
    config = load_text_config(None, tiny)
    data = prepare_data(config.corpus)
    train_text(config, tmp_path / "straight", data, progress=False)
    run = tmp_path / "run"
    proc = iclab("text", "train", "--out", run, "--quiet", *sets(tiny))
    code, err = stop_at(proc, str(run / "metrics.jsonl"), RNG.randint(5, 60), signal.SIGTERM)
    step = stopped_step(err, "SIGTERM", f"iclab text train --resume {run}")
    assert code == 143 and checkpoint_step(run) == step
    resume_text(run, progress=False)
    assert losses(run) == losses(tmp_path / "straight") and len(losses(run)) == 120


def test_grid_stopped_by_sigint_resumes_its_runs_bit_identically(tmp_path):
    """SIGINT to the grid's process alone (as `kill -INT`; a terminal's Ctrl-C reaches the workers too): it passes
    the signal on to its worker, whose run stops after a step with a checkpoint; the same command resumes it."""
    (tmp_path / "base.yaml").write_text("task: {name: linear}\n")
    # 300 steps, the signal before step 80: the first run is still training when the signal lands, even on a busy
    # machine where the test polls the log late
    fixed = ", ".join(f"{k}: {v}" for k, v in (item.split("=", 1) for item in SMALL + ["train.steps=300"]))
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"base: base.yaml\nset: {{{fixed}}}\ngrid:\n  seed: [0, 1]\n")
    out = tmp_path / "out"
    proc = iclab("grid", grid, "--out", out, "--quiet")
    code, err = stop_at(proc, str(out / "*" / "metrics.jsonl"), RNG.randint(10, 80), signal.SIGINT)
    assert code == 130, err
    assert re.fullmatch(
        r"iclab: interrupted by Ctrl-C \(SIGINT\); finished runs are kept and the others stopped at a checkpoint: "
        rf"rerun the same command to resume them \({re.escape(str(out))}\)",
        err,
    )
    started = [p.parent for p in out.glob("*/metrics.jsonl")]
    assert len(started) == 1  # one job at a time: the second run was never started
    assert checkpoint_step(started[0]) == losses(started[0])[-1][0] < 300

    result = run_grid(grid, out, progress=False)
    assert [o["status"] for o in result["outcomes"].values()] == ["done", "done"]
    for run in result["runs"]:
        train(read_config(run.run_dir), tmp_path / f"straight-{run.name}", progress=False)
        assert losses(run.run_dir) == losses(tmp_path / f"straight-{run.name}")
        assert len(losses(run.run_dir)) == 300


def test_a_recipe_model_stopped_by_sigint_continues_exactly(tmp_path):
    """`iclab reproduce`'s first model (frequency, quick scale): stopped while it trains, the exit status and the
    message of `reproduce`, a checkpoint at the step the log reached, and the steps after it, trained from that
    checkpoint, equal to those of a run never stopped (the first 5 steps after it: the model trains 1,000)."""
    from iclab.recipes.models import model_config

    out = tmp_path / "out"
    proc = iclab("reproduce", "frequency", "--scale", "quick", "--out", out, "--quiet", "--threads", "1")
    code, err = stop_at(proc, str(out / "models/quick/*/metrics.jsonl"), RNG.randint(10, 20), signal.SIGINT)
    assert code == 130, err
    assert err == (
        "iclab: interrupted by Ctrl-C (SIGINT); models and checkpoints are kept: rerun the same command to continue"
    )
    [run] = [p.parent for p in out.glob("models/quick/*/metrics.jsonl")]
    config = model_config(run.name, "quick")
    step = checkpoint_step(run)
    assert losses(run)[-1][0] <= step < losses(run)[-1][0] + config.train.log_every

    straight = Trainer(config, tmp_path / "straight")
    expected = [straight.train_step() for _ in range(step + 5)]
    resumed = Trainer(config, run)
    resumed.restore()
    assert [resumed.train_step() for _ in range(5)] == expected[step:]
    assert [loss for _, loss in losses(run)] == [expected[s - 1] for s, _ in losses(run)]


@pytest.mark.slow
def test_torchrun_ranks_stop_after_the_same_step(tmp_path):
    """Two CPU ranks under torchrun: Ctrl-C to the whole process group (a terminal), then SIGTERM to torchrun
    alone (which passes it on): every rank stops after the same step, rank 0's checkpoint is that step, and the
    run resumed to the end in one process follows the one-process run (within test_distributed's 1e-5: only the
    order of the floating-point sums differs)."""
    overrides = SMALL + ["train.steps=150"]
    train(load_config(None, overrides), tmp_path / "one", progress=False)
    config = tmp_path / "c.yaml"
    config.write_text("task: {name: linear}\n")
    run = tmp_path / "two"
    metrics = str(run / "metrics.jsonl")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "iclab.cli"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")

    def launch(*args) -> subprocess.Popen:
        cmd = [*torchrun, "train", "--quiet", *map(str, args)]
        return subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)

    proc = launch("--config", config, "--out", run, *sets(overrides))
    wait_for(proc, metrics, RNG.randint(10, 60))
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    [line] = [x for x in err.splitlines() if x.startswith("iclab: interrupted")]  # rank 0's message, once
    first = stopped_step(line, "Ctrl-C (SIGINT)", f"iclab train --resume {run}")
    assert checkpoint_step(run) == first == losses(run)[-1][0]

    proc = launch("--resume", run)
    wait_for(proc, metrics, RNG.randint(first + 10, 130))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    [line] = [x for x in err.splitlines() if x.startswith("iclab: interrupted")]
    second = stopped_step(line, "SIGTERM", f"iclab train --resume {run}")
    assert checkpoint_step(run) == second == losses(run)[-1][0] > first

    resume(run, progress=False)
    one, two = dict(losses(tmp_path / "one")), dict(losses(run))
    assert list(two) == list(one) == list(range(1, 151))
    assert max(abs(one[s] - two[s]) / abs(one[s]) for s in one) < 1e-5
