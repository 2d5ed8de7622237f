"""iclab from Python: train a run, open one, evaluate it, and get its curves as a table, a figure or files.

    import iclab

    run = iclab.train("demo", out="runs/quick", overrides={"train.steps": 500})
    result = run.evaluate()                  # the run's task, the config's baselines
    result.to_pandas()                       # task, estimator, k, mean, lo, hi, icl_score
    result.save()                            # RUN/eval/curves.csv, its PNG and report.md, as `iclab eval` writes
    iclab.load_run("runs/quick").model       # the trained ICLModel, in eval mode

A config is a `Config`, a nested dict (the YAML file's keys), a YAML path or the name of a packaged config
("demo"). Overrides are one dict of dotted keys, as `--set` and grid files write them, with Python values:
{"train.steps": 100, "model.layers": 2, "task": {"name": "sparse_linear", "nnz": 2}}; a value replaces the key's
whole value. `iclab.compare` puts evaluated runs side by side (`iclab compare`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Config, build_config, packaged_config, read_yaml, set_key
from .errors import UserError
from .evaluation.compare import Comparison
from .evaluation.compare import compare as compare_runs
from .evaluation.curves import CURVE_COLUMNS, evaluate, icl_scores, merge_curves, series_name
from .evaluation.report import plot_curves, plot_path, render_report
from .models import ICLModel
from .spec import split_specs
from .training.runs import RunDir, load_model, read_config, read_metrics
from .training.trainer import train as train_run

ConfigLike = Config | dict | str | Path


def make_config(config: ConfigLike, overrides: dict[str, Any] | None = None) -> Config:
    """A validated Config from a Config, a nested dict, a YAML path or a packaged name ("demo"), with `overrides`
    ({"train.steps": 100, ...}: dotted keys, Python values) applied. Bad keys fail with one line naming them."""
    if isinstance(config, Config):
        data = config.to_dict()
    elif isinstance(config, dict):
        data = copy.deepcopy(config)
    elif isinstance(config, str | Path):
        path = Path(config)
        data = read_yaml(path if path.suffix in (".yaml", ".yml") or path.is_file() else packaged_config(str(config)))
    else:
        raise UserError(
            f"a config is a Config, a dict, a YAML path or a packaged name such as 'demo', got {type(config).__name__}"
        )
    if not isinstance(overrides or {}, dict):
        raise UserError(f"overrides are a dict such as {{'train.steps': 100}}, got {type(overrides).__name__}")
    for key, value in (overrides or {}).items():
        set_key(data, key, copy.deepcopy(value))
    return build_config(data)


class Run:
    """A run folder (see training/runs.py): `path`, its `config`, its trained `model` (loaded on first use from
    the latest checkpoint), `step` reached and training `metrics`; `evaluate` draws its error curves."""

    def __init__(self, path: str | Path):
        self.path = Path(path).resolve() if Path(path).name in ("", "..") else Path(path)  # "." has no name
        self.config: Config = read_config(self.path)  # a one-line error for a folder that holds no run

    def __repr__(self) -> str:
        return f"Run('{self.path}', step {self.step} of {self.config.train.steps})"

    @functools.cached_property
    def model(self) -> ICLModel:
        return load_model(self.path, self.config)[0]

    @property
    def step(self) -> int:
        return RunDir(self.path).status().step

    @property
    def metrics(self) -> list[dict]:
        """metrics.jsonl: one dict per logged step (loss, lr, seconds, flops, val_error)."""
        return read_metrics(self.path)

    def evaluate(
        self,
        task: str | dict | None = None,
        shift: str | dict | None = None,
        baselines: list[str] | str | None = None,
        prompting: str | dict | None = None,
        progress: bool = False,
        points: int | None = None,
    ) -> EvalResult:
        """Error against k of the model and the baselines on the config's fixed evaluation prompts, as `iclab eval`
        computes it: `task` (default the run's, e.g. "sparse_linear:nnz=2"), a `shift` ("scaled_x:factor=2"),
        `baselines` (a list or a comma list; default the config's eval.baselines), a `prompting` strategy, and
        `points` per prompt (default eval.points; more than the run's `points` evaluates beyond its training
        length, which a model with a learned position table refuses). Nothing is written until `save()`."""
        names = split_specs(baselines) if isinstance(baselines, str) else baselines
        config = self.config
        if points is not None:
            if points < 1:
                raise UserError(f"points must be a positive number of (x, y) pairs per prompt, got {points}")
            config = dataclasses.replace(config, eval=dataclasses.replace(config.eval, points=points))
            config.check("")  # e.g. beyond the training length with a learned position table: one line
        rows = evaluate(self.model, config, task, shift, names, progress=progress, prompting=prompting)
        return EvalResult(self, rows)

    def report(self) -> Path:
        """(Re)write RUN/report.md and its figures from the stored files; returns its path."""
        return render_report(self.path)


@dataclass
class EvalResult:
    """One evaluation of a run: `rows` of (task, estimator, k, mean, lo, hi), the error's mean over the prompts and
    its bootstrap band."""

    run: Run
    rows: list[dict]

    def __repr__(self) -> str:
        names = ", ".join(dict.fromkeys(r["estimator"] for r in self.rows))
        return f"EvalResult(run '{self.run.path}', task '{self.task}', k = 0 .. {self.rows[-1]['k']}: {names})"

    @property
    def task(self) -> str:
        """The evaluated task's label, e.g. 'linear' or 'linear@scaled_x:factor=2' (curves.csv's task column)."""
        return self.rows[0]["task"]

    def to_pandas(self) -> Any:
        """A DataFrame with curves.csv's columns (CURVE_COLUMNS); icl_score is NaN where the rows hold no `zero` or
        oracle for it. Needs pandas."""
        try:
            import pandas
        except ImportError:
            raise UserError("to_pandas needs pandas: pip install pandas") from None
        scores = icl_scores(self.rows)
        records = [r | {"icl_score": scores.get(("", r["task"], series_name(r), r["k"]))} for r in self.rows]
        return pandas.DataFrame.from_records(records, columns=CURVE_COLUMNS)

    def plot(self, path: str | Path | None = None) -> Path:
        """Draw the curves to a PNG (default: where `iclab eval` puts this task's, RUN/eval/curves*.png); returns
        its path (in a notebook: `IPython.display.Image(result.plot())`)."""
        config = self.run.config
        path = Path(path) if path is not None else plot_path(self.run.path / "eval", self.task, config.task["name"])
        return plot_curves(self.rows, self.task, path, config.dims)

    def save(self) -> tuple[Path, Path]:
        """Write what `iclab eval` writes: these rows into RUN/eval/curves.csv (replacing earlier rows of the same
        task), the task's PNG and RUN/report.md. Returns (curves.csv, PNG)."""
        path = self.run.path / "eval" / "curves.csv"
        merge_curves(path, self.rows)
        png = self.plot()
        render_report(self.run.path)
        return path, png


def train(
    config: ConfigLike,
    out: str | Path,
    overrides: dict[str, Any] | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> Run:
    """Train a new run of `config` (a Config, dict, YAML path or packaged name) with `overrides` (dotted keys:
    {"train.steps": 100}) into the folder `out`, as `iclab train` does, and return it. An existing run in `out` is
    refused unless `overwrite`. Ctrl-C saves a checkpoint; `iclab train --resume OUT` continues it."""
    train_run(make_config(config, overrides), out, overwrite=overwrite, progress=progress)
    return Run(out)


def load_run(path: str | Path) -> Run:
    """The run stored in folder `path` (trained by iclab.train, `iclab train`, a grid or a recipe)."""
    return Run(path)


def compare(
    runs: list[Run | str | Path], k: list[int] | None = None, out: str | Path | None = None, task: str | None = None
) -> Comparison:
    """Evaluated runs side by side, as `iclab compare` (evaluation/compare.py): each run's error and ICL score at
    `k` (default d, 2d and the last k), their config differences, and a figure, written to `out`."""
    return compare_runs([r.path if isinstance(r, Run) else Path(r) for r in runs], k, out, task)
