"""The momentum study's figures: perplexity, in-context regression error, the learned EMA's decays and the
pretrained LM's accuracy."""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from ...evaluation.report import save_figure
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
    for variant in results["variants"]:
        runs = [r for r in lm["runs"] if r["variant"] == variant]
        mean, lo, hi = _bands([r["perplexity"] for r in runs])
        width = 2.2 if variant == STANDARD else 1.4
        (line,) = ax1.plot(lengths, mean, marker="o", ms=3, label=label(variant), lw=width)
        ax1.fill_between(lengths, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
        if variant != STANDARD:
            diffs = [paired(lm_values(results, i), variant) for i in range(len(lengths))]
            base = [statistics.fmean(lm_values(results, i)[STANDARD].values()) for i in range(len(lengths))]
            rel = [100 * d / b for (d, _), b in zip(diffs, base, strict=True)]
            err = [200 * se / b for (_, se), b in zip(diffs, base, strict=True)]
            color = line.get_color()
            ax2.errorbar(lengths, rel, yerr=err, marker="o", ms=3, capsize=3, color=color, label=label(variant))
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.set_xlabel("context length (tokens)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax1.set_ylabel("validation perplexity")
    ax1.set_title(f"mean and range over {results['seeds']} seeds", fontsize=9)
    ax2.axhline(0, color="black", lw=0.8)
    ax2.set_ylabel("change vs standard attention (%)")
    ax2.set_title("paired by seed, ± 2 s.e.", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, folder / "momentum_lm.png")


def _draw_icl(results: dict, folder: Path) -> Path:
    icl = results["icl"]
    ks = list(range(icl["points"]))
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for variant in results["variants"]:
        mean, lo, hi = _bands([r["error"] for r in icl["runs"] if r["variant"] == variant])
        (line,) = ax.plot(ks, mean, label=label(variant), lw=2.2 if variant == STANDARD else 1.4)
        ax.fill_between(ks, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
    for name, errors in icl["baselines"].items():
        ax.plot(ks, errors, ls="--", lw=1.1, color="grey", label=name)
    ax.axvline(icl["dims"], color="grey", ls=":", lw=1)
    ax.set_ylim(0, 1.2)
    ax.set_xlabel("in-context examples k")
    ax.set_ylabel("error (normalised)")
    ax.set_title(f"dense linear regression, d = {icl['dims']}: mean and range over {results['seeds']} seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
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
        ax.set_xlabel("decay sigmoid(δ) per channel and component")
        ax.set_ylabel("density")
        ax.set_title(f"{name}: {len(runs)} seeds", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
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
        ax.axhline(100 * part["chance"][task], color="grey", ls=":", lw=1, label="chance")
        ax.set_xticks(etas, ["0\n(unpatched)" if e == 0 else f"{e:g}" for e in etas])
        ax.set_xlabel("momentum eta (patched in at inference)")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title(task, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"{Path(part['model']).name}, k = {part['k']}: mean ± 2 s.e. over {len(part['seeds'])} "
        "demonstration seeds (dots: seeds)",
        fontsize=9,
    )
    fig.tight_layout()
    return save_figure(fig, folder / "momentum_pretrained_lm.png")
