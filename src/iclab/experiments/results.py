"""A grid's results, read from its run folders: OUT/results.csv (one row per run), OUT/results.md (that table,
mean ± sd over seeds, problems, the figure) and OUT/results.png (every run's error curve)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..evaluation.curves import icl_scores, is_model_row, read_curves, write_curves
from ..evaluation.report import plot_sweep_curves
from ..files import atomic_write_text
from ..markdown import cell, table
from ..stats import summarize
from ..training.runs import read_metrics, run_status
from .gridfile import Run, label


def default_ks(config: dict) -> list[int]:
    """d and 2d, where the prompts reach them (k runs from 0 to points - 1)."""
    return sorted({min(k, config["points"] - 1) for k in (config["dims"], 2 * config["dims"])})


def _first_task_rows(run: Run) -> list[dict]:
    """Every row of the run's eval/curves.csv on its first evaluated task (the transformer's and the baselines')."""
    rows = read_curves(run.run_dir / "eval" / "curves.csv")
    return [r for r in rows if r["task"] == rows[0]["task"]] if rows else []


def _transformer_curve(run: Run) -> list[dict]:
    """The run's transformer rows of eval/curves.csv, on its first evaluated task."""
    return [r for r in _first_task_rows(run) if is_model_row(r)]


def _last_validation(metrics: list[dict]) -> list[float] | None:
    return next((m["val_error"] for m in reversed(metrics) if "val_error" in m), None)


def run_result(run: Run, ks: list[int]) -> dict:
    """One row of the results table, read from the run's files: progress, final loss, error at each k (from
    eval/curves.csv after a full evaluation, else from the last validation curve of the training log) and the
    ICL score at each k (where the evaluation has rows of zero and the Bayes oracle)."""
    row: dict[str, Any] = {"run": run.name} | {key: label(v) for key, v in run.values.items()}
    status = run_status(run.run_dir)
    metrics = read_metrics(run.run_dir) if status else []
    losses = [m["loss"] for m in metrics if "loss" in m]
    step, steps = status or (0, run.config["train"]["steps"])
    # the training loss is one batch's: average the last 10 logged values for a steadier number
    final_loss = summarize(losses[-10:])
    row |= {
        "status": "complete" if status and step >= steps else ("not started" if not metrics else "incomplete"),
        "step": step,
        "steps": steps,
        "seconds": round(metrics[-1]["seconds"], 1) if metrics else math.nan,
        "final_loss": final_loss.mean if final_loss else math.nan,
    }
    evaluated, val = _first_task_rows(run), _last_validation(metrics)
    curve = [r for r in evaluated if r["estimator"] == "transformer"]
    row["error_from"] = "eval" if curve else ("validation" if val else "")
    for k in ks:
        if curve:
            hit = next((r for r in curve if r["k"] == k), None)
            row[f"error_k{k}"] = hit["mean"] if hit else math.nan
        else:
            row[f"error_k{k}"] = val[k] if val and k < len(val) else math.nan
    scores = icl_scores(evaluated)
    for k in ks:
        row[f"score_k{k}"] = scores.get(("", curve[0]["task"], "transformer", k), math.nan) if curve else math.nan
    return row


def curve_rows(run: Run) -> list[dict]:
    """The run's transformer error curve as sweep rows (for the figure): eval curves with bands, else the last
    validation curve."""
    curve = _transformer_curve(run)
    if curve:
        return [r | {"run": run.name} for r in curve]
    val = _last_validation(read_metrics(run.run_dir))
    if val is None:
        return []
    return [
        {"run": run.name, "estimator": "transformer", "k": k, "mean": e, "lo": e, "hi": e} for k, e in enumerate(val)
    ]


def seed_summary(rows: list[dict], keys: list[str], ks: list[int]) -> list[dict]:
    """For every combination of the grid keys other than seed, the number of complete runs ("seeds") and a
    Summary (mean, sd over seeds) of the final loss and of the error at each k."""
    others = [k for k in keys if k != "seed"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["status"] == "complete":
            groups.setdefault(tuple(r[k] for k in others), []).append(r)
    return [
        dict(zip(others, combo, strict=True))
        | {"seeds": len(members)}
        | {col: summarize(m[col] for m in members) for col in ["final_loss"] + [f"error_k{k}" for k in ks]}
        for combo, members in groups.items()
    ]


def _number(value: Any) -> Any:
    """A results cell: four decimals, n/a for a missing (NaN) number."""
    if isinstance(value, float):
        return cell(None if math.isnan(value) else value, 4)
    return value


def write_results(out: Path, runs: list[Run], keys: list[str], ks: list[int], outcomes: dict[str, dict]) -> list[dict]:
    """OUT/results.csv (one row per run), OUT/results.md (tables, the figure, problems) and OUT/results.png.
    `outcomes` of this invocation's jobs mark runs that failed, were busy elsewhere or are still queued."""
    rows = [run_result(run, ks) for run in runs]
    unscored = [c for c in rows[0] if c.startswith("score_k") and all(math.isnan(r[c]) for r in rows)]
    rows = [{c: v for c, v in r.items() if c not in unscored} for r in rows]  # no zero or oracle anywhere
    notes = []
    for row in rows:
        outcome = outcomes.get(row["run"], {"status": "done"})
        if outcome["status"] != "done":
            notes.append(f"{row['run']}: {outcome['status']}: {outcome['error']}")
            if row["status"] != "complete":
                row["status"] = outcome["status"]
    write_curves(out / "results.csv", rows, list(rows[0]))
    curves = [r for run in runs for r in curve_rows(run)]
    lines = [f"# Sweep {out.name}", ""]
    done = sum(r["status"] == "complete" for r in rows)
    lines += [
        f"{len(rows)} runs over {', '.join(f'`{k}`' for k in keys)}; {done} complete. Errors are the transformer's "
        "normalised squared error at k examples (column error_from: `eval` = the curves of `iclab eval`, "
        "`validation` = the last validation curve of the training log); final_loss averages the last 10 logged "
        "training losses; score_kK, where present, is the ICL score at k (0 = predicting 0, 1 = the Bayes oracle, "
        f"from the evaluation's rows of both). Every run is a folder: `iclab report {out}/RUN` renders one.",
        "",
    ]
    lines += table(list(rows[0]), [[_number(v) for v in r.values()] for r in rows]) + [""]
    if "seed" in keys and len(keys) > 1:
        summary = seed_summary(rows, keys, ks)
        header = [k for k in keys if k != "seed"] + ["seeds", "final loss"] + [f"error at k = {k}" for k in ks]
        lines += ["## Over seeds (mean ± standard deviation of complete runs)", ""]
        lines += table(header, [[cell(v, 3, "sd") for v in r.values()] for r in summary]) + [""]
    if curves:
        plot_sweep_curves(curves, out / "results.png", f"sweep {out.name}")
        lines += ["## Error curves", "", "![error curves](results.png)", ""]
    if notes:
        lines += ["## Problems", ""] + [f"- {n}" for n in notes] + [""]
    atomic_write_text(out / "results.md", "\n".join(lines))
    return rows
