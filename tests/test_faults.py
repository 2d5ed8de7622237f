"""Faults a user meets: a full disk while a checkpoint is written."""

import errno

import pytest
from conftest import TINY

from iclab.config import load_config
from iclab.errors import UserError
from iclab.files import atomic_write_text
from iclab.training import checkpoint
from iclab.training.checkpoint import checkpoint_dirs
from iclab.training.trainer import resume, train


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def safetensors_full_disk(*args, **kwargs):  # how safetensors reports it: its own error, quoting the OS error
    raise checkpoint.SafetensorError(
        'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
    )


@pytest.mark.parametrize("fault", [full_disk, safetensors_full_disk])
def test_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, fault):
    run = tmp_path / "run"
    train(load_config(None, TINY + ["train.steps=10"]), run, progress=False)
    before = {p.name: {f.name: f.read_bytes() for f in p.iterdir()} for p in checkpoint_dirs(run)}
    monkeypatch.setattr(checkpoint, "save_file", fault)
    with pytest.raises(UserError) as info:
        resume(run, progress=False, steps=15)
    message = str(info.value)
    assert "\n" not in message and "no space left" in message and str(run / "checkpoints") in message
    assert "free" in message and "needs about" in message
    after = {p.name: {f.name: f.read_bytes() for f in p.iterdir()} for p in checkpoint_dirs(run)}
    assert after == before  # nothing finished was lost or changed
    assert not list((run / "checkpoints").glob(".tmp*"))  # nothing half-written left behind
    monkeypatch.undo()
    resume(run, progress=False, steps=15)  # once there is space, the run goes on from its last checkpoint
    assert checkpoint_dirs(run)[-1].name == "step-0000015"


def test_full_disk_during_an_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    atomic_write_text(path, "old")
    monkeypatch.setattr("os.replace", full_disk)
    with pytest.raises(UserError, match="no space left to write in"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["results.json"]
