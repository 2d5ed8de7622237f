"""The study's results over demonstration seeds or task instances, and its Markdown: one home for `iclab lm run`
(OUT/results.md, `iclab lm summary`, the k sweep) and the icl-vs-ft recipe's report.

`as_dict` stores one `StudyResult`; `summarise` gives mean, sd, se and n (iclab.stats.summarize) of every number
over a list of them; the table builders read those summaries. Every table shows mean ± s.e. (`SPREAD`) and says
so in its first header cell."""

from __future__ import annotations

from pathlib import Path

from ..markdown import cell, table
from ..stats import Summary, summarize
from .conditions import RANDOM_BASELINES, SCORINGS, StudyResult
from .finetune import FT_METHODS
from .metrics import MEASURES, VARIANT_MEASURES

CONDITIONS = ("zsl", "icl", "ft")
KEYS = list(MEASURES)
SPREAD = "se"  # the one spread of every table: the standard error of the mean
UNTRAINED = {  # the baseline models a study may run, and their labels in the tables
    "untrained": "untrained (all fresh)",
    "untrained-deutch": "untrained (Deutch: embeddings, norms, unembedding kept)",
}
VARIANT_NOTES = {
    "dai": "as Dai et al.'s code computes them",
    "dual": "iclab's dual-form reading of the Kendall measure",
}


def as_dict(r: StudyResult) -> dict:
    """One study's result as JSON (what `summarise` reads)."""
    keys = ("accuracy", "measures", "random", "ft_lr", "ft_grid", "per_layer", "scoring", "variant", "ft")
    return {k: getattr(r, k) for k in keys} | {"baselines": r.baselines, "linear_gap": r.linear_gap}


def _at(part: object, path: tuple) -> object:
    """part[path[0]][path[1]]...: None where a key or list index is missing."""
    for p in path:
        if isinstance(part, dict):
            part = part.get(p)
        else:
            part = part[p] if isinstance(part, list) and p < len(part) else None
    return part


def summarise(parts: list[dict]) -> dict:
    """Mean, sd, se and n over seeds or instances of every number of one model's results (each `as_dict`):
    accuracy, measures, random, baselines, linear_gap (per layer), scoring ("icl.pmi.accuracy", ...); None where no
    part defines it. Also every part's chosen learning rate (`ft_lr`) and how many diverged (`ft_failed`)."""

    def over(*path) -> dict | None:
        summary = summarize(_at(p, path) for p in parts)
        return None if summary is None else summary.to_dict()

    first = parts[0]
    out = {part: {k: over(part, k) for k in first[part]} for part in ("accuracy", "measures", "random")}
    out["baselines"] = {b: {k: over("baselines", b, k) for k in first["baselines"][b]} for b in RANDOM_BASELINES}
    out["linear_gap"] = [over("linear_gap", i) for i in range(max(len(p.get("linear_gap") or []) for p in parts))]
    out["scoring"] = {
        f"{c}.{mode}.{m}": over("scoring", c, mode, m)
        for c in CONDITIONS
        for mode in SCORINGS
        for m in ("accuracy", "top_label_share")
    }
    out["ft_lr"] = [p["ft_lr"] for p in parts]
    out["ft_failed"] = sum(p["ft_lr"] is None for p in parts)
    return out


def spread_note(n: int, unit: str = "seeds") -> str:
    """What a table's numbers are, for its first header cell: "mean ± s.e. over 3 seeds"."""
    return f"mean ± s.e. over {n} {unit}" if n > 1 else f"one {unit.rstrip('s')}"


def value(entry: dict | None, percent: bool = False) -> str:
    """A stored summary as "mean ± s.e." (accuracies in % with one decimal, else three decimals); n/a if None."""
    summary = Summary.from_dict(entry)
    return cell(summary, digits=1, spread=SPREAD, scale=100) if percent else cell(summary, spread=SPREAD)


def fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _scoring(summary: dict) -> dict:
    # a recipe results.json written before scorings were stored holds plain accuracies only
    return summary.get("scoring") or {f"{c}.plain.accuracy": summary["accuracy"].get(c) for c in CONDITIONS}


def accuracy_tables(models: dict[str, dict], note: str) -> list[str]:
    """Accuracy (%) and the share of predictions on the most predicted label, per model and scoring (rows where a
    scoring was not computed are left out); `models`: model -> its `summarise`."""

    def rows(metric: str, percent: bool) -> list[list[str]]:
        out = []
        for model, summary in models.items():
            for mode in SCORINGS:
                cells = [value(_scoring(summary).get(f"{c}.{mode}.{metric}"), percent) for c in CONDITIONS]
                if not all(c == "n/a" for c in cells):
                    out.append([model, mode, *cells])
        return out

    lines = table([f"model (accuracy %, {note})", "scoring", "ZSL", "ICL", "FT"], rows("accuracy", True), align="llrrr")
    share = rows("top_label_share", False)
    if share:
        lines += ["", "Share of predictions on the most predicted label (1.0: always the same label):", ""]
        lines += table([f"model ({note})", "scoring", "ZSL", "ICL", "FT"], share, align="llrrr")
    return lines


