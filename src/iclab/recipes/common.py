"""Helpers the paper recipes share: training their runs once, reading values off sweep rows, phrasing checks and
their report sections."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path

from ..evaluation.report import series_name
from ..training.guard import refuse_training
from ..training.runs import RunDir, read_config
from .outcomes import label
from .recipe import Recipe

REL_TOLERANCE, ABS_TOLERANCE = 0.15, 0.02  # "within 15 % (or 0.02 absolute)"
_USED: ContextVar[dict[str, Path] | None] = ContextVar("recipe_models", default=None)


@contextlib.contextmanager
def recording_models() -> Iterator[dict[str, Path]]:
    """Collect, by name, the run folders of the models that `note_model` is told of inside this block."""
    used: dict[str, Path] = {}
    token = _USED.set(used)
    try:
        yield used
    finally:
        _USED.reset(token)


def note_model(name: str, run_dir: Path) -> None:
    """Tell `recording_models` (if recording) that a recipe used the model in `run_dir` (for the seeds in its
    results' provenance)."""
    used = _USED.get()
    if used is not None:
        used[name] = Path(run_dir)


def value(rows: list[dict], series: str, sweep: str, k: int) -> float:
    """Mean error of a series (a run's transformer or a baseline) at one sweep point and k."""
    for r in rows:
        if r["sweep"] == sweep and r["k"] == k and series_name(r) == series:
            return r["mean"]
    raise KeyError(f"no row for {series} at {sweep}, k={k}")


def ks(rows: list[dict]) -> list[int]:
    return sorted({r["k"] for r in rows})


def tolerance(reference: float) -> float:
    """How much worse than `reference` still counts as close: 15 % of it or 0.02 absolute, whichever is larger."""
    return max(REL_TOLERANCE * reference, ABS_TOLERANCE)


def excess_over_tolerance(candidate: float, reference: float) -> float:
    return candidate - reference - tolerance(reference)


def close_to(candidate: float, reference: float) -> bool:
    return excess_over_tolerance(candidate, reference) <= 0


def check(claim: str, passed: bool, detail: str) -> dict:
    return {"claim": claim, "passed": bool(passed), "detail": detail}


def ensure_run(
    run_dir: Path,
    config,
    start: Callable[[], object],
    cont: Callable[[], object],
    read: Callable[[Path], object] = read_config,
    name: str = "",
) -> str:
    """Reuse a finished run of `config` in `run_dir`, resume an interrupted one, or train it from scratch
    (`start`/`cont` train or resume it; `read` reads a run's config; `name` labels the messages). RunDir decides,
    holding the run's lock; returns its decision."""
    refuse_training(f"{name or 'a model'} in {run_dir}")  # before its folder is touched (training/guard.py)
    note_model(name or str(run_dir), run_dir)
    run = RunDir(run_dir, read)
    who = f"{name} " if name else ""

    def fresh() -> None:
        if name:
            print(f"training {who}({config.train.steps} steps) into {run_dir}", flush=True)
        start()

    def resumed() -> None:
        print(f"resuming {who}in {run_dir} from step {run.status().step}", flush=True)
        cont()

    return run.ensure(config, fresh, resumed)


def section_lines(
    recipe: Recipe, folder: Path, figures: list[Path], checks: list[dict], stored: dict, footer: str
) -> list[str]:
    """The report section of `recipe`: its claim, figures, PASS/FAIL checks, tables (stored["tables"], if any),
    how our setting differs."""
    verdict = "supports" if all(c["passed"] for c in checks) else "does not fully support"
    lines = [f"## {recipe.title}", "", f"**The paper's claim.** {recipe.claim}", ""]
    lines += [f"![{folder.name}]({folder.name}/{f.name})" for f in figures] + [""]
    lines += [f"**What we measured** ({stored['mode']} mode): our run {verdict} the claim.", ""]
    recorded = {c["claim"]: c for c in stored.get("checks", []) if "expected" in c}
    lines += [f"- {_verdict(c, recorded.get(c['claim']))} {c['claim']}: {c['detail']}" for c in checks] + [""]
    lines += stored.get("tables", [])
    return lines + [f"**Where our setting differs.** {recipe.differences}", "", footer, ""]


def _verdict(check: dict, stored: dict | None) -> str:
    """**PASS** or **FAIL**, and for a stored check with a recorded outcome, how it compares (outcomes.py)."""
    head, _, tail = label(check | ({"expected": stored["expected"]} if stored else {})).partition(" ")
    return f"**{head}**" + (f" {tail}" if tail else "")
