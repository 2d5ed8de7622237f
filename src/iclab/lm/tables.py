"""The lm study's numbers over seeds and its Markdown: `summarise` (mean and sd over demonstration seeds of every
number a (seed, model) result holds), `markdown` (OUT/results.md) and `summary_table` (one row per run folder)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..icl_vs_ft.engine import RANDOM_BASELINES, SCORINGS
from ..icl_vs_ft.metrics import MEASURES, VARIANT_MEASURES
from ..markdown import cell, table
from ..stats import Summary, summarize

KEYS = list(MEASURES)
VARIANT_NOTES = {
    "dai": "as Dai et al.'s code computes them",
    "dual": "iclab's dual-form reading of the Kendall measure",
}
CONDITIONS = ["zsl", "icl", "ft"]
UNTRAINED = {  # the baseline models a study may run, and their labels in the tables
    "untrained": "untrained (all fresh)",
    "untrained-deutch": "untrained (Deutch: embeddings, norms, unembedding kept)",
}


def _stats(values: list) -> dict | None:
    """{"mean", "sd", "n"} of the values that are defined (the keys results.json has always had), or None."""
    summary = summarize(values)
    return None if summary is None else summary.to_dict("mean", "sd", "n")


def summarise(config: Any, task, per_seed: dict[int, dict]) -> dict:
    """Mean and standard deviation over seeds of every number; the top level repeats the means. `config` is the
    study's `StudyConfig` (lm/study.py; not imported here, since study.py imports this module)."""
    seeds = list(per_seed)

    def collect(model: str, *path) -> dict | None:
        values = []
        for s in seeds:
            v = per_seed[s].get(model)
            for p in path:
                v = None if v is None else v.get(p)
            values.append(v)
        return _stats(values)

    def means(model: str, part: str, keys) -> dict:
        return {k: (collect(model, part, k) or {}).get("mean") for k in keys}

    spread = {}
    for model in config.models():
        spread[model] = {
            "accuracy": {c: collect(model, "accuracy", c) for c in CONDITIONS},
            "measures": {k: collect(model, "measures", k) for k in KEYS},
            "random": {k: collect(model, "random", k) for k in KEYS},
            "baselines": {b: {k: collect(model, "baselines", b, k) for k in KEYS} for b in RANDOM_BASELINES},
            "by_ft": {
                f: {
                    "accuracy": {c: collect(model, "by_ft", f, "accuracy", c) for c in CONDITIONS},
                    "measures": {k: collect(model, "by_ft", f, "measures", k) for k in KEYS},
                }
                for f in config.ft
            },
            "linear_gap": _layer_stats(per_seed, seeds, model),
            "scoring": {
                f"{c}.{mode}.{m}": collect(model, "scoring", c, mode, m)
                for c in CONDITIONS
                for mode in SCORINGS
                for m in ("accuracy", "top_label_share")
            },
        }
    trained = spread["trained"]
    results = {
        "model": config.model,
        "task": task.name,
        "task_description": task.description,
        "labels": task.words,
        "k": config.k,
        "k_used": sorted({per_seed[s]["trained"]["k_used"] for s in seeds}),
        "seeds": seeds,
        "test_queries": per_seed[seeds[0]]["trained"]["test"],
        "scoring": config.scoring,
        "ft": config.ft,
        "momentum": config.momentum,
        "measures": config.measures,
        "accuracy": means("trained", "accuracy", CONDITIONS),
    }
    results |= {k: (trained["measures"][k] or {}).get("mean") for k in KEYS}
    results["random"] = {k: (trained["random"][k] or {}).get("mean") for k in KEYS}
    if config.untrained:
        untrained = spread["untrained"]
        results["untrained"] = {
            "accuracy": means("untrained", "accuracy", CONDITIONS),
            **{k: (untrained["measures"][k] or {}).get("mean") for k in KEYS},
        }
    results["spread"] = spread
    results["per_seed"] = {str(s): per_seed[s] for s in seeds}
    results["settings"] = dataclasses.asdict(config)
    return results


