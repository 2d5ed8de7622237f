"""Running the icl-vs-ft study: ZSL, ICL and finetuning on many task instances, for the trained keywords LM, for
an untrained model of its shape and Deutch et al.'s untrained baseline, and at the pretraining checkpoints;
OUT/icl-vs-ft/results.json and the figures."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm import tqdm

from ...files import atomic_write_json
from ...icl_vs_ft.adapter import IclabLMAdapter
from ...icl_vs_ft.engine import FT_METHODS, VARIANTS, StudyData, studies, untrained_like
from ...icl_vs_ft.results import as_dict, summarise
from ..models import pretrained_dir
from .checks import check_summary
from .figures import draw
from .models import (
    MODEL_NAME,
    NAME,
    SIZES,
    TASK,
    build_keywords_lm,
    checkpoints,
    ensure_model,
    model_config,
    shipped_model,
)

DEMOS = 8  # demonstrations per studied instance
LRS = [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0]  # the finetuning learning rates, picked per instance on validation


def run(out: Path, mode: str, pretrained: bool, progress: bool) -> dict:
    size = SIZES["full" if pretrained else mode]
    folder = out / NAME
    model_dir = pretrained_dir(MODEL_NAME) if pretrained else out / "models" / mode / MODEL_NAME
    model, info = shipped_model(size["steps"]) if pretrained else ensure_model(model_dir, size["steps"], progress)
    torch.manual_seed(1)
    untrained = build_keywords_lm(model_config(size["steps"])).eval()
    models = {
        "trained": model,
        "untrained": untrained,  # every weight fresh
        "untrained-deutch": untrained_like(IclabLMAdapter(model), untrained),  # Deutch et al.'s baseline
    }
    started = time.perf_counter()
    g = torch.Generator().manual_seed(2024)
    instances = TASK.instances(size["instances"], g)
    results = {v: {name: {f: [] for f in FT_METHODS} for name in models} for v in VARIANTS}
    grids = dict.fromkeys(FT_METHODS, LRS)
    snapshots = checkpoints(model_dir, info["steps"])
    emergence = {step: [] for step in snapshots}
    for i in tqdm(range(size["instances"]), desc="ICL vs FT", disable=not progress):
        instance = {k: v[i : i + 1] for k, v in instances.items()}
        data = StudyData(**TASK.study_inputs(instance, DEMOS, n_test=64, n_val=32, generator=g), separator_tokens=1)
        for variant in VARIANTS:
            for name, m in models.items():
                for method, r in studies(IclabLMAdapter(m), data, grids, seed=i, measures=variant).items():
                    results[variant][name][method].append(as_dict(r))
        for step, m in snapshots.items():  # Dai's measures and finetuning on the same instance, earlier in pretraining
            emergence[step].append(as_dict(studies(IclabLMAdapter(m), data, {"kv-sgd": LRS}, seed=i)["kv-sgd"]))
    variants = {
        variant: {name: {f: summarise(rs) for f, rs in by_ft.items()} for name, by_ft in per_model.items()}
        for variant, per_model in results.items()
    }
    # the headline: Dai's measures, Dai's finetuning; the checks read these
    summary = {name: variants["dai"][name]["kv-sgd"] for name in models} | {"variants": variants}
    if snapshots:
        summary["emergence"] = {str(step): summarise(rs) for step, rs in emergence.items()}
        summary["emergence"][str(info["steps"])] = summary["trained"]
    atomic_write_json(
        folder / "results.json", summary | {"model": info, "instances": size["instances"], "demos": DEMOS, "lrs": LRS}
    )
    draw(summary, folder)
    return {
        "checks": check_summary(summary),
        "seconds": round(time.perf_counter() - started, 1),
        "model": {"steps": info["steps"], "train_seconds": info["train_seconds"]},
    }
