"""The momentum study's Markdown: its tables, the eta-by-eta verdicts and the report footer."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from statistics import NormalDist

from ...markdown import cell, table
from ...stats import summarize
from .paired import (
    direction,
    icl_values,
    lm_accuracy,
    lm_accuracy_values,
    lm_values,
    paired,
    pretrained_lm_part,
    supported,
)
from .settings import EMA, EMA_PAST, HOW_TO_RUN_LM, STANDARD, eta_label, label


def pretrained_lm_table(results: dict) -> list[str]:
    """Accuracies of the patched pretrained LM per task and eta, and eta-by-eta verdicts; one line if not run."""
    part = pretrained_lm_part(results)
    if part is None:
        why = (results.get("pretrained_lm") or {}).get("skipped", "these results predate it")
        return [f"**Momentum patched into a pretrained LM:** not run — {why}. To run it: {HOW_TO_RUN_LM}.", ""]

    columns = [
        ("zsl", "ZSL"),
        ("icl", "ICL"),
        ("gain", "ICL − ZSL"),
        ("zsl_calibrated", "ZSL cal."),
        ("icl_calibrated", "ICL cal."),
        ("ft", "FT"),
    ]
    lines = [
        f"**Momentum patched into a pretrained LM** ({Path(part['model']).name}, trained without the term): k = "
        f"{part['k']} demonstrations (used: {', '.join(map(str, part['k_used']))}), {part['test_queries']} test "
        f"queries per task, demonstration seeds {', '.join(map(str, part['seeds']))}; accuracy in %, mean ± s.e. "
        "over seeds; eta = 0 is the unpatched model; FT is K/V finetuning of the patched model. Every run scores "
        "the same test queries, so the ± (over demonstration draws) leaves out their sampling error, about "
        f"{100 * math.sqrt(0.25 / part['test_queries']):.0f} points for one accuracy near 50 % (ZSL does not "
        "depend on the demonstrations: ± 0).",
        "",
    ]
    rows = []
    for task in part["tasks"]:
        for eta in part["etas"]:
            runs = [r for r in part["runs"] if r["task"] == task and r["eta"] == eta]
            accuracies = [summarize(lm_accuracy(r, key) for r in runs) for key, _ in columns]
            share = summarize(r["icl_top_label_share"] for r in runs)
            rows.append(
                [f"{task} ({100 * part['chance'][task]:.0f} %)", eta_label(eta)]
                + [cell(a, digits=1, spread="se", scale=100) for a in accuracies]
                + [cell(share, digits=2)]
            )
    header = ["task (chance)", "attention"] + [name for _, name in columns] + ["ICL top-label share"]
    lines += table(header, rows, align="ll" + "r" * (len(header) - 2))
    lines += [
        "",
        "Eta by eta against the unpatched model (paired by demonstration seed; ± is 2 s.e., at least the sampling "
        "error of the queries that must have changed answer; a change counts beyond it):",
        "",
    ]
    for task in part["tasks"]:
        zsl, icl, gain = (lm_accuracy_values(part, task, key) for key in ("zsl", "icl", "gain"))
        n = part["test_queries"]
        for eta in part["etas"][1:]:
            lines.append(
                f"- {task}, eta = {eta:g}: ZSL accuracy {describe_points(zsl, eta, n)}; ICL accuracy "
                f"{describe_points(icl, eta, n)}; ICL's gain over ZSL {describe_points(gain, eta, n)}."
            )
    return lines + [""]


def describe_points(values: dict[float, dict[int, float]], eta: float, queries: int) -> str:
    """A paired change of an accuracy on `queries` test queries, in percentage points."""
    diff, se = paired(values, eta, 0.0, queries)
    change = f"{100 * diff:+.1f} points (± {200 * se:.1f})"
    way = direction(diff, se)
    return f"**{way}**: {change}" if way else f"no clear change: {change}"


def tables(results: dict) -> list[str]:
    """Which experiment is which; perplexity and in-context regression error per attention (mean ± s.e. over
    seeds); the verdicts and which variant supports the paper; the learned decays; the pretrained-LM part."""
    lm, icl, lengths = results["lm"], results["icl"], results["lm"]["lengths"]

    def mean_se(values: list[float], digits: int) -> str:
        return cell(summarize(values), digits=digits, spread="se")

    lines = [
        "Three experiments, kept apart: (1) **fixed eta trained in**: sum_{i<t} eta^(t-i) v_i added to attention, "
        "with eta fixed, in models trained from scratch; (2) **learned EMA trained in**: the authors' own momentum "
        "attention (their code, posted in microsoft/LMOps issue #9): per channel of the values, 8 EMA components "
        "with learned decays sigmoid(δ) and weights γ/√width, the current token included, added before the output "
        "projection, in models trained from scratch: **this one is Dai et al.'s experiment** (and, as an ablation, "
        "the same EMA over earlier tokens only, `model.ema_current: false`: the authors' EMA also gives each token's "
        "own value a direct path to the output, which is not momentum); (3) fixed eta **patched into a pretrained "
        "LM** at inference (below the tables, full mode only).",
        "",
    ]
    rows = []
    for variant in results["variants"]:
        runs = [r for r in lm["runs"] if r["variant"] == variant]
        rows.append(
            [label(variant)]
            + [mean_se([r["perplexity"][i] for r in runs], 1) for i in range(len(lengths))]
            + [f"{statistics.fmean(r['train_seconds'] for r in runs):.0f}"]
        )
    lines += table(["attention"] + [f"ppl @ {n}" for n in lengths] + ["train s/run"], rows)
    ks = sorted({1, icl["dims"] // 2, icl["dims"], icl["points"] - 1})
    rows = []
    for variant in results["variants"]:
        runs = [r for r in icl["runs"] if r["variant"] == variant]
        rows.append(
            [label(variant)]
            + [mean_se([r["error"][k] for r in runs], 3) for k in ks]
            + [mean_se([statistics.fmean(r["error"][1:]) for r in runs], 3)]
            + [f"{statistics.fmean(r['train_seconds'] for r in runs):.0f}"]
        )
    for name, e in icl["baselines"].items():
        rows.append([name] + [cell(e[k]) for k in ks] + [cell(statistics.fmean(e[1:])), ""])
    header = ["attention"] + [f"error @ k={k}" for k in ks] + ["mean over k ≥ 1", "train s/run"]
    lines += [""] + table(header, rows)
    lines += [
        "",
        f"Means ± standard errors over {results['seeds']} seeds, every attention trained for the same steps; every "
        "seed gives all attentions the same initial weights (the EMA's own parameters are drawn after them) and "
        "the same batches. Train s/run is wall time on a shared machine: rows trained under different load do not "
        "compare (benchmarks/momentum.py times the attentions against each other).",
        "",
        "**Verdict**, variant by variant against standard attention (paired by seed; ± is 2 s.e.; a change counts "
        "beyond it):",
        "",
    ]
    for variant in results["variants"][1:]:
        lines.append(
            f"- {label(variant)}: perplexity at {lengths[-1]} tokens {describe(lm_values(results), variant)}; "
            f"in-context regression error (mean over k ≥ 1) {describe(icl_values(results), variant)}."
        )
    return lines + ["", support_line(results), ""] + decay_table(results) + pretrained_lm_table(results)


def support_line(results: dict) -> str:
    """Which trained-in variant, if any, supports Dai et al.: lower perplexity *and* better in-context learning;
    and what the ablation without the current token says about the learned EMA's gain."""
    found = supported(results)
    what = {(True, True): "both", (True, False): "perplexity only", (False, True): "in-context error only"}
    yes = [g for g, (ppl, icl) in found.items() if ppl and icl]
    text = "**Does any variant support the paper?** "
    if yes:
        text += f"Yes: {' and '.join(yes)} lowered both perplexity and the in-context regression error here."
    else:
        text += "No: no variant lowered both perplexity and the in-context regression error here."
    text += " Lowered, beyond 2 s.e.: " + "; ".join(f"{g}: {what.get(v, 'neither')}" for g, v in found.items()) + "."
    ema, past = found.get(label(EMA)), found.get(label(EMA_PAST))
    if ema and past and ema[0] and not past[0]:
        text += (
            " Without the current token the learned EMA's perplexity gain disappears: it comes from each token's own "
            "value reaching the output through the EMA, not from momentum over earlier tokens."
        )
    return text + " (The best fixed eta is picked from its grid for each measure, which favours it.)"


