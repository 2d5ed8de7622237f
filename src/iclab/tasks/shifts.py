"""Distribution shifts for evaluation (Garg et al.): change the inputs or the outputs of a task's prompts.

Errors under a shift are still divided by the unshifted task's E[y^2], so a shift that makes the problem harder
shows as a higher curve, as in the Garg release. Defaults follow the Garg release (`src/eval.py`); a shift whose
default changed in iclab's version 2 always spells that parameter out in its label (e.g. `skewed:power=2`), so
that curves made under the old definition are never mistaken for new ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from ..spec import Registry, format_named
from .functions import FunctionClass

SHIFTS = Registry("shift")


@dataclass
class Shift:
    registry_name: ClassVar[str]
    shown: ClassVar[tuple[str, ...]] = ()  # parameters every label spells out

    def inputs(self, base: dict) -> dict:
        """The input-distribution spec to use instead of `base`."""
        return base

    def outputs(self, ys: Tensor, generator: torch.Generator, task: FunctionClass) -> Tensor:
        """The outputs to use instead of `ys`, those of prompts drawn from `task`."""
        return ys

    def label(self, spec: dict) -> str:
        """The spec as written, plus the `shown` parameters, e.g. 'skewed:power=2'."""
        return format_named(spec | {key: _plain(getattr(self, key)) for key in self.shown})


def _plain(value):
    return int(value) if isinstance(value, float) and value.is_integer() else value


@SHIFTS.register("skewed")
@dataclass
class SkewedInputs(Shift):
    """Inputs with a skewed covariance, eigenvalues proportional to 1/(i+1)^power: power 2 is Garg's (x times
    a matrix with eigenvalues 1/(i+1)), power 1 iclab's before version 2."""

    power: float = field(default=2.0, metadata={"min": 0.0})
    shown: ClassVar[tuple[str, ...]] = ("power",)

    def inputs(self, base):
        return {"name": "skewed", "power": self.power}


@SHIFTS.register("half_subspace")
@dataclass
class HalfSubspaceInputs(Shift):
    """Inputs confined to a random subspace of dimension floor(d/2) (rounding: floor, Garg's) or ceil(d/2)
    (rounding: ceil, iclab's before version 2)."""

    rounding: str = field(default="floor", metadata={"choices": ["floor", "ceil"]})
    shown: ClassVar[tuple[str, ...]] = ("rounding",)

    def inputs(self, base):
        return {"name": "half_subspace", "rounding": self.rounding}


@SHIFTS.register("scaled_x")
@dataclass
class ScaledInputs(Shift):
    """Inputs multiplied by `factor`."""

    factor: float = field(default=2.0, metadata={"gt": 0.0})

    def inputs(self, base):
        return {"name": "scaled", "factor": self.factor}


@SHIFTS.register("scaled_y")
@dataclass
class ScaledOutputs(Shift):
    """Outputs multiplied by `factor`."""

    factor: float = field(default=2.0, metadata={"gt": 0.0})

    def outputs(self, ys, generator, task):
        return ys * self.factor


@SHIFTS.register("noisy_y")
@dataclass
class NoisyOutputs(Shift):
    """Outputs plus N(0, std^2) noise, then (renormalize, Garg's noisy linear regression: std 1 and
    renormalize_ys) scaled so that their standard deviation over the evaluation set is the task's sqrt(E[y^2]),
    sqrt(d) for linear regression. renormalize: false is iclab's before version 2."""

    std: float = field(default=1.0, metadata={"min": 0.0})
    renormalize: bool = True
    shown: ClassVar[tuple[str, ...]] = ("renormalize",)

    def outputs(self, ys, generator, task):
        ys = ys + self.std * torch.randn(ys.shape, generator=generator, device=generator.device).to(ys.dtype)
        return ys * (task.expected_y2() ** 0.5 / ys.std()) if self.renormalize else ys


def make_shift(spec: dict | str) -> Shift:
    return SHIFTS.make(spec, prefix="--shift")  # a shift is given on the command line (or by a recipe)
