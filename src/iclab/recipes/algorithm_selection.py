"""Bai et al. (2023), in-context algorithm selection: one transformer pretrained on noisy linear regression with
several noise levels behaves, on each prompt, like ridge regression with that level's optimal penalty, which no
single fixed penalty does.

The levels are Bai et al.'s sigma, for their y = x.w / sqrt(d) + sigma * noise with w ~ N(0, I) (normalize_w in
allenbai01/transformers-as-statisticians, src/tasks.py). iclab's noisy_linear has no 1/sqrt(d), so a level runs as
noise_std = sigma * sqrt(d): the same signal-to-noise ratio, and the level's Bayes predictor is ridge with
lambda = d * sigma^2, Bai et al.'s own RIDGE_LAMS (0.2, 1.25, 5, 20 at d = 20); at sigma = 0 it is the
minimum-norm least-squares fit, ridge's lambda -> 0 limit."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..baselines import make_estimator
from ..config import Config
from ..errors import UserError
from ..evaluation.curves import ModelEstimator, curve_score
from ..files import atomic_write_json
from ..markdown import table
from ..plotting import finish, fit_y, plt, reference_line, save_figure, series_style
from ..scoring import make_eval_set
from ..training.runs import load_model
from .common import check, section_lines
from .dryrun import Planned, icl_run
from .recipe import Recipe
from .sizes import SCALES, Sizes, Trained, training_config
from .trained import all_predictions, ensure_study_model, normalised, train_info

NAME = "algorithm-selection"
MODEL = "noise_levels"
NOISE_STDS = [0.0, 0.1, 0.25, 0.5, 1.0]  # Bai et al.'s levels (src/conf/gpt/ridge_mtl.yaml and linear_regression)
EVALUATED = (0.1, 0.5)  # the two levels Bai et al.'s evaluation scores every model on (src/eval.py)
FIXED_ALPHAS = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]  # single penalties besides the levels' own


@dataclass
class AlgorithmSelectionSize(Trained):
    noise_stds: list[float] = field(default_factory=lambda: list(NOISE_STDS))  # the pretraining noise levels


SIZES = Sizes(NAME, AlgorithmSelectionSize)  # scales/algorithm-selection/SCALE.yaml


def level_task(std: float, dims: int) -> dict:
    """Bai et al.'s level sigma as an iclab task: noise_std = sigma * sqrt(d), since iclab's w is not divided by
    sqrt(d)."""
    return {"name": "noisy_linear", "noise_std": std * math.sqrt(dims)}


def mixture(stds: list[float], dims: int) -> dict:
    return {"name": "mixture", "components": [level_task(s, dims) | {"weight": 1} for s in stds]}


def level_optimum(std: float, dims: int) -> str:
    """The level's Bayes predictor: ridge with lambda = d * sigma^2, least squares (minimum norm) at sigma = 0."""
    return "least_squares" if std == 0 else f"ridge:alpha={dims * std**2:g}"


def model_config(mode: str) -> Config:
    # the file's set has train.loss: normalized: each prompt's loss divided by its level's E[y^2] = d (1 + sigma^2),
    # so that the noisiest level does not dominate
    size = SIZES[mode]
    dims = training_config(size).dims  # the scale's d, whether its file sets it or its base config does
    return training_config(size, {"task": mixture(size["noise_stds"], dims)})


def plan(mode: str) -> list[Planned]:
    return [icl_run(f"models/{mode}/{MODEL}", model_config(mode))]


def single_penalties(stds: list[float], dims: int) -> list[str]:
    """Every single penalty the model is compared with: the levels' own and FIXED_ALPHAS, in increasing lambda."""
    alphas = sorted({dims * s**2 for s in stds if s > 0} | set(FIXED_ALPHAS))
    return (["least_squares"] if 0 in stds else []) + [f"ridge:alpha={a:g}" for a in alphas]


def stds_of(r: dict) -> list[float]:
    return [float(s) for s in r["levels"]]


