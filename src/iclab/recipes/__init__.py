"""Paper figures as one-command recipes: `iclab reproduce NAME --out DIR [--quick | --pretrained]`.

Every recipe module declares one `RECIPE` (recipe.py): its name, title, the paper's claim and how our setting
differs, the modes it has, the shared models it needs and whether they ship, and its run / check / draw / section
functions; it checks the claim's shape as PASS/FAIL lines with numbers. Two kinds:
- a sweep recipe (model_selection, sparsity, convex, frequency) sweeps the shared models (recipes.models) and
  is built by `sweep_recipe` (sweep.py) from its `compute`, `check_rows` and `draw`;
- a study recipe (lsa_gd, icl_vs_ft, momentum, task_diversity, algorithm_selection) trains what it needs itself
  in its own `run`.
`--pretrained` renders the recipes whose models ship (shipped=True) in seconds; `--jobs N` trains the sweep
recipes' models N at a time before any recipe runs. Results land in DIR/NAME/ (curves or results, checks.json,
figures) and DIR/report.md, which `iclab report DIR` re-renders from those files alone.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from ..files import atomic_write_json, atomic_write_text
from ..spec import unknown_key_error
from . import (
    algorithm_selection,
    convex,
    frequency,
    icl_vs_ft,
    lsa_gd,
    model_selection,
    momentum,
    sparsity,
    task_diversity,
)
from .models import PRETRAINED, train_models
from .recipe import Recipe

RECIPES: dict[str, Recipe] = {
    m.RECIPE.name: m.RECIPE
    for m in (
        model_selection,
        sparsity,
        convex,
        frequency,
        lsa_gd,
        icl_vs_ft,
        momentum,
        task_diversity,
        algorithm_selection,
    )
}


def recipe_names(name: str) -> list[str]:
    """The recipes `name` stands for: one recipe, several separated by commas, or all."""
    names = []
    for part in (n.strip() for n in name.split(",")):
        if part == "all":
            names += RECIPES
        elif not part:
            raise UserError(f"empty recipe name in '{name}'; separate names by single commas")
        elif part not in RECIPES:
            raise unknown_key_error(part, [*RECIPES, "all"], "recipe")
        else:
            names.append(part)
    return list(dict.fromkeys(names))


def reproduce(
    name: str, out: Path, quick: bool = False, pretrained: bool = False, progress: bool = True, jobs: int = 1
) -> list[dict]:
    """Train (or load) the models, run each recipe, check its claim's shape, write figures and the report.
    With `jobs` > 1 the sweep recipes' models train that many at a time first, each process on its share of the
    caller's torch threads."""
    if quick and pretrained:
        raise UserError("--pretrained loads the shipped full-size models; it cannot be combined with --quick")
    if jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {jobs}")
    out = Path(out)
    mode = PRETRAINED if pretrained else ("quick" if quick else "full")
    names = recipe_names(name)
    for n in names:
        if mode not in RECIPES[n].modes:
            raise UserError(f"recipe '{n}' has no {mode} size (it has: {', '.join(RECIPES[n].modes)})")
    if pretrained:  # only recipes whose models ship with iclab (or train in seconds) render in seconds
        unshipped = [n for n in names if not RECIPES[n].shipped]
        if unshipped and name != "all":
            which = ", ".join(unshipped)
            raise UserError(f"no models for '{which}' ship with iclab; run it without --pretrained to train them")
        if unshipped:
            print(f"skipping {', '.join(unshipped)}: no shipped models (run without --pretrained)", flush=True)
        names = [n for n in names if n not in unshipped]
    if jobs > 1 and not pretrained:
        import torch

        needed = [m for n in names for m in RECIPES[n].models]
        train_models(needed, out, mode, jobs, max(1, torch.get_num_threads() // jobs), progress)
    summaries = []
    for n in names:
        summary = RECIPES[n].run(out, mode, pretrained, progress)
        summary = {"recipe": n, "mode": mode + (" (shipped checkpoints)" if pretrained else "")} | summary
        summary["passed"] = all(c["passed"] for c in summary["checks"])
        atomic_write_json(out / n / "checks.json", summary)
        summaries.append(summary)
    render_recipes(out)
    return summaries


def recipe_folders(out: Path) -> list[Path]:
    found = []
    for name in RECIPES:
        path = Path(out) / name / "checks.json"
        if path.is_file() and json.loads(path.read_text()).get("recipe") == name:
            found.append(path.parent)
    return found


def render_recipes(out: Path) -> Path:
    """DIR/report.md from each recipe's stored files (figures redrawn, nothing retrained)."""
    out = Path(out)
    folders = recipe_folders(out)
    if not folders:
        raise UserError(f"{out} holds neither a run (config.json) nor recipe results (NAME/checks.json)")
    lines = [
        "# iclab reproductions",
        "",
        "Each section states the paper's claim, shows our figure, checks the claim's shape automatically "
        "and says where our setting differs.",
        "",
    ]
    for folder in folders:
        try:
            lines += RECIPES[folder.name].section(folder, json.loads((folder / "checks.json").read_text()))
        except (KeyError, ValueError, OSError) as e:
            raise UserError(
                f"cannot render {folder} from its stored files ({type(e).__name__}: {e}); rerun "
                f"`iclab reproduce {folder.name} --out {out}`"
            ) from None
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


__all__ = ["RECIPES", "Recipe", "render_recipes", "reproduce"]
