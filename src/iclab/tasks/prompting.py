"""Prompting strategies for evaluation (Garg et al., `src/eval.py`): the demonstrations and the query of a prompt
come from two different sets.

A strategy turns one prompt's inputs xs (batch, points, d) into `demos` and `queries` of the same shape. The prompt
scored at position i is demos[:, :i] followed by queries[:, i]; only position i is scored, and the outputs are the
prompt's own function applied to each. `standard` has no separate query set (queries is None): the ordinary
prompt, scored at every position from one pass.

Strategies are data transforms beside the distribution shifts, so they live in tasks/; evaluation/curves.py
builds and scores the per-position prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ..spec import Registry

PROMPTINGS = Registry("prompting strategy")


@dataclass
class Prompting:
    registry_name: ClassVar[str]

    def split(self, xs: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        """(demos, queries); queries None means the ordinary prompt (the query at i is demos[:, i])."""
        return xs, None

    def positions(self, points: int, dims: int) -> int:
        """How many leading positions are scored."""
        return points


def _orthant(xs: Tensor, generator: torch.Generator) -> Tensor:
    """One random sign pattern per prompt, (batch, 1, d), uniform over {-1, 1}^d."""
    bits = torch.randint(0, 2, (xs.shape[0], 1, xs.shape[2]), generator=generator, device=generator.device)
    return (2 * bits - 1).to(xs.dtype)


@PROMPTINGS.register("standard")
@dataclass
class Standard(Prompting):
    """The ordinary prompt: demonstrations and query from the task's input distribution."""


@PROMPTINGS.register("random_quadrants")
@dataclass
class RandomQuadrants(Prompting):
    """Demonstrations |x| * s, all in one random orthant s per prompt; the query an unrestricted x."""

    def split(self, xs, generator):
        return xs.abs() * _orthant(xs, generator), xs


@PROMPTINGS.register("opposite_quadrants")
@dataclass
class OppositeQuadrants(Prompting):
    """Demonstrations in one random orthant s per prompt, the query in the opposite orthant -s."""

    def split(self, xs, generator):
        demos = xs.abs() * _orthant(xs, generator)
        return demos, -demos


@PROMPTINGS.register("orthogonal_train_test")
@dataclass
class OrthogonalTrainTest(Prompting):
    """The query orthogonal to every earlier demonstration, at its own norm; scored at k < d only."""

    def split(self, xs, generator):
        m = min(xs.shape[1], xs.shape[2])
        # Gram-Schmidt in one QR: column i of Q is x_i minus its projection on span(x_0..x_{i-1}), normalised
        q, r = torch.linalg.qr(xs[:, :m].double().transpose(1, 2))
        sign = torch.where(torch.diagonal(r, dim1=-2, dim2=-1) >= 0, 1.0, -1.0).to(q)
        direction = (q * sign.unsqueeze(1)).transpose(1, 2)  # (batch, m, d), pointing the way x_i's residual does
        queries = torch.zeros_like(xs)  # positions >= d are never scored (no orthogonal complement is left)
        queries[:, :m] = (direction * xs[:, :m].double().norm(dim=-1, keepdim=True)).to(xs.dtype)
        return xs, queries

    def positions(self, points, dims):
        return min(points, dims)


@PROMPTINGS.register("overlapping_train_test")
@dataclass
class OverlappingTrainTest(Prompting):
    """The query a copy of one earlier demonstration, chosen uniformly (at k = 0, the ordinary query)."""

    def split(self, xs, generator):
        b, n, _ = xs.shape
        u = torch.rand(b, n, generator=generator, device=generator.device, dtype=torch.float64)
        index = (u * torch.arange(n, device=xs.device)).long()  # uniform over 0 .. i-1 at position i; 0 at i = 0
        return xs, xs.gather(1, index.unsqueeze(-1).expand_as(xs))


def make_prompting(spec: str | dict | None) -> Prompting:
    return PROMPTINGS.make(spec or "standard", prefix="--prompting")  # given on the command line (or by a recipe)
