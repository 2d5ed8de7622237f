"""RunDir: the one answer to "new, resume, reuse or refuse?", its lock (two processes never train or delete the
same run), and reading a training log past a corrupt line."""

import fcntl
import json
import multiprocessing
import re
import shutil

import pytest
import torch
from conftest import TINY

from iclab.config import load_config
from iclab.errors import UserError
from iclab.experiments.engines import make_job, run_job
from iclab.training.checkpoint import checkpoint_dirs
from iclab.training.runs import RunBusy, RunDir, Status, read_metrics
from iclab.training.trainer import Trainer, resume, train

SIX = TINY + ["train.steps=6"]  # checkpoints at steps 5 and 6


def fail(*_):
    pytest.fail("must not be called")


def test_status_follows_a_run_from_nothing_to_complete(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.status() == Status("none")
    config = load_config(None, SIX)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(config.to_dict()))
    assert run.status() == Status("started", 0, 6)
    shutil.rmtree(tmp_path / "run")
    train(config, tmp_path / "run", progress=False)
    assert run.status() == Status("complete", 6, 6)
    shutil.rmtree(checkpoint_dirs(tmp_path / "run")[-1])
    assert run.status() == Status("partial", 5, 6)


def test_decisions_and_refusals(tmp_path):
    path = tmp_path / "run"
    config = load_config(None, SIX)
    run = RunDir(path)
    assert run.decide(config) == "new"
    assert run.ensure(config, lambda: train(config, path, progress=False), fail) == "new"
    # execution-only keys may differ: the same run is reused, as a dict or as a config
    faster = load_config(None, SIX + ["threads=2"])
    assert run.differences(faster) == [] and run.decide(faster.to_dict()) == "reuse"
    assert run.ensure(faster, fail, fail) == "reuse"
    longer = load_config(None, SIX + ["train.steps=8", "train.lr=0.5"])
    assert run.differences(longer) == [("train.steps", 6, 8), ("train.lr", config.train.lr, 0.5)]
    with pytest.raises(UserError) as info:
        run.ensure(longer, fail, fail)
    assert str(info.value) == (
        f"{path} was trained with other settings (train.steps: 6 there, 8 here, train.lr: {config.train.lr!r} "
        "there, 0.5 here); remove it or choose another --out"
    )
    shutil.rmtree(checkpoint_dirs(path)[-1])
    resumed = []
    assert run.ensure(config, fail, lambda: resumed.append(resume(path, progress=False))) == "resume"
    assert resumed[0].step == 6 and [m["step"] for m in read_metrics(path) if "loss" in m] == list(range(1, 7))
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("keep me")
    for attempt in (lambda: RunDir(foreign).ensure(config, fail, fail), lambda: train(config, foreign, True, False)):
        with pytest.raises(UserError, match="is not empty and holds no run; move it away or choose another --out"):
            attempt()
    assert (foreign / "todo.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "run"]  # no lock file left behind


def test_an_attempt_that_died_before_its_first_checkpoint_is_replaced(tmp_path):
    path = tmp_path / "run"
    config = load_config(None, SIX)
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config.to_dict()))
    (path / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n')
    assert RunDir(path).ensure(config, lambda: train(config, path, progress=False), fail) == "new"
    assert RunDir(path).status() == Status("complete", 6, 6)
    assert read_metrics(path)[0]["loss"] != 9.0


def hold(lock_path):
    """The run's lock as another process would hold it (a separate open file: flock does not nest)."""
    f = open(lock_path, "a")
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def test_a_locked_run_is_busy_for_every_entry_point_and_nothing_is_touched(tmp_path):
    path = tmp_path / "out" / "run"
    config = load_config(None, SIX)
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config.to_dict()))  # another process has just started it
    job = make_job("run", path, config.to_dict(), tmp_path / "out" / "logs" / "run.log")
    with hold(RunDir(path).lock_path):
        assert run_job(job)["status"] == "busy"  # the engines used to replace it here
        for attempt in (
            lambda: RunDir(path).ensure(config, fail, fail),
            lambda: train(config, path, overwrite=True, progress=False),
            lambda: resume(path, progress=False),
        ):
            with pytest.raises(RunBusy, match=f"{path} is busy: another process is training it"):
                attempt()
        assert sorted(p.name for p in path.iterdir()) == ["config.json"]
    assert run_job(job)["status"] == "done"  # once the lock is free, the dead attempt is replaced
    assert RunDir(path).status() == Status("complete", 6, 6)
    assert "busy" in (tmp_path / "out" / "logs" / "run.log").read_text()


def contend(path, barrier, in_window, tried, results):
    """One of two processes that ensure the same run at once. The one that wins the lock pauses before its first
    step (config.json written, no checkpoint: where a second process used to delete the run) until the other has
    tried; the loser tries again inside that window."""
    torch.set_num_threads(1)
    config = load_config(None, SIX)
    step = Trainer.train_step

    def pausing(self):
        if self.step == 0:
            in_window.set()
            tried.wait(30)
        return step(self)

    Trainer.train_step = pausing
    run = RunDir(path)

    def attempt():
        try:
            return run.ensure(config, lambda: train(config, path, progress=False), lambda: resume(path, progress=False))
        except RunBusy:
            return "busy"

    barrier.wait(60)
    first = attempt()
    if first != "busy":
        results.put((first, "", ""))
        return
    in_window.wait(30)
    seen = run.status().state
    second = attempt()
    tried.set()
    results.put((first, seen, second))


def test_two_processes_ensuring_one_run_at_once_train_it_once(tmp_path):
    """Exactly one process trains; the other is told the run is busy (it does not wait) and deletes nothing."""
    path = tmp_path / "run"
    mp = multiprocessing.get_context("fork")  # CPU torch forks safely (as DataLoader workers do), in 0.1 s not 10
    barrier, in_window, tried, results = mp.Barrier(2), mp.Event(), mp.Event(), mp.Queue()
    procs = [mp.Process(target=contend, args=(path, barrier, in_window, tried, results)) for _ in range(2)]
    for p in procs:
        p.start()
    outcomes = sorted(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(60)
    assert outcomes == [("busy", "started", "busy"), ("new", "", "")]
    assert RunDir(path).status() == Status("complete", 6, 6)
    assert [m["step"] for m in read_metrics(path) if "loss" in m] == list(range(1, 7))  # trained once, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no lock or staging folder left


def test_a_corrupt_metrics_line_is_skipped_with_a_warning_and_later_lines_kept(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "loss": 1.0 / s} for s in range(1, 5)]
    lines = [json.dumps(r) for r in rows]
    path.write_text("\n".join(lines[:2] + ['{"step": 3, "lo', ""] + lines[2:]) + "\n")
    with pytest.warns(UserWarning, match=re.escape(f"{path}, line 3: not valid JSON; skipped")) as caught:
        assert read_metrics(tmp_path) == rows
    assert len(caught) == 1  # the blank line is no row, and no warning
