"""Estimators that need no fitting: predict zero, and k-nearest-neighbour averaging."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import Estimator


@dataclass
class Zero(Estimator):
    """Always predicts 0: the reference level of normalised errors."""

    name = "zero"

    def _predict(self, xs, ys):
        return torch.zeros_like(ys)


@dataclass
class KNearestNeighbors(Estimator):
    """Mean y of the `neighbors` closest earlier examples (all of them while fewer exist); Garg's NN baseline."""

    name = "knn"
    neighbors: int = field(default=3, metadata={"min": 1})

    def _predict(self, xs, ys):
        n = xs.shape[1]
        dist = torch.cdist(xs, xs)  # (batch, query, example)
        later = torch.ones(n, n, dtype=torch.bool, device=xs.device).triu()  # example j is not before query k
        dist = dist.masked_fill(later, float("inf"))
        take = min(self.neighbors, n)
        nearest_dist, nearest = dist.topk(take, dim=2, largest=False)
        valid = nearest_dist.isfinite()
        picked = ys.unsqueeze(1).expand(-1, n, -1).gather(2, nearest) * valid
        return picked.sum(2) / valid.sum(2).clamp(min=1)
