"""Yadlowsky et al., finding 3: pretrained on linear functions and sinusoids, the model fails on their convex
combinations, most in the middle."""

from __future__ import annotations

from pathlib import Path

from ..evaluation.report import plot_sweep
from ..evaluation.sweeps import run_sweep
from .common import check, ks, value
from .sweep import sweep_recipe


def compute(models: dict[str, Path], setting: dict, progress: bool = False) -> list[dict]:
    runs = [models[m] for m in ("line_sine", "line", "sine")]
    return run_sweep("convex", runs, ["least_squares", "knn"], progress)


def check_rows(rows: list[dict], setting: dict | None = None) -> list[dict]:
    k = ks(rows)[-1]
    ends = value(rows, "line_sine", "alpha=0", k), value(rows, "line_sine", "alpha=1", k)
    mid = value(rows, "line_sine", "alpha=0.5", k)
    chord = sum(ends) / 2
    return [
        check(
            f"the mixture model's error at alpha = 0.5 exceeds both ends and their chord (k = {k})",
            mid > max(ends) and mid > chord,
            f"alpha=0 (sinusoid) {ends[0]:.3f}, alpha=0.5 {mid:.3f}, alpha=1 (linear) {ends[1]:.3f}, chord {chord:.3f}",
        ),
    ]


def draw(rows: list[dict], out: Path, setting: dict | None = None) -> list[Path]:
    k = ks(rows)[-1]
    return [plot_sweep(rows, k, out / "convex.png", "alpha * linear + (1 - alpha) * sinusoid", "alpha")]


RECIPE = sweep_recipe(
    name="convex",
    title="Convex combinations alpha * linear + (1 - alpha) * sinusoid",
    claim=(
        "A model pretrained on a mixture of linear functions and sinusoids handles each class, but fails on "
        "their convex combinations: the error at alpha near 0.5 rises above both ends (Yadlowsky et al. 2023, "
        "finding 3)."
    ),
    differences=(
        "Scalar inputs (d = 1), sinusoid frequencies in [0.5, 2], small CPU-trained models; errors are "
        "divided by the combination's E[y^2] = alpha^2 E[f^2] + (1 - alpha)^2 E[g^2] and read at the "
        "last position (k = 10)."
    ),
    models=("line", "sine", "line_sine"),
    compute=compute,
    check=check_rows,
    draw=draw,
)
