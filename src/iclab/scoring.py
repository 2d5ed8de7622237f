"""The fixed, seeded evaluation prompts (`EvalSet`, `make_eval_set`) and how a prediction is scored against them
(`prompt_errors`): squared error divided by the task's E[y^2], or the 0-1 sign error for classification.

Training's validation curve and evaluation's error curves score the same way; this module sits below both."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .config import Config
from .spec import format_named, parse_named
from .tasks import FunctionClass, InputDistribution, make_inputs, make_shift, make_task, sample_prompts
from .tasks.prompting import make_prompting


@dataclass
class EvalSet:
    label: str  # the task column of curves.csv
    xs: Tensor  # (prompts, points, dims)
    ys: Tensor  # (prompts, points)
    scale: Tensor  # (prompts,) E[y^2] of each prompt's function class
    metric: str
    task: FunctionClass  # what the prompts were drawn from, for estimators that learn the prior
    inputs: InputDistribution
    # a prompting strategy's queries: the prompt at k is xs[:, :k], ys[:, :k] then query_xs[:, k] (None: standard)
    query_xs: Tensor | None = None
    query_ys: Tensor | None = None
    positions: int | None = None  # the scored positions k = 0 .. positions-1 (None: all)
    # (prompts, points) the points scored (Park et al.'s outlier tasks: the clean ones; None: every point)
    clean: Tensor | None = None

    @property
    def targets(self) -> Tensor:
        """(prompts, scored positions) outputs that the predictions are scored against."""
        return (self.ys if self.query_ys is None else self.query_ys)[:, : self.positions]


def make_eval_set(
    config: Config,
    task: str | dict | None = None,
    shift: str | dict | None = None,
    prompts: int | None = None,
    seed: int | None = None,
    prompting: str | dict | None = None,
) -> EvalSet:
    """Prompts of `task` (default: the run's task) under an optional distribution `shift` and `prompting` strategy,
    drawn on the CPU from `seed` (default eval.seed) so that every estimator and every device sees the same set."""
    strategy = make_prompting(prompting)
    spec = parse_named(task) if isinstance(task, str) else task
    function_class = make_task(spec or config.task, config.dims, prefix="--task" if spec else "task")
    label = format_named(spec) if spec else str(config.task["name"])
    inputs_spec = config.inputs
    shift_obj = None
    if shift is not None:
        shift_spec = parse_named(shift) if isinstance(shift, str) else shift
        shift_obj = make_shift(shift_spec)
        inputs_spec = shift_obj.inputs(inputs_spec)
        label += "@" + shift_obj.label(shift_spec)
    inputs = make_inputs(inputs_spec, config.dims)
    generator = torch.Generator().manual_seed(config.eval.seed if seed is None else seed)
    count = prompts or config.eval.prompts
    xs, ys, params = sample_prompts(function_class, inputs, count, config.eval_points, generator)
    demos, queries = strategy.split(xs, generator)
    evalset = EvalSet(label, demos, ys, function_class.y_scale(params), function_class.metric, function_class, inputs)
    if config.eval_points > config.points:  # beyond the training length: a curve of its own in curves.csv
        evalset.label += f"@points={config.eval_points}"
    if queries is not None:  # both sets answered by the prompt's own function, as Garg's task.evaluate(xs_comb)
        evalset.label += "@" + strategy.registry_name
        evalset.ys = function_class.apply(params, demos, generator)
        evalset.query_xs, evalset.query_ys = queries, function_class.apply(params, queries, generator)
        evalset.positions = strategy.positions(xs.shape[1], xs.shape[2])
    if "outlier" in params and queries is None:  # scored on the clean points only, as Park et al.'s eval.py
        evalset.clean = ~params["outlier"]
    if shift_obj is not None:
        evalset.ys = shift_obj.outputs(evalset.ys, generator, function_class)
        if queries is not None:
            evalset.query_ys = shift_obj.outputs(evalset.query_ys, generator, function_class)
    return evalset


def prompt_errors(preds: Tensor, evalset: EvalSet) -> Tensor:
    """(prompts, scored positions) errors of predictions against the evaluation set's outputs. With `clean` points
    (outlier tasks) an outlier's error is 0 and a clean one's is scaled by prompts / (clean points at its k), so
    that the mean over prompts at each k is the mean over that k's clean points."""
    preds, ys = preds.double().cpu(), evalset.targets.double()
    if evalset.metric == "sign":
        errors = (torch.sign(preds) != torch.sign(ys)).double()
    elif evalset.metric == "recall":  # vector_mqar: (prompts, points, d) outputs
        errors = evalset.task.point_errors(preds, ys)
    else:
        errors = (preds - ys).square() / evalset.scale.double().unsqueeze(1)
    if evalset.clean is None:
        return errors
    clean = evalset.clean[:, : errors.shape[1]].double()
    return errors * clean * clean.shape[0] / clean.sum(0).clamp(min=1)
