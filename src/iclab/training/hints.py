"""What to tell the user of a run that learned nothing: the training budget that is known to learn its setting,
read from the demo config and the models that ship with iclab (src/iclab/pretrained/*/config.json)."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from ..config import Config, config_from_json, load_config, packaged_config
from ..errors import UserError
from .runs import read_config, read_metrics

LEARNED = 0.9  # a final validation error below this fraction of the zero predictor's counts as learning
ZERO_ERROR = 1.0  # the zero predictor's validation error: squared error / E[y^2] averages 1, and sign(0) is never right


def shipped_configs() -> dict[Path, Config]:
    """The configs of the ICL models that ship with iclab, by the config file's path."""
    root = Path(str(importlib.resources.files("iclab") / "pretrained"))
    configs = {}
    for path in sorted(root.glob("*/config.json")):
        try:
            configs[path] = config_from_json(path)
        except UserError:  # another kind of model (icl-vs-ft's keywords LM)
            continue
    return configs


def reference(config: Config) -> tuple[str, Config]:
    """(what it is, its config): among the demo and the shipped models of the run's task, the one of the nearest
    dims that trained the fewest steps; the demo's when none has the run's task."""
    demo = ("the demo config", load_config(packaged_config("demo")))
    known = [demo] + [(f"the shipped model iclab/pretrained/{p.parent.name}", c) for p, c in shipped_configs().items()]
    same = [(what, c) for what, c in known if c.task["name"] == config.task["name"]]
    return min(same, key=lambda wc: (abs(wc[1].dims - config.dims), wc[1].train.steps)) if same else demo


def learning_hint(run_dir: str | Path) -> str | None:
    """One line for a run whose last validation error, at the largest k, is not below LEARNED times the zero
    predictor's; None for a run that learned (or logged no validation error)."""
    run_dir = Path(run_dir)
    curves = [row["val_error"] for row in read_metrics(run_dir) if "val_error" in row]
    if not curves or curves[-1][-1] < LEARNED * ZERO_ERROR:
        return None
    config = read_config(run_dir)
    what, ref = reference(config)
    setting = f"{ref.task['name']}, d = {ref.dims}, {ref.model.layers} layers of width {ref.model.width}"
    if config.train.steps < ref.train.steps:
        advice = f"train on with: iclab train --resume {run_dir} --steps {ref.train.steps}"
    else:
        advice = "it had the steps: compare the other settings"
    return (
        f"hint: the validation error at k = {len(curves[-1]) - 1} is {curves[-1][-1]:.2f} (predicting 0 scores "
        f"{ZERO_ERROR:g}): this run has not learned in context yet; {what} ({setting}) learned with "
        f"{ref.train.steps:,} steps of batch {ref.train.batch_size} at lr {ref.train.lr:g}; this run had "
        f"{config.train.steps:,} steps of batch {config.train.batch_size} at lr {config.train.lr:g}: {advice}"
    )
