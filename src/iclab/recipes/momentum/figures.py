"""The momentum study's figures: perplexity, in-context regression error, the learned EMA's decays and the
pretrained LM's accuracy."""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from ...plotting import finish, fit_y, plt, reference_line, save_figure, series_style
from ...stats import summarize
from .paired import lm_accuracy_values, lm_values, paired, pretrained_lm_part
from .settings import STANDARD, label


def draw(results: dict, folder: Path) -> list[Path]:
    """The study's PNGs in `folder`: language models, in-context regression, the learned decays, and the
    pretrained LM if it ran."""
    figures = [_draw_lm(results, folder), _draw_icl(results, folder), _draw_decays(results, folder)]
    part = pretrained_lm_part(results)
    return figures + ([_draw_pretrained_lm(part, folder)] if part else [])


def _bands(values_by_seed: list[list[float]]) -> tuple[list[float], list[float], list[float]]:
    columns = list(zip(*values_by_seed, strict=True))
    return [statistics.fmean(c) for c in columns], [min(c) for c in columns], [max(c) for c in columns]


def _draw_lm(results: dict, folder: Path) -> Path:
    lm, lengths = results["lm"], results["lm"]["lengths"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.9), dpi=120)
    for i, variant in enumerate(results["variants"]):
        runs = [r for r in lm["runs"] if r["variant"] == variant]
        mean, lo, hi = _bands([r["perplexity"] for r in runs])
        (line,) = ax1.plot(lengths, mean, label=label(variant), **series_style(i, variant == STANDARD))
        ax1.fill_between(lengths, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
        if variant != STANDARD:
            diffs = [paired(lm_values(results, i), variant) for i in range(len(lengths))]
            base = [statistics.fmean(lm_values(results, i)[STANDARD].values()) for i in range(len(lengths))]
            rel = [100 * d / b for (d, _), b in zip(diffs, base, strict=True)]
            err = [200 * se / b for (_, se), b in zip(diffs, base, strict=True)]
            color = line.get_color()
            ax2.errorbar(lengths, rel, yerr=err, marker="o", ms=3, capsize=3, color=color, label=label(variant))
    reference_line(ax2, y=0, label="no change", color="black", ls="-", lw=0.8)
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [str(n) for n in lengths])
        fit_y(ax, zero=False)
    finish(ax1, "context length (tokens)", "validation perplexity", f"mean and range over {results['seeds']} seeds")
    finish(ax2, "context length (tokens)", "change vs standard attention (%)", "paired by seed, ± 2 s.e.")
    fig.tight_layout()
    return save_figure(fig, folder / "momentum_lm.png")


def _draw_icl(results: dict, folder: Path) -> Path:
    icl = results["icl"]
    ks = list(range(icl["points"]))
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    variants = results["variants"]
    for i, variant in enumerate(variants):
        mean, lo, hi = _bands([r["error"] for r in icl["runs"] if r["variant"] == variant])
        (line,) = ax.plot(ks, mean, label=label(variant), **series_style(i, variant == STANDARD, len(ks)))
        ax.fill_between(ks, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
    for i, (name, errors) in enumerate(icl["baselines"].items(), start=len(variants)):
        ax.plot(ks, errors, label=name, **series_style(i, points=len(ks)) | {"color": "grey", "lw": 1.1})
    reference_line(ax, x=icl["dims"], label=f"k = d = {icl['dims']}")
    fit_y(ax)
    title = f"dense linear regression, d = {icl['dims']}: mean and range over {results['seeds']} seeds"
    finish(ax, "in-context examples k", "error (normalised)", title)
    fig.tight_layout()
    return save_figure(fig, folder / "momentum_icl.png")


def _draw_decays(results: dict, folder: Path) -> Path:
    """What the learned EMA chose: per study and layer, the histogram of its decays sigmoid(delta) summed over
    seeds, beside the distribution they started from (sigmoid of N(0, 0.2))."""
    studies = [("language model", results["lm"]), ("in-context regression", results["icl"])]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=120)
    start = torch.sigmoid(0.2 * torch.randn(100_000, generator=torch.Generator().manual_seed(0)))
    for ax, (name, study) in zip(axes, studies, strict=True):
        runs = study["decays"]
        bins = len(runs[0]["layers"][0]["histogram"])
        edges = [i / bins for i in range(bins + 1)]
        for layer in range(len(runs[0]["layers"])):
            counts = [sum(c) for c in zip(*(r["layers"][layer]["histogram"] for r in runs), strict=True)]
            total = sum(counts)
            ax.stairs([bins * c / total for c in counts], edges, lw=1.6, label=f"layer {layer + 1}")
        initial = torch.histc(start, bins, 0, 1)
        ax.stairs((bins * initial / initial.sum()).tolist(), edges, color="grey", ls="--", lw=1, label="at init")
        ax.set_xlim(0, 1)
        finish(ax, "decay sigmoid(δ) per channel and component", "density", f"{name}: {len(runs)} seeds")
    fig.suptitle("learned EMA: the decays the models chose (1 = long memory, 0 = the current token only)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, folder / "momentum_decays.png")


def _draw_pretrained_lm(part: dict, folder: Path) -> Path:
    """Per task: accuracy against eta, ICL and ZSL (plain scoring), mean ± s.e. over seeds, each seed a dot."""
    tasks, etas = part["tasks"], part["etas"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.8), dpi=120, squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for key, name in (("icl", "ICL"), ("zsl", "ZSL")):
            values = lm_accuracy_values(part, task, key)
            stats = [summarize(values[e].values()) for e in etas]
            bars = ax.errorbar(
                etas, [100 * s.mean for s in stats], yerr=[200 * s.se for s in stats], marker="o", capsize=3, label=name
            )
            for e in etas:
                ax.plot(
                    [e] * len(values[e]),
                    [100 * v for v in values[e].values()],
                    ".",
                    color=bars[0].get_color(),
                    alpha=0.35,
                )
        reference_line(ax, y=100 * part["chance"][task], label="chance")
        ax.set_xticks(etas, ["0\n(unpatched)" if e == 0 else f"{e:g}" for e in etas])
        ax.set_ylim(0, 100)
        finish(ax, "momentum eta (patched in at inference)", "accuracy (%)", task)
    fig.suptitle(
        f"{Path(part['model']).name}, k = {part['k']}: mean ± 2 s.e. over {len(part['seeds'])} "
        "demonstration seeds (dots: seeds)",
        fontsize=9,
    )
    fig.tight_layout()
    return save_figure(fig, folder / "momentum_pretrained_lm.png")
