"""Function classes, input distributions and shifts, all addressable by name from configs and the CLI."""

from __future__ import annotations

import torch
from torch import Tensor

from . import park  # noqa: F401  (registers Park et al.'s tasks and the signs inputs)
from .functions import FUNCTION_CLASSES, FunctionClass, index_params, make_task
from .inputs import INPUT_DISTRIBUTIONS, InputDistribution, make_inputs
from .shifts import SHIFTS, Shift, make_shift

__all__ = [
    "FUNCTION_CLASSES",
    "INPUT_DISTRIBUTIONS",
    "SHIFTS",
    "FunctionClass",
    "InputDistribution",
    "Shift",
    "index_params",
    "make_inputs",
    "make_shift",
    "make_task",
    "sample_prompts",
]


def sample_prompts(
    task: FunctionClass,
    inputs: InputDistribution,
    batch: int,
    points: int,
    generator: torch.Generator,
    active_dims: int | None = None,
) -> tuple[Tensor, Tensor, dict]:
    """Draw `batch` prompts of `points` (x, y) pairs: xs (batch, points, d), ys (batch, points), and the
    functions' parameters (for oracles and normalisation)."""
    xs = inputs.sample(batch, points, generator, active_dims)
    xs, params = task.prompt_inputs(task.sample(batch, generator, active_dims), xs, generator)
    return xs, task.apply(params, xs, generator), params
