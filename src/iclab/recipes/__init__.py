"""Paper figures as one-command recipes: `iclab reproduce NAME --out DIR [--quick | --pretrained]`.

A recipe module states the paper's claim (CLAIM), how our setting differs (DIFFERENCES), the models it needs
(MODELS, from recipes.models), and three functions: `compute(models) -> rows` (sweep rows, see sweeps.py),
`check_rows(rows) -> checks` (the claim's qualitative shape as PASS/FAIL lines with numbers) and
`draw(rows, folder) -> PNGs`. Results land in DIR/NAME/ (curves.csv, checks.json, figures) and DIR/report.md,
which `iclab report DIR` re-renders from those files alone.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..checkpoint import atomic_write_json, atomic_write_text, latest_checkpoint, read_state
from ..errors import UserError
from ..evaluate import read_curves
from ..spec import unknown_key_error
from ..sweeps import write_sweep
from . import convex, frequency, model_selection, sparsity
from .models import PRETRAINED, STEPS, ensure_model

RECIPES = {m.NAME: m for m in (model_selection, sparsity, convex, frequency)}


def recipe_names(name: str) -> list[str]:
    if name == "all":
        return list(RECIPES)
    if name not in RECIPES:
        raise unknown_key_error(name, [*RECIPES, "all"], "recipe")
    return [name]


def reproduce(name: str, out: Path, quick: bool = False, pretrained: bool = False, progress: bool = True) -> list[dict]:
    """Train (or load) the models, run the recipes' sweeps, check their shapes, write figures and the report."""
    if quick and pretrained:
        raise UserError("--pretrained loads the shipped full-size models; it cannot be combined with --quick")
    out = Path(out)
    mode = PRETRAINED if pretrained else ("quick" if quick else "full")
    names = recipe_names(name)
    needed = list(dict.fromkeys(m for n in names for m in RECIPES[n].MODELS))
    models = {m: ensure_model(m, out, mode, pretrained, progress) for m in needed}
    summaries = []
    for n in names:
        recipe = RECIPES[n]
        started = time.perf_counter()
        rows = recipe.compute({m: models[m] for m in recipe.MODELS}, progress)
        folder = out / n
        write_sweep(folder / "curves.csv", rows)
        checks = recipe.check_rows(rows)
        recipe.draw(rows, folder)
        summary = {
            "recipe": n,
            "mode": mode + (" (shipped checkpoints)" if pretrained else ""),
            "checks": checks,
            "passed": all(c["passed"] for c in checks),
            "sweep_seconds": round(time.perf_counter() - started, 1),
            "models": {m: _model_info(models[m]) for m in recipe.MODELS},
        }
        atomic_write_json(folder / "checks.json", summary)
        summaries.append(summary)
    render_recipes(out)
    return summaries


def _model_info(run_dir: Path) -> dict:
    state = read_state(latest_checkpoint(run_dir))
    return {"path": str(run_dir), "steps": state["step"], "train_seconds": round(state["elapsed_seconds"], 1)}


def recipe_folders(out: Path) -> list[Path]:
    found = []
    for name in RECIPES:
        path = Path(out) / name / "checks.json"
        if path.is_file() and json.loads(path.read_text()).get("recipe") == name:
            found.append(path.parent)
    return found


def render_recipes(out: Path) -> Path:
    """DIR/report.md from each recipe's stored curves.csv and checks.json (figures redrawn, nothing retrained)."""
    out = Path(out)
    folders = recipe_folders(out)
    if not folders:
        raise UserError(f"{out} holds neither a run (config.json) nor recipe results (NAME/checks.json)")
    lines = [
        "# iclab reproductions",
        "",
        "Each section states the paper's claim, shows our figure, checks the claim's shape automatically "
        "and says where our setting differs. Errors are normalised so that predicting 0 scores about 1.",
        "",
    ]
    for folder in folders:
        recipe = RECIPES[folder.name]
        stored = json.loads((folder / "checks.json").read_text())
        rows = read_curves(folder / "curves.csv")
        checks = recipe.check_rows(rows)
        figures = recipe.draw(rows, folder)
        models = ", ".join(f"{m} ({i['steps']} steps, {i['train_seconds']:.0f} s)" for m, i in stored["models"].items())
        lines += [f"## {recipe.TITLE}", "", f"**The paper's claim.** {recipe.CLAIM}", ""]
        lines += [f"![{folder.name}]({folder.name}/{f.name})" for f in figures] + [""]
        verdict = "supports" if all(c["passed"] for c in checks) else "does not fully support"
        lines += [f"**What we measured** ({stored['mode']} mode): our run {verdict} the claim.", ""]
        lines += [f"- **{'PASS' if c['passed'] else 'FAIL'}** {c['claim']}: {c['detail']}" for c in checks] + [""]
        lines += [
            f"**Where our setting differs.** {recipe.DIFFERENCES}",
            "",
            f"Models: {models}; sweep and checks {stored['sweep_seconds']:.0f} s. Numbers: `{folder.name}/curves.csv`.",
            "",
        ]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


__all__ = ["RECIPES", "STEPS", "render_recipes", "reproduce"]
