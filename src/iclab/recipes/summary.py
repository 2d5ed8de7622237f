"""What `iclab reproduce` stores beside each recipe's own files: DIR/NAME/checks.json (its checks, each with the
outcome recorded for it, and where the numbers came from), the provenance stamped into the recipe's results JSON,
and DIR/summary.json, every check of every recipe folder in one machine-readable file (the docs render from it).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..files import atomic_write_json
from ..provenance import provenance
from .models import pretrained_dir
from .outcomes import counts, summary_rows, with_expected
from .recipe import Recipe


def model_seeds(recipe: Recipe, out: Path, mode: str, pretrained: bool, used: dict[str, Path]) -> dict[str, int]:
    """The training seed of each model the recipe used, read from its run folder's config.json: its shared models
    and those it noted (common.note_model); a model without a config.json (a recipe's own loop) is left out."""
    shared = {m: pretrained_dir(m) if pretrained else out / "models" / mode / m for m in recipe.models_at(mode)}
    seeds = {}
    for name, folder in (shared | used).items():
        config = Path(folder) / "config.json"
        if config.is_file():
            key = Path(name).relative_to(out).as_posix() if Path(name).is_relative_to(out) else name
            seeds[key] = json.loads(config.read_text()).get("seed")
    return seeds


def store_checks(
    summary: dict, recipe: Recipe, out: Path, mode: str, pretrained: bool, record: dict, since: float
) -> dict:
    """The summary `recipe.run` returned as checks.json stores it: recipe, mode, its checks with their recorded
    outcomes, passed, and `record` (provenance()) as its provenance, which also goes into every JSON the recipe
    wrote into DIR/NAME/ since `since` (time.time(): its results) that has none yet. Writes checks.json."""
    folder = out / recipe.name
    summary = {"recipe": recipe.name, "mode": mode + (" (shipped checkpoints)" if pretrained else "")} | summary
    summary["checks"] = with_expected(summary["checks"], mode, recipe.name)
    summary["passed"] = all(c["passed"] for c in summary["checks"])
    summary["provenance"] = record
    for path in sorted(folder.glob("*.json")):
        if path.name != "checks.json" and path.stat().st_mtime >= since - 1:  # 1 s: a file system's coarse clock
            data = json.loads(path.read_text())
            if isinstance(data, dict) and "provenance" not in data:
                atomic_write_json(path, data | {"provenance": record})
    atomic_write_json(folder / "checks.json", summary)
    return summary


def write_summary(out: Path, stored: list[dict]) -> Path:
    """DIR/summary.json: one row per check of every recipe folder (recipe, check, passed, expected, outcome,
    detail), each recipe's mode and provenance, and the provenance of the command that wrote it."""
    path = Path(out) / "summary.json"
    atomic_write_json(
        path,
        {
            "provenance": provenance(),
            "counts": counts(stored),
            "recipes": {
                s["recipe"]: {k: s.get(k) for k in ("mode", "passed", "seconds", "provenance")} for s in stored
            },
            "checks": summary_rows(stored),
        },
    )
    return path
