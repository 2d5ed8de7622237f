"""The Yadlowsky et al. recipes' shared pipeline: the models they need (recipes.models), a sweep, shape checks.

A sweep recipe module defines `compute(models, setting, progress) -> rows` (sweep rows, see evaluation/sweeps.py),
`check_rows(rows, setting) -> checks` and `draw(rows, folder, setting) -> PNGs`, and declares
`RECIPE = sweep_recipe(...)`: the recipe runs them on the models, stores the rows in DIR/NAME/curves.csv and
renders its report section from that file alone."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from ..evaluation.curves import read_curves
from ..evaluation.report import sweep_score_table
from ..evaluation.sweeps import write_sweep
from ..training.checkpoint import latest_checkpoint, read_state
from .common import section_lines
from .dryrun import Planned, icl_run
from .models import ensure_model, model_config, setting
from .recipe import Recipe
from .sizes import SCALES


def sweep_recipe(
    name: str,
    title: str,
    claim: str,
    differences: str,
    models: tuple[str, ...] | Callable[[str], tuple[str, ...]],
    compute: Callable[[dict[str, Path], dict, bool], list[dict]],
    check: Callable[[list[dict], dict], list[dict]],
    draw: Callable[[list[dict], Path, dict], list[Path]],
) -> Recipe:
    """The Recipe of a sweep over the shared `models`: their full-size checkpoints ship with iclab."""

    def run(out: Path, mode: str, pretrained: bool, progress: bool) -> dict:
        runs = {m: ensure_model(m, out, mode, pretrained, progress) for m in recipe.models_at(mode)}
        started = time.perf_counter()
        chosen = setting(mode)
        rows = compute(runs, chosen, progress)
        folder = out / name
        write_sweep(folder / "curves.csv", rows)
        draw(rows, folder, chosen)
        return {
            "checks": check(rows, chosen),
            "seconds": round(time.perf_counter() - started, 1),
            "models": {m: model_info(p) for m, p in runs.items()},
            "setting": chosen,
        }

    def section(folder: Path, stored: dict) -> list[str]:
        rows = read_curves(folder / "curves.csv")
        figures = draw(rows, folder, stored["setting"])
        trained = [f"{m} ({i['steps']} steps, {i['train_seconds']:.0f} s)" for m, i in stored["models"].items()]
        footer = (
            f"Models: {', '.join(trained)}; sweep and checks {stored['seconds']:.0f} s. "
            f"Numbers: `{folder.name}/curves.csv`."
        )
        tables = stored.get("tables", []) + sweep_score_table(rows, stored["setting"]["dims"])
        return section_lines(
            recipe, folder, figures, check(rows, stored["setting"]), stored | {"tables": tables}, footer
        )

    def plan(mode: str) -> list[Planned]:
        return [icl_run(f"models/{mode}/{m}", model_config(m, mode)) for m in recipe.models_at(mode)]

    recipe = Recipe(name, title, claim, differences, SCALES, run, check, draw, section, models, shipped=True, plan=plan)
    return recipe


def model_info(run_dir: Path) -> dict:
    """Where a model's run lives, how many steps it trained and for how long: the recipe's checks.json keeps it."""
    state = read_state(latest_checkpoint(run_dir))
    return {"path": str(run_dir), "steps": state["step"], "train_seconds": round(state["elapsed_seconds"], 1)}
