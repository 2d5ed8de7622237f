"""Your own code in every command: modules that register tasks, input distributions, shifts or estimators with the
`Registry` decorators (spec.py), imported before a command runs.

Two ways in: `iclab --import my_module COMMAND ...` (repeatable; the module is found on PYTHONPATH or in the current
folder), and, for an installed package, an entry point in the group `iclab.plugins`:

    [project.entry-points."iclab.plugins"]
    my_tasks = "my_package.tasks"

The modules named with --import are also written to $ICLAB_IMPORT, so that the processes a command starts (the
workers of `iclab grid`) import them too; setting ICLAB_IMPORT=a,b yourself does the same as --import a --import b.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from importlib.metadata import entry_points

from .errors import UserError

GROUP = "iclab.plugins"
ENV = "ICLAB_IMPORT"


def load_plugins(modules: Iterable[str] = ()) -> list[str]:
    """Import the `iclab.plugins` entry points, the modules in $ICLAB_IMPORT and `modules` (each once); record
    the modules in $ICLAB_IMPORT for child processes. Returns the names imported."""
    for point in entry_points(group=GROUP):
        _import(point.module, f"the {GROUP} entry point '{point.name}'")
    names = list(dict.fromkeys([*filter(None, os.environ.get(ENV, "").split(",")), *modules]))
    for name in names:
        _import(name, f"--import {name}")
    if names:
        os.environ[ENV] = ",".join(names)
    return names


def _import(name: str, where: str) -> None:
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # `iclab --import my_tasks` finds my_tasks.py in the current folder
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is None or not (name == e.name or name.startswith(e.name + ".")):
            raise  # the module exists and itself imports something missing: its traceback says where
        raise UserError(f"{where}: no module named '{e.name}'; put it on PYTHONPATH or in the current folder") from None
