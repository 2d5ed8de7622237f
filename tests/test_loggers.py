"""train.loggers: TensorBoard and W&B views of metrics.jsonl, read back from the files they write. Without the
packages (neither is an iclab requirement) the real-package tests skip; fakes check what iclab sends them."""

import sys
import types

import pytest
from conftest import TINY

from iclab.config import load_config
from iclab.errors import UserError
from iclab.training import loggers
from iclab.training.runs import read_metrics
from iclab.training.trainer import resume, train


def expected(run_dir) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl as (step, value) series per scalar name, as a logger should have received them."""
    series: dict[str, list[tuple[int, float]]] = {}
    for row in read_metrics(run_dir):
        for name, value in loggers.scalars(row).items():
            series.setdefault(name, []).append((row["step"], value))
    return series


def test_a_row_becomes_named_scalars():
    row = {"step": 5, "loss": 0.5, "lr": 1e-3, "seconds": 1.2, "flops": 100, "val_error": [1.0, 0.25]}
    assert loggers.scalars(row) == {
        "loss": 0.5,
        "lr": 1e-3,
        "seconds": 1.2,
        "flops": 100,
        "val_error/k=00": 1.0,
        "val_error/k=01": 0.25,
    }


def test_a_missing_package_is_a_one_line_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setattr(loggers, "installed", lambda package: False)
    with pytest.raises(UserError, match="tensorboard needs the tensorboard package; pip install tensorboard") as e:
        train(load_config(None, TINY + ["train.steps=2", "train.loggers=[tensorboard]"]), tmp_path / "run")
    assert "\n" not in str(e.value) and not (tmp_path / "run" / "metrics.jsonl").exists()


def test_an_unknown_logger_is_a_one_line_error():
    with pytest.raises(UserError, match=r"train.loggers\[1\]': unknown logger 'mlflow'; choose from tensorboard"):
        load_config(None, ["train.loggers=[wandb, mlflow]"])


class FakeWandbRun:
    runs: list = []

    def __init__(self, **init):
        self.init, self.logged, self.finished = init, [], False
        FakeWandbRun.runs.append(self)

    def log(self, data, step):
        self.logged.append((step, data))

    def finish(self):
        self.finished = True


def test_every_row_goes_to_the_logger_and_a_resume_continues_after_the_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=FakeWandbRun))
    monkeypatch.setattr(loggers, "installed", lambda package: True)
    FakeWandbRun.runs = []
    run = tmp_path / "run"
    train(load_config(None, TINY + ["train.steps=6", "train.loggers=[wandb]"]), run, progress=False)
    resume(run, progress=False, steps=8)  # continues from the checkpoint at step 6
    first, second = FakeWandbRun.runs
    assert first.init["mode"] == "offline" and first.init["config"]["train"]["loggers"] == ["wandb"]
    assert first.finished and second.finished
    assert first.init["id"] == second.init["id"] and second.init["resume"] == "allow"  # one W&B run, continued
    sent = {}
    for step, data in first.logged + second.logged:
        for name, value in data.items():
            sent.setdefault(name, []).append((step, value))
    assert sent == expected(run)


def test_tensorboard_event_files_hold_every_scalar_of_metrics_jsonl(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    train(load_config(None, TINY + ["train.steps=10", "train.loggers=[tensorboard]"]), run, progress=False)
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    for name, series in expected(run).items():
        logged = [(e.step, e.value) for e in events.Scalars(name)]
        assert [s for s, _ in logged] == [s for s, _ in series]
        assert [v for _, v in logged] == pytest.approx([v for _, v in series], rel=1e-6)  # stored as float32


def test_wandb_writes_an_offline_run_without_network(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    train(load_config(None, TINY + ["train.steps=4", "train.loggers=[wandb]"]), run, progress=False)
    (folder,) = (run / "wandb").glob("offline-run-*")
    assert list(folder.glob("*.wandb"))  # the run's record, for `wandb sync`
