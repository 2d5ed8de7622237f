"""Ctrl-C (SIGINT) and SIGTERM, what schedulers such as SLURM send before they pre-empt a job.

Training must stop between two steps: a signal that lands mid-step (the data generator advanced, the optimizer
half-way) would otherwise leave a state that no step boundary had, and a resume from it would differ from a run
never interrupted. So inside `deferred()` a signal only records itself; the training loop asks `received()` after
every step, saves a checkpoint of that step through its ordinary path and raises `Interrupted`. Outside it, a
command-line process (`raising`) turns SIGTERM, like Ctrl-C, into `Interrupted`, so that locks and staging
folders are cleaned up on the way out; `iclab` prints its one-line message and exits with the conventional status
128 + the signal's number: 130 for SIGINT, 143 for SIGTERM.

`Interrupted` is a KeyboardInterrupt, so that no `except Exception` on its way (a grid job's "report the failure
and go on") swallows it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_received: int | None = None  # the first SIGINT or SIGTERM this process received (and has not forgotten)


class Interrupted(KeyboardInterrupt):
    """The work stopped on SIGINT or SIGTERM; the message says what was kept and how to continue."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message or f"interrupted by {signal_name(signum)}")
        self.signum = signum

    def __reduce__(self):  # crosses process boundaries (a grid's worker processes) intact
        return type(self), (self.signum, str(self))

    @property
    def exit_status(self) -> int:
        """What a shell reports for a process the signal ended: 128 + its number (130 SIGINT, 143 SIGTERM)."""
        return 128 + self.signum


def signal_name(signum: int) -> str:
    return "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal.Signals(signum).name


def exit_status(error: KeyboardInterrupt) -> int:
    """128 + the signal's number; a plain KeyboardInterrupt is Ctrl-C, 130."""
    return error.exit_status if isinstance(error, Interrupted) else 128 + signal.SIGINT


def received() -> int | None:
    """The number of the first SIGINT or SIGTERM received in a deferred block (or since `record_signals`)."""
    return _received


def _record(signum: int, frame: object) -> None:
    global _received
    if _received is None:
        _received = signum


def _raise(signum: int, frame: object) -> None:
    global _received
    if _received is None:  # a second signal while the first one unwinds the program is ignored
        _received = signum
        raise Interrupted(signum)


def _install(handler) -> dict:
    """Set `handler` for SIGINT and SIGTERM, except a signal the process was told to ignore (SIGINT of a job
    started with `&` by a script); returns the handlers it replaced."""
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s, old in previous.items():
        if old is not signal.SIG_IGN:
            signal.signal(s, handler)
    return previous


@contextlib.contextmanager
def raising() -> Iterator[None]:
    """For a command-line process: inside, SIGINT and SIGTERM raise Interrupted where the program is (as Python's
    own handler raises KeyboardInterrupt for SIGINT), except inside deferred blocks."""
    global _received
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received = None
    previous = _install(_raise)
    try:
        yield
    finally:
        if _received is None:
            for s, handler in previous.items():
                signal.signal(s, handler)
        else:  # the process is ending: one more signal, even during interpreter shutdown (which puts back the
            # default handler of a signal with a Python handler, but keeps SIG_IGN), must not kill it
            for s in SIGNALS:
                signal.signal(s, signal.SIG_IGN)


def record_signals() -> None:
    """For a worker process whose parent stops it (a grid's local engine): SIGINT and SIGTERM are only recorded,
    for the rest of the process; each job asks `received()` before it starts, and training stops at its next step."""
    if threading.current_thread() is threading.main_thread():
        _install(_record)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Inside this block SIGINT and SIGTERM are only recorded (see `received`); the code inside asks at its safe
    points and stops there. Nested blocks share the outermost one's handlers. Signals reach the main thread only,
    so elsewhere (a Dask worker's thread) this does nothing."""
    global _received
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers = {signal.getsignal(s) for s in SIGNALS}
    if _record in handlers:  # inside another deferred block, or a worker's record_signals
        yield
        return
    if _raise not in handlers:
        _received = None  # in a Python session, an earlier Ctrl-C does not stop this block
    previous = _install(_record)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
