"""Raventos et al. (2023): pretrained on a finite pool of M regression tasks, a transformer behaves like the
Bayes estimator of that pool (dMMSE) while M is small and like ridge regression (the Bayes estimator of the
Gaussian prior, alpha = noise variance) once M passes a task-diversity threshold.

One model per pool size; each is scored on prompts of its own pool and on fresh Gaussian tasks, beside dMMSE
for its pool and ridge. The distance of two predictors is Raventos et al.'s (mansheej/icl-task-diversity,
icl/evaluate.py): their squared prediction difference on the same prompts, averaged over prompts and every
position k = 0 .. points-1, divided by d. `distance: normalised` in a scale file picks iclab's earlier reading
(divided by each prompt's E[y^2], over k = 1 .. points-1)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from ..baselines import make_estimator
from ..config import Config
from ..evaluation.curves import ModelEstimator, curve_score
from ..files import atomic_write_json
from ..markdown import table
from ..plotting import finish, fit_y, plt, reference_line, save_figure, series_style
from ..scoring import EvalSet, make_eval_set
from ..training.runs import load_model
from .common import check, close_to, section_lines
from .dryrun import Planned, icl_run
from .recipe import Recipe
from .sizes import SCALES, Sizes, Trained, training_config
from .trained import all_predictions, ensure_study_model, normalised, train_info

NAME = "task-diversity"
NOISE_STD = 0.5  # the paper's sigma


DISTANCES = ("raventos", "normalised")
DISTANCE_TEXT = {
    "raventos": "squared prediction difference / d, mean over prompts and every k (Raventos et al.'s)",
    "normalised": "squared prediction difference / E[y^2], mean over prompts and k >= 1 (iclab's earlier)",
}


@dataclass
class TaskDiversitySize(Trained):
    pools: list[int] = field(default_factory=list)  # the pool sizes M, one model each
    distance: str = field(default="raventos", metadata={"choices": DISTANCES})  # of two predictors, see above


SIZES = Sizes(NAME, TaskDiversitySize)  # scales/task-diversity/SCALE.yaml
ESTIMATORS = ("transformer", "dmmse", "ridge", "zero")


def pool_task(size: int) -> dict:
    # each prompt's task drawn uniformly with replacement, as Raventos et al. (jax.random.choice, icl/tasks.py)
    base = {"name": "noisy_linear", "noise_std": NOISE_STD}
    return {"name": "finite_pool", "size": size, "base": base, "replacement": True}


def fresh_task() -> dict:
    return {"name": "noisy_linear", "noise_std": NOISE_STD}


def model_config(size: int, mode: str) -> Config:
    return training_config(SIZES[mode], {"task": pool_task(size)})


def plan(mode: str) -> list[Planned]:
    return [icl_run(f"models/{mode}/pool{size}", model_config(size, mode)) for size in SIZES[mode]["pools"]]


def score(model, config: Config, task: dict, pool: dict, distance: str = "raventos") -> dict:
    """Errors per k and distances between predictors on prompts of `task` (`distance`: see the module's text)."""
    evalset = make_eval_set(config, task)
    ests = {
        "transformer": ModelEstimator(model),
        "dmmse": make_estimator({"name": "posterior_mean", "task": pool}),
        "ridge": make_estimator(f"ridge:alpha={NOISE_STD**2}"),
        "zero": make_estimator("zero"),
    }
    preds = all_predictions(ests, evalset)
    errors = {n: normalised(p - evalset.targets.double(), evalset).mean(0).tolist() for n, p in preds.items()}

    def between(a: str, b: str) -> float:
        return prediction_distance(preds[a], preds[b], evalset, distance)

    return {
        "errors": errors,
        "to_dmmse": between("transformer", "dmmse"),
        "to_ridge": between("transformer", "ridge"),
        "dmmse_to_ridge": between("dmmse", "ridge"),
    }


def prediction_distance(a: Tensor, b: Tensor, evalset: EvalSet, kind: str = "raventos") -> float:
    """The distance of two (prompts, positions) predictions: Raventos et al.'s squared difference / d over every
    position, or (`normalised`) iclab's earlier squared difference / E[y^2] over k >= 1."""
    if kind == "normalised":
        return float(normalised(a - b, evalset)[:, 1:].mean())
    return float((a - b).square().mean() / evalset.xs.shape[-1])


def run(out: Path, mode: str, pretrained: bool, progress: bool) -> dict:
    started, scoring = time.perf_counter(), 0.0
    models = []
    for size in SIZES[mode]["pools"]:
        config = model_config(size, mode)
        run_dir = ensure_study_model(f"pool{size}", config, out, mode, pretrained, progress)
        model, _ = load_model(run_dir, config)
        entry = {"pool": size} | train_info(run_dir)
        scored = time.perf_counter()
        entry |= {
            where: score(model, config, task, pool_task(size), SIZES[mode]["distance"])
            for where, task in tasks_of(size).items()
        }
        scoring += time.perf_counter() - scored
        models.append(entry)
    results = {
        "mode": mode,
        "dims": config.dims,
        "noise_std": NOISE_STD,
        "distance": SIZES[mode]["distance"],
        "models": models,
        "threshold": threshold(models),
        "seconds": round(time.perf_counter() - started, 1),
        "scoring_seconds": round(scoring, 1),
    }
    atomic_write_json(out / NAME / "results.json", results)
    draw(results, out / NAME)
    return {"checks": check_results(results), "seconds": results["seconds"], "threshold": results["threshold"]}


def distance_of(r: dict) -> str:
    """The distance results.json was computed with (before the key existed: iclab's normalised one)."""
    return r.get("distance", "normalised")


def tasks_of(size: int) -> dict[str, dict]:
    return {"own": pool_task(size), "fresh": fresh_task()}


def mean_error(entry: dict, where: str, name: str) -> float:
    """The error averaged over k = 1 .. points-1."""
    errs = entry[where]["errors"][name][1:]
    return sum(errs) / len(errs)


def threshold(models: list[dict]) -> dict | None:
    """The smallest pool size from which on, on fresh tasks, every model is closer to ridge than to dMMSE;
    None if the largest is not."""
    index = len(models)
    while index > 0 and models[index - 1]["fresh"]["to_ridge"] < models[index - 1]["fresh"]["to_dmmse"]:
        index -= 1
    if index == len(models):
        return None
    below = models[index - 1]["pool"] if index > 0 else None
    return {"below": below, "at": models[index]["pool"]}


def check_results(r: dict) -> list[dict]:
    small, large = r["models"][0], r["models"][-1]
    ms, ml = small["pool"], large["pool"]
    t = r["threshold"]
    ridge_fresh = mean_error(small, "fresh", "ridge")
    return [
        check(
            f"the smallest pool (M = {ms}) tracks dMMSE: on its own tasks and on fresh ones it is closer to dMMSE "
            "than to ridge",
            small["own"]["to_dmmse"] < small["own"]["to_ridge"]
            and small["fresh"]["to_dmmse"] < small["fresh"]["to_ridge"],
            f"distance to dMMSE / ridge: own tasks {small['own']['to_dmmse']:.3f} / {small['own']['to_ridge']:.3f}, "
            f"fresh {small['fresh']['to_dmmse']:.3f} / {small['fresh']['to_ridge']:.3f}",
        ),
        check(
            "on fresh tasks the smallest pool's model does worse than ridge (mean error over k >= 1)",
            mean_error(small, "fresh", "transformer") > ridge_fresh + 0.02,
            f"{mean_error(small, 'fresh', 'transformer'):.3f} against ridge {ridge_fresh:.3f}",
        ),
        check(
            f"the largest pool (M = {ml}) tracks ridge: closer to ridge than to dMMSE on fresh tasks, and within "
            "15 % (or 0.02) of ridge's error",
            large["fresh"]["to_ridge"] < large["fresh"]["to_dmmse"]
            and close_to(mean_error(large, "fresh", "transformer"), mean_error(large, "fresh", "ridge")),
            f"distance to ridge {large['fresh']['to_ridge']:.3f}, to dMMSE {large['fresh']['to_dmmse']:.3f}; error "
            f"{mean_error(large, 'fresh', 'transformer'):.3f} against ridge {mean_error(large, 'fresh', 'ridge'):.3f}",
        ),
        check(
            "a task-diversity threshold is found: from some pool size on, every model is closer to ridge than to "
            "dMMSE on fresh tasks",
            t is not None and t["below"] is not None,
            "none found"
            if t is None
            else f"between M = {t['below']} and M = {t['at']}"
            if t["below"]
            else f"already at the smallest pool, M = {t['at']}",
        ),
    ]


def draw(r: dict, folder: Path) -> list[Path]:
    sizes = [m["pool"] for m in r["models"]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120)
    ylabel = "prediction distance" + (" (normalised)" if distance_of(r) == "normalised" else "")
    pairs = (
        ("to_dmmse", "transformer vs dMMSE"),
        ("to_ridge", "transformer vs ridge"),
        ("dmmse_to_ridge", "dMMSE vs ridge"),
    )
    for ax, where, title in zip(axes, ("own", "fresh"), ("tasks from the pool", "fresh Gaussian tasks"), strict=True):
        for i, (key, name) in enumerate(pairs):
            ax.plot(sizes, [m[where][key] for m in r["models"]], label=name, **series_style(i, key != "dmmse_to_ridge"))
        if r["threshold"]:
            reference_line(ax, x=r["threshold"]["at"], label=f"threshold, M = {r['threshold']['at']}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        fit_y(ax)
        finish(ax, "pool size M (pretraining tasks)", ylabel, title)
    fig.tight_layout()
    phase = save_figure(fig, folder / "phase.png")
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=120)
    for i, name in enumerate(("transformer", "dmmse", "ridge")):
        ax.plot(sizes, [mean_error(m, "fresh", name) for m in r["models"]], label=name, **series_style(i, i == 0))
    ax.set_xscale("log", base=2)
    fit_y(ax)
    finish(ax, "pool size M (pretraining tasks)", "error on fresh tasks, mean over k >= 1")
    fig.tight_layout()
    return [phase, save_figure(fig, folder / "fresh_error.png")]


ORACLE = {"own": "dmmse", "fresh": "ridge"}  # the Bayes predictor of each prompt set's prior: the ICL score's 1


def model_score(entry: dict, where: str) -> float | None:
    """The model's ICL score on `where` prompts, from its errors averaged over every k (Campbell et al.'s code):
    0 = predicting 0, 1 = the Bayes predictor of those prompts (dMMSE on the pool's tasks, ridge with
    lambda = sigma^2 on fresh ones)."""
    errors = entry[where]["errors"]
    return curve_score(errors["transformer"], errors["zero"], errors[ORACLE[where]])


def tables(r: dict) -> list[str]:
    rows = []
    for m in r["models"]:
        rows.append(
            [f"2^{round(math.log2(m['pool']))} = {m['pool']}", m["steps"]]
            + [mean_error(m, w, n) for w in ("own", "fresh") for n in ("transformer", "dmmse", "ridge")]
            + [m["fresh"]["to_dmmse"], m["fresh"]["to_ridge"], model_score(m, "own"), model_score(m, "fresh")]
        )
    header = [
        "pool M",
        "steps",
        "own: model",
        "own: dMMSE",
        "own: ridge",
        "fresh: model",
        "fresh: dMMSE",
        "fresh: ridge",
        "fresh: Δ dMMSE",
        "fresh: Δ ridge",
        "own: ICL score",
        "fresh: ICL score",
    ]
    return [
        "Mean error over k = 1 .. points-1 (own: the model's pool; fresh: Gaussian tasks), the distance Δ "
        f"({DISTANCE_TEXT[distance_of(r)]}) of the model's predictions to dMMSE's and ridge's on fresh tasks, "
        "and the model's ICL score (Campbell et al. 2024, from the mean errors over every k as their code computes "
        "it): 0 = predicting 0, 1 = the Bayes predictor of the prompts' prior (dMMSE on its own pool, ridge on "
        "fresh tasks):",
        "",
        *table(header, rows),
        "",
    ]


def section(folder: Path, stored: dict) -> list[str]:
    r = json.loads((folder / "results.json").read_text())
    trained = sum(m["train_seconds"] for m in r["models"])
    scoring = f"{r['scoring_seconds']:.0f} s" if "scoring_seconds" in r else "time not recorded"  # older files
    footer = (
        f"{len(r['models'])} models, {r['models'][0]['steps']} steps each, {trained:.0f} s of training; scoring "
        f"{scoring}. Numbers: `{folder.name}/results.json`."
    )
    return section_lines(RECIPE, folder, draw(r, folder), check_results(r), stored | {"tables": tables(r)}, footer)


RECIPE = Recipe(
    name=NAME,
    title="Task diversity: from the Bayes estimator of the pool (dMMSE) to ridge regression",
    claim=(
        "Pretrained on a finite pool of M linear-regression tasks (noise sigma = 0.5), a transformer tracks "
        "the Bayes estimator of that pool (dMMSE, the posterior-weighted mean of the M task vectors) while M is "
        "small, and so fails on fresh tasks; beyond a task-diversity threshold it tracks ridge regression with "
        "lambda = sigma^2, the Bayes estimator for the Gaussian prior, and solves fresh tasks (Raventos et al. "
        "2023: d = 8, threshold near 2^13 to 2^14 pretraining tasks after 500k steps)."
    ),
    differences=(
        "d = 4 instead of 8 and 2d + 1 = 9 points (16 in the paper); the demo's 3-layer, width-64 model instead "
        "of 8 layers and width 128; minutes of CPU training per model (batch 256, cosine lr 2e-3) instead of "
        "500k steps, so the threshold sits at smaller pools than the paper's and moves with the training length; "
        "pool sizes 2^1 .. 2^11 in steps of 4x (quick: 2, 64, 4096 after 300 steps); evaluation on 1,280 prompts "
        "per pool and prompt set (2^20 in the paper)."
    ),
    modes=SCALES,
    plan=plan,
    run=run,
    check=check_results,
    draw=draw,
    section=section,
    shipped=True,  # its full-size models ship (scripts/ship_pretrained.py)
)