def measures_tables(by_model: dict[str, dict[str, dict]], variant: str, methods: list[str], note: str) -> list[str]:
    """Every measure of the variant beside every baseline (for the first FT method), then, with several methods,
    the FT methods side by side on the trained and Deutch's untrained model. `by_model`: model -> FT method ->
    its `summarise`."""
    shown = VARIANT_MEASURES[variant]
    columns = {f"trained ({methods[0]})": by_model["trained"][methods[0]]["measures"]} | _baselines(by_model, methods)
    rows = [[MEASURES[key]] + [value(c.get(key)) for c in columns.values()] for key in shown]
    lines = [f"Measures (`{variant}` variant, {VARIANT_NOTES[variant]}) beside every baseline:", ""]
    lines += table([f"measure ({note})", *columns], rows)
    if len(methods) > 1:
        models = [m for m in ("trained", "untrained-deutch") if m in by_model]
        header = [f"measure ({note})"] + [f"{f} ({m})" for f in methods for m in models]
        pairs = [by_model[m][f] for f in methods for m in models]
        rows = [["FT accuracy %"] + [value(s["accuracy"].get("ft"), True) for s in pairs]]
        rows += [[MEASURES[key]] + [value(s["measures"].get(key)) for s in pairs] for key in shown]
        lines += ["", f"Finetuning methods on the same demonstrations in the same order (`{variant}` measures, each "
                  "method its own learning-rate grid):", ""]
        lines += table(header, rows)
    return lines


def _baselines(by_model: dict[str, dict[str, dict]], methods: list[str]) -> dict[str, dict]:
    """Label -> measures of every baseline of the first FT method: the random updates, then the untrained models."""
    trained = by_model["trained"][methods[0]]
    columns = {b: trained["baselines"].get(b, {}) for b in RANDOM_BASELINES}
    return columns | {label: by_model[m][methods[0]]["measures"] for m, label in UNTRAINED.items() if m in by_model}


def gap_table(models: dict[str, dict], note: str) -> list[str]:
    """Per layer, how far the dual form is from what the layer computes; `models`: model -> its `summarise`."""
    gaps = {m: s.get("linear_gap") or [] for m, s in models.items()}
    if not any(gaps.values()):
        return []
    layers = max(len(g) for g in gaps.values())
    lines = ["‖softmax attention output - its relaxed linear (dual) form‖ / ‖output‖ per layer, ICL queries:", ""]
    return lines + table(
        [f"model ({note})", *(f"layer {i}" for i in range(layers))],
        [[m] + [value(g[i]) if i < len(g) else "n/a" for i in range(layers)] for m, g in gaps.items()],
    )


def markdown(results: dict, notes: list[str] = ()) -> list[str]:
    """OUT/results.md of `iclab lm run`: the accuracy, measures and gap tables, after `notes` (e.g. momentum)."""
    spread, seeds = results["spread"], results["seeds"]
    note = spread_note(len(seeds)) if len(seeds) > 1 else f"demonstration seed {seeds[0]}"
    momentum = results.get("momentum")
    variant = results.get("measures", "dual")
    methods = results.get("ft", ["kv-sgd"])
    title = f"# ICL vs finetuning: {results['model']} on {results['task']}"
    lines = [
        title + (f", momentum attention eta = {momentum:g}" if momentum is not None else ""),
        "",
        f"{results['task_description']}. k = {results['k']} demonstrations (used: "
        f"{', '.join(map(str, results['k_used']))}), {results['test_queries']} test queries, {len(seeds)} "
        f"demonstration seeds. Every scoring is reported (calibrated: contextual calibration; pmi: domain-conditional "
        f"PMI); the headline scoring, {results['scoring']}, gives Rec2FTP and picks FT's learning rate (FT under "
        "the other scorings is the same finetuned model).",
        "",
    ]
    for n in notes:
        lines += [n, ""]
    lines += accuracy_tables(spread, note) + [""]
    lines += measures_tables({m: s["by_ft"] for m, s in spread.items()}, variant, methods, note)
    lines += [""] + gap_table(spread, note)
    lrs = [p["trained"]["ft_lr"] for p in results["per_seed"].values()]
    chosen = ", ".join("all diverged" if lr is None else f"{lr:g}" for lr in lrs)
    lines += [
        "",
        f"FT learning rate chosen per seed from {results['settings']['lrs']}: {chosen}. "
        f"Whole run {results.get('seconds', 0):.0f} s. Numbers: `results.json`.",
    ]
    return lines


def _with_baselines(trained: dict, untrained: dict | None, key: str) -> str:
    text = f"{value(trained['measures'].get(key))} ({value(trained['random'].get(key))}"
    return text + (f"; {value(untrained['measures'].get(key))})" if untrained else ")")