def _layer_stats(per_seed: dict, seeds: list, model: str) -> list[dict | None]:
    """Per layer: the softmax-vs-linear gap's mean and sd over seeds."""
    rows = [per_seed[s][model].get("linear_gap") or [] for s in seeds if model in per_seed[s]]
    layers = max((len(r) for r in rows), default=0)
    return [_stats([r[i] if i < len(r) else None for r in rows]) for i in range(layers)]


def fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def sd_cell(entry: dict | None, percent: bool = False) -> str:
    """A stored {"mean", "sd", "n"} as "mean ± sd" (accuracies in % with one decimal, else three decimals)."""
    summary = Summary.from_dict(entry)
    return cell(summary, digits=1, spread="sd", scale=100) if percent else cell(summary, spread="sd")


def markdown(results: dict) -> list[str]:
    spread = results["spread"]
    n = len(results["seeds"])
    per = f"mean ± sd over {n} demonstration seeds" if n > 1 else f"demonstration seed {results['seeds'][0]}"
    momentum = results.get("momentum")
    variant = results.get("measures", "dual")
    title = f"# ICL vs finetuning: {results['model']} on {results['task']}"
    lines = [
        title + (f", momentum attention eta = {momentum:g}" if momentum is not None else ""),
        "",
        f"{results['task_description']}. k = {results['k']} demonstrations (used: "
        f"{', '.join(map(str, results['k_used']))}), {results['test_queries']} test queries, {per}; "
        f"Accuracy in % under every scoring (calibrated: contextual calibration; pmi: domain-conditional PMI); "
        f"the headline scoring, {results['scoring']}, gives Rec2FTP and picks FT's learning rate (FT under the other "
        f"scorings is the same finetuned model). Measures: the `{variant}` variant ({VARIANT_NOTES[variant]}).",
        "",
    ]
    if momentum is not None:
        lines += [momentum_note(momentum), ""]

    def scoring_table(metric: str, percent: bool) -> list[str]:
        rows = []
        for model in spread:
            for mode in SCORINGS:
                cells = [sd_cell(spread[model]["scoring"][f"{c}.{mode}.{metric}"], percent) for c in CONDITIONS]
                if not all(c == "n/a" for c in cells):
                    rows.append([model, mode, *cells])
        return table(["model", "scoring", "ZSL", "ICL", "FT"], rows, align="llrrr")

    lines += scoring_table("accuracy", True)
    lines += ["", "Share of predictions on the most predicted label (1.0: always the same label):", ""]
    lines += scoring_table("top_label_share", False)
    lines += [""] + measures_table(spread, variant, results.get("ft", ["kv-sgd"]))
    lrs = [p["trained"]["ft_lr"] for p in results["per_seed"].values()]
    chosen = ", ".join(_fmt_lr(x) for x in lrs)
    lines += [
        "",
        f"FT learning rate chosen per seed from {results['settings']['lrs']}: {chosen}. "
        f"Whole run {results.get('seconds', 0):.0f} s. Numbers: `results.json`.",
    ]
    return lines