def run(out: Path, mode: str, pretrained: bool, progress: bool) -> dict:
    started = time.perf_counter()
    config = model_config(mode)
    run_dir = ensure_study_model(MODEL, config, out, mode, pretrained, progress)
    model, _ = load_model(run_dir, config)
    scored = time.perf_counter()
    levels, stds, d = {}, SIZES[mode]["noise_stds"], config.dims
    for std in stds:
        evalset = make_eval_set(config, level_task(std, d))
        ests = {"transformer": ModelEstimator(model), "zero": make_estimator("zero")}
        ests["oracle"] = make_estimator({"name": "posterior_mean", "task": mixture(stds, d)})
        ests |= {name: make_estimator(name) for name in single_penalties(stds, d)}
        preds = all_predictions(ests, evalset)
        errors = {n: normalised(p - evalset.targets.double(), evalset).mean(0).tolist() for n, p in preds.items()}
        levels[f"{std:g}"] = {"errors": errors, "own": level_optimum(std, d)}
    results = {"mode": mode, "dims": d, "levels": levels} | train_info(run_dir)
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
    """The ICL score from the errors averaged over every k (Campbell et al.'s code): 0 = predicting 0, 1 = the
    level's Bayes predictor (its own ridge)."""
    errors = level["errors"]
    return curve_score(errors[name], errors["zero"], errors[level["own"]])


def excess(r: dict, name: str) -> float:
    """Mean over the levels of the error above that level's optimum (its own ridge)."""
    return sum(mean_error(lv, name) - mean_error(lv, lv["own"]) for lv in r["levels"].values()) / len(r["levels"])


def check_results(r: dict) -> list[dict]:
    single = {name: excess(r, name) for name in single_penalties(stds_of(r), r["dims"])}
    best = min(single, key=single.get)
    out = [
        check(
            "averaged over the noise levels, the model is closer to each level's optimum (ridge at lambda = "
            "d sigma^2) than ridge with any single fixed lambda",
            excess(r, "transformer") < single[best],
            f"mean excess error over k >= 1: model {excess(r, 'transformer'):.4f}, best fixed {best} "
            f"{single[best]:.4f}, Bayes oracle over the mixture {excess(r, 'oracle'):.4f}",
        )
    ]
    # Bai et al. score every model at sigma = 0.1 and 0.5 against ridge tuned for each: the model should beat the
    # other level's penalty on each (other scales' levels: every level against every other level's)
    pair = [s for s in r["levels"] if float(s) in EVALUATED]
    compared = pair if len(pair) > 1 else list(r["levels"])
    for std in compared:
        lv = r["levels"][std]
        others = [r["levels"][s]["own"] for s in compared if s != std]
        model = mean_error(lv, "transformer")
        out.append(
            check(
                f"at sigma = {std} the model beats ridge tuned for "
                + ", ".join(f"sigma = {s}" for s in compared if s != std),
                all(model < mean_error(lv, o) for o in others),
                f"model {model:.4f}, own {lv['own']} {mean_error(lv, lv['own']):.4f}, "
                + ", ".join(f"{o} {mean_error(lv, o):.4f}" for o in others),
            )
        )
    return out


