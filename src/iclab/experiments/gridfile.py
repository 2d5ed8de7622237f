"""Grid files: a grid of config overrides, read, validated and expanded into one run per combination.

A grid file is data:

    base: demo                  # a packaged config name, or a YAML config (a path relative to the grid file)
    set: {train.steps: 1000}    # overrides for every run (optional)
    grid:                       # every combination of these values is one run
      train.lr: [1.0e-3, 3.0e-3]
      seed: [0, 1]
    collect: {k: [5, 10], evaluate: false}
    slurm: {partition: gpu, gpus_per_node: 1, timeout_min: 240}   # for --engine slurm

Each run is an ordinary run directory OUT/NAME, NAME spelling its grid values (`lr=0.001_seed=0`).
"""

from __future__ import annotations

import copy
import importlib.resources
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config, apply_overrides, packaged_config, read_yaml, set_key
from ..errors import UserError
from ..evaluation.report import slug
from ..spec import build, format_named, unknown_key_error


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


def read_grid(path: str | Path) -> GridFile:
    """Parse a grid file, or a packaged grid by name (e.g. `demo-lr`)."""
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
    folder = Path(str(importlib.resources.files("iclab") / "configs" / "grids"))
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise unknown_key_error(name, [p.stem for p in folder.glob("*.yaml")], "grid file (or packaged grid)")
    return path


def _base_config(base: Any, where: Path) -> dict:
    if base is None:
        return {}
    if isinstance(base, dict):
        return copy.deepcopy(base)
    path = where / str(base)
    return read_yaml(path if path.suffix in (".yaml", ".yml") or path.is_file() else packaged_config(str(base)))


def run_name(values: dict) -> str:
    """`lr=0.001_seed=0`: each grid key by its last part (its full name where two keys share one), and its value;
    a task-like mapping reads as `sparse_linear:nnz=2`."""
    last = [key.rsplit(".", 1)[-1] for key in values]
    parts = []
    for (key, value), short in zip(values.items(), last, strict=True):
        parts.append(f"{key if last.count(short) > 1 else short}={label(value)}")
    return slug("_".join(parts))


def label(value: Any) -> str:
    """A grid value as text: `sparse_linear:nnz=2` for a named mapping, `[5,2]` for a list, `0.001` for a number."""
    if isinstance(value, dict):
        if "name" in value:
            return format_named(value)
        return "{" + ",".join(f"{k}={label(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(label(v) for v in value) + "]"
    return str(value)


def expand(grid: GridFile, out: Path, overrides: list[str] | None = None) -> list[Run]:
    """Every combination of the grid's values, as validated configs; a bad key or value stops here, naming it."""
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
