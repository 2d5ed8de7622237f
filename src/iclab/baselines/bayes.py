"""Estimators that know the prompt distribution: the Bayes-optimal model-selection oracle for mixtures of dense
and sparse linear regression, and Lasso with its penalty tuned on held-out prompts of the task.

Both implement `fit_prior(task, inputs, points)`, which evaluation calls with the task being evaluated, so
`--baselines bayes,lasso_cv` needs no parameters; explicit parameters override what the task implies. What they
learn goes into attributes ending in "_" (`prior_`, `alpha_per_k_`); their parameters never change.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor

from ..errors import UserError
from .base import Estimator
from .linear import lasso_prefixes, on_support, predict_with, prefix_grams

NOISELESS_VARIANCE = 1e-4  # the likelihood needs some noise; small enough to act as exact on noiseless tasks


class Prior(NamedTuple):
    """A mixture prior over w: class i (weight_i) puts N(0, 1) weights on nnz_i uniformly drawn coordinates."""

    nnz: list[int]
    weights: list[float]
    noise: float  # the noise variance of y = w.x + noise


def task_prior(task, nnz: list[int], weights: list[float], noise: float) -> Prior:
    """The prior of a linear-Gaussian task (or mixture of them), with the values given explicitly kept."""
    parts = task.linear_prior()
    if parts is None:
        raise UserError(
            f"bayes covers linear, sparse_linear, noisy_linear and mixtures of them, not '{task.registry_name}'; "
            "give nnz, weights and noise to use it on other tasks"
        )
    variances = {max(std**2, NOISELESS_VARIANCE) for _, _, std in parts}
    if len(variances) > 1 and not noise:
        raise UserError("bayes needs one noise level shared by all mixture components (or give noise)")
    if not nnz:
        nnz, weights = [s for _, s, _ in parts], [p for p, _, _ in parts]
    return Prior(list(nnz), list(weights), noise or variances.pop())


@dataclass
class BayesLinear(Estimator):
    """Posterior mean under a mixture prior: class i (weight_i) draws a support of nnz_i coordinates uniformly and
    Gaussian N(0, 1) weights on it (nnz = d is the dense class); y = w.x + N(0, noise). For every support it
    computes the exact marginal likelihood of the examples and the ridge posterior mean, and averages the
    supports' predictions by posterior probability: the model-selection reference for the transformer.
    Supports are enumerated, so keep C(d, nnz) small (d <= ~12).

    What is not given (nnz with weights, noise) `fit_prior` takes from the evaluated task into `prior_`."""

    name = "bayes"
    nnz: list[int] = field(default_factory=list)  # empty: taken from the evaluated task
    weights: list[float] = field(default_factory=list)
    noise: float = field(default=0.0, metadata={"min": 0.0})  # noise variance; 0: the task's, else NOISELESS_VARIANCE

    def check(self, prefix: str) -> None:
        if len(self.nnz) != len(self.weights):
            raise UserError(f"{prefix}: give one weight per nnz, got nnz={self.nnz} and weights={self.weights}")
        if any(s < 1 for s in self.nnz):
            raise UserError(f"{prefix}.nnz: every class needs at least one coordinate, got {self.nnz}")
        if any(w < 0 for w in self.weights) or (self.weights and sum(self.weights) <= 0):
            raise UserError(f"{prefix}.weights: give weights >= 0 with a positive sum, got {self.weights}")

    def fit_prior(self, task, inputs=None, points: int | None = None) -> BayesLinear:
        if self.nnz and self.noise:  # everything given: the task has nothing to add
            self.prior_ = Prior(list(self.nnz), list(self.weights), self.noise)
        else:
            self.prior_ = task_prior(task, self.nnz, self.weights, self.noise)
        return self

    def _predict(self, xs, ys):
        prior = getattr(self, "prior_", None)
        if prior is None:
            if not self.nnz:
                raise UserError("bayes: give nnz and weights, or evaluate it on a linear task (fit_prior)")
            prior = Prior(self.nnz, self.weights, self.noise or NOISELESS_VARIANCE)
        b, n, d = xs.shape
        if max(prior.nnz) > d:
            raise UserError(f"bayes: nnz {max(prior.nnz)} exceeds the input dimension {d}")
        x64 = xs.double()
        gram, xty, yty = (t.flatten(0, 1) for t in prefix_grams(x64, ys.double()))
        query = x64.flatten(0, 1)
        count = torch.arange(n, dtype=torch.float64, device=xs.device).repeat(b)
        var = prior.noise
        eye = torch.eye(d, dtype=torch.float64, device=xs.device)
        log_post, preds = [], []
        total = sum(prior.weights)
        for nnz, weight in zip(prior.nnz, prior.weights, strict=True):
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
    on `prompts` held-out prompts of the evaluated task (drawn from `seed`, never the evaluation prompts).
    `fit_prior` stores the choice in `alpha_per_k_`."""

    name = "lasso_cv"
    alphas: list[float] = field(default_factory=lambda: [1.0, 0.1, 0.01, 0.001, 0.0001])
    prompts: int = field(default=256, metadata={"min": 1})
    seed: int = 99

    def check(self, prefix: str) -> None:
        if not self.alphas or min(self.alphas) <= 0:
            raise UserError(f"{prefix}.alphas: give positive penalties, got {self.alphas}")

    def fit_prior(self, task, inputs, points: int) -> TunedLasso:
        from ..tasks import sample_prompts

        if points < 1:
            raise UserError(f"lasso_cv: fit_prior needs points >= 1, got {points}")
        generator = torch.Generator().manual_seed(self.seed)
        xs, ys, _ = sample_prompts(task, inputs, self.prompts, points, generator)
        errors = torch.stack([self._errors(xs, ys, a) for a in self.alphas])  # (alphas, points)
        self.alpha_per_k_ = [self.alphas[i] for i in errors.argmin(0).tolist()]
        return self

    def _errors(self, xs: Tensor, ys: Tensor, alpha: float) -> Tensor:
        preds = predict_with(lasso_prefixes(xs, ys, alpha), xs.double())
        return (preds - ys.double()).square().mean(0)

    def _predict(self, xs, ys):
        chosen = getattr(self, "alpha_per_k_", None)
        if chosen is None:
            raise UserError("lasso_cv: evaluate it on a task (fit_prior) so that it can tune alpha on held-out prompts")
        if len(chosen) < xs.shape[1]:
            raise UserError(
                f"lasso_cv: tuned for prompts of {len(chosen)} points, got {xs.shape[1]}; call fit_prior with "
                f"points={xs.shape[1]}"
            )
        out = torch.zeros(ys.shape, dtype=torch.float64, device=ys.device)
        x64 = xs.double()
        for alpha in set(chosen[: xs.shape[1]]):
            ks = [k for k in range(xs.shape[1]) if chosen[k] == alpha]
            out[:, ks] = predict_with(lasso_prefixes(xs, ys, alpha), x64)[:, ks]
        return out.to(ys.dtype)
