"""Distribution shifts for evaluation (Garg et al.): change the inputs or the outputs of a task's prompts.

Errors under a shift are still divided by the unshifted task's E[y^2], so a shift that makes the problem harder
shows as a higher curve, as in the Garg release.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from ..spec import Registry

SHIFTS = Registry("shift")


@dataclass
class Shift:
    registry_name: ClassVar[str]

    def inputs(self, base: dict) -> dict:
        """The input-distribution spec to use instead of `base`."""
        return base

    def outputs(self, ys: Tensor, generator: torch.Generator) -> Tensor:
        return ys


@SHIFTS.register("skewed")
@dataclass
class SkewedInputs(Shift):
    """Inputs with a skewed covariance (eigenvalues proportional to 1/(i+1))."""

    def inputs(self, base):
        return {"name": "skewed"}


@SHIFTS.register("half_subspace")
@dataclass
class HalfSubspaceInputs(Shift):
    """Inputs confined to a random half-dimensional subspace."""

    def inputs(self, base):
        return {"name": "half_subspace"}


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

    def outputs(self, ys, generator):
        return ys * self.factor


@SHIFTS.register("noisy_y")
@dataclass
class NoisyOutputs(Shift):
    """Outputs plus N(0, std^2) noise."""

    std: float = field(default=1.0, metadata={"min": 0.0})

    def outputs(self, ys, generator):
        return ys + self.std * torch.randn(ys.shape, generator=generator, device=generator.device).to(ys.dtype)


def make_shift(spec: dict | str) -> Shift:
    return SHIFTS.make(spec, prefix="shift")
