"""The icl-vs-ft recipe's figures: accuracies and Dai's measures against their baselines, and the measures against
ICL ability over pretraining."""

from __future__ import annotations

import math
from pathlib import Path

from ...icl_vs_ft.metrics import MEASURES, VARIANT_MEASURES
from ...plotting import finish, fit_y, plt, reference_line, save_figure
from .checks import emergence_rows, mean_of


def _bars(summary: dict, name: str, part: str, keys: list[str]) -> list[float]:
    """Means of `keys`; NaN (no bar) where the study has none, never a bar at 0."""
    values = [mean_of(summary, name, part, k) for k in keys]
    return [math.nan if v is None else v for v in values]


def draw(summary: dict, folder: Path) -> list[Path]:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120, gridspec_kw={"width_ratios": [1, 2]})
    for j, name in enumerate(("trained", "untrained")):
        ax1.bar(
            [x + 0.4 * j for x in range(3)], _bars(summary, name, "accuracy", ["zsl", "ft", "icl"]), 0.4, label=name
        )
    ax1.set_xticks([x + 0.2 for x in range(3)], ["ZSL", "FT", "ICL"])
    ax1.set_ylim(0, 1)
    finish(ax1, "condition", "accuracy", "accuracy")
    keys = ["simaou", "simam_icl_ft", "simam_icl_zsl", "kendall"]
    series = [
        ("trained", "measures", "trained"),
        ("trained", "random", "random update"),
        ("untrained", "measures", "untrained"),
    ]
    for j, (name, part, label) in enumerate(series):
        ax2.bar([x + 0.27 * j for x in range(4)], _bars(summary, name, part, keys), 0.27, label=label)
    ax2.set_xticks([x + 0.27 for x in range(4)], ["SimAOU", "SimAM ICL-FT", "SimAM ICL-ZSL", "Kendall"], fontsize=8)
    reference_line(ax2, y=0, label="no similarity", color="black", ls="-", lw=0.8)
    finish(ax2, "measure", "similarity", "similarity of ICL and FT", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return [save_figure(fig, folder / "icl_vs_ft.png")] + draw_emergence(summary, folder)


def draw_emergence(summary: dict, folder: Path) -> list[Path]:
    """Each Dai measure that moves against ICL's accuracy gain over the pretraining checkpoints (first and last
    labelled by step); the measures that stay constant are named in a line under the panels instead of a flat one."""
    rows = [r for r in emergence_rows(summary) if r[1] is not None]
    curves = {}
    for key in VARIANT_MEASURES["dai"]:
        points = [(gain, m[key], step) for step, gain, m in rows if m[key] is not None]
        if points:
            curves[key] = points
    moving = {k: p for k, p in curves.items() if len({round(y, 12) for _, y, _ in p}) > 1}
    if not moving:
        return []
    cols = min(4, len(moving))
    nrows = math.ceil(len(moving) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.3 * cols, 2.9 * nrows + 0.6), dpi=110, squeeze=False)
    for ax, (key, points) in zip(axes.flat, moving.items(), strict=False):
        ax.plot([p[0] for p in points], [p[1] for p in points], "-o", ms=4, color="C0")
        for (x, y, step), dx, side in ((points[0], 4, "left"), (points[-1], -4, "right")):
            ax.annotate(f"step {step}", (x, y), fontsize=7, xytext=(dx, 6), textcoords="offset points", ha=side)
        fit_y(ax, zero=False)
        finish(ax, "ICL accuracy − ZSL accuracy", MEASURES[key], legend=False)
        ax.xaxis.label.set_fontsize(8)
        ax.yaxis.label.set_fontsize(8)
    for ax in list(axes.flat)[len(moving) :]:
        ax.axis("off")
    constant = [f"{MEASURES[k]} = {p[0][1]:.3g}" for k, p in curves.items() if k not in moving]
    fig.suptitle("Dai's measures against ICL ability over pretraining (one point per checkpoint)", fontsize=10)
    if constant:
        fig.text(0.5, 0.01, "constant at every checkpoint: " + ", ".join(constant), ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.04 if constant else 0, 1, 1))
    return [save_figure(fig, folder / "emergence.png")]
