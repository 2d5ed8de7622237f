"""A model made for small regression tables, and how it compares on a real one: `iclab reproduce tabular`.

The model (configs/tabular.yaml, which says why its prior is what it is) is iclab.sklearn.ICLRegressor's default
and ships as pretrained/tabular. The recipe checks it twice:
- on prompts of its own prior, per linear class (dense at each noise level, sparse), against that class's Bayes
  predictor: ridge with alpha = noise_std^2 for a dense level (posterior_mean of that level; the rescaling by
  `renormalize` multiplies w and the noise alike, which leaves the posterior mean's penalty unchanged) and the
  posterior mean over the supports for the sparse class. The oracle knows the class; the model does not.
- on scikit-learn's diabetes table (442 x 10, bundled) and on Friedman #1 (make_friedman1: y = 10 sin(pi x1 x2) +
  20 (x3 - 0.5)^2 + 10 x4 + 5 x5 + noise on uniform inputs, five of its ten features unused; neither its
  uniform inputs nor its function are in the prior), repeated 5-fold cross-validation with the same folds for
  every method (iclab.tabular's cross_validate_table), beside the same model without whitening the features and
  a Garg-style model (dense_sparse).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..baselines import make_estimator
from ..config import Config
from ..evaluation.curves import ModelEstimator
from ..files import atomic_write_json, atomic_write_text
from ..markdown import table
from ..plotting import finish, fit_y, plt, save_figure, series_style
from ..provenance import provenance
from ..scoring import make_eval_set
from ..tabular import TableComparison, cross_validate_table, default_methods
from ..training.runs import load_model
from .common import check, section_lines
from .dryrun import Planned, icl_run
from .recipe import Recipe
from .sizes import SCALES, Sizes, Trained, training_config
from .trained import all_predictions, ensure_study_model, normalised, train_info

NAME = MODEL = "tabular"
# How far above its class's Bayes predictor the model may be on its own prior's prompts, in error normalised by
# E[y^2] (= 1 - R^2 on those prompts): the diabetes goal's 0.02 of R^2. A model further than that from the best
# possible predictor on the very functions it was trained for cannot be expected to come within 0.02 of ridge on
# a real table whose best fit is ridge-like.
MARGIN = 0.02
WINDOW = 8  # the margin is checked over the last 1/WINDOW of the context: the row counts the estimator uses
R2_GOAL = 0.02  # issue 22's goal: R^2 on diabetes within 0.02 of RidgeCV's
REFERENCE = "RidgeCV"
GARG_STYLE = "dense_sparse"  # a shipped Garg-style model (d = 5, 10 examples, dense + sparse linear), for comparison


@dataclass
class TabularSize(Trained):
    prompts: int = field(default=640, metadata={"min": 1})  # prior prompts per linear class
    folds: int = field(default=5, metadata={"min": 2})  # cross-validation folds
    repeats: int = field(default=3, metadata={"min": 1})  # repetitions of the k-fold split (other shuffles)
    n_estimators: int | None = field(default=None, metadata={"min": 1})  # ICLRegressor's (none: its default)
    friedman_rows: int = field(default=442, metadata={"min": 10})  # rows of the synthetic table (diabetes' count)
    methods: list[str] = field(default_factory=list)  # the comparison's methods (empty: every one)


SIZES = Sizes(NAME, TabularSize)  # scales/tabular/SCALE.yaml


def model_config(mode: str) -> Config:
    return training_config(SIZES[mode])


def plan(mode: str) -> list[Planned]:
    return [icl_run(f"models/{mode}/{MODEL}", model_config(mode))]


def oracle_classes(task: dict) -> dict[str, tuple[dict, dict]]:
    """label -> (task spec, oracle spec) for every class of the prior that has a Bayes predictor: noisy_linear
    (renormalized or not: ridge with alpha = noise_std^2 either way) and sparse_linear (its posterior mean)."""
    components = task["components"] if task["name"] == "mixture" else [task]
    out = {}
    for comp in components:
        spec = {k: v for k, v in comp.items() if k != "weight"}
        if spec["name"] == "noisy_linear":
            prior = {"name": "noisy_linear", "noise_std": spec.get("noise_std", 0.5)}
            out[f"dense, noise {prior['noise_std']:g}"] = (spec, {"name": "posterior_mean", "task": prior})
        elif spec["name"] in ("linear", "sparse_linear"):
            label = "dense, noiseless" if spec["name"] == "linear" else f"sparse, nnz {spec.get('nnz', 3)}"
            out[label] = (spec, {"name": "posterior_mean"})
    return out


def window_gap(model: torch.Tensor, oracle: torch.Tensor, points: int) -> tuple[float, float, int]:
    """Mean over prompts of the model's minus the oracle's normalised error, averaged over the last 1/WINDOW of
    the positions (at least one), with its standard error over prompts (paired: the same prompts and noise), and
    the first position of the window. `model`, `oracle`: (prompts, points) normalised squared errors."""
    start = points - max(1, points // WINDOW)
    diff = (model[:, start:] - oracle[:, start:]).mean(1)
    se = diff.std().item() / math.sqrt(len(diff)) if len(diff) > 1 else 0.0
    return diff.mean().item(), se, start


def prior_errors(model: torch.nn.Module, config: Config, prompts: int) -> dict:
    """For every class with an oracle: the error curves of the model, the oracle and the zero predictor, and the
    model's gap to the oracle over the window."""
    out = {}
    for label, (spec, oracle) in oracle_classes(config.task).items():
        evalset = make_eval_set(config, spec, prompts=prompts)
        ests = {"transformer": ModelEstimator(model), "oracle": make_estimator(oracle)}
        ests["zero"] = make_estimator("zero")
        errs = {n: normalised(p - evalset.targets.double(), evalset) for n, p in all_predictions(ests, evalset).items()}
        gap, se, start = window_gap(errs["transformer"], errs["oracle"], errs["oracle"].shape[1])
        out[label] = {
            "errors": {n: e.mean(0).tolist() for n, e in errs.items()},
            "gap": gap,
            "gap_se": se,
            "window_start": start,
        }
    return out


