"""Several evaluated runs side by side (`iclab compare`): the transformer's error and ICL score at chosen k, read
from each run's eval/curves.csv, with the config keys on which the runs differ, in one table and one figure.

OUT/compare.md    the table, the config differences, the figure and where the numbers came from (provenance)
OUT/compare.csv   one row per run: run, path, step, each differing config key, error_kK and score_kK at each k,
                  score_all (the whole curve's ICL score)
OUT/compare.json  the same rows, the differences and provenance
OUT/compare.png   every run's error curve on shared axes (and the curves of zero and the Bayes oracle, the ICL
                  score's 0 and 1, where every run was evaluated on the same prompts)

Nothing is evaluated here: a run without eval/curves.csv is refused with a message to run `iclab eval RUN`
(evaluating takes seconds to minutes per run, and the stored curves are the ones its report shows).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import UserError
from ..files import atomic_write_json, atomic_write_text
from ..markdown import table
from ..provenance import provenance
from ..training.runs import read_config, run_status
from .curves import ORACLES, icl_curve_scores, icl_scores, is_model_row, read_curves, write_curves
from .report import plot_sweep_curves

NOTE = (
    "error_kK: the transformer's normalised error at k = K examples, its mean over the evaluation's prompts; "
    "score_kK: its ICL score at K (Campbell et al. 2024: 0 = predicting 0, 1 = the Bayes oracle of the evaluated "
    "task); score_all: the score of the whole curve. Every number is read from the run's `eval/curves.csv` "
    "(`iclab eval RUN` writes it)."
)


@dataclass
class Comparison:
    task: str  # the compared task label (curves.csv's task column)
    ks: list[int]
    rows: list[dict]  # one per run, the columns of compare.csv
    differences: dict[str, dict[str, Any]]  # config key -> {run: its value}, for the keys that differ
    lines: list[str]  # the table and the differences, as Markdown (what `iclab compare` prints)
    out: Path  # the folder of compare.md, .csv, .json and .png

    def __str__(self) -> str:
        return "\n".join(self.lines)


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """{'train': {'steps': 5}} -> {'train.steps': 5}: dotted keys, as --set writes them; lists are values."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out |= flatten(value, name)
        else:
            out[name] = value
    return out


def config_differences(configs: dict[str, dict]) -> dict[str, dict[str, Any]]:
    """The dotted keys whose value is not the same in every config, each with its value per run (None where a
    config lacks the key, e.g. task.nnz beside a dense task)."""
    flat = {run: flatten(config) for run, config in configs.items()}
    out = {}
    for key in dict.fromkeys(k for f in flat.values() for k in f):
        values = {run: f.get(key) for run, f in flat.items()}
        first = next(iter(values.values()))
        if any(v != first for v in values.values()):
            out[key] = values
    return out


def run_labels(runs: list[Path]) -> list[str]:
    """Each run's folder name, or its path as given where two runs share a name."""
    names = [r.name for r in runs]
    return [r.name if names.count(r.name) == 1 else str(r) for r in runs]


def run_curves(run: Path, config: Config, task: str | None) -> list[dict]:
    """The rows of the run's eval/curves.csv on `task` (default: the run's own task), refused with a one-line
    message if the run has no transformer curve there."""
    path = run / "eval" / "curves.csv"
    rows = read_curves(path)
    if not rows:
        raise UserError(f"{run} has not been evaluated (no {path}); run `iclab eval {run}` first")
    label = task or str(config.task["name"])
    mine = [r for r in rows if r["task"] == label]
    if not any(is_model_row(r) for r in mine):
        have = ", ".join(dict.fromkeys(r["task"] for r in rows))
        raise UserError(
            f"{path} has no model curve on task '{label}' (it has: {have}); evaluate it with "
            f"`iclab eval {run}{' --task ' + label if task else ''}` or choose one of those with --task"
        )
    return mine


def default_ks(dims: list[int], last: int) -> list[int]:
    """d and 2d of every run, and the last k, where every run's prompts reach them."""
    return sorted({k for d in dims for k in (d, 2 * d) if k <= last} | {last})


def parse_ks(values: list[str] | None) -> list[int] | None:
    """--k 5,10 (or --k 5 --k 10) as [5, 10]; None when not given."""
    if not values:
        return None
    parts = [p.strip() for v in values for p in v.split(",") if p.strip()]
    if not all(p.isdigit() for p in parts):
        raise UserError(f"--k takes whole numbers of examples separated by commas, e.g. --k 5,10; got {values}")
    return sorted({int(p) for p in parts})


