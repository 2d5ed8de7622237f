"""The seeds' own setting on a CPU (issue 24, item 3): a d = 20, 41-point dense + sparse (nnz = 2) mixture model
(src/iclab/configs/d20.yaml), evaluated on each class beside least squares, Lasso with alpha tuned per k
(`lasso_cv`) and the Bayes oracle of the mixture prior, with its time-to-quality curve (the validation error on the
mixture during training, against seconds). The paper's shape: below least squares for k < 20 on the sparse class,
at least-squares level (within 0.05) for k >= 20 on the dense class.

Train first (about 3 hours on 2 cores; it resumes after a stop):
    iclab train --config src/iclab/configs/d20.yaml --out runs/d20
then
    python benchmarks/d20.py [--run runs/d20] [--prompts 1280]
writes benchmarks/results/d20.json and docs/figures/d20/{curves,time}.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import _common
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from iclab.api import Run  # noqa: E402
from iclab.plotting import finish, reference_line, save_figure, series_style  # noqa: E402

FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures" / "d20"
CLASSES = {"dense": "linear", "sparse": "sparse_linear:nnz=2"}
ORACLE = "bayes:nnz=[20,2],weights=[0.5,0.5]"  # the posterior mean under the pretraining mixture
BASELINES = ["least_squares", "lasso_cv", ORACLE]
GAP = 0.05  # least-squares level
CONFIG = "src/iclab/configs/d20.yaml"


def curves(run: Run, prompts: int) -> dict[str, dict[str, list[float]]]:
    """class -> estimator -> mean error at k = 0 .. n - 1 on `prompts` fresh prompts of that class."""
    run.config.eval.prompts = prompts
    out = {}
    for label, task in CLASSES.items():
        rows = run.evaluate(task=task, baselines=BASELINES).rows
        names = list(dict.fromkeys(r["estimator"] for r in rows))
        out[label] = {
            ("model" if i == 0 else n): [r["mean"] for r in rows if r["estimator"] == n] for i, n in enumerate(names)
        }
    return out


def shape(errors: dict[str, dict[str, list[float]]], dims: int) -> dict:
    sparse, dense = errors["sparse"], errors["dense"]
    below = [k for k in range(1, dims) if sparse["model"][k] < sparse["least_squares"][k]]
    dense_gap = max(dense["model"][k] - dense["least_squares"][k] for k in range(dims, len(dense["model"])))
    return {
        "sparse_below_least_squares_at_k": below,
        "sparse_below_least_squares_for_every_k_below_d": len(below) == dims - 1,
        "dense_worst_gap_to_least_squares_k_ge_d": round(dense_gap, 4),
        "dense_at_least_squares_level_k_ge_d": dense_gap <= GAP,
    }


def draw_curves(errors: dict, dims: int) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120, sharey=True)
    for ax, (label, by_name) in zip(axes, errors.items(), strict=True):
        for i, (name, ys) in enumerate(by_name.items()):
            name = {"model": "transformer (d20.yaml)", ORACLE: "Bayes oracle (mixture prior)"}.get(name, name)
            ax.plot(range(len(ys)), ys, label=name, **series_style(i, i == 0, len(ys)))
        reference_line(ax, x=dims, label=f"k = d = {dims}")
        ax.set_ylim(0, 1.25)
        finish(ax, "in-context examples k", "squared error / E[y²]", f"{label} prompts (d = {dims})")
    return save_figure(fig, FIGURES / "curves.png")


def draw_time(metrics: list[dict], dims: int) -> Path:
    rows = [m for m in metrics if "val_error" in m]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for i, k in enumerate((dims // 2, dims, 2 * dims)):
        ax.plot(
            [r["seconds"] / 3600 for r in rows],
            [r["val_error"][k] for r in rows],
            label=f"k = {k}",
            **series_style(i, k == 2 * dims, len(rows)),
        )
    finish(ax, "training hours (2 cores, shared)", "validation error (mixture)", "time to quality, d = 20")
    return save_figure(fig, FIGURES / "time.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/d20", help="the trained d20.yaml run")
    parser.add_argument("--prompts", type=int, default=1280, help="evaluation prompts per class")
    args = parser.parse_args()
    if not (Path(args.run) / "config.json").is_file():
        parser.error(f"{args.run} holds no run; train it with iclab train --config {CONFIG} --out {args.run}")
    torch.set_num_threads(2)
    run = Run(args.run)
    dims = run.config.dims
    errors = curves(run, args.prompts)
    metrics = run.metrics
    figures = [draw_curves(errors, dims), draw_time(metrics, dims)]
    evaluations = [m for m in metrics if "val_error" in m]
    _common.write_result(
        "d20",
        {
            "run": args.run,
            "steps": run.step,
            "train_hours": round(evaluations[-1]["seconds"] / 3600, 2),
            "shape": shape(errors, dims),
            "errors": {label: {n: [round(v, 4) for v in ys] for n, ys in e.items()} for label, e in errors.items()},
            "time_to_quality": [
                {
                    "step": m["step"],
                    "hours": round(m["seconds"] / 3600, 2),
                    "val_error_k=d": m["val_error"][dims],
                    "val_error_k=2d": m["val_error"][2 * dims],
                }
                for m in evaluations
            ],
            "figures": [str(f.relative_to(FIGURES.parents[2])) for f in figures],
            "note": "errors are the mean squared error / E[y^2] (1 = the zero predictor) over the prompts of each "
            "class (model: the run's latest checkpoint); hours are wall-clock on a 2-core machine shared with "
            "other jobs, in pieces",
            "scale": _common.scale(parser, args, "prompts"),
        },
        seeds=[run.config.seed],
    )


if __name__ == "__main__":
    main()