def summary_table(runs: list[dict]) -> list[str]:
    """One row per `lm run` folder: accuracies under every scoring and the measures beside their baselines."""
    rows = []
    for r in runs:
        t, u = r["spread"]["trained"], r["spread"].get("untrained")
        acc = [value(t["scoring"].get(f"{c}.{m}.accuracy"), True) for m in SCORINGS for c in CONDITIONS]
        simaou, kendall = (_with_baselines(t, u, key) for key in ("simaou", "kendall"))
        simam = f"{value(t['measures'].get('simam_icl_ft'))} / {value(t['measures'].get('simam_icl_zsl'))}"
        separator = r["settings"]["separator"].replace("\n", "\\n")  # a newline shows as \n
        notes = [] if separator == "eos" else [f"separator `{separator}`"]
        if r.get("momentum") is not None:
            notes.append(f"momentum η = {r['momentum']:g}")
        task = r["task"] + (f" ({', '.join(notes)})" if notes else "")
        rows.append([task, Path(r["model"]).name, str(len(r["seeds"])), *acc, value(t["measures"].get("rec2ftp"))])
        rows[-1] += [simaou, simam, kendall]
    header = ["task (mean ± s.e. over seeds)", "model", "seeds", "ZSL", "ICL", "FT", "ZSL cal.", "ICL cal."]
    header += ["FT cal.", "ZSL PMI", "ICL PMI", "FT PMI", "Rec2FTP"]
    header += ["SimAOU (random; untrained)", "SimAM ICL-FT / ICL-ZSL", "Kendall (random; untrained)"]
    return table(header, rows, align="ll" + "r" * (len(header) - 2))


def measures_summary_table(runs: list[dict]) -> list[str]:
    """One row per (`lm run` folder, measure of its variant): the trained model under each FT method it ran, and
    every baseline (of its first method); n/a where a run has no such column, — where it has no such number
    (a random update has no accuracy)."""
    header = [f"trained, FT {f}" for f in FT_METHODS] + [*RANDOM_BASELINES, *UNTRAINED.values()]
    rows = []
    for r in runs:
        by_model = {m: s["by_ft"] for m, s in r["spread"].items()}
        methods, variant = r.get("ft", ["kv-sgd"]), r.get("measures", "dual")
        models = {f"trained, FT {f}": by_model["trained"][f] for f in methods}
        models |= {label: by_model[m][methods[0]] for m, label in UNTRAINED.items() if m in by_model}
        columns = {c: models[c]["measures"] for c in models} | _baselines(by_model, methods)
        ft = [value(models[c]["accuracy"].get("ft"), True) if c in models else "—" if c in columns else "n/a"
              for c in header]
        rows.append([r["task"], variant, "FT accuracy %", *ft])
        for key in VARIANT_MEASURES[variant]:
            rows.append([r["task"], variant, MEASURES[key], *(value(columns[c].get(key)) if c in columns else "n/a"
                                                              for c in header)])
    header = ["task", "measures", "measure (mean ± s.e. over seeds)", *header]
    return table(header, rows, align="lll" + "r" * (len(header) - 3))


def sweep_rows(runs: dict[int, dict], ks: list[int]) -> dict[int, dict]:
    """Accuracy against k under every scoring from each k's results (k = 0: zero-shot, read off the smallest k's
    ZSL condition; FT has no k = 0)."""
    first = runs[min(runs)]["spread"]["trained"]["scoring"]
    rows = {}
    for k in sorted(set(ks)):
        scoring = first if k == 0 else runs[k]["spread"]["trained"]["scoring"]
        rows[k] = {
            f"{c}.{mode}": (scoring.get(f"{'zsl' if k == 0 else c}.{mode}.accuracy") if c != "ft" or k else None)
            for c in CONDITIONS
            for mode in SCORINGS
        }
    return rows


def sweep_table(rows: dict[int, dict], note: str) -> list[str]:
    header = [f"k ({note})"] + [f"{c.upper()} {mode}" for mode in SCORINGS for c in CONDITIONS]
    body = [[str(k)] + [value(rows[k][f"{c}.{mode}"], True) for mode in SCORINGS for c in CONDITIONS] for k in rows]
    return table(header, body, align="l" + "r" * (len(header) - 1))


def draw_sweep(rows: dict[int, dict], path: Path) -> None:
    from ..plotting import finish, plt, save_figure, series_style  # matplotlib only when a figure is drawn

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    ks = list(rows)
    x = [max(k, 0.5) for k in ks]  # k = 0 drawn at 0.5 on the log axis
    i = 0
    for c in ("icl", "ft"):
        for mode in SCORINGS:
            ys = [(rows[k][f"{c}.{mode}"] or {}).get("mean") for k in ks]
            if any(y is not None for y in ys):
                ys = [float("nan") if y is None else y for y in ys]
                ax.plot(x, ys, label=f"{c.upper()} {mode}", **series_style(i, c == "icl"))
                i += 1
    ax.set_xscale("log", base=2)
    ax.set_xticks(x, [str(k) for k in ks])
    ax.set_ylim(0, 1)
    finish(ax, "k demonstrations", "accuracy", fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
