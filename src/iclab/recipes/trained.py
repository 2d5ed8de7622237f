"""What the study recipes that train their own transformers share (task-diversity, algorithm-selection): a model
of their scale file's config on a task of their choosing, trained once (or shipped), and the predictions of a set
of estimators on one evaluation set, for errors and prediction distances."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from ..baselines import Estimator
from ..config import Config
from ..evaluation.curves import predictions
from ..scoring import EvalSet
from ..training.checkpoint import latest_checkpoint, read_state
from ..training.trainer import resume, train
from .common import ensure_run, note_model
from .models import pretrained_dir


def ensure_study_model(name: str, config: Config, root: Path, mode: str, pretrained: bool, progress: bool) -> Path:
    """The run folder of model `name`: shipped with iclab (--pretrained), or trained into root/models/MODE/NAME
    (a finished run is reused, an interrupted one resumed)."""
    if pretrained:
        note_model(name, pretrained_dir(name))
        return pretrained_dir(name)
    run_dir = root / "models" / mode / name
    ensure_run(
        run_dir,
        config,
        lambda: train(config, run_dir, progress=progress),
        lambda: resume(run_dir, progress=progress),
        name=name,
    )
    return run_dir


def train_info(run_dir: Path) -> dict:
    state = read_state(latest_checkpoint(run_dir))
    return {"steps": state["step"], "train_seconds": round(state["elapsed_seconds"], 1)}


def all_predictions(estimators: dict[str, Estimator], evalset: EvalSet) -> dict[str, Tensor]:
    """(prompts, points) float64 predictions of every estimator on the same prompts (fit_prior on its task)."""
    out = {}
    for name, est in estimators.items():
        est.fit_prior(evalset.task, evalset.inputs, evalset.xs.shape[1])
        out[name] = predictions(est, evalset, slice(None)).double()
    return out


def normalised(diff: Tensor, evalset: EvalSet) -> Tensor:
    """Squared differences divided by each prompt's E[y^2], as the curves' errors."""
    return diff.square() / evalset.scale.double().unsqueeze(1)