def measures_table(spread: dict, variant: str, methods: list[str]) -> list[str]:
    """Every measure of the variant beside every baseline (for the first FT method), then the FT methods side by
    side, then the softmax-vs-linear gap per layer."""
    shown = VARIANT_MEASURES[variant]
    parts = {f"trained ({methods[0]})": ("trained", "measures")}
    parts |= {b: ("trained", "baselines", b) for b in RANDOM_BASELINES}
    parts |= {label: (m, "measures") for m, label in UNTRAINED.items() if m in spread}

    def at(path, key):
        entry = spread[path[0]]
        for p in path[1:]:
            entry = entry.get(p, {})
        return entry.get(key)

    lines = [f"Measures (`{variant}` variant) beside every baseline:", ""]
    rows = [[MEASURES[key]] + [sd_cell(at(path, key)) for path in parts.values()] for key in shown]
    lines += table(["measure", *parts], rows)
    if len(methods) > 1:
        header = ["measure"] + [f"{m} ({label})" for m in methods for label in ("trained", "Deutch untrained")]
        rows = []
        for key in ["accuracy FT"] + shown:
            row = [key if key == "accuracy FT" else MEASURES[key]]
            for m in methods:
                for model in ("trained", "untrained-deutch"):
                    ft = spread.get(model, {}).get("by_ft", {}).get(m)
                    if ft is None:
                        row.append("n/a")
                    elif key == "accuracy FT":
                        row.append(sd_cell(ft["accuracy"]["ft"], True))
                    else:
                        row.append(sd_cell(ft["measures"][key]))
            rows.append(row)
        lines += ["", "Finetuning methods on the same demonstrations in the same order (each its own lr grid):", ""]
        lines += table(header, rows)
    gaps = {m: spread[m].get("linear_gap") or [] for m in spread}
    if any(gaps.values()):
        layers = max(len(g) for g in gaps.values())
        title = "‖softmax attention output - its relaxed linear (dual) form‖ / ‖output‖ per layer, ICL queries:"
        lines += ["", title, ""]
        lines += table(
            ["model", *(f"layer {i}" for i in range(layers))],
            [[m] + [sd_cell(g[i]) if i < len(g) else "n/a" for i in range(layers)] for m, g in gaps.items()],
        )
    return lines


def momentum_note(eta: float) -> str:
    return (
        f"Momentum attention (Dai et al. 2023) patched in at inference with eta = {eta:g}: every layer adds "
        "sum_{i<t} eta^(t-i) v_i to its attention output, in ZSL, ICL and finetuning alike, for the trained and the "
        "untrained model. The model was trained without this term (Dai et al. trained with it), so this measures "
        "what adding it does to a model that never saw it."
    )


def _fmt_lr(lr) -> str:
    return "all diverged" if lr is None else f"{lr:g}"


def _with_baselines(trained: dict, untrained: dict | None, key: str) -> str:
    text = f"{sd_cell(trained['measures'][key])} ({sd_cell(trained['random'][key])}"
    return text + (f"; {sd_cell(untrained['measures'][key])})" if untrained else ")")


def summary_table(runs: list[dict]) -> list[str]:
    """One row per `lm run` folder: accuracies under both scorings and the measures beside their baselines."""
    rows = []
    for r in runs:
        t, u = r["spread"]["trained"], r["spread"].get("untrained")
        acc = [sd_cell(t["scoring"][f"{c}.{m}.accuracy"], True) for m in SCORINGS for c in CONDITIONS]
        simaou, kendall = (_with_baselines(t, u, key) for key in ("simaou", "kendall"))
        simam = f"{sd_cell(t['measures']['simam_icl_ft'])} / {sd_cell(t['measures']['simam_icl_zsl'])}"
        separator = r["settings"]["separator"].replace("\n", "\\n")  # a newline shows as \n
        notes = [] if separator == "eos" else [f"separator `{separator}`"]
        if r.get("momentum") is not None:
            notes.append(f"momentum η = {r['momentum']:g}")
        task = r["task"] + (f" ({', '.join(notes)})" if notes else "")
        rows.append([task, Path(r["model"]).name, str(len(r["seeds"])), *acc, sd_cell(t["measures"]["rec2ftp"])])
        rows[-1] += [simaou, simam, kendall]
    header = ["task", "model", "seeds", "ZSL", "ICL", "FT", "ZSL cal.", "ICL cal.", "FT cal.", "ZSL PMI", "ICL PMI"]
    header += ["FT PMI", "Rec2FTP"]
    header += ["SimAOU (random; untrained)", "SimAM ICL-FT / ICL-ZSL", "Kendall (random; untrained)"]
    return table(header, rows, align="ll" + "r" * (len(header) - 2))
