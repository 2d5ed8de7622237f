"""Input distributions: `sample(batch, points, generator, active_dims)` -> xs of shape (batch, points, dims).

With a curriculum, coordinates at or beyond `active_dims` are zero (as in Garg et al.). The skewed and
half-subspace distributions draw one random rotation per call, so a whole evaluation set shares it; their
covariances are normalised to trace d, like the isotropic one, so that only the shape of the data changes.

Garg et al. multiply z ~ N(0, I) by T = U diag(t) U^T, with U a random orthogonal matrix and T rescaled so that
sum(t^2) = d: the covariance T^T T has eigenvalues proportional to t^2, with trace d. Here each distribution
names the covariance eigenvalues directly: skewed t_i = 1/(i+1) is covariance 1/(i+1)^2 (power 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from ..spec import Registry, key_error

INPUT_DISTRIBUTIONS = Registry("input distribution")


@dataclass
class InputDistribution:
    dims: int = field(default=5, metadata={"min": 1})
    registry_name: ClassVar[str]

    def sample(self, batch: int, points: int, generator: torch.Generator, active_dims: int | None = None) -> Tensor:
        xs = torch.randn(batch, points, self.dims, generator=generator, device=generator.device)
        xs = self.transform(xs, generator)
        if active_dims is not None and active_dims < self.dims:
            xs[..., active_dims:] = 0
        return xs

    def transform(self, xs: Tensor, generator: torch.Generator) -> Tensor:
        return xs


@INPUT_DISTRIBUTIONS.register("isotropic")
@dataclass
class Isotropic(InputDistribution):
    """x ~ N(0, I_d)."""


@INPUT_DISTRIBUTIONS.register("scaled")
@dataclass
class Scaled(InputDistribution):
    """x ~ N(0, factor^2 I_d)."""

    factor: float = field(default=2.0, metadata={"gt": 0.0})

    def transform(self, xs, generator):
        return xs * self.factor


def _random_rotation(dims: int, generator: torch.Generator) -> Tensor:
    q, r = torch.linalg.qr(torch.randn(dims, dims, generator=generator, device=generator.device))
    return q * torch.sign(torch.diagonal(r))  # sign fix: Haar-distributed


class _Covariance(InputDistribution):
    """x = z @ (U diag(sqrt(eigenvalues)) U^T) with a random rotation U: covariance U diag(eig) U^T."""

    def eigenvalues(self) -> Tensor:
        raise NotImplementedError

    def transform(self, xs, generator):
        eig = self.eigenvalues().to(xs)
        eig = eig * (self.dims / eig.sum())  # trace d, as for isotropic inputs
        u = _random_rotation(self.dims, generator).to(xs)
        return xs @ (u * eig.sqrt()) @ u.T


@INPUT_DISTRIBUTIONS.register("skewed")
@dataclass
class Skewed(_Covariance):
    """Covariance with eigenvalues proportional to 1 / (i + 1)^power, randomly rotated: power 2 (the default) is
    Garg et al.'s skewed inputs, x = z T with T's eigenvalues 1/(i+1); power 1 is iclab's before version 2."""

    power: float = field(default=2.0, metadata={"min": 0.0})

    def eigenvalues(self):
        return 1.0 / (torch.arange(self.dims, dtype=torch.float64) + 1) ** self.power


@INPUT_DISTRIBUTIONS.register("half_subspace")
@dataclass
class HalfSubspace(_Covariance):
    """x lies in a random subspace of dimension floor(d/2) (rounding: floor, Garg's) or ceil(d/2) (rounding: ceil,
    iclab's before version 2), isotropic within it."""

    rounding: str = field(default="floor", metadata={"choices": ["floor", "ceil"]})

    def check(self, prefix):
        if self.dims < 2:
            raise key_error(f"{prefix}", f"half_subspace needs dims >= 2, got {self.dims}")

    def eigenvalues(self):
        eig = torch.zeros(self.dims, dtype=torch.float64)
        eig[: (math.floor if self.rounding == "floor" else math.ceil)(self.dims / 2)] = 1.0
        return eig


def make_inputs(spec: dict | str, dims: int, prefix: str = "inputs") -> InputDistribution:
    return INPUT_DISTRIBUTIONS.make(spec, prefix=prefix, dims=dims)
