"""The models the paper recipes share: specialists and mixtures, at each scale (quick, full, paper).

Their settings are data, scales/models/SCALE.yaml: a `base:` config with `set:` overrides for every model, the
families' own overrides (linear: d dimensions, 2d + 1 points; scalar: d = 1, where a frequency is a plain property
of the curve), and the models themselves, name -> family, task and steps factor. Adding a model is adding its
lines there.

Why these settings. Quick scale (3 layers, d = 4, nnz = 1, lr 3e-3): measured earlier, a 3-layer model does not
learn to exploit sparsity within CPU minutes with nnz = 2 in d = 5 (the sparse specialist was still at least
squares' level after 6,000 steps), nor with plain squared-error training of the mixture, where sparse prompts
(E[y^2] = 1) weigh a fifth of dense ones (E[y^2] = 5). With nnz = 1, the loss normalised per prompt by its class's
E[y^2] (train.loss: normalized, the metric the evaluation reports) and lr 3e-3, the mixture beat least squares at
every k < d after 4,000 steps in d = 4, and matched the specialists once it trained twice as long as they did
(steps_factor: 2: as many sparse prompts as the sparse specialist).
Full scale (issue 12: nnz = 2 in d = 5): the demo's 6 layers and lr 2e-3 with the normalised loss. Measured here
(seed 0, 6,000 steps, 16 min on one thread, 1,280 prompts), the nnz = 2 specialist against least squares at
k = 1 .. 4: 0.723 / 0.468 / 0.343 / 0.188 against 0.726 / 0.502 / 0.381 / 0.198; it beats least squares, but it
is still far from the Bayes oracle (0.336 at k = 2, 0.008 at k = 3): it shrinks like ridge more than it finds the
support. The full scale's sparse specialist is that run.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..config import Config
from ..errors import UserError
from ..spec import unknown_key_error
from ..training.checkpoint import checkpoint_dirs
from ..training.runs import RunDir
from ..training.trainer import resume, train
from .common import ensure_run
from .sizes import Sizes, Trained, training_config


@dataclass
class SharedModel:
    family: str  # a key of `families`: its overrides apply on top of `set`
    task: dict
    steps_factor: int = field(default=1, metadata={"min": 1})  # trains this many times the family's train.steps


@dataclass
class SharedModels(Trained):
    families: dict[str, dict] = field(default_factory=dict)  # family -> dotted overrides (dims, points, train...)
    models: dict[str, SharedModel] = field(default_factory=dict)
    # what the sweep recipes' checks read besides the linear family's dims (`setting`): nnz, and any key added here
    recipe: dict = field(default_factory=dict)

    def check(self, prefix: str) -> None:
        for name, model in self.models.items():
            if model.family not in self.families:
                raise unknown_key_error(model.family, self.families, f"models.{name}.family")


SIZES = Sizes("models", SharedModels)
PRETRAINED = "full"  # the scale whose models ship with the package


def model_names(mode: str = PRETRAINED) -> list[str]:
    return list(SIZES[mode]["models"])


def setting(mode: str) -> dict:
    """What the sweep recipes' checks need to know of a scale: the linear family's d and the file's `recipe:` keys
    (the sparse class's nnz, ...)."""
    size = SIZES[mode]
    return {"dims": size["families"]["linear"]["dims"]} | size["recipe"]


def model_config(name: str, mode: str) -> Config:
    size = SIZES[mode]
    if name not in size["models"]:
        raise unknown_key_error(name, size["models"], "recipe model")
    model = size["models"][name]
    config = training_config(size, size["families"][model["family"]] | {"task": model["task"]})
    config.train.steps *= model["steps_factor"]
    return config


def pretrained_dir(name: str) -> Path:
    return Path(str(resources.files("iclab") / "pretrained" / name))


def ensure_model(name: str, root: Path, mode: str, pretrained: bool, progress: bool) -> Path:
    """The run folder of model `name`: shipped with iclab (--pretrained), or trained into root/models/MODE/NAME,
    resuming a partial run and reusing a finished one."""
    if pretrained:
        path = pretrained_dir(name)
        if not (path / "config.json").is_file():
            raise UserError(f"no pretrained checkpoint ships for '{name}'; run without --pretrained to train it")
        return path
    run_dir = root / "models" / mode / name
    ensure_run(
        run_dir,
        model_config(name, mode),
        lambda: train(model_config(name, mode), run_dir, progress=progress),
        lambda: resume(run_dir, progress=progress),
        name=name,
    )
    return run_dir


def train_models(names: list[str], root: Path, mode: str, jobs: int, threads: int, progress: bool) -> None:
    """Train (or resume) the shared models `names` that are not finished yet (`train_runs`)."""
    train_runs([(name, root / "models" / mode / name, model_config(name, mode)) for name in names], root, jobs, threads,
               progress)


def train_runs(runs: list[tuple[str, Path, Config]], root: Path, jobs: int, threads: int, progress: bool) -> None:
    """Train (or resume) the runs (name, run folder, config) that are not finished yet, `jobs` at a time in local
    worker processes of `threads` torch threads each: on a 2-core machine two one-thread runs beat one two-thread
    run (benchmarks/ddp.py). The recipes then find them finished. Each run logs to logs/NAME.log beside it."""
    from ..experiments.engines import execute, make_job

    todo = []
    for name, run_dir, config in {str(r[1]): r for r in runs}.values():  # each run once, in the order given
        if RunDir(run_dir).decide(config) != "reuse":  # refuses a folder of other settings before any work
            todo.append((name, run_dir, config))
    if not todo:
        return
    # longest first, so that the last runs to finish are short ones
    todo.sort(key=lambda t: -t[2].train.steps * t[2].points)
    shown = ", ".join(n for n, _, _ in todo[:8]) + (f" and {len(todo) - 8} more" if len(todo) > 8 else "")
    print(f"training {shown}: {jobs} at a time; logs in a logs/ folder beside each run", flush=True)
    job_list = [
        make_job(name, run_dir, config.to_dict(), Path(run_dir).parent / "logs" / f"{Path(run_dir).name}.log",
                 threads=threads)
        for name, run_dir, config in todo
    ]
    outcomes = execute(job_list, "local", root, workers=jobs, progress=progress)
    failed = [f"{n} ({o['status']}): {o['error']}" for n, o in outcomes.items() if o["status"] != "done"]
    if failed:
        raise UserError("training failed for " + "; ".join(failed))


def export_pretrained(run_dir: Path, name: str, dest_root: Path) -> Path:
    """Copy a finished model's config, final weights and stored curves (if any) into the package (no optimizer
    state)."""
    dest = dest_root / name
    shutil.rmtree(dest, ignore_errors=True)
    last = checkpoint_dirs(run_dir)[-1]
    (dest / "checkpoints" / last.name).mkdir(parents=True)
    for f in ("model.safetensors", "state.json"):
        shutil.copy2(last / f, dest / "checkpoints" / last.name / f)
    shutil.copy2(run_dir / "config.json", dest / "config.json")
    if (run_dir / "eval" / "curves.csv").is_file():  # a study recipe's model has no curves of its own
        (dest / "eval").mkdir()
        shutil.copy2(run_dir / "eval" / "curves.csv", dest / "eval" / "curves.csv")
    return dest
