"""`iclab sweep-run GRID.yaml`: a grid of config overrides expanded into runs, executed on an existing engine
(engines.py: local processes, SLURM through submitit, Dask), and collected into one table.

A grid file is data:

    base: demo                  # a packaged config name, or a YAML config (a path relative to the grid file)
    set: {train.steps: 1000}    # overrides for every run (optional)
    grid:                       # every combination of these values is one run
      train.lr: [1.0e-3, 3.0e-3]
      seed: [0, 1]
    collect: {k: [5, 10], evaluate: false}
    slurm: {partition: gpu, gpus_per_node: 1, timeout_min: 240}   # for --engine slurm

Each run is an ordinary run directory OUT/NAME, NAME spelling its grid values (`lr=0.001_seed=0`), so every iclab
command works on it. Running the same grid again skips complete runs, resumes half-finished ones from their last
checkpoint and starts the rest; a run directory trained with other settings stops the sweep before anything runs.
OUT/results.csv, results.md and results.png collect the final loss and the error at the chosen k of every run.

Only argparse and the standard library are imported at module load, so the CLI starts fast.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import math
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Collect:
    k: list[int] = field(default_factory=list)  # errors at these k; default d and 2d (those the prompts reach)
    evaluate: bool = False  # after training, run the full evaluation (eval/curves.csv with bands, report.md)


@dataclass
class GridFile:
    grid: dict
    base: Any = None  # a packaged config name, a YAML path (relative to the grid file) or a mapping
    set: dict = field(default_factory=dict)
    collect: Collect = field(default_factory=Collect)
    slurm: dict = field(default_factory=dict)  # submitit parameters (engines.submitit_parameters)
    path: Path = field(default=Path("grid.yaml"), init=False)  # where it was read from; base paths are relative


@dataclass
class Run:
    name: str
    values: dict  # grid key -> value of this run
    config: dict  # the resolved config
    run_dir: Path
    state: str = "new"  # new | resume | evaluate | complete


# ---------------------------------------------------------------- the grid file and its runs


def read_grid(path: str | Path) -> GridFile:
    """Parse a grid file, or a packaged grid by name (e.g. `demo-lr`)."""
    from ..config import read_yaml
    from ..errors import UserError
    from ..spec import build

    path = Path(path)
    if not path.is_file() and path.suffix == "" and "/" not in str(path):
        path = _packaged_grid(str(path))
    data = read_yaml(path)
    try:
        grid = build(GridFile, data)
    except UserError as e:
        raise UserError(f"{path}: {str(e).replace('config key', 'grid file key')}") from None
    if not grid.grid:
        raise UserError(f"{path}: 'grid' is empty; give at least one key with a list of values, e.g. seed: [0, 1]")
    for key, values in grid.grid.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{path}: grid key '{key}' needs a non-empty list of values, e.g. {key}: [a, b]")
    grid.path = path
    return grid


def _packaged_grid(name: str) -> Path:
    import importlib.resources

    from ..spec import unknown_key_error

    folder = Path(str(importlib.resources.files("iclab") / "configs" / "grids"))
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise unknown_key_error(name, [p.stem for p in folder.glob("*.yaml")], "grid file (or packaged grid)")
    return path


def _base_config(base: Any, where: Path) -> dict:
    from ..config import packaged_config, read_yaml

    if base is None:
        return {}
    if isinstance(base, dict):
        return copy.deepcopy(base)
    path = where / str(base)
    return read_yaml(path if path.suffix in (".yaml", ".yml") or path.is_file() else packaged_config(str(base)))


def run_name(values: dict) -> str:
    """`lr=0.001_seed=0`: each grid key by its last part (its full name where two keys share one), and its value;
    a task-like mapping reads as `sparse_linear:nnz=2`."""
    from ..evaluation.report import slug

    last = [key.rsplit(".", 1)[-1] for key in values]
    parts = []
    for (key, value), short in zip(values.items(), last, strict=True):
        parts.append(f"{key if last.count(short) > 1 else short}={label(value)}")
    return slug("_".join(parts))


def label(value: Any) -> str:
    """A grid value as text: `sparse_linear:nnz=2` for a named mapping, `[5,2]` for a list, `0.001` for a number."""
    from ..spec import format_named

    if isinstance(value, dict):
        if "name" in value:
            return format_named(value)
        return "{" + ",".join(f"{k}={label(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(label(v) for v in value) + "]"
    return str(value)


def expand(grid: GridFile, out: Path, overrides: list[str] | None = None) -> list[Run]:
    """Every combination of the grid's values, as validated configs; a bad key or value stops here, naming it."""
    from ..config import Config, apply_overrides, set_key
    from ..errors import UserError
    from ..spec import build

    fixed = _base_config(grid.base, grid.path.parent)
    for key, value in grid.set.items():
        set_key(fixed, key, copy.deepcopy(value))
    for item in overrides or []:
        key = item.partition("=")[0].strip()
        if key in grid.grid:
            raise UserError(f"--set {key} conflicts with the grid key '{key}'; change the grid file instead")
    fixed = apply_overrides(fixed, overrides or [])
    runs, names = [], set()
    for combo in itertools.product(*grid.grid.values()):
        values = dict(zip(grid.grid, combo, strict=True))
        data = copy.deepcopy(fixed)
        for key, value in values.items():
            set_key(data, key, copy.deepcopy(value))
        name = run_name(values)
        try:
            config = build(Config, data)
        except UserError as e:
            raise UserError(f"{grid.path}, run {name}: {e}") from None
        while name in names:  # two values that spell the same folder name
            name += "+"
        names.add(name)
        runs.append(Run(name, values, config.to_dict(), out / name))
    return runs