def run_row(label: str, path: Path, rows: list[dict], ks: list[int]) -> dict[str, Any]:
    """One run's line: its step, and the transformer's error and ICL score at each k (the score as curves.csv
    stores it, computed from the rows for a file written before scores were), then the whole curve's score."""
    task = rows[0]["task"]
    curve = {r["k"]: r for r in rows if is_model_row(r)}
    name = next(iter(curve.values()))["estimator"]
    computed = icl_scores(rows)
    row: dict[str, Any] = {"run": label, "path": str(path), "step": (run_status(path) or (0, 0))[0]}
    row |= {f"error_k{k}": curve[k]["mean"] for k in ks}
    for k in ks:
        stored = curve[k]["icl_score"]
        row[f"score_k{k}"] = stored if stored is not None else computed.get(("", task, name, k))
    row["score_all"] = icl_curve_scores(rows).get(("", task, name))
    return row


def same_prompts(configs: list[Config]) -> bool:
    """Whether every run was evaluated on the same prompts (so the baselines' curves are the same in each)."""
    keys = {json.dumps([c.task, c.inputs, c.dims, c.eval_points, c.eval.seed, c.eval.prompts]) for c in configs}
    return len(keys) == 1


def compare(
    runs: list[str | Path], ks: list[int] | None = None, out: str | Path | None = None, task: str | None = None
) -> Comparison:
    """Read each run's config and eval/curves.csv and write OUT/compare.{md,csv,json,png} (default OUT: a
    `compare` folder beside the first run). `ks` default to d, 2d and the last k; `task` to each run's own task."""
    runs = [r.resolve() if r.name in ("", "..") else r for r in map(Path, runs)]  # "." has no name to show
    if len(set(map(Path.resolve, runs))) < len(runs):
        raise UserError("a run is given twice; name each run folder once")
    out = Path(out) if out is not None else runs[0].resolve().parent / "compare"
    if (out / "config.json").is_file():
        raise UserError(f"--out {out} is a run folder; choose another folder for the comparison")
    labels = run_labels(runs)
    configs = [read_config(r) for r in runs]
    curves = [run_curves(r, c, task) for r, c in zip(runs, configs, strict=True)]
    last = min(max(r["k"] for r in rows if r["estimator"] == "transformer") for rows in curves)
    ks = ks if ks is not None else default_ks([c.dims for c in configs], last)
    if max(ks) > last:
        raise UserError(f"--k {max(ks)}: the runs' curves share k = 0 .. {last}; choose k in that range")
    differences = config_differences(dict(zip(labels, (c.to_dict() for c in configs), strict=True)))
    measured = [run_row(label, path, part, ks) for label, path, part in zip(labels, runs, curves, strict=True)]
    unscored = [c for c in measured[0] if c.startswith("score_") and all(r[c] is None for r in measured)]
    rows = [
        {"run": r["run"], "path": r["path"], "step": r["step"]}
        | {key: differences[key][r["run"]] for key in differences}
        | {c: v for c, v in r.items() if c.startswith(("error_", "score_")) and c not in unscored}
        for r in measured
    ]
    shown = [c for c in rows[0] if c not in differences and c != "path"]
    lines = table(shown, [[r[c] for c in shown] for r in rows])
    if differences:
        lines += ["", "Config differences:", ""]
        lines += table(["key", *labels], [[key, *values.values()] for key, values in differences.items()])
    else:
        lines += ["", "The runs' configs are the same."]
    result = Comparison(curves[0][0]["task"], ks, rows, differences, lines, out)
    plot_comparison(result, curves, configs)
    write_comparison(result)
    return result


def plot_comparison(result: Comparison, curves: list[list[dict]], configs: list[Config]) -> Path:
    """OUT/compare.png: every run's transformer curve and, where every run was evaluated on the same prompts (so
    that their baselines' curves are the same in every run), the first run's curves of the ICL score's ends: zero
    (score 0) and the Bayes oracle (score 1). The other baselines are in each run's own figure."""
    plotted = [r | {"run": run["run"]} for run, part in zip(result.rows, curves, strict=True) for r in part]
    plotted = [r for r in plotted if is_model_row(r)]
    if same_prompts(configs):
        plotted += [r for r in curves[0] if r["estimator"] in ("zero", *ORACLES)]
    dims = {c.dims for c in configs}
    title = f"{result.task}: {len(result.rows)} runs"
    return plot_sweep_curves(plotted, result.out / "compare.png", title, dims.pop() if len(dims) == 1 else None)


def write_comparison(result: Comparison) -> None:
    """OUT/compare.csv, compare.json and compare.md, the last two with provenance."""
    out, rows, record = result.out, result.rows, provenance()
    write_curves(out / "compare.csv", rows, list(rows[0]))
    atomic_write_json(
        out / "compare.json",
        {"provenance": record, "task": result.task, "ks": result.ks, "runs": rows, "differences": result.differences},
    )
    markdown = [f"# Comparison of {len(rows)} runs on task `{result.task}`", "", NOTE, "", *result.lines, ""]
    markdown += ["![error curves](compare.png)", "", "Runs:", ""] + [f"- {r['run']}: `{r['path']}`" for r in rows]
    markdown += ["", f"Written by `{record['command']}` at commit {record['commit']} on {record['date']}.", ""]
    atomic_write_text(out / "compare.md", "\n".join(markdown))
