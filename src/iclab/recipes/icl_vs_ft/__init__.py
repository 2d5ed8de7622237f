"""Dai et al. (2023) on iclab's own models: is in-context learning implicit finetuning?

A small TokenLM is pretrained on the synthetic keyword-classification world (tasks/keywords.py): each prompt is
a fresh task instance whose label map must be read off the demonstrations. The ICL-vs-finetuning engine then
compares ZSL, ICL and K/V-only finetuning on many instances, for the trained model, with a random update in
place of FT's, and for an untrained model of the same shape (Deutch et al. 2024 found untrained models score
similarly on such measures, so a measure only counts where it beats both).

One job per module: models.py (the keywords LM: its config, its Trainer subclass, its run folder, shipping it),
study.py (the study over task instances and pretraining checkpoints), checks.py (the claims' PASS/FAIL checks),
report.py (tables and verdict), figures.py; this file declares the RECIPE and renders its report section.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..common import section_lines
from ..recipe import Recipe
from .checks import check_summary, emergence_check, emergence_rows
from .figures import draw
from .models import (
    MODEL,
    MODEL_NAME,
    NAME,
    SIZES,
    TASK,
    TRAIN_DEMOS,
    KeywordsLMConfig,
    KeywordsTrainer,
    checkpoint_steps,
    checkpoints,
    ensure_model,
    export_model,
    load_model,
    max_tokens,
    plan,
    shipped_model,
)
from .report import tables
from .study import DEMOS, LRS, run


def section(folder: Path, stored: dict) -> list[str]:
    results = json.loads((folder / "results.json").read_text())
    keys = ("trained", "untrained", "untrained-deutch", "variants", "emergence")
    summary = {k: results[k] for k in keys if k in results}
    figures = draw(summary, folder)
    checks = check_summary(summary)
    stored = stored | {"tables": tables(summary, results)}
    model = results["model"]
    footer = (
        f"Model: {model['parameters']:,} parameters, {model['steps']} pretraining steps "
        f"({model['train_seconds']:.0f} s); study {stored['seconds']:.0f} s. Numbers: `{folder.name}/results.json`."
    )
    return section_lines(RECIPE, folder, figures, checks, stored, footer)


RECIPE = Recipe(
    name=NAME,
    title="ICL as implicit finetuning: ZSL, ICL and K/V finetuning on iclab's own token model",
    claim=(
        "In-context learning behaves like finetuning: of the examples finetuning fixes, ICL gets most right "
        "(Rec2FTP 86-89 %); ICL's attention-output updates point the way finetuning's do (SimAOU 0.19-0.23 vs "
        "~0 for a random update); ICL's attention map is closer to FT's than to ZSL's (SimAM 0.44 vs 0.34); "
        "ICL's attention to demonstration tokens ranks them as FT's does (Kendall 0.19-0.21). (Dai et al. 2023; "
        "figures from summaries, unverified.)"
    ),
    differences=(
        "Dai et al. used 1.3B/2.7B GPTs on six text-classification sets; here a 2-layer, width-64 token "
        "model pretrained for minutes on a synthetic keyword-classification world (label maps are random "
        "per instance, canonical half the time, so zero-shot sits near 75 %), 8 demonstrations, learning "
        "rate picked per instance on validation queries. The same engine runs on pretrained causal LMs "
        "through `iclab lm run` (see the README)."
    ),
    modes=tuple(SIZES),
    run=run,
    check=check_summary,
    draw=draw,
    section=section,
    shipped=True,  # the keywords LM ships with iclab
    plan=plan,
)

__all__ = [
    "DEMOS",
    "LRS",
    "MODEL",
    "MODEL_NAME",
    "NAME",
    "RECIPE",
    "SIZES",
    "TASK",
    "TRAIN_DEMOS",
    "KeywordsLMConfig",
    "KeywordsTrainer",
    "check_summary",
    "checkpoint_steps",
    "checkpoints",
    "emergence_check",
    "emergence_rows",
    "ensure_model",
    "export_model",
    "load_model",
    "max_tokens",
    "run",
    "shipped_model",
    "tables",
]