# quantiles 10 / 50 / 90 % of the decays at initialisation, sigmoid(delta) with delta ~ N(0, 0.2)
START = [1 / (1 + math.exp(-0.2 * NormalDist().inv_cdf(q))) for q in (0.1, 0.5, 0.9)]


def decay_table(results: dict) -> list[str]:
    """The decays the learned EMA chose, per study and layer: quantiles over channels, components and seeds; and
    whether they moved from where they started."""
    rows, moved = [], 0.0
    for name, study in (("language model", results["lm"]), ("in-context regression", results["icl"])):
        for layer in range(len(study["decays"][0]["layers"])):
            runs = [r["layers"][layer] for r in study["decays"]]
            quantiles = [statistics.fmean(r["quantiles"][i] for r in runs) for i in range(3)]
            weighted = statistics.fmean(r["weighted_mean"] for r in runs)
            rows.append([name, str(layer + 1)] + [f"{q:.3f}" for q in quantiles] + [f"{weighted:.3f}"])
            moved = max(moved, *(abs(q - q0) for q, q0 in zip(quantiles, START, strict=True)))
    header = ["study", "layer", "decay 10 %", "median", "90 %", "mean weighted by abs(γ)"]
    text = (
        "**What the learned EMA chose** (figure `momentum_decays.png`): the decays sigmoid(δ) over channels and "
        f"components, quantiles averaged over seeds; they start at {START[0]:.3f} / {START[1]:.3f} / {START[2]:.3f} "
        "(δ ~ N(0, 0.2)). A decay p keeps a value for about 1/(1 − p) tokens."
    )
    if moved < 0.02:
        text += (
            " **The decays stayed where they started** (no quantile moved by 0.02 or more): in this training budget "
            "the models learned the EMA's weights γ, not its decays, so the learned EMA acted as a fixed mixture of "
            "short memories (about 2 tokens)."
        )
    return [text, "", *table(header, rows, align="llrrrr"), ""]


