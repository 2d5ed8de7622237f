"""Estimators that know the prompt distribution: the Bayes-optimal model-selection oracle for mixtures of dense
and sparse linear regression, and Lasso with its penalty tuned on held-out prompts of the task.

Both implement `fit_prior(task, inputs, points)`, which evaluation calls with the task being evaluated, so
`--baselines bayes,lasso_cv` needs no parameters; explicit parameters override what the task implies.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import UserError
from .base import Estimator
from .linear import lasso_prefixes, on_support, predict_with, prefix_grams

NOISELESS_VARIANCE = 1e-4  # the likelihood needs some noise; small enough to act as exact on noiseless tasks


def linear_prior(task) -> tuple[list[int], list[float], float]:
    """(nnz per class, class weights, noise variance) of a linear task or a mixture of linear tasks."""
    from ..tasks.functions import Linear, Mixture, NoisyLinear, SparseLinear

    def one(t) -> tuple[int, float]:
        if type(t) is SparseLinear:
            return t.nnz, NOISELESS_VARIANCE
        if type(t) is NoisyLinear:
            return t.dims, max(t.noise_std**2, NOISELESS_VARIANCE)
        if type(t) is Linear:
            return t.dims, NOISELESS_VARIANCE
        raise UserError(
            f"the bayes oracle covers linear, sparse_linear, noisy_linear and mixtures of them, not '{t.registry_name}'"
        )

    parts = [one(c) for c in task.classes] if isinstance(task, Mixture) else [one(task)]
    weights = task.weights.tolist() if isinstance(task, Mixture) else [1.0]
    noises = {v for _, v in parts}
    if len(noises) > 1:
        raise UserError("the bayes oracle needs one noise level shared by all mixture components")
    return [s for s, _ in parts], weights, noises.pop()


@dataclass
class BayesLinear(Estimator):
    """Posterior mean under a mixture prior: class i (weight_i) draws a support of nnz_i coordinates uniformly and
    Gaussian N(0, 1) weights on it (nnz = d is the dense class); y = w.x + N(0, noise). For every support it
    computes the exact marginal likelihood of the examples and the ridge posterior mean, and averages the
    supports' predictions by posterior probability: the model-selection reference for the transformer.
    Supports are enumerated, so keep C(d, nnz) small (d <= ~12)."""

    name = "bayes"
    nnz: list[int] = field(default_factory=list)  # empty: taken from the evaluated task
    weights: list[float] = field(default_factory=list)
    noise: float = field(default=0.0, metadata={"min": 0.0})  # 0: from the task, else NOISELESS_VARIANCE

    def check(self, prefix: str) -> None:
        if len(self.nnz) != len(self.weights):
            raise UserError(f"{prefix}: give one weight per nnz, got {self.nnz} and {self.weights}")

    def fit_prior(self, task, inputs=None, points: int | None = None) -> BayesLinear:
        nnz, weights, noise = linear_prior(task)
        self.nnz = self.nnz or nnz
        self.weights = self.weights or weights
        self.noise = self.noise or noise
        return self

    def predict(self, xs, ys):
        if not self.nnz:
            raise UserError("bayes: give nnz and weights, or evaluate it on a linear task (fit_prior)")
        b, n, d = xs.shape
        if max(self.nnz) > d:
            raise UserError(f"bayes: nnz {max(self.nnz)} exceeds the input dimension {d}")
        x64 = xs.double()
        gram, xty, yty = (t.flatten(0, 1) for t in prefix_grams(x64, ys.double()))
        query = x64.flatten(0, 1)
        count = torch.arange(n, dtype=torch.float64, device=xs.device).repeat(b)
        var = self.noise or NOISELESS_VARIANCE
        eye = torch.eye(d, dtype=torch.float64, device=xs.device)
        log_post, preds = [], []
        total = sum(self.weights)
        for nnz, weight in zip(self.nnz, self.weights, strict=True):
            if weight <= 0:
                continue
            supports = list(itertools.combinations(range(d), nnz))
            log_prior = math.log(weight / total) - math.log(len(supports))
            for support in supports:  # a loop over supports; every prompt and prefix at once
                mask = torch.zeros(d, dtype=torch.bool, device=xs.device)
                mask[list(support)] = True
                system = on_support(gram + var * eye, mask.expand(len(gram), d))
                chol = torch.linalg.cholesky(system)
                w = torch.cholesky_solve((xty * mask).unsqueeze(-1), chol).squeeze(-1)
                logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
                quad = (yty - (xty * w).sum(-1)) / var
                log_evidence = -0.5 * (quad + (count - nnz) * math.log(var) + logdet)
                log_post.append(log_prior + log_evidence)
                preds.append(predict_with(w, query))
        post = torch.softmax(torch.stack(log_post), dim=0)
        return (post * torch.stack(preds)).sum(0).view(b, n).to(ys.dtype)


@dataclass
class TunedLasso(Estimator):
    """Lasso whose penalty is, for every number of examples k, the alpha of `alphas` with the lowest mean error
    on `prompts` held-out prompts of the evaluated task (drawn from `seed`, never the evaluation prompts)."""

    name = "lasso_cv"
    alphas: list[float] = field(default_factory=lambda: [1.0, 0.1, 0.01, 0.001, 0.0001])
    prompts: int = field(default=256, metadata={"min": 1})
    seed: int = 99
    chosen: list[float] = field(default_factory=list, init=False, repr=False)

    def check(self, prefix: str) -> None:
        if not self.alphas or min(self.alphas) <= 0:
            raise UserError(f"{prefix}.alphas: give positive penalties, got {self.alphas}")

    def fit_prior(self, task, inputs, points: int) -> TunedLasso:
        from ..tasks import sample_prompts

        generator = torch.Generator().manual_seed(self.seed)
        xs, ys, _ = sample_prompts(task, inputs, self.prompts, points, generator)
        errors = torch.stack([self._errors(xs, ys, a) for a in self.alphas])  # (alphas, points)
        self.chosen = [self.alphas[i] for i in errors.argmin(0).tolist()]
        return self

    def _errors(self, xs: Tensor, ys: Tensor, alpha: float) -> Tensor:
        preds = predict_with(lasso_prefixes(xs, ys, alpha), xs.double())
        return (preds - ys.double()).square().mean(0)

    def predict(self, xs, ys):
        if len(self.chosen) < xs.shape[1]:
            raise UserError("lasso_cv: evaluate it on a task (fit_prior) so that it can tune alpha on held-out prompts")
        out = torch.zeros(ys.shape, dtype=torch.float64, device=ys.device)
        x64 = xs.double()
        for alpha in set(self.chosen):
            ks = [k for k in range(xs.shape[1]) if self.chosen[k] == alpha]
            out[:, ks] = predict_with(lasso_prefixes(xs, ys, alpha), x64)[:, ks]
        return out.to(ys.dtype)
