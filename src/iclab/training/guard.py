"""A switch that forbids training. `iclab reproduce --pretrained` promises to train nothing, so it runs each recipe
inside `no_training(reason)`, and every training loop calls `refuse_training(what)` before it builds anything (the
Trainer does, for every iclab run; so does recipes.common.ensure_run). A recipe that would train there raises
TrainingRefused, a one-line UserError, instead of quietly training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from ..errors import UserError

_REASON: ContextVar[str | None] = ContextVar("no_training", default=None)


class TrainingRefused(UserError):
    """Something tried to train inside `no_training`."""


@contextlib.contextmanager
def no_training(reason: str) -> Iterator[None]:
    """Inside this block every `refuse_training` raises, giving `reason` (why nothing may train, and what to do)."""
    token = _REASON.set(reason)
    try:
        yield
    finally:
        _REASON.reset(token)


def refuse_training(what: str) -> None:
    """Raise TrainingRefused if training is forbidden here (inside `no_training`); `what` names what would train."""
    reason = _REASON.get()
    if reason is not None:
        raise TrainingRefused(f"refusing to train {what}: {reason}")