def describe(values: dict, variant: str) -> str:
    diff, se = paired(values, variant)
    base = statistics.fmean(values[STANDARD].values())
    way = direction(diff, se)
    if way:
        return f"**{way}** by {100 * abs(diff) / base:.1f} % (± {200 * se / base:.1f} %)"
    return f"no clear change ({100 * diff / base:+.1f} % ± {200 * se / base:.1f} %)"


def footer(results: dict, folder: Path) -> str:
    """What was trained and scored, and how long it took."""
    lm, icl = results["lm"], results["icl"]
    lm_train = [r["train_seconds"] for r in lm["runs"]]
    icl_train = [r["train_seconds"] for r in icl["runs"]]
    extra = lm["parameters"][EMA] - lm["parameters"][STANDARD], icl["parameters"][EMA] - icl["parameters"][STANDARD]
    text = (
        f"Language models: {lm['model']}, {lm['parameters'][STANDARD]:,} parameters (the learned EMA adds "
        f"{extra[0]:,}; {extra[1]:,} in the in-context regression models), {lm['runs'][0]['steps']} steps of "
        f"{lm['batch_size']} x {lm['context']} tokens on corpus `{lm['corpus']}` ({lm['train_tokens']:,} training "
        f"tokens, BPE vocabulary {lm['vocab']}); perplexity over {lm['tokens_scored']:,} validation tokens. "
        f"In-context regression: {icl['model']}, d = {icl['dims']}, {icl['points']} points, {icl['steps']} steps "
        f"of batch {icl['batch_size']}, {icl['prompts']} evaluation prompts. Training time summed over runs: "
        f"{sum(lm_train):.0f} s for the language models ({statistics.fmean(lm_train):.0f} s each, plus "
        f"{sum(r['eval_seconds'] for r in lm['runs']):.0f} s of scoring), {sum(icl_train):.0f} s for in-context "
        f"regression ({statistics.fmean(icl_train):.0f} s each); the last `reproduce` call took "
        f"{results['seconds']:.0f} s (finished runs in the output's models/ folder are reused). Numbers: "
        f"`{folder.name}/results.json`, `{folder.name}/icl_curves.csv`."
    )
    part = pretrained_lm_part(results)
    if part:
        text += (
            f" Pretrained LM: {part['seconds']:.0f} s for {len(part['runs'])} studies (task x eta x seed; FT "
            f"learning rate picked from {part['lrs']} on {part['val']} validation queries); every study's own "
            "results.json and results.md are in the output's models/ folder, under pretrained-lm/TASK/eta=E/."
        )
    return text