def tables_compared(run_dir: Path, size: dict, progress: bool = False) -> dict[str, TableComparison]:
    """The cross-validated comparison (iclab.tabular's methods, with the model at `run_dir` as the in-context
    learner) on diabetes and on Friedman #1."""
    from sklearn.base import clone
    from sklearn.datasets import load_diabetes, make_friedman1

    from ..sklearn import ICLRegressor  # here: iclab.sklearn needs scikit-learn, `iclab reproduce` does not

    data = {
        "diabetes": load_diabetes(return_X_y=True),
        "friedman1": make_friedman1(size["friedman_rows"], n_features=10, noise=1.0, random_state=0),
    }
    methods = default_methods(str(run_dir), seed=0)
    ours = icl_method(methods)
    # what whitening the features does: the same model on standardised features only; and a Garg-style model,
    # with the preprocessing that suits it best (whitening 10 features for 10 examples costs it R^2 on diabetes)
    beside = {f"{ours[:-1]}, not whitened)": clone(methods[ours]).set_params(whiten_x=False)}
    beside[f"ICL ({GARG_STYLE}, not whitened)"] = ICLRegressor(model=GARG_STYLE, whiten_x=False, random_state=0)
    methods = {ours: methods.pop(ours)} | beside | methods
    if size["n_estimators"]:
        for name in methods:
            if name.startswith("ICL"):
                methods[name].set_params(n_estimators=size["n_estimators"])
    if size["methods"]:
        methods = {m: est for m, est in methods.items() if m in size["methods"] or m == ours}
    say = (lambda line: print(f"  {line}", flush=True)) if progress else None
    return {
        name: cross_validate_table(x, y, methods, size["folds"], size["repeats"], seed=0, progress=say)
        for name, (x, y) in data.items()
    }


def icl_method(names) -> str:
    """The in-context learner's name among the comparison's methods."""
    return next(m for m in names if m.startswith("ICL"))


def comparison(stored: dict) -> TableComparison:
    """A TableComparison back from its stored to_dict()."""
    keys = ("folds", "repeats", "seed", "n_rows", "n_features")
    return TableComparison(stored["folds_rows"], **{k: stored[k] for k in keys})


def run(out: Path, mode: str, pretrained: bool, progress: bool) -> dict:
    started = time.perf_counter()
    size, config = SIZES[mode], model_config(mode)
    run_dir = ensure_study_model(MODEL, config, out, mode, pretrained, progress)
    model, _ = load_model(run_dir, config)
    results = {"mode": mode, "dims": config.dims, "context": config.points - 1, "margin": MARGIN}
    results["prior"] = prior_errors(model, config, size["prompts"])
    compared = tables_compared(run_dir, size, progress)
    results["tables"] = {name: c.to_dict() for name, c in compared.items()}
    results |= train_info(run_dir) | {"seconds": round(time.perf_counter() - started, 1)}
    results["provenance"] = provenance(seeds=[config.seed])
    folder = out / NAME
    atomic_write_json(folder / "results.json", results)
    for name, c in compared.items():
        atomic_write_text(folder / f"{name}.csv", c.summary_csv())
    draw(results, folder)
    return {"checks": check_results(results), "seconds": results["seconds"]}


