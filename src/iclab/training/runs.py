"""Run directories: where a run keeps its config, metrics, checkpoints, evaluations and report.

RUN_DIR/config.json        the resolved config (rebuilds model and data)
RUN_DIR/metrics.jsonl      training log, one JSON object per line
RUN_DIR/checkpoints/       step-NNNNNNN/ folders (see checkpoint.py)
RUN_DIR/eval/curves.csv    error curves: task,estimator,k,mean,lo,hi,icl_score
RUN_DIR/report.md          the readable summary

`RunDir` is the one place that decides what a folder needs: a new run, a resume, reuse of a finished run, or a
refusal (a folder holding something else). Every entry point (iclab train, the recipes, grids and their engines)
asks it, under one lock per run, so that two processes never train, or delete, the same run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import Config, config_from_json
from ..errors import UserError
from ..models import ICLModel
from ..tasks import make_task
from .checkpoint import checkpoint_dirs, latest_checkpoint, load_model_weights, read_state

# How a run executes, not what it trains: a run may resume, or be reused, with other values of these.
EXECUTION_KEYS = frozenset({"threads", "device"})


def build_model(config: Config) -> ICLModel:
    """The run's model, of the architecture `model.name`, with freshly initialised weights (the torch RNG's), and
    as many outputs per position as the task's outputs have (vector_mqar: d; every other task: 1)."""
    model = config.model.build(config.dims, config.points)
    model.set_outputs(make_task(config.task, config.dims).outputs)
    return model


def set_threads(config: Config) -> None:
    """Small models run fastest with few threads; a busy 2-core machine punishes oversubscription."""
    if config.threads > 0:
        torch.set_num_threads(config.threads)


def torch_dtype(config: Config) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[config.dtype]


def device_of(config: Config) -> torch.device:
    try:
        device = torch.device(config.device)
    except RuntimeError:
        raise UserError(
            f"config key 'device': {config.device!r} is not a torch device (cpu, cuda, cuda:1, mps)"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("config key 'device': cuda requested but no CUDA device is available; use --set device=cpu")
    return device


def read_config(run_dir: Path) -> Config:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.json); create one with iclab train")
    return config_from_json(path)


def load_model(run_dir: Path, config: Config | None = None) -> tuple[ICLModel, dict]:
    """The run's latest checkpointed model (eval mode, on the config's device) and that checkpoint's state."""
    config = config or read_config(run_dir)
    set_threads(config)
    ckpt = latest_checkpoint(run_dir)
    state = read_state(ckpt)
    model = build_model(config)
    load_model_weights(model, ckpt)
    return model.to(device_of(config), torch_dtype(config)).eval(), state


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # e.g. a line cut short by a crash: the lines around it are still good
            warnings.warn(f"{path}, line {number}: not valid JSON; skipped", stacklevel=2)
    return rows


def run_status(run_dir: Path, read=read_config) -> tuple[int, int] | None:
    """(step reached, steps planned) of the run in `run_dir` (its config read by `read`), or None when it holds
    no run."""
    status = RunDir(run_dir, read).status()
    return None if status.state == "none" else (status.step, status.steps)


@dataclass(frozen=True)
class Status:
    state: str  # none | started (a config, no checkpoint yet) | partial | complete
    step: int = 0
    steps: int = 0


class RunBusy(UserError):
    """Another process holds the run's lock: it is training (or deciding about) this run right now."""


_HELD: set[str] = set()  # the run locks this process holds (a lock is re-entrant within its process)