def draw(r: dict, folder: Path) -> list[Path]:
    levels = r["levels"]
    fig, axes = plt.subplots(1, len(levels), figsize=(3.4 * len(levels), 3.6), dpi=120, squeeze=False)
    for ax, (std, lv) in zip(axes[0], levels.items(), strict=True):
        names = ["transformer", "oracle"] + [other["own"] for other in levels.values()]
        ks = range(len(lv["errors"]["transformer"]))
        for i, name in enumerate(names):
            label = "Bayes oracle (mixture)" if name == "oracle" else name + (" (the level's)" * (name == lv["own"]))
            ax.plot(ks, lv["errors"][name], label=label, **series_style(i, name == "transformer", len(ks)))
        ax.set_yscale("log")
        # least squares is exact (1e-14) without noise: the floor keeps the comparison the figure is for in view
        fit_y(ax, floor=1e-3)
        finish(ax, "in-context examples k", "error (normalised)", f"noise sigma = {std}", fontsize=6)
    fig.tight_layout()
    curves = save_figure(fig, folder / "levels.png")
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    grid = [n for n in single_penalties(stds_of(r), r["dims"]) if n != "least_squares"]
    lambdas = [float(n.split("=")[1]) for n in grid]
    ax.plot(lambdas, [excess(r, n) for n in grid], label="ridge, one fixed lambda", **series_style(0))
    if "least_squares" in single_penalties(stds_of(r), r["dims"]):
        reference_line(ax, y=excess(r, "least_squares"), label="least squares (lambda = 0)")
    reference_line(ax, y=excess(r, "transformer"), label="transformer", color="C1", ls="-", lw=2)
    reference_line(ax, y=excess(r, "oracle"), label="Bayes oracle (mixture)", color="black", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")  # least squares' excess is 1,000x the others' under noise
    fit_y(ax)
    finish(ax, "lambda", "mean excess error over the levels")
    fig.tight_layout()
    return [curves, save_figure(fig, folder / "fixed_lambda.png")]


def tables(r: dict) -> list[str]:
    names = ["transformer", "oracle"] + [lv["own"] for lv in r["levels"].values()] + ["zero"]
    rows = [[n] + [mean_error(lv, n) for lv in r["levels"].values()] + [excess(r, n)] for n in names]
    header = ["estimator"] + [f"σ = {s}" for s in r["levels"]] + ["mean excess"]
    scores = [[n] + [level_score(lv, n) for lv in r["levels"].values()] for n in names[:-1]]
    return [
        "Mean error over k = 1 .. points-1 at each noise level, and the mean excess over each level's optimum:",
        "",
        *table(header, rows),
        "",
        "ICL score (Campbell et al. 2024) at each level, from the mean errors over every k as their code computes "
        "it: 0 = predicting 0, 1 = the level's Bayes predictor, ridge with lambda = d sigma^2 (the mixture's "
        "oracle, which does not know the level, scores below 1):",
        "",
        *table(["estimator"] + [f"σ = {s}" for s in r["levels"]], scores),
        "",
    ]


def section(folder: Path, stored: dict) -> list[str]:
    r = json.loads((folder / "results.json").read_text())
    if any(lv["own"] != level_optimum(float(s), r["dims"]) for s, lv in r["levels"].items()):
        raise UserError(
            "its results.json predates the levels of Bai et al.'s code (sigma for y = x.w / sqrt(d) + noise, "
            "2026-12-01)"
        )
    footer = (
        f"One model, {r['steps']} steps, {r['train_seconds']:.0f} s of training; scoring "
        f"{r.get('scoring_seconds', r['seconds']):.0f} s. Numbers: `{folder.name}/results.json`."
    )
    return section_lines(RECIPE, folder, draw(r, folder), check_results(r), stored | {"tables": tables(r)}, footer)


RECIPE = Recipe(
    name=NAME,
    title="In-context algorithm selection: one model, several noise levels, ridge with the right penalty",
    claim=(
        "Pretrained on noisy linear regression y = x.w / sqrt(d) + sigma * noise with noise levels sigma in "
        "{0, 0.1, 0.25, 0.5, 1}, one transformer behaves on each prompt like ridge regression with the penalty "
        "that is optimal for that prompt's noise level (lambda = d sigma^2 in their code), close to the Bayes "
        "predictor of the mixture, which no single fixed penalty achieves (Bai et al. 2023, 'Transformers as "
        "Statisticians', d = 20, 12 layers)."
    ),
    differences=(
        "d = 4 and 9 points instead of d = 20 (the same levels, so the same signal-to-noise ratios); the demo's "
        "3-layer, width-64 model trained for minutes on CPU on prompts that mix the levels, with the loss normalised "
        "per prompt by its level's E[y^2], where Bai et al. take one Adam step per level in turn for 300k "
        "iterations; errors normalised by E[y^2] (theirs are raw squared errors, a constant factor per level); "
        f"{len(single_penalties(NOISE_STDS, 4))} single penalties (least squares, the levels' own and "
        f"{len(single_penalties(NOISE_STDS, 4)) - len(NOISE_STDS)} more)."
    ),
    modes=SCALES,
    plan=plan,
    run=run,
    check=check_results,
    draw=draw,
    section=section,
    shipped=True,  # its full-size models ship (scripts/ship_pretrained.py)
)
