"""The icl-vs-ft recipe's figures: accuracies and Dai's measures against their baselines, and the measures against
ICL ability over pretraining."""

from __future__ import annotations

from pathlib import Path

from ...icl_vs_ft.metrics import MEASURES, VARIANT_MEASURES
from ...plotting import plt, save_figure
from .checks import emergence_rows, mean_of


def draw(summary: dict, folder: Path) -> list[Path]:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120, gridspec_kw={"width_ratios": [1, 2]})
    for j, name in enumerate(("trained", "untrained")):
        vals = [mean_of(summary, name, "accuracy", k) or 0 for k in ("zsl", "ft", "icl")]
        ax1.bar([x + 0.4 * j for x in range(3)], vals, width=0.4, label=name)
    ax1.set_xticks([x + 0.2 for x in range(3)], ["ZSL", "FT", "ICL"])
    ax1.set_ylim(0, 1)
    ax1.set_title("accuracy")
    ax1.legend(fontsize=8)
    keys = ["simaou", "simam_icl_ft", "simam_icl_zsl", "kendall"]
    series = [("trained", "measures"), ("trained", "random"), ("untrained", "measures")]
    for j, (name, part) in enumerate(series):
        vals = [mean_of(summary, name, part, k) or 0 for k in keys]
        label = {"measures": name, "random": "random update"}[part] if part == "random" else name
        ax2.bar([x + 0.27 * j for x in range(4)], vals, width=0.27, label=label)
    ax2.set_xticks([x + 0.27 for x in range(4)], ["SimAOU", "SimAM ICL-FT", "SimAM ICL-ZSL", "Kendall"], fontsize=8)
    ax2.axhline(0, color="black", lw=0.8)
    ax2.set_title("similarity of ICL and FT")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return [save_figure(fig, folder / "icl_vs_ft.png")] + draw_emergence(summary, folder)


def draw_emergence(summary: dict, folder: Path) -> list[Path]:
    """Each Dai measure against ICL's accuracy gain at every pretraining checkpoint (labelled by step)."""
    rows = [r for r in emergence_rows(summary) if r[1] is not None]
    if not rows:
        return []
    keys = VARIANT_MEASURES["dai"]
    fig, axes = plt.subplots(3, 4, figsize=(12, 8), dpi=100)
    for ax, key in zip(axes.flat, keys, strict=False):
        points = [(gain, m[key], step) for step, gain, m in rows if m[key] is not None]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], "-o", ms=4)
            for x, y, step in points:
                ax.annotate(str(step), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_title(MEASURES[key], fontsize=9)
        ax.set_xlabel("ICL accuracy - ZSL accuracy", fontsize=8)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.suptitle("Dai's measures against ICL ability over pretraining (points: checkpoint steps)")
    fig.tight_layout()
    return [save_figure(fig, folder / "emergence.png")]
