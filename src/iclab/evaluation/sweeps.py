"""Sweeps: error curves of one or more trained runs as one parameter of the test task moves, beside baselines.

    sparsity   sparse_linear with nnz = 1 .. d                      (runs trained on linear-family tasks)
    convex     alpha * f + (1 - alpha) * g for alpha in [0, 1]      (f, g: the two classes of the run's mixture)
    frequency  sinusoids of one frequency, inside, below and above the run's pretraining range
    shift      the run's task under Garg et al.'s distribution shifts

Rows are those of curves.csv with two more columns: `run` (the transformer's run; empty for baselines, which do
not depend on a run) and `sweep` (the swept value, e.g. 'nnz=3'). A `prompting` strategy applies at every point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..errors import UserError
from ..spec import unknown_key_error
from ..tasks import make_task
from ..tasks.functions import ConvexCombination, Linear, Mixture, Sinusoid
from ..tasks.prompting import make_prompting
from ..training.runs import load_model, read_config
from .curves import default_oracle, evaluate, write_curves

SWEEP_COLUMNS = ["run", "sweep", "task", "estimator", "k", "mean", "lo", "hi", "icl_score"]
DEFAULT_BASELINES = {  # sparsity's zero brings in the Bayes oracle of each point, hence the ICL score
    "sparsity": ["least_squares", "lasso_cv", "zero"],
    "convex": ["least_squares", "knn"],
    "frequency": ["knn", "least_squares"],
    "shift": ["least_squares"],
}
SHIFT_VALUES = [
    None,
    "skewed",
    "half_subspace",
    "scaled_x:factor=0.5",
    "scaled_x:factor=2",
    "scaled_x:factor=3",
    "scaled_y:factor=2",
    "noisy_y:std=0.5",
]


@dataclass
class SweepPoint:
    name: str  # its value in the sweep column of curves.csv, e.g. "nnz=3"
    value: float | str  # the x coordinate of the plot
    task: dict | None  # None: the run's own task
    shift: str | None = None


def _classes(config: Config):
    task = make_task(config.task, config.dims)
    if isinstance(task, Mixture):
        return task.classes, [c for c in config.task["components"]]
    if isinstance(task, ConvexCombination):
        return task.classes, [config.task["first"], config.task["second"]]
    return [task], [config.task]


def _strip_weight(spec: dict) -> dict:
    return {k: v for k, v in spec.items() if k != "weight"}


def sweep_points(kind: str, config: Config) -> list[SweepPoint]:
    """The values a sweep visits for a run with this config; a one-line error if the run's task has no such
    parameter."""
    classes, specs = _classes(config)
    name = config.task["name"]
    if kind == "sparsity":
        if not all(isinstance(c, Linear) and c.metric == "squared" for c in classes):
            raise UserError(f"sweep sparsity needs runs trained on linear or sparse_linear tasks, not '{name}'")
        return [SweepPoint(f"nnz={s}", s, {"name": "sparse_linear", "nnz": s}) for s in range(1, config.dims + 1)]
    if kind == "convex":
        if len(classes) != 2 or any(c.metric != "squared" for c in classes):
            raise UserError(
                f"sweep convex needs a run trained on a mixture (or convex) of two regression classes, not '{name}'"
            )
        first, second = (_strip_weight(s) for s in specs)
        return [
            SweepPoint(f"alpha={a:g}", a, {"name": "convex", "first": first, "second": second, "alpha": a})
            for a in (i / 10 for i in range(11))
        ]
    if kind == "frequency":
        sines = [(c, s) for c, s in zip(classes, specs, strict=True) if isinstance(c, Sinusoid)]
        if not sines:
            raise UserError(f"sweep frequency needs a run trained on sinusoids (alone or in a mixture), not '{name}'")
        sine, spec = sines[0]
        lo, hi = sine.freq_min, sine.freq_max
        inside = [lo, math.sqrt(lo * hi), hi] if hi > lo else [lo]
        freqs = [lo / 8, lo / 4, lo / 2, *inside, hi * 2, hi * 4, hi * 8]
        base = _strip_weight(spec)
        return [SweepPoint(f"freq={f:.4g}", f, base | {"freq_min": f, "freq_max": f}) for f in freqs]
    if kind == "shift":
        return [SweepPoint(f"shift={s or 'none'}", s or "none", None, s) for s in SHIFT_VALUES]
    raise unknown_key_error(kind, DEFAULT_BASELINES, "sweep")


def run_sweep(
    kind: str,
    run_dirs: list[Path],
    baselines: list[str] | None = None,
    progress: bool = False,
    prompting: str | dict | None = None,
    oracle: bool | None = None,
) -> list[dict]:
    """Sweep every run over the points of the first run's config; baselines once per point; every point under
    the `prompting` strategy (default standard). With `oracle` (default: when `baselines` is None, the default
    list) the Bayes oracle of each unshifted point joins the baselines where it is exact and cheap and `zero` is
    among them (default_oracle), as in `evaluate`: the two ends of the ICL score."""
    if not run_dirs:
        raise UserError("give at least one run directory")
    make_prompting(prompting)  # a misspelt strategy fails before any model loads
    configs = [read_config(r) for r in run_dirs]
    first = configs[0]
    for run, cfg in zip(run_dirs, configs, strict=True):
        if (cfg.dims, cfg.points) != (first.dims, first.points):
            raise UserError(
                f"runs must share dims and points to share a sweep: {run} has d={cfg.dims}, "
                f"{cfg.points} points; {run_dirs[0]} has d={first.dims}, {first.points} points"
            )
    # the values come from the first run whose task has the swept parameter (e.g. the mixture among specialists)
    points, problem = None, None
    for cfg in configs:
        try:
            points = sweep_points(kind, cfg)
            break
        except UserError as e:
            problem = problem or e
    if points is None:
        raise problem
    names = DEFAULT_BASELINES[kind] if baselines is None else baselines
    models = [load_model(r, c)[0] for r, c in zip(run_dirs, configs, strict=True)]
    run_names = run_labels(run_dirs)
    rows = []
    for point in points:
        for run, cfg, model in zip(run_dirs, configs, models, strict=True):
            # every run is scored on the first run's evaluation prompts (same seed, same task spec)
            cfg.eval = first.eval
            for r in evaluate(model, cfg, point.task, point.shift, [], progress, prompting):
                rows.append({"run": run_names[str(run)], "sweep": point.name} | r)
        extra = []
        if (baselines is None if oracle is None else oracle) and point.shift is None:
            extra = default_oracle(make_task(point.task or first.task, first.dims), names, first.dims)
        if names:
            for r in evaluate(None, first, point.task, point.shift, names + extra, progress, prompting):
                rows.append({"run": "", "sweep": point.name} | r)
    return rows


def run_labels(run_dirs: list[Path]) -> dict[str, str]:
    """Folder names, or whole paths where two runs share a folder name."""
    names = [Path(r).name for r in run_dirs]
    return {str(r): n if names.count(n) == 1 else str(r) for r, n in zip(run_dirs, names, strict=True)}


def write_sweep(path: Path, rows: list[dict]) -> None:
    write_curves(path, rows, columns=SWEEP_COLUMNS)
