"""The momentum study's Markdown: its tables, the eta-by-eta verdicts and the report footer."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from ...markdown import cell, table
from ...stats import summarize
from .paired import direction, icl_values, lm_accuracy, lm_accuracy_values, lm_values, paired, pretrained_lm_part
from .settings import HOW_TO_RUN_LM, label


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
                [f"{task} ({100 * part['chance'][task]:.0f} %)", label(eta)]
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
    diff, se = paired(values, eta, queries)
    change = f"{100 * diff:+.1f} points (± {200 * se:.1f})"
    way = direction(diff, se)
    return f"**{way}**: {change}" if way else f"no clear change: {change}"


def tables(results: dict) -> list[str]:
    """Perplexity and in-context regression error per attention (mean ± s.e. over seeds), the verdicts, and the
    pretrained-LM part's table."""
    lm, icl, lengths = results["lm"], results["icl"], results["lm"]["lengths"]

    def mean_se(values: list[float], digits: int) -> str:
        return cell(summarize(values), digits=digits, spread="se")

    rows = []
    for eta in results["etas"]:
        perplexities = [r["perplexity"] for r in lm["runs"] if r["eta"] == eta]
        rows.append([label(eta)] + [mean_se([p[i] for p in perplexities], 1) for i in range(len(lengths))])
    lines = table(["attention"] + [f"ppl @ {n}" for n in lengths], rows)
    ks = sorted({1, icl["dims"] // 2, icl["dims"], icl["points"] - 1})
    rows = []
    for eta in results["etas"]:
        errors = [r["error"] for r in icl["runs"] if r["eta"] == eta]
        rows.append(
            [label(eta)]
            + [mean_se([e[k] for e in errors], 3) for k in ks]
            + [mean_se([statistics.fmean(e[1:]) for e in errors], 3)]
        )
    for name, e in icl["baselines"].items():
        rows.append([name] + [cell(e[k]) for k in ks] + [cell(statistics.fmean(e[1:]))])
    lines += [""] + table(["attention"] + [f"error @ k={k}" for k in ks] + ["mean over k ≥ 1"], rows)
    lines += [
        "",
        f"Means ± standard errors over {results['seeds']} seeds; every seed gives all attentions the same initial "
        "weights and the same batches.",
        "",
        "**Verdict**, eta by eta against standard attention (paired by seed; ± is 2 s.e.; a change counts beyond it):",
        "",
    ]
    for eta in results["etas"][1:]:
        text = describe(lm_values(results), eta)
        lines.append(
            f"- eta = {eta:g}: perplexity at {lengths[-1]} tokens {text}; in-context regression error "
            f"(mean over k ≥ 1) {describe(icl_values(results), eta)}."
        )
    return lines + [""] + pretrained_lm_table(results)


def describe(values: dict[float, dict[int, float]], eta: float) -> str:
    diff, se = paired(values, eta)
    base = statistics.fmean(values[0.0].values())
    way = direction(diff, se)
    if way:
        return f"**{way}** by {100 * abs(diff) / base:.1f} % (± {200 * se / base:.1f} %)"
    return f"no clear change ({100 * diff / base:+.1f} % ± {200 * se / base:.1f} %)"


def footer(results: dict, folder: Path) -> str:
    """What was trained and scored, and how long it took."""
    lm, icl = results["lm"], results["icl"]
    lm_train = [r["train_seconds"] for r in lm["runs"]]
    icl_train = [r["train_seconds"] for r in icl["runs"]]
    text = (
        f"Language models: {lm['model']}, {lm['parameters']:,} parameters, {lm['runs'][0]['steps']} steps of "
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
