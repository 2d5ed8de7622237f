"""Old module paths (before the 0.2 layout) keep importing, with a DeprecationWarning, so users' scripts run on.

`import iclab.evaluate` returns the module `iclab.evaluation.curves` itself (one module object under two names),
so monkeypatching or isinstance checks through either name see the same thing.

`iclab.train` is the one old path retired: the name is now the API's function `iclab.train(config, out=...)`
(api.py), so importing it as a module fails with a message naming the module's new path."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

OLD_TO_NEW = {
    "iclab.checkpoint": "iclab.training.checkpoint",
    "iclab.runs": "iclab.training.runs",
    "iclab.distributed": "iclab.training.distributed",
    "iclab.evaluate": "iclab.evaluation.curves",
    "iclab.sweeps": "iclab.evaluation.sweeps",
    "iclab.report": "iclab.evaluation.report",
    "iclab.grid": "iclab.experiments.grid",
    "iclab.engines": "iclab.experiments.engines",
    "iclab.text.cli": "iclab.cli.text",
    "iclab.lm.cli": "iclab.cli.lm",
    "iclab.analysis.adapter": "iclab.icl_vs_ft.adapter",
    "iclab.analysis.icl_vs_ft": "iclab.icl_vs_ft.engine",
    "iclab.analysis.metrics": "iclab.icl_vs_ft.metrics",
    "iclab.lm.tables": "iclab.icl_vs_ft.results",
    "iclab.model": "iclab.models.transformer",  # its ModelConfig is now TransformerConfig there
}
# old module paths whose name the API took: old path -> new module path
RETIRED = {"iclab.train": "iclab.training.trainer"}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, new: str):
        self.new = new

    def create_module(self, spec):
        return importlib.import_module(self.new)

    def exec_module(self, module) -> None:  # the real module is already executed
        pass


class AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in RETIRED:
            raise ModuleNotFoundError(
                f"the module {fullname} is now {RETIRED[fullname]} ({fullname} is the function that trains a run: "
                f"iclab.train(config, out=...))",
                name=fullname,
            )
        new = OLD_TO_NEW.get(fullname)
        if new is None:
            return None
        warnings.warn(f"{fullname} is now {new}; the old name will be removed", DeprecationWarning, stacklevel=2)
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new))


def install() -> None:
    if not any(isinstance(f, AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(AliasFinder())