class RunDir:
    """One run folder, and the answer to "new, resume, reuse or refuse?" for every entry point.

    `read` reads the kind of config the folder holds (iclab's, or a text run's); `resume_command` is what the
    messages tell a user to type. The lock is a file beside the folder (`.NAME.lock`), not inside it, because a
    new run may replace the whole folder; it is removed when released, and the OS releases it if a process dies.
    """

    def __init__(self, path: str | Path, read: Callable[[Path], Any] = read_config, resume_command: str = ""):
        self.path = Path(path)
        self.read = read
        self.resume_command = resume_command or "iclab train --resume"
        self.lock_path = self.path.with_name(f".{self.path.name}.lock")

    def status(self) -> Status:
        """Where the folder's run stands: none, started (a config, no checkpoint yet), partial or complete."""
        if not (self.path / "config.json").is_file():
            return Status("none")
        steps = self.read(self.path).train.steps
        checkpoints = checkpoint_dirs(self.path)
        if not checkpoints:
            return Status("started", 0, steps)
        try:
            step = read_state(checkpoints[-1])["step"]
        except UserError:  # a corrupt latest checkpoint: not complete; resuming names it and says what to do
            step = 0
        return Status("complete" if step >= steps else "partial", step, steps)

    def differences(self, config: Any) -> list[tuple[str, Any, Any]]:
        """(key, value stored in the folder, value in `config`) for every key that differs, execution-only keys
        (EXECUTION_KEYS) left out; `config` is a config object or its dict."""
        return _differences(_plain(self.read(self.path)), _plain(config))

    def occupied(self) -> bool:
        return self.path.exists() and any(self.path.iterdir())

    def _refuse_foreign(self) -> None:
        """For a folder without a run: refuse it if it holds anything else."""
        if self.occupied():
            raise UserError(f"{self.path} is not empty and holds no run; move it away or choose another --out")

    def decide(self, config: Any) -> str:
        """What bringing this folder to a finished run of `config` takes: "new", "resume" or "reuse". Refuses
        (UserError) a folder that holds something else. Without the lock this is a plan; `ensure` decides again
        under it."""
        status = self.status()
        if status.state == "none":
            self._refuse_foreign()
            return "new"
        found = self.differences(config)
        if found:
            diff = ", ".join(f"{key}: {a!r} there, {b!r} here" for key, a, b in found[:3])
            raise UserError(f"{self.path} was trained with other settings ({diff}); remove it or choose another --out")
        return {"started": "new", "partial": "resume", "complete": "reuse"}[status.state]

    def ensure(self, config: Any, start: Callable[[], object], cont: Callable[[], object]) -> str:
        """Bring the folder to a finished run of `config` and return what that took (see `decide`): `start()`
        trains it from scratch, `cont()` resumes it. The lock is held while deciding and training, so a second
        process is told the run is busy (RunBusy) instead of deciding on a run that is being written."""
        with self.lock():
            decision = self.decide(config)
            if decision == "new":
                shutil.rmtree(self.path, ignore_errors=True)  # empty, or an attempt that died before a checkpoint
                start()
            elif decision == "resume":
                cont()
            return decision

    @contextlib.contextmanager
    def fresh(self, overwrite: bool = False) -> Iterator[Path]:
        """Hold the lock and yield the empty folder a new run is written to. An existing run is refused unless
        `overwrite`; even then the new run goes to a staging folder beside it, swapped in only once the body has
        succeeded, so a failed or interrupted run never costs a finished one. A non-empty folder that holds no
        run is refused either way."""
        with self.lock():
            status = self.status()
            if status.state != "none" and not overwrite:
                raise UserError(
                    f"{self.path} already holds a run (step {status.step} of {status.steps}); continue it with "
                    f"`{self.resume_command} {self.path}`, or choose another --out (or pass --overwrite)"
                )
            if status.state == "none":
                self._refuse_foreign()
            target = self.path.with_name(f".{self.path.name}.staging") if self.occupied() else self.path
            if target != self.path:
                shutil.rmtree(target, ignore_errors=True)  # left over from an earlier failed attempt
            target.mkdir(parents=True, exist_ok=True)
            yield target
            if target != self.path:
                replace_dir(target, self.path)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run's exclusive lock, or raise RunBusy at once if another process holds it. Nested use in
        the process holding it (train() called from ensure()) is a no-op."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        key = str(self.lock_path.resolve())
        if key in _HELD:
            yield
            return
        fd = _acquire(self.lock_path)
        if fd is None:
            raise RunBusy(
                f"{self.path} is busy: another process is training it (lock {self.lock_path}); "
                "wait for it to finish, or choose another --out"
            )
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)
            self.lock_path.unlink(missing_ok=True)  # while still holding it: see _acquire
            os.close(fd)


def _acquire(path: Path) -> int | None:
    """An open, flock-ed descriptor of the lock file `path`, or None if another process holds it. A holder
    deletes the file before it lets go, so a lock won on a file that is no longer at `path` guards nothing:
    try again on the new file."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released by the OS even if this process dies
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _plain(config: Any) -> dict:
    return config if isinstance(config, dict) else config.to_dict()


def _differences(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in dict.fromkeys([*a, *b]):
            name = f"{prefix}.{key}" if prefix else str(key)
            if name not in EXECUTION_KEYS:
                out += _differences(a.get(key), b.get(key), name)
        return out
    return [] if a == b else [(prefix, a, b)]


def replace_dir(new: Path, old: Path) -> None:
    """Put `new` in place of `old`: old is renamed aside first, so one of them is always whole."""
    aside = old.with_name(f".{old.name}.old")
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(old, aside)
    os.replace(new, old)
    shutil.rmtree(aside, ignore_errors=True)
