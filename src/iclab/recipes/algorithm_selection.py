"""Bai et al. (2023), in-context algorithm selection: one transformer pretrained on noisy linear regression with
several noise levels behaves, on each prompt, like ridge regression with that level's optimal penalty
(lambda = sigma^2), which no single fixed penalty does."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt

from ..baselines import make_estimator
from ..config import Config
from ..evaluation.curves import TransformerEstimator, icl_score, make_eval_set
from ..evaluation.report import save_figure
from ..files import atomic_write_json
from ..markdown import table
from ..training.runs import load_model
from .common import check, section_lines
from .dryrun import Planned, icl_run
from .recipe import Recipe
from .sizes import SCALES, Sizes, Trained, training_config
from .trained import all_predictions, ensure_study_model, normalised, train_info

NAME = "algorithm-selection"
MODEL = "noise_levels"
# Bai et al.'s {0, 0.1, 0.25, 0.5, 1} in d = 20, spread wider for d = 4 (the quick and full scales' levels)
NOISE_STDS = [0.1, 0.5, 2.0]
FIXED_ALPHAS = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]  # single penalties besides the levels' own


@dataclass
class AlgorithmSelectionSize(Trained):
    noise_stds: list[float] = field(default_factory=lambda: list(NOISE_STDS))  # the pretraining noise levels


SIZES = Sizes(NAME, AlgorithmSelectionSize)  # scales/algorithm-selection/SCALE.yaml


def mixture(stds: list[float]) -> dict:
    parts = [{"name": "noisy_linear", "noise_std": s, "weight": 1} for s in stds]
    return {"name": "mixture", "components": parts}


def model_config(mode: str) -> Config:
    # the file's set has train.loss: normalized: each prompt's loss divided by its class's E[y^2] (d + sigma^2),
    # so that the noisiest level does not dominate
    return training_config(SIZES[mode], {"task": mixture(SIZES[mode]["noise_stds"])})


def plan(mode: str) -> list[Planned]:
    return [icl_run(f"models/{mode}/{MODEL}", model_config(mode))]


def alphas(stds: list[float]) -> list[float]:
    return sorted({s**2 for s in stds} | set(FIXED_ALPHAS))


def stds_of(r: dict) -> list[float]:
    return [float(s) for s in r["levels"]]


def run(out: Path, mode: str, pretrained: bool, progress: bool) -> dict:
    started = time.perf_counter()
    config = model_config(mode)
    run_dir = ensure_study_model(MODEL, config, out, mode, pretrained, progress)
    model, _ = load_model(run_dir, config)
    scored = time.perf_counter()
    levels, stds = {}, SIZES[mode]["noise_stds"]
    for std in stds:
        evalset = make_eval_set(config, {"name": "noisy_linear", "noise_std": std})
        ests = {"transformer": TransformerEstimator(model), "zero": make_estimator("zero")}
        ests["oracle"] = make_estimator({"name": "posterior_mean", "task": mixture(stds)})
        ests |= {f"ridge:alpha={a:g}": make_estimator(f"ridge:alpha={a:g}") for a in alphas(stds)}
        preds = all_predictions(ests, evalset)
        errors = {n: normalised(p - evalset.targets.double(), evalset).mean(0).tolist() for n, p in preds.items()}
        levels[f"{std:g}"] = {"errors": errors, "own": f"ridge:alpha={std**2:g}"}
    results = {"mode": mode, "dims": config.dims, "levels": levels} | train_info(run_dir)
    results["scoring_seconds"] = round(time.perf_counter() - scored, 1)
    results["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_json(out / NAME / "results.json", results)
    draw(results, out / NAME)
    return {"checks": check_results(results), "seconds": results["seconds"]}


def mean_error(level: dict, name: str) -> float:
    """The error averaged over k = 1 .. points-1."""
    errs = level["errors"][name][1:]
    return sum(errs) / len(errs)


def level_score(level: dict, name: str) -> float | None:
    """The ICL score from the mean errors: 0 = predicting 0, 1 = ridge at the level's own lambda, its Bayes
    predictor."""
    return icl_score(mean_error(level, name), mean_error(level, "zero"), mean_error(level, level["own"]))


def excess(r: dict, name: str) -> float:
    """Mean over the levels of the error above that level's optimum (ridge at its own lambda)."""
    return sum(mean_error(lv, name) - mean_error(lv, lv["own"]) for lv in r["levels"].values()) / len(r["levels"])


