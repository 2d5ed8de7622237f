"""Plots and Markdown reports, rendered from a run's stored files only (no recomputation)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from ..errors import UserError
from ..files import atomic_write_text
from ..markdown import cell, table
from ..plotting import finish, fit_y, plt, reference_line, save_figure, series_style
from ..training.checkpoint import latest_checkpoint, read_state
from ..training.runs import build_model, read_config, read_metrics
from .curves import icl_curve_scores, icl_scores, is_model_row, read_curves, series_name


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")


def plot_path(eval_dir: Path, task: str, default_task: str) -> Path:
    return eval_dir / ("curves.png" if task == default_task else f"curves-{slug(task)}.png")


def plot_curves(rows: list[dict], task: str, path: Path, dims: int | None = None, title: str | None = None) -> Path:
    """Error against k for every estimator of `task`, with its bootstrap band; the transformer drawn boldest."""
    rows = [r for r in rows if r["task"] == task]
    if not rows:
        raise UserError(f"no curves for task '{task}'")
    return _plot_k_curves(_group(rows, lambda r: r["estimator"]), path, title or task, dims)


def plot_sweep_curves(rows: list[dict], path: Path, title: str, dims: int | None = None) -> Path:
    """Error against k for every series of sweep rows (each run's transformer and each baseline)."""
    return _plot_k_curves(_group(rows, series_name), path, title, dims)


def _group(rows: list[dict], key) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    return groups


def _draw_series(ax, groups: dict[str, list[dict]], x: Callable[[dict], float]) -> None:
    """One curve per group, with its bootstrap band, at x(row); a transformer's is bold (plotting.series_style)."""
    layer = 0
    for i, (name, part) in enumerate(groups.items()):
        part = sorted(part, key=x)
        xs = [x(r) for r in part]
        bold = any(is_model_row(r) for r in part)
        (line,) = ax.plot(xs, [r["mean"] for r in part], label=name, **series_style(i, bold, len(xs), layer))
        layer += bold
        ax.fill_between(xs, [r["lo"] for r in part], [r["hi"] for r in part], color=line.get_color(), alpha=0.15, lw=0)


def _plot_k_curves(groups: dict[str, list[dict]], path: Path, title: str, dims: int | None) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    _draw_series(ax, groups, lambda r: r["k"])
    if dims:
        reference_line(ax, x=dims, label=f"k = d = {dims}")
    fit_y(ax)
    finish(ax, "in-context examples k", "error (normalised)", title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_training(metrics: list[dict], path: Path, dims: int, loss: str = "mse") -> Path | None:
    """The training loss against the step, and the validation error at k = d and k = 2d against training seconds
    and training FLOPs (None if the run logged neither). `loss` is the run's train.loss, named on the y axis.
    Runs from before FLOPs were logged get no FLOPs panel."""
    losses = [m for m in metrics if "loss" in m]
    rows = [m for m in metrics if "val_error" in m]
    if not losses and not rows:
        return None
    panels = (["loss"] if losses else []) + (["seconds"] if rows else [])
    panels += ["flops"] if rows and "flops" in rows[0] else []
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), dpi=120, squeeze=False)
    ks = sorted({k for k in (dims, 2 * dims) if rows and k < len(rows[0]["val_error"])})
    for ax, panel in zip(axes[0], panels, strict=True):
        ax.set_yscale("log")
        if panel == "loss":
            ax.plot([m["step"] for m in losses], [m["loss"] for m in losses], lw=1, label="training loss")
            fit_y(ax)
            finish(ax, "training step", f"training loss ({'normalised' if loss == 'normalized' else 'MSE'})")
            continue
        for i, k in enumerate(ks):
            ax.plot([r[panel] for r in rows], [r["val_error"][k] for r in rows], label=f"k = {k}", **series_style(i))
        fit_y(ax)
        finish(ax, f"training {'seconds' if panel == 'seconds' else 'FLOPs'}", "validation error (normalised)")
    fig.suptitle("training loss and validation error", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_run(run_dir: Path) -> list[Path]:
    """(Re)draw one PNG per evaluated task of a run."""
    config = read_config(run_dir)
    rows = read_curves(run_dir / "eval" / "curves.csv")
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    return [plot_curves(rows, t, plot_path(run_dir / "eval", t, config.task["name"]), config.dims) for t in tasks]


def _table_ks(rows: list[dict], dims: int) -> list[int]:
    points = max(r["k"] for r in rows) + 1
    return sorted({0, 1, dims // 2, dims, min(2 * dims, points - 1), points - 1} & set(range(points)))


def _curve_table(rows: list[dict], task: str, dims: int) -> str:
    rows = [r for r in rows if r["task"] == task]
    ks = _table_ks(rows, dims)
    by = {(r["estimator"], r["k"]): r for r in rows}
    body = [
        [est] + [f"{cell(by[est, k]['mean'])} [{cell(by[est, k]['lo'])}, {cell(by[est, k]['hi'])}]" for k in ks]
        for est in dict.fromkeys(r["estimator"] for r in rows)
    ]
    return "\n".join(table(["estimator"] + [f"k={k}" for k in ks], body))


SCORE_NOTE = (
    "ICL score (Campbell et al. 2024): (error of zero − error) / (error of zero − error of the Bayes oracle of the "
    "evaluated task); 0 is predicting 0, 1 the Bayes oracle. `all k` is their code's score of the whole curve, the "
    "ratio of those differences' means over k; the k columns are iclab's per-k reading (n/a where the oracle is no "
    "better than 0, as at k = 0):"
)


def _score_rows(rows: list[dict], dims: int) -> tuple[list[int], list[tuple[str, str, list[str]]]]:
    """The curve table's k, and per curve (sweep point, task) that has scores, each series' scores at them."""
    scores, whole = icl_scores(rows), icl_curve_scores(rows)
    ks = _table_ks(rows, dims) if scores else []
    out = []
    for sweep, task in dict.fromkeys((r.get("sweep", ""), r["task"]) for r in rows):
        if not any(key[:2] == (sweep, task) for key in scores):
            continue
        series = dict.fromkeys(series_name(r) for r in rows if (r.get("sweep", ""), r["task"]) == (sweep, task))
        out += [
            (sweep, s, [cell(whole.get((sweep, task, s)))] + [cell(scores.get((sweep, task, s, k))) for k in ks])
            for s in series
        ]
    return ks, out


def score_table(rows: list[dict], task: str, dims: int) -> list[str]:
    """The ICL score of every estimator of `task` at the curve table's k (Campbell et al.: predicting 0 scores 0,
    the Bayes oracle 1), with a line saying how; [] when the stored rows lack `zero` or an oracle."""
    ks, body = _score_rows([r for r in rows if r["task"] == task], dims)
    if not body:
        return []
    header = ["estimator", "all k"] + [f"k={k}" for k in ks]
    return [SCORE_NOTE, "", *table(header, [[s] + c for _, s, c in body])]


def sweep_score_table(rows: list[dict], dims: int) -> list[str]:
    """score_table for sweep rows: one line per (sweep point, series) of every point that has scores."""
    ks, body = _score_rows(rows, dims)
    if not body:
        return []
    header = ["sweep point", "series", "all k"] + [f"k={k}" for k in ks]
    return [SCORE_NOTE, "", *table(header, [[p, s] + c for p, s, c in body]), ""]


def checks_section(checks: list[dict]) -> list[str]:
    lines = ["## Checks", ""]
    for c in checks:
        lines.append(f"- **{'PASS' if c['passed'] else 'FAIL'}** {c['claim']} ({c['detail']})")
    return lines + [""]


def render_report(run_dir: Path) -> Path:
    """Write RUN_DIR/report.md (and the plots) from the stored config, log, checkpoint, curves and, where a
    recipe wrote one, checks.json (its title and PASS/FAIL checks)."""
    run_dir = Path(run_dir)
    checks_path = run_dir / "checks.json"
    checks = json.loads(checks_path.read_text()) if checks_path.is_file() else {}
    config = read_config(run_dir)
    metrics = read_metrics(run_dir)
    state = read_state(latest_checkpoint(run_dir))
    losses = [m for m in metrics if "loss" in m]
    rows = read_curves(run_dir / "eval" / "curves.csv")
    task = config.task["name"]
    out = [f"# {checks.get('title') or 'iclab run: ' + run_dir.name}", ""]
    out += checks_section(checks["checks"]) if checks.get("checks") else []
    out += [
        "## Run",
        "",
        f"- task: `{config.task}`, inputs: `{config.inputs}`, d = {config.dims}, {config.points} points per prompt",
        f"- model: {build_model(config).describe()}",
        f"- training: {state['step']} of {config.train.steps} steps, batch {config.train.batch_size}, "
        f"lr {config.train.lr} ({config.train.schedule}, warm-up {config.train.warmup}), seed {config.seed}, "
        f"{config.threads or 'default'} thread(s)",
        f"- wall time of training: {state['elapsed_seconds']:.0f} s"
        + (f", {state['flops']:.3g} FLOPs" if "flops" in state else "")
        + (f"; final training loss {losses[-1]['loss']:.4f}" if losses else ""),
        "",
    ]
    training = plot_training(metrics, run_dir / "training.png", config.dims, config.train.loss)
    if training is not None:
        out += ["## Training", "", f"![training loss and validation error]({training.name})", ""]
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    if not tasks:
        out += ["No evaluation yet: run `iclab eval " + str(run_dir) + "`.", ""]
    for t in tasks:
        png = plot_curves(rows, t, plot_path(run_dir / "eval", t, task), config.dims)
        out += [
            f"## Evaluation: {t}",
            "",
            f"![{t}](eval/{png.name})",
            "",
            f"Mean error over {config.eval.prompts} prompts with {config.eval.confidence:.0%} bootstrap band "
            f"(`eval/curves.csv` has every k):",
            "",
            _curve_table(rows, t, config.dims),
            "",
        ]
        score = score_table(rows, t, config.dims)
        out += score + [""] if score else []
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(out))
    return path


def sweep_value(label: str) -> float | str:
    """'nnz=3' -> 3.0, 'shift=skewed' -> 'skewed'."""
    value = label.split("=", 1)[-1]
    try:
        return float(value)
    except ValueError:
        return value


def sweep_series(rows: list[dict], k: int) -> dict[str, list[dict]]:
    """Rows at `k`, grouped by series (a run's transformer or a baseline), in sweep order."""
    series: dict[str, list[dict]] = {}
    for r in rows:
        if r["k"] == k:
            series.setdefault(series_name(r), []).append(r)
    return series


def plot_sweep(
    rows: list[dict],
    k: int,
    path: Path,
    title: str,
    xlabel: str,
    log_x: bool = False,
    marks: dict[float, str] | None = None,
) -> Path:
    """Error at k against the swept value, one line per run and per baseline (but `zero`, the ICL score's 0 at
    error ~1, which only the tables show), with bootstrap bands; `marks` are labelled reference lines {x: label}."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    labels = list(dict.fromkeys(r["sweep"] for r in rows))
    values = [sweep_value(v) for v in labels]
    numeric = all(isinstance(v, float) for v in values)
    position = dict(zip(labels, values if numeric else range(len(labels)), strict=True))
    _draw_series(ax, sweep_series([r for r in rows if r["estimator"] != "zero"], k), lambda r: position[r["sweep"]])
    if not numeric:
        ax.set_xticks(range(len(labels)), [str(v) for v in values], rotation=30, ha="right", fontsize=7)
    if log_x and numeric:
        ax.set_xscale("log")
    for x, label in (marks or {}).items():
        reference_line(ax, x=x, label=label)
    fit_y(ax)
    finish(ax, xlabel, f"error at k = {k} (normalised)", title)
    fig.tight_layout()
    return save_figure(fig, path)