def plan(runs: list[Run], evaluate: bool) -> list[Run]:
    """Set each run's state from its folder; a folder trained with other settings is an error before any work."""
    from ..errors import UserError
    from ..training.checkpoint import checkpoint_dirs
    from ..training.runs import read_config, run_status

    for run in runs:
        status = run_status(run.run_dir)
        if status is None:
            if run.run_dir.exists() and any(run.run_dir.iterdir()):
                raise UserError(f"{run.run_dir} is not empty and holds no run; move it away or choose another --out")
            run.state = "new"
            continue
        stored = read_config(run.run_dir).to_dict()
        if stored != run.config:
            diff = ", ".join(f"{k}: {a!r} there, {b!r} here" for k, a, b in _differences(stored, run.config)[:3])
            raise UserError(
                f"{run.run_dir} was trained with other settings ({diff}); remove it or choose another --out"
            )
        if not checkpoint_dirs(run.run_dir):
            run.state = "new"
        elif status[0] < status[1]:
            run.state = "resume"
        else:
            from .engines import needs_evaluation

            run.state = "evaluate" if evaluate and needs_evaluation(run.run_dir) else "complete"
    return runs


def _differences(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in dict.fromkeys([*a, *b]):
            out += _differences(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else str(key))
        return out
    return [] if a == b else [(prefix, a, b)]


# ---------------------------------------------------------------- results


def default_ks(config: dict) -> list[int]:
    """d and 2d, where the prompts reach them (k runs from 0 to points - 1)."""
    return sorted({min(k, config["points"] - 1) for k in (config["dims"], 2 * config["dims"])})


def run_result(run: Run, ks: list[int]) -> dict:
    """One row of the results table, read from the run's files: progress, final loss, error at each k (from
    eval/curves.csv after a full evaluation, else from the last validation curve of the training log)."""
    from ..evaluation.curves import read_curves
    from ..training.runs import read_metrics, run_status

    row: dict[str, Any] = {"run": run.name} | {key: label(v) for key, v in run.values.items()}
    status = run_status(run.run_dir)
    metrics = read_metrics(run.run_dir) if status else []
    losses = [m["loss"] for m in metrics if "loss" in m]
    step, steps = status or (0, run.config["train"]["steps"])
    row |= {
        "status": "complete" if status and step >= steps else ("not started" if not metrics else "incomplete"),
        "step": step,
        "steps": steps,
        "seconds": round(metrics[-1]["seconds"], 1) if metrics else math.nan,
        # the training loss is one batch's: average the last 10 logged values for a steadier number
        "final_loss": statistics.fmean(losses[-10:]) if losses else math.nan,
    }
    curve = [r for r in read_curves(run.run_dir / "eval" / "curves.csv") if r["estimator"] == "transformer"]
    curve = [r for r in curve if r["task"] == curve[0]["task"]] if curve else []
    val = next((m["val_error"] for m in reversed(metrics) if "val_error" in m), None)
    row["error_from"] = "eval" if curve else ("validation" if val else "")
    for k in ks:
        if curve:
            hit = next((r for r in curve if r["k"] == k), None)
            row[f"error_k{k}"] = hit["mean"] if hit else math.nan
        else:
            row[f"error_k{k}"] = val[k] if val and k < len(val) else math.nan
    return row


def curve_rows(run: Run) -> list[dict]:
    """The run's transformer error curve as sweep rows (for the figure): eval curves with bands, else the last
    validation curve."""
    from ..evaluation.curves import read_curves
    from ..training.runs import read_metrics

    curve = [r for r in read_curves(run.run_dir / "eval" / "curves.csv") if r["estimator"] == "transformer"]
    if curve:
        return [r | {"run": run.name} for r in curve if r["task"] == curve[0]["task"]]
    val = next((m["val_error"] for m in reversed(read_metrics(run.run_dir)) if "val_error" in m), None)
    if val is None:
        return []
    return [
        {"run": run.name, "estimator": "transformer", "k": k, "mean": e, "lo": e, "hi": e} for k, e in enumerate(val)
    ]


def seed_summary(rows: list[dict], keys: list[str], ks: list[int]) -> list[dict]:
    """Mean and standard deviation over seeds for every combination of the other grid keys."""
    others = [k for k in keys if k != "seed"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["status"] == "complete":
            groups.setdefault(tuple(r[k] for k in others), []).append(r)
    out = []
    for combo, members in groups.items():
        row = dict(zip(others, combo, strict=True)) | {"seeds": len(members)}
        for col in ["final_loss"] + [f"error_k{k}" for k in ks]:
            values = [m[col] for m in members if not math.isnan(m[col])]
            row[col] = statistics.fmean(values) if values else math.nan
            row[f"{col}_std"] = statistics.stdev(values) if len(values) > 1 else math.nan
        out.append(row)
    return out


def _table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    return lines


def write_results(out: Path, runs: list[Run], keys: list[str], ks: list[int], outcomes: dict[str, dict]) -> list[dict]:
    """OUT/results.csv (one row per run), OUT/results.md (tables, the figure, problems) and OUT/results.png.
    `outcomes` of this invocation's jobs mark runs that failed, were busy elsewhere or are still queued."""
    from ..evaluation.curves import write_curves
    from ..evaluation.report import plot_sweep_curves
    from ..files import atomic_write_text

    rows = [run_result(run, ks) for run in runs]
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
        f"training losses. Every run is a folder: `iclab report {out}/RUN` renders one.",
        "",
    ]
    lines += _table(rows) + [""]
    if "seed" in keys and len(keys) > 1:
        lines += ["## Over seeds (mean and standard deviation of complete runs)", ""]
        lines += _table(seed_summary(rows, keys, ks)) + [""]
    if curves:
        plot_sweep_curves(curves, out / "results.png", f"sweep {out.name}")
        lines += ["## Error curves", "", "![error curves](results.png)", ""]
    if notes:
        lines += ["## Problems", ""] + [f"- {n}" for n in notes] + [""]
    atomic_write_text(out / "results.md", "\n".join(lines))
    return rows


# ---------------------------------------------------------------- the whole sweep


def sweep_run(
    grid_path: str | Path,
    out: str | Path | None = None,
    engine: str = "local",
    jobs: int = 1,
    overrides: list[str] | None = None,
    scheduler: str | None = None,
    wait: bool = True,
    collect_only: bool = False,
    dry_run: bool = False,
    progress: bool = True,
) -> dict:
    """Expand, plan, execute and collect a sweep; returns {"runs", "outcomes", "rows"}."""
    from ..errors import UserError
    from ..files import atomic_write_json
    from .engines import check_engine, execute, make_job

    if jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {jobs}")
    grid = read_grid(grid_path)
    out = Path(out) if out else Path("runs") / grid.path.stem
    runs = plan(expand(grid, out, overrides), grid.collect.evaluate)
    if not collect_only:
        check_engine(engine, grid.slurm)  # e.g. an unknown SLURM setting fails now, not after jobs are queued
    ks = grid.collect.k or default_ks(runs[0].config)
    for k in ks:
        if not 0 <= k < runs[0].config["points"]:
            raise UserError(f"collect.k {k}: the prompts have k = 0 .. {runs[0].config['points'] - 1}")
    todo = [r for r in runs if r.state != "complete"]
    counts = {s: sum(r.state == s for r in runs) for s in ("complete", "resume", "evaluate", "new")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    if progress or dry_run:
        print(f"{len(runs)} runs in {out} ({summary})" + ("" if collect_only or dry_run else f"; engine {engine}"))
    if dry_run:
        for r in runs:
            print(f"  {r.state:<9} {r.name}")
        return {"runs": runs, "outcomes": {}, "rows": []}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "sweep.json", {"grid": str(grid.path.resolve()), "runs": {r.name: r.values for r in runs}})
    outcomes: dict[str, dict] = {}
    interrupted = False
    if not collect_only and todo:
        job_list = [
            make_job(r.name, r.run_dir, r.config, out / "logs" / f"{r.name}.log", grid.collect.evaluate) for r in todo
        ]
        started = time.perf_counter()
        try:
            outcomes = execute(job_list, engine, out, jobs, grid.slurm, scheduler, wait, progress)
        except KeyboardInterrupt:
            interrupted = True
        if progress:
            print(f"{len(todo)} jobs on {engine} in {time.perf_counter() - started:.0f} s")
    rows = write_results(out, runs, list(grid.grid), ks, outcomes)
    if interrupted:
        raise UserError(f"interrupted; finished runs are kept; rerun the same command to resume the others ({out})")
    return {"runs": runs, "outcomes": outcomes, "rows": rows}


# ---------------------------------------------------------------- the command


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `iclab sweep-run`."""
    p = sub.add_parser(
        "sweep-run",
        help="train a grid of config overrides as many runs (local processes, SLURM, Dask) and tabulate them",
        description="Expand a grid of config overrides into runs OUT/NAME, run them on an engine (local processes, "
        "SLURM through submitit, Dask), skipping complete runs and resuming half-finished ones, and tabulate them "
        "in OUT/results.csv, results.md and results.png.",
    )
    p.add_argument("grid", metavar="GRID.yaml", help="grid file (or a packaged grid name, e.g. demo-lr)")
    p.add_argument("--out", help="folder of the runs and results (default: runs/GRID_NAME)")
    p.add_argument("--engine", default="local", help="local (default), slurm, submitit-local or dask")
    p.add_argument("--jobs", type=int, default=1, help="runs at once for local and local-Dask engines (default 1)")
    p.add_argument("--scheduler", help="address of a running Dask scheduler (--engine dask)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key in every run")
    p.add_argument("--no-wait", action="store_true", help="slurm: submit and exit; collect later with --collect")
    p.add_argument("--collect", action="store_true", help="only tabulate the runs already in --out")
    p.add_argument("--dry-run", action="store_true", help="list the runs and what each needs, run nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_sweep_run)


def _cmd_sweep_run(args: argparse.Namespace) -> int:
    result = sweep_run(
        args.grid,
        args.out,
        args.engine,
        args.jobs,
        args.set,
        args.scheduler,
        wait=not args.no_wait,
        collect_only=args.collect,
        dry_run=args.dry_run,
        progress=not args.quiet,
    )
    if args.dry_run:
        return 0
    rows, outcomes = result["rows"], result["outcomes"]
    out = result["runs"][0].run_dir.parent
    cols = [c for c in rows[0] if c in ("run", "status", "step", "final_loss") or re.fullmatch(r"error_k\d+", c)]
    width = max(len(r["run"]) for r in rows)
    print(f"{'run':<{width}}  " + "  ".join(f"{c:>11}" for c in cols[1:]))
    for r in rows:
        cells = [f"{r[c]:>11.4f}" if isinstance(r[c], float) else f"{r[c]!s:>11}" for c in cols[1:]]
        print(f"{r['run']:<{width}}  " + "  ".join(cells))
    print(f"wrote {out / 'results.csv'} and {out / 'results.md'}")
    failed = [o for o in outcomes.values() if o["status"] in ("failed", "busy")]
    return 1 if failed else 0
