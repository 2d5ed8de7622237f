"""Paper figures as one-command recipes: `iclab reproduce NAME --out DIR [--scale quick|full|paper | --pretrained]`.

Every recipe module declares one `RECIPE` (recipe.py): its name, title, the paper's claim and how our setting
differs, the modes it has, the shared models it needs and whether they ship, and its run / check / draw / section
functions; it checks the claim's shape as PASS/FAIL lines with numbers. Two kinds:
- a sweep recipe (model_selection, sparsity, convex, frequency) sweeps the shared models (recipes.models) and
  is built by `sweep_recipe` (sweep.py) from its `compute`, `check_rows` and `draw`;
- a study recipe (lsa_gd, icl_vs_ft, momentum, task_diversity, algorithm_selection, tabular, length, architectures)
  trains what it needs itself in its own `run`.
Each recipe's settings at each scale (quick, full, paper) are YAML files (sizes.py, scales/NAME/SCALE.yaml);
`--dry-run` lists a scale's runs with their estimated time (dryrun.py). `--pretrained` renders the recipes whose
trained models ship (shipped=True) and trains nothing: each recipe runs inside training.guard.no_training, so a
training attempt raises. `--jobs N` trains the recipes' iclab runs (the shared models and each recipe's plan) N at
a time before any recipe runs. Results land in DIR/NAME/ (curves or results, checks.json with provenance,
figures), DIR/summary.json (every check, with the outcome recorded for it: outcomes.py) and DIR/report.md, which
opens with a summary table and which `iclab report DIR` re-renders from those files alone.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from ..config import Config
from ..errors import UserError
from ..files import atomic_write_text
from ..interrupts import Interrupted, signal_name
from ..provenance import provenance
from ..spec import unknown_key_error
from ..training.guard import no_training
from . import (
    algorithm_selection,
    architectures,
    convex,
    frequency,
    icl_vs_ft,
    length,
    lsa_gd,
    model_selection,
    momentum,
    sparsity,
    tabular,
    task_diversity,
)
from .common import recording_models
from .dryrun import estimate, plan_lines
from .models import PRETRAINED, train_models, train_runs
from .outcomes import recorded_seconds, summary_table
from .progress import progress_line
from .recipe import Recipe
from .sizes import SCALES, on_device
from .summary import model_seeds, store_checks, write_summary

PRETRAINED_TRAINS_NOTHING = (
    "--pretrained trains nothing, yet recipe '{0}' would; run `iclab reproduce {0}` without --pretrained"
)
RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        model_selection.RECIPE,
        model_selection.RECIPE_3,  # its K-class neighbour
        sparsity.RECIPE,
        convex.RECIPE,
        frequency.RECIPE,
        lsa_gd.RECIPE,
        icl_vs_ft.RECIPE,
        momentum.RECIPE,
        task_diversity.RECIPE,
        algorithm_selection.RECIPE,
        tabular.RECIPE,
        length.RECIPE,
        architectures.RECIPE,
    )
}


def study_models(mode: str = PRETRAINED) -> dict[str, Config]:
    """The models the study recipes task-diversity and algorithm-selection train for themselves (and ship at full
    size, with scripts/ship_pretrained.py)."""
    pools = task_diversity.SIZES[mode]["pools"]
    return {f"pool{p}": task_diversity.model_config(p, mode) for p in pools} | {
        algorithm_selection.MODEL: algorithm_selection.model_config(mode),
        tabular.MODEL: tabular.model_config(mode),
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


def scale_of(scale: str | None, quick: bool, pretrained: bool) -> str:
    """The scale asked for: --scale, or --quick (its alias), else full; --pretrained is the shipped full scale."""
    if quick and scale not in (None, "quick"):
        raise UserError(f"--quick is --scale quick; it cannot be combined with --scale {scale}")
    scale = scale or ("quick" if quick else "full")
    if scale not in SCALES:
        raise unknown_key_error(scale, SCALES, "scale")
    if pretrained and scale != PRETRAINED:
        given = "--quick" if quick else f"--scale {scale}"
        raise UserError(f"--pretrained loads the shipped full-size models; it cannot be combined with {given}")
    return scale


def device_of(scale: str, device: str | None, allow_cpu_paper: bool) -> str | None:
    """The device the recipes' iclab configs train on (None: their scale files' own, the CPU). The paper scale
    takes a GPU when there is one, and a CPU only when asked to explicitly."""
    if scale != "paper":
        return device
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu" and not allow_cpu_paper:
        raise UserError(
            "--scale paper trains the papers' models (Garg et al.'s 12 layers for 500k steps: weeks per model on a "
            "CPU) and is meant for a GPU: run it where there is one (--device cuda), see its runs and their time "
            "with --dry-run, or pass --allow-cpu-paper to train on this CPU anyway"
        )
    return device


def reproduce(
    name: str,
    out: Path,
    quick: bool = False,
    pretrained: bool = False,
    progress: bool = True,
    jobs: int = 1,
    scale: str | None = None,
    device: str | None = None,
    allow_cpu_paper: bool = False,
) -> list[dict]:
    """Train (or load) the models, run each recipe, check its claim's shape, write figures and the report.
    `scale` is quick, full (the default) or paper (`quick=True` is scale quick); `device` is where the recipes'
    iclab configs train (lsa-gd's and icl-vs-ft's own loops stay on the CPU). With `jobs` > 1 the recipes' iclab
    runs (shared models and each recipe's plan) train that many at a time first, each process on its share of the
    caller's torch threads."""
    mode = scale_of(scale, quick, pretrained)
    if jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {jobs}")
    device = device_of(mode, device, allow_cpu_paper)
    with on_device(device):
        try:
            return _reproduce(name, Path(out), mode, pretrained, progress, jobs, device or "cpu")
        except Interrupted as e:  # training stopped after a step, with its checkpoint; a rerun resumes from there
            raise Interrupted(
                e.signum, f"interrupted by {signal_name(e.signum)}; models and checkpoints are kept: rerun the same "
                "command to continue"
            ) from None


def names_at(name: str, mode: str) -> list[str]:
    """The recipes `name` stands for that have a `mode` size; `all` leaves out those without one (a named recipe
    without it is a one-line error)."""
    names = recipe_names(name)
    for n in names:
        if mode not in RECIPES[n].modes and name != "all":
            raise UserError(f"recipe '{n}' has no {mode} size (it has: {', '.join(RECIPES[n].modes)})")
    return [n for n in names if mode in RECIPES[n].modes]


def _reproduce(name: str, out: Path, mode: str, pretrained: bool, progress: bool, jobs: int, device: str) -> list[dict]:
    names = names_at(name, mode)
    if pretrained:  # --pretrained trains nothing: only recipes whose trained models ship with iclab render
        unshipped = [n for n in names if not RECIPES[n].shipped]
        if unshipped and name != "all":
            which = ", ".join(unshipped)
            raise UserError(
                f"no models for '{which}' ship with iclab, and --pretrained trains nothing; run it without "
                "--pretrained to train them (--dry-run shows how long that takes)"
            )
        if unshipped:
            print(f"skipping {', '.join(unshipped)}: no shipped models (run without --pretrained)", flush=True)
        names = [n for n in names if n not in unshipped]
    if jobs > 1 and not pretrained:
        import torch

        threads = max(1, torch.get_num_threads() // jobs)
        train_models([m for n in names for m in RECIPES[n].models_at(mode)], out, mode, jobs, threads, progress)
        train_runs(planned_runs(names, mode, out), out, jobs, threads, progress)
    summaries, started = [], time.perf_counter()
    recorded = recorded_seconds(mode) if pretrained else {}
    for i, n in enumerate(names):
        if progress:
            print(progress_line(i, names, time.perf_counter() - started, recorded), flush=True)
        since = time.time()
        # under --pretrained nothing trains, so the recipes' own bars (evaluation, studies) are left out
        with recording_models() as used, _training_refused(n, pretrained):
            summary = RECIPES[n].run(out, mode, pretrained, progress and not pretrained)
        record = provenance(seeds=model_seeds(RECIPES[n], out, mode, pretrained, used), device=device)
        summaries.append(store_checks(summary, RECIPES[n], out, mode, pretrained, record, since))
    render_recipes(out)
    return summaries


def _training_refused(name: str, pretrained: bool) -> contextlib.AbstractContextManager:
    """Under --pretrained a recipe that would train raises instead (training/guard.py)."""
    return no_training(PRETRAINED_TRAINS_NOTHING.format(name)) if pretrained else contextlib.nullcontext()


def dry_run(name: str, scale: str | None = None, device: str | None = None, progress: bool = False) -> list[str]:
    """The lines of `iclab reproduce NAME --scale S --dry-run`: every run the scale trains, with its time
    estimated from steps timed on `device` (dryrun.py). Nothing is trained or written."""
    mode = scale_of(scale, False, False)
    device = device_of(mode, device, allow_cpu_paper=True)
    with on_device(device):
        names = names_at(name, mode)
        rows = estimate([(n, run) for n in names for run in plan(RECIPES[n], mode)], progress)
    return plan_lines(rows, mode, device or "cpu", names)


def plan(recipe: Recipe, mode: str) -> list:
    return recipe.plan(mode) if recipe.plan else []


def planned_runs(names: list[str], mode: str, out: Path) -> list[tuple[str, Path, Config]]:
    """(name, folder, config) of the iclab runs the recipes `names` train at scale `mode` (their plans: the same
    configs their `run` trains), which --jobs trains in parallel before the recipes run and find them finished."""
    planned = [p for n in names for p in plan(RECIPES[n], mode)]
    return [(p.name, out / p.name, p.config) for p in planned if isinstance(p.config, Config)]


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
    stored = [json.loads((folder / "checks.json").read_text()) for folder in folders]
    # a stale folder (no checks stored) stays out of the summary; its section below says to rerun it
    complete = [s for s in stored if "checks" in s]
    lines += ["## Summary", ""] + summary_table(complete)
    failed = []
    for folder, checks in zip(folders, stored, strict=True):
        try:
            lines += RECIPES[folder.name].section(folder, checks)
        except (KeyError, ValueError, OSError, UserError) as e:
            # the other sections still render: one stale folder must not hide the finished results
            detail = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
            problem = f"{folder.name}: {detail}"
            failed.append(problem)
            lines += [
                f"## {folder.name}",
                "",
                f"Not rendered from its stored files ({problem}): rerun `iclab reproduce {folder.name} --out {out}`.",
                "",
            ]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    write_summary(out, complete)
    if failed:
        names = ",".join(f.split(":", 1)[0] for f in failed)
        raise UserError(
            f"wrote {path} without {names}, which cannot be rendered from its stored files ({'; '.join(failed)}); "
            f"rerun `iclab reproduce {names} --out {out}`"
        )
    return path


__all__ = ["RECIPES", "SCALES", "Recipe", "dry_run", "render_recipes", "reproduce"]