def check_results(r: dict) -> list[dict]:
    prior = r["prior"]
    start = min(v["window_start"] for v in prior.values())
    gaps = ", ".join(f"{c}: {v['gap']:+.3f} ± {v['gap_se']:.3f}" for c, v in prior.items())
    out = [
        check(
            f"on prompts of each linear class of its prior, the model's error over its last {r['context'] + 1 - start}"
            f" context lengths is within {r['margin']:g} of that class's Bayes predictor",
            all(v["gap"] <= r["margin"] for v in prior.values()),
            f"model minus oracle, error / E[y^2] at k = {start} .. {r['context']} (± s.e. over prompts): {gaps}",
        )
    ]
    t = r["tables"]["diabetes"]
    ours, ref = t["summary"][icl_method(t["summary"])]["r2"], t["summary"][REFERENCE]["r2"]
    out.append(
        check(
            f"on diabetes (repeated {t['folds']}-fold CV) the in-context learner's R^2 is within {R2_GOAL:g} of "
            f"{REFERENCE}'s",
            ours["mean"] >= ref["mean"] - R2_GOAL,
            f"R^2 {ours['mean']:.3f} ± {ours['se']:.3f} vs {REFERENCE} {ref['mean']:.3f} ± {ref['se']:.3f} "
            f"({t['repeats']} x {t['folds']} folds, mean ± s.e.)",
        )
    )
    return out


def draw(r: dict, folder: Path) -> list[Path]:
    prior = r["prior"]
    cols = min(4, len(prior))
    rows = -(-len(prior) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.8 * rows), dpi=110, squeeze=False)
    for ax in axes.flat[len(prior) :]:
        ax.axis("off")
    for ax, (label, v) in zip(axes.flat, prior.items(), strict=False):
        for i, name in enumerate(("transformer", "oracle", "zero")):
            errs = v["errors"][name]
            ax.plot(range(len(errs)), errs, label=name, **series_style(i, name == "transformer", len(errs)))
        ax.axvspan(v["window_start"], len(v["errors"]["oracle"]) - 1, color="grey", alpha=0.15)
        fit_y(ax)
        finish(ax, "rows in context k", "error / E[y^2]", label, fontsize=6)
    fig.tight_layout()
    curves = save_figure(fig, folder / "prior.png")
    return [curves] + [comparison(t).plot(folder / f"{name}.png", name) for name, t in r["tables"].items()]


def tables(r: dict) -> list[str]:
    lines = ["Gap to each class's Bayes predictor over the window (error / E[y^2]; negative: below the oracle):", ""]
    lines += table(
        ["class", "model − oracle", "s.e.", "model", "oracle"],
        [[c, v["gap"], v["gap_se"], _window(v, "transformer"), _window(v, "oracle")] for c, v in r["prior"].items()],
    )
    for name, t in r["tables"].items():
        lines += ["", f"**{name}**:", "", comparison(t).to_markdown()]
    return lines + [""]


def _window(v: dict, name: str) -> float:
    errs = v["errors"][name][v["window_start"] :]
    return sum(errs) / len(errs)


def section(folder: Path, stored: dict) -> list[str]:
    r = json.loads((folder / "results.json").read_text())
    footer = (
        f"One model, {r['steps']} steps, {r['train_seconds']:.0f} s of training; the recipe {r['seconds']:.0f} s. "
        f"Numbers: `{folder.name}/results.json` (with every fold), `{folder.name}/diabetes.csv`, "
        f"`{folder.name}/friedman1.csv`."
    )
    return section_lines(RECIPE, folder, draw(r, folder), check_results(r), stored | {"tables": tables(r)}, footer)


RECIPE = Recipe(
    name=NAME,
    title="In-context learning on real tables: a model pretrained for them against ridge, forests and boosting",
    claim=(
        "A transformer pretrained on a synthetic prior of small regression tables predicts a real table in context, "
        "as TabPFN (Hollmann et al., Nature 2025) does with a far larger model and prior: on its own prior's linear "
        f"classes within {MARGIN:g} of the Bayes predictor, and on diabetes (442 x 10, repeated 5-fold CV) within "
        f"{R2_GOAL:g} of RidgeCV's R^2 (iclab's goal, issue 22)."
    ),
    differences=(
        "TabPFN's prior samples structural causal models and its model has 12 layers of width 512 trained on GPUs "
        "for days, with contexts of thousands of rows; ours is a 4-layer, width-64 transformer trained on one CPU "
        "thread (batch 32; its steps and seconds are below) on a mixture of linear (six noise levels), ReLU-network, "
        "sparse linear and tree functions of d = 10 isotropic Gaussian features, with 128 rows of context (the "
        "estimator standardises and whitens the features, standardises the target and subsamples longer tables per "
        "ensemble member)."
    ),
    modes=SCALES,
    plan=plan,
    run=run,
    check=check_results,
    draw=draw,
    section=section,
    shipped=True,  # its full-size model ships (pretrained/tabular)
)
