"""Data-parallel training: 2 CPU processes under torchrun against the same run in one process.

Why the tolerance is 1e-5 (relative, on every logged loss): both runs see the same global batches and average the
same per-row losses and gradients; only the order of the floating-point sums differs (two halves of B/2 rows
reduced across processes instead of one sum of B rows). In float32 that is a relative error of a few eps = 1.2e-7
per step, which 20 steps of Adam carry forward without much growth (measured here: < 3e-7). 1e-5 leaves a wide
margin and is still 10,000x below what any real difference in data makes (a different batch changes the loss by
tens of percent, checked below).
"""

import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import TINY

from iclab.config import load_config
from iclab.errors import UserError
from iclab.training import distributed
from iclab.training.checkpoint import checkpoint_dirs, read_state
from iclab.training.runs import load_model, read_metrics
from iclab.training.trainer import resume, train

RTOL = 1e-5
STEPS = 20
# a curriculum makes the batch shapes change mid-run; keep every checkpoint to resume from the middle
OVERRIDES = TINY + [
    f"train.steps={STEPS}",
    "train.keep_checkpoints=10",
    "curriculum.dims={start: 2, end: 3, inc: 1, every: 8}",
]


def torchrun(*args, processes=2):
    # PYTHONFAULTHANDLER: should a rank die of a signal, its Python stack is in the failure message
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    cmd += ["-m", "iclab.cli", "train", "--quiet", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def sets(overrides):
    return [a for item in overrides for a in ("--set", item)]


def losses(run_dir):
    return {m["step"]: m["loss"] for m in read_metrics(run_dir) if "loss" in m}


def assert_close(a: dict, b: dict):
    assert list(a) == list(b)
    worst = max(abs(a[s] - b[s]) / abs(b[s]) for s in a)
    assert worst < RTOL, f"largest relative difference {worst:.2e}"


def cut_back_to(run_dir, step):
    """As if the run had died right after the checkpoint at `step`."""
    for ckpt in checkpoint_dirs(run_dir):
        if read_state(ckpt)["step"] > step:
            shutil.rmtree(ckpt)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    train(load_config(None, OVERRIDES), root / "one", progress=False)
    config = root / "c.yaml"
    config.write_text("task: {name: linear}\n")
    result = torchrun("--config", config, "--out", root / "two", *sets(OVERRIDES))
    assert result.returncode == 0, result.stderr
    return root


def test_two_processes_follow_the_one_process_loss_curve(runs):
    one, two = losses(runs / "one"), losses(runs / "two")
    assert list(one) == list(range(1, STEPS + 1))
    assert_close(two, one)
    # the comparison has teeth: another data seed moves the losses far outside the tolerance
    other = load_config(None, OVERRIDES + ["seed=1"])
    train(other, runs / "other", progress=False)
    assert min(abs(a - b) / b for a, b in zip(losses(runs / "other").values(), one.values(), strict=True)) > 1e3 * RTOL
    # the trained models predict alike (their weights need not: Adam turns the rounding noise of gradients that
    # are exactly zero, such as the key biases', into full-size steps in directions the outputs ignore)
    gen = torch.Generator().manual_seed(0)
    xs, ys = torch.randn(64, 7, 3, generator=gen), torch.randn(64, 7, generator=gen)
    a, _ = load_model(runs / "one")
    b, _ = load_model(runs / "two")
    torch.testing.assert_close(b(xs, ys), a(xs, ys), rtol=1e-4, atol=1e-5)


def test_rank_zero_alone_writes_one_log_and_complete_checkpoints(runs):
    steps = [m["step"] for m in read_metrics(runs / "two") if "loss" in m]
    assert steps == list(range(1, STEPS + 1))  # one line per step: the other rank wrote nothing
    ckpts = checkpoint_dirs(runs / "two")
    assert [read_state(c)["step"] for c in ckpts] == [5, 10, 15, 20]
    assert {read_state(c)["processes"] for c in ckpts} == {2}
    assert not [p.name for p in (runs / "two").parent.iterdir() if p.name.startswith(".")]  # no staging leftovers


def test_resume_with_another_number_of_processes(runs):
    # two processes -> one: continue the 2-process run from step 10 in this process
    shutil.copytree(runs / "two", runs / "two_then_one")
    cut_back_to(runs / "two_then_one", 10)
    resume(runs / "two_then_one", progress=False)
    assert_close(losses(runs / "two_then_one"), losses(runs / "one"))
    # one process -> two: continue the 1-process run from step 10 under torchrun
    shutil.copytree(runs / "one", runs / "one_then_two")
    cut_back_to(runs / "one_then_two", 10)
    result = torchrun("--resume", runs / "one_then_two")
    assert result.returncode == 0, result.stderr
    resumed = losses(runs / "one_then_two")
    assert [s for s in resumed if s <= 10] == list(range(1, 11))  # log lines after the checkpoint were dropped
    assert_close(resumed, losses(runs / "one"))


def test_batch_that_does_not_divide_is_one_line_error_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(UserError) as info:
        train(load_config(None, TINY), tmp_path / "run", progress=False)
    message = str(info.value)
    assert message.startswith("train.batch_size 8 does not divide among 3 processes; use a multiple of 3")
    assert "\n" not in message
    assert not (tmp_path / "run").exists()


def test_each_rank_trains_on_its_own_slice_of_the_global_batch():
    shares = [distributed.batch_rows(12, distributed.Context(rank, 3)) for rank in range(3)]
    rows = torch.arange(12)
    assert torch.cat([rows[s] for s in shares]).tolist() == list(range(12))  # disjoint and complete
    assert distributed.local_device(torch.device("cuda"), distributed.Context(1, 2, 1)) == torch.device("cuda", 1)
    assert distributed.local_device(torch.device("cpu"), distributed.Context(1, 2, 1)) == torch.device("cpu")


@pytest.mark.parametrize("env, expected", [({"RANK": "x"}, "RANK='x'"), ({"RANK": "2", "WORLD_SIZE": "2"}, "below")])
def test_bad_launcher_environment(monkeypatch, env, expected):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(UserError, match=expected):
        distributed.context()