def check_results(r: dict) -> list[dict]:
    fixed = {f"ridge:alpha={a:g}": excess(r, f"ridge:alpha={a:g}") for a in alphas(stds_of(r))}
    best = min(fixed, key=fixed.get)
    out = [
        check(
            "averaged over the noise levels, the model is closer to each level's optimum (ridge at lambda = "
            "sigma^2) than ridge with any single fixed lambda",
            excess(r, "transformer") < fixed[best],
            f"mean excess error over k >= 1: model {excess(r, 'transformer'):.4f}, best fixed {best[6:]} "
            f"{fixed[best]:.4f}, Bayes oracle over the mixture {excess(r, 'oracle'):.4f}",
        )
    ]
    for std, lv in r["levels"].items():
        others = [f"ridge:alpha={float(s) ** 2:g}" for s in r["levels"] if s != std]
        model = mean_error(lv, "transformer")
        out.append(
            check(
                f"at sigma = {std} the model beats ridge tuned for the other levels",
                all(model < mean_error(lv, o) for o in others),
                f"model {model:.4f}, own {lv['own'][6:]} {mean_error(lv, lv['own']):.4f}, "
                + ", ".join(f"{o[6:]} {mean_error(lv, o):.4f}" for o in others),
            )
        )
    return out


def draw(r: dict, folder: Path) -> list[Path]:
    levels = r["levels"]
    fig, axes = plt.subplots(1, len(levels), figsize=(4 * len(levels), 3.6), dpi=120)
    for ax, (std, lv) in zip(axes, levels.items(), strict=True):
        ks = range(len(lv["errors"]["transformer"]))
        ax.plot(ks, lv["errors"]["transformer"], lw=2.4, label="transformer")
        ax.plot(ks, lv["errors"]["oracle"], "k--", lw=1.2, label="Bayes oracle (mixture)")
        for s in levels:
            name = f"ridge:alpha={float(s) ** 2:g}"
            ax.plot(ks, lv["errors"][name], ls=":" if name != lv["own"] else "-.", lw=1.2, label=name[6:])
        ax.set_yscale("log")
        ax.set_title(f"noise sigma = {std}")
        ax.set_xlabel("in-context examples k")
        ax.set_ylabel("error (normalised)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    curves = save_figure(fig, folder / "levels.png")
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    grid = alphas(stds_of(r))
    ax.plot(grid, [excess(r, f"ridge:alpha={a:g}") for a in grid], "o-", label="ridge with one fixed lambda")
    ax.axhline(excess(r, "transformer"), color="C1", lw=2, label="transformer")
    ax.axhline(excess(r, "oracle"), color="black", ls="--", lw=1, label="Bayes oracle (mixture)")
    ax.set_xscale("log")
    ax.set_xlabel("lambda")
    ax.set_ylabel("mean excess error over the levels")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return [curves, save_figure(fig, folder / "fixed_lambda.png")]


def tables(r: dict) -> list[str]:
    names = ["transformer", "oracle"] + [f"ridge:alpha={float(s) ** 2:g}" for s in r["levels"]] + ["zero"]
    rows = [[n] + [mean_error(lv, n) for lv in r["levels"].values()] + [excess(r, n)] for n in names]
    header = ["estimator"] + [f"σ = {s}" for s in r["levels"]] + ["mean excess"]
    scores = [[n] + [level_score(lv, n) for lv in r["levels"].values()] for n in names[:-1]]
    return [
        "Mean error over k = 1 .. points-1 at each noise level, and the mean excess over each level's optimum:",
        "",
        *table(header, rows),
        "",
        "ICL score (Campbell et al. 2024) at each level, from those mean errors: 0 = predicting 0, 1 = ridge with "
        "that level's lambda = sigma^2, the level's Bayes predictor (the mixture's oracle, which does not know the "
        "level, scores below 1):",
        "",
        *table(["estimator"] + [f"σ = {s}" for s in r["levels"]], scores),
        "",
    ]


def section(folder: Path, stored: dict) -> list[str]:
    r = json.loads((folder / "results.json").read_text())
    footer = (
        f"One model, {r['steps']} steps, {r['train_seconds']:.0f} s of training; scoring "
        f"{r.get('scoring_seconds', r['seconds']):.0f} s. Numbers: `{folder.name}/results.json`."
    )
    return section_lines(RECIPE, folder, draw(r, folder), check_results(r), stored | {"tables": tables(r)}, footer)


RECIPE = Recipe(
    name=NAME,
    title="In-context algorithm selection: one model, several noise levels, ridge with the right penalty",
    claim=(
        "Pretrained on noisy linear regression with noise levels sigma in {0, 0.1, 0.25, 0.5, 1}, one transformer "
        "behaves on each prompt like ridge regression with the penalty that is optimal for that prompt's noise "
        "level (lambda = sigma^2), close to the Bayes predictor of the mixture, which no single fixed penalty "
        "achieves (Bai et al. 2023, 'Transformers as Statisticians', d = 20, 12 layers)."
    ),
    differences=(
        f"d = 4 and 9 points instead of d = 20; three noise levels sigma in {NOISE_STDS}, spread wider so that "
        "the levels' penalties differ at this size; the demo's 3-layer, width-64 model trained for minutes on CPU "
        "with the loss normalised per prompt by its class's E[y^2]; single penalties from a grid of "
        f"{len(alphas(NOISE_STDS))} values."
    ),
    modes=SCALES,
    plan=plan,
    run=run,
    check=check_results,
    draw=draw,
    section=section,
    shipped=True,  # its full-size models ship (scripts/ship_pretrained.py)
)
