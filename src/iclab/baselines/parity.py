"""The exact learner of sparse parities: for every prefix, the supports of size k consistent with the examples
seen, and their majority vote on the query.

Under the sparse_parity prior (a support drawn uniformly among the C(d, k)), the posterior after k examples is
uniform over the consistent supports, so the vote (ties to +1: either sign is then right with probability 1/2) is
the Bayes-optimal prediction for the task's 0-1 error. With no examples it predicts 0, as every estimator does.
Every support is scored for every prompt and prefix at once; supports go in blocks to bound memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import UserError
from ..tasks.park import SparseParity
from .base import Estimator

PARK_K = 2  # Park et al.'s k, used on tasks that do not say theirs
BLOCK = 1 << 24  # prompts x points x supports scored at once


@dataclass
class ExactParity(Estimator):
    """Majority vote of the size-k supports consistent with the examples so far (the exact learner); k: the
    evaluated sparse_parity task's unless given (2, Park et al.'s, on other tasks)."""

    name = "parity"
    k: int | None = field(default=None, metadata={"min": 1})

    def fit_prior(self, task, inputs, points):
        self.k_ = self.k or (task.k if isinstance(task, SparseParity) else PARK_K)
        return self

    def _predict(self, xs, ys):
        batch, points, dims = xs.shape
        k = getattr(self, "k_", None) or self.k or PARK_K
        if k > dims:
            raise UserError(f"parity: k = {k} is more than the prompts' {dims} dimensions; give k <= {dims}")
        supports = torch.combinations(torch.arange(dims, device=xs.device), k).reshape(-1, k)
        votes = torch.zeros(batch, points, dtype=torch.long, device=xs.device)
        consistent = torch.zeros_like(votes)
        for block in supports.split(max(1, BLOCK // (batch * points))):
            chars = xs[:, :, block].prod(-1)  # (batch, points, supports): each support's parity of each x
            wrong = (chars != ys.unsqueeze(-1)).long()
            fits = (wrong.cumsum(1) - wrong) == 0  # no example before this position contradicts the support
            votes += (chars.long() * fits).sum(-1)
            consistent += fits.sum(-1)
        pred = torch.where(votes >= 0, 1.0, -1.0).where(consistent > 0, 0.0).to(ys.dtype)
        pred[:, 0] = 0.0
        return pred
