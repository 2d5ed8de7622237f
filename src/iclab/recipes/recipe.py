"""What a paper recipe is: one frozen Recipe that each recipe module declares once, as `RECIPE = Recipe(...)`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Recipe:
    """A paper figure as a recipe: its claim and how our setting differs, and the functions that make it.

    `run(out, mode, pretrained, progress)` trains or loads what it needs, writes DIR/NAME/ and returns the summary
    that `iclab reproduce` stores as checks.json ({"checks": [...], "seconds": ..., ...}); `section(folder,
    stored)` renders the report section from those stored files alone. `check` (results -> PASS/FAIL checks) and
    `draw` (results, folder -> PNGs) are the two halves they share; their results are the recipe's own (sweep rows
    and the setting, or a results dict)."""

    name: str  # `iclab reproduce NAME`, and the folder DIR/NAME/
    title: str
    claim: str  # the paper's claim, in its words and numbers
    differences: str  # how our setting differs from the paper's
    modes: tuple[str, ...]  # the scales it has a settings file for (sizes.SCALES: quick, full, paper)
    run: Callable[[Path, str, bool, bool], dict]
    check: Callable[..., list[dict]]
    draw: Callable[..., list[Path]]
    section: Callable[[Path, dict], list[str]]
    # the shared models it needs (recipes.models), trained first with --jobs N; a function of the scale for a
    # recipe whose classes are scale data (model-selection-3)
    models: tuple[str, ...] | Callable[[str], tuple[str, ...]] = ()
    # its trained full-size models ship with iclab, so --pretrained renders it training nothing (a recipe that
    # trains anything, however briefly, is not shipped; under --pretrained a training attempt raises: guard.py)
    shipped: bool = False
    # plan(mode) -> the runs it trains at that scale (dryrun.Planned), for `iclab reproduce --dry-run`
    plan: Callable[[str], list] | None = None

    def models_at(self, mode: str) -> tuple[str, ...]:
        """The shared models it needs at scale `mode`."""
        return self.models(mode) if callable(self.models) else self.models
