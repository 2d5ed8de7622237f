"""The icl-vs-ft recipe's report tables (icl_vs_ft/results.py, as `iclab lm run` writes them), the emergence
table and the verdict."""

from __future__ import annotations

from ...icl_vs_ft.engine import FT_METHODS
from ...icl_vs_ft.metrics import MEASURES, VARIANT_MEASURES
from ...icl_vs_ft.results import accuracy_tables, gap_table, measures_tables, spread_note, value
from ...markdown import table
from .checks import check_summary, emergence_check, emergence_rows


def emergence_table(summary: dict, note: str) -> list[str]:
    rows = emergence_rows(summary)
    if not rows:
        return ["No pretraining checkpoints were saved with this model (trained before iclab kept them, or the shipped "
                "one): remove its folder, or run without --pretrained, to measure emergence.", ""]
    keys = VARIANT_MEASURES["dai"]
    body = []
    for step, gain, _ in rows:
        s = summary["emergence"][str(step)]
        body.append([str(step), value(s["accuracy"].get("zsl"), True), value(s["accuracy"].get("icl"), True),
                     "n/a" if gain is None else f"{100 * gain:+.1f}", *(value(s["measures"].get(k)) for k in keys)])
    header = [f"step ({note})", "ZSL %", "ICL %", "ICL gain", *(MEASURES[k] for k in keys)]
    lines = ["Emergence: Dai's measures (kv-sgd) at pretraining checkpoints, beside ICL's accuracy gain over ZSL:", ""]
    return lines + table(header, body) + [""]


def tables(summary: dict, results: dict) -> list[str]:
    """The report's tables (icl_vs_ft/results.py, as `iclab lm run` writes them) and the verdict."""
    note = spread_note(results["instances"], "task instances")
    models = {m: summary[m] for m in ("trained", "untrained", "untrained-deutch") if m in summary}
    lines = accuracy_tables(models, note) + [""]
    for variant, by_model in (summary.get("variants") or {}).items():
        lines += measures_tables(by_model, variant, list(FT_METHODS), note) + [""]
    lines += gap_table(models, note) + [""] + emergence_table(summary, note)
    similar = check_summary(summary, emergence=False)[4:]
    passed = sum(c["passed"] for c in similar)
    if passed == len(similar):
        verdict = "supports the reading of ICL as implicit finetuning on this model"
    elif passed == 0:
        verdict = (
            "does not support the reading of ICL as implicit finetuning on this model: no similarity measure "
            "beats its baselines"
        )
    else:
        verdict = f"is mixed: {passed} of {len(similar)} comparisons with the baselines favour the reading"
    failed = summary["trained"]["ft_failed"]
    lines += [
        "",
        f"{results['instances']} task instances of {results['demos']} demonstrations and 64 test queries, plain "
        f"scoring (the keyword task has no content-free input); FT learning rate from {results['lrs']} by "
        "validation accuracy" + (f"; FT diverged at every rate on {failed} instances" if failed else "") + ".",
        "",
        f"**Verdict.** The evidence {verdict}.",
        "",
    ]
    for c in emergence_check(summary):
        found = "rise" if c["passed"] else "do not all rise"
        lines += [f"**Emergence.** Over pretraining, SimAOU, Kendall and SimAM ICL-FT {found} with ICL's accuracy "
                  f"gain over zero-shot: {c['detail']}.", ""]
    return lines
