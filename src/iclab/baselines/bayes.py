"""Estimators that know the prompt distribution: the Bayes-optimal predictor (posterior mean) for every prior
where it is exact, the model-selection oracle for mixtures of dense and sparse linear regression, and Lasso
with its penalty tuned on held-out prompts of the task.

They implement `fit_prior(task, inputs, points)`, which evaluation calls with the task being evaluated, so
`--baselines posterior_mean,bayes,lasso_cv` needs no parameters; explicit parameters override what the task
implies. What they learn goes into attributes ending in "_" (`prior_`, `alpha_per_k_`); their parameters never
change.

The posterior mean under a prior made of components (each with its probability):
- GaussianClass: w ~ N(0, 1) on nnz coordinates drawn uniformly among the d (nnz = d: dense), y = w.x + N(0, s^2);
  for each support the evidence is Gaussian and the posterior mean is ridge with alpha = s^2 on that support;
- TaskPool: w uniform over a finite set of task vectors (Raventos et al.'s finite pool), y = w.x + N(0, s^2);
  the posterior is the softmax of the Gaussian log-likelihoods, its mean the dMMSE estimator.
Every (support or pool block) part yields, for every prompt and prefix at once, log(prior x evidence) and its
conditional mean; the prediction averages the parts by softmax over the first.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor

from ..errors import UserError
from ..tasks import make_task, sample_prompts
from ..tasks.functions import FinitePool, Mixture
from .base import Estimator
from .linear import lasso_prefixes, on_support, predict_with, prefix_grams

NOISELESS_VARIANCE = 1e-4  # the likelihood needs some noise; small enough to act as exact on noiseless tasks
POOL_BLOCK = 512  # task vectors scored at once: bounds memory at prompts x points x POOL_BLOCK
CHEAP_PARTS = 256  # evaluation adds the oracle by itself when it has at most this many parts (see evaluate)


class Prior(NamedTuple):
    """A mixture prior over w: class i (weight_i) puts N(0, 1) weights on nnz_i uniformly drawn coordinates."""

    nnz: list[int]
    weights: list[float]
    noise: float  # the noise variance of y = w.x + noise


class GaussianClass(NamedTuple):
    """With probability `weight`: w ~ N(0, 1) on `nnz` uniformly drawn coordinates, y = w.x + N(0, noise)."""

    weight: float
    nnz: int
    noise: float  # variance


class TaskPool(NamedTuple):
    """With probability `weight`: w is a uniformly drawn row of `tasks` (size, d), y = w.x + N(0, noise)."""

    weight: float
    tasks: Tensor
    noise: float  # variance


Component = GaussianClass | TaskPool


def _variance(std: float) -> float:
    return max(std**2, NOISELESS_VARIANCE)


def task_prior(task, nnz: list[int], weights: list[float], noise: float) -> Prior:
    """The prior of a linear-Gaussian task (or mixture of them), with the values given explicitly kept."""
    parts = task.linear_prior()
    if parts is None or renormalized(task):
        raise UserError(
            f"bayes covers linear, sparse_linear, noisy_linear (without renormalize) and mixtures of them, not "
            f"'{task.registry_name}'{' with renormalize' if parts else ''}; give nnz, weights and noise to use it "
            "on other tasks"
        )
    variances = {_variance(std) for _, _, std in parts}
    if len(variances) > 1 and not noise:
        raise UserError("bayes needs one noise level shared by all mixture components (or give noise)")
    if not nnz:
        nnz, weights = [s for _, s, _ in parts], [p for p, _, _ in parts]
    return Prior(list(nnz), list(weights), noise or variances.pop())


def renormalized(task) -> bool:
    """Whether the task (or a class of its mixture) rescales its outputs by the batch's std (Garg's
    renormalize_ys): no Gaussian prior describes those outputs, so no oracle here is exact on them."""
    return getattr(task, "renormalize", False) or any(renormalized(c) for c in getattr(task, "classes", []))


def exact_prior(task) -> list[Component]:
    """The components of a task's prior when its posterior mean is exact: linear-Gaussian classes (linear,
    sparse_linear, noisy_linear), finite pools of one such class, and mixtures of these with any weights."""
    if isinstance(task, Mixture):
        return [
            c._replace(weight=w * c.weight)
            for w, part in zip(task.weights.tolist(), task.classes, strict=True)
            for c in exact_prior(part)
        ]
    if isinstance(task, FinitePool):
        pool = task.linear_pool()
        if pool is None:
            raise UserError(
                "posterior_mean covers finite pools of linear, sparse_linear or noisy_linear functions, not of "
                f"{task.base}"
            )
        return [TaskPool(1.0, pool[0].double(), _variance(pool[1]))]
    parts = task.linear_prior()
    if parts is None or getattr(task, "renormalize", False):
        raise UserError(
            f"posterior_mean is exact for linear, sparse_linear, noisy_linear (without renormalize), finite_pool "
            f"of them and mixtures of these, not '{task.registry_name}'"
        )
    return [GaussianClass(p, nnz, _variance(std)) for p, nnz, std in parts]


def prior_parts(prior: list[Component], dims: int) -> int:
    """How many (support or pool block) parts the posterior sums over: its cost in batched d x d solves."""
    return sum(
        math.comb(dims, c.nnz) if isinstance(c, GaussianClass) else -(-len(c.tasks) // POOL_BLOCK) for c in prior
    )


def posterior_mean(xs: Tensor, ys: Tensor, prior: list[Component]) -> Tensor:
    """(batch, n) float64 posterior means of y at every position k given the k examples before it."""
    d = xs.shape[-1]
    for c in prior:
        if isinstance(c, GaussianClass) and c.nnz > d:
            raise UserError(f"posterior: nnz {c.nnz} exceeds the input dimension {d}")
        if isinstance(c, TaskPool) and c.tasks.shape[-1] != d:
            raise UserError(f"posterior: the pool's tasks have {c.tasks.shape[-1]} dimensions, the prompts {d}")
    x64, y64 = xs.double(), ys.double()
    total = sum(c.weight for c in prior)
    parts: list[tuple[Tensor, Tensor]] = []
    for c in prior:
        if c.weight > 0:
            score = _gaussian_parts if isinstance(c, GaussianClass) else _pool_parts
            parts += score(x64, y64, c, math.log(c.weight / total))
    post = torch.softmax(torch.stack([p for p, _ in parts]), dim=0)
    return (post * torch.stack([m for _, m in parts])).sum(0)


def _gaussian_parts(xs: Tensor, ys: Tensor, c: GaussianClass, log_weight: float) -> list[tuple[Tensor, Tensor]]:
    """Per support S: log P(S) + log N(y; 0, X_S X_S^T + s^2 I) (up to the shared -k/2 log 2 pi), and the ridge
    prediction on S. Via the prefix Gram matrices: the quadratic form is (y.y - c.w) / s^2 (Woodbury) and the
    log-determinant (k - nnz) log s^2 + log det(G_S + s^2 I)."""
    b, n, d = xs.shape
    gram, xty, yty = (t.flatten(0, 1) for t in prefix_grams(xs, ys))
    query = xs.flatten(0, 1)
    count = torch.arange(n, dtype=torch.float64, device=xs.device).repeat(b)
    eye = torch.eye(d, dtype=torch.float64, device=xs.device)
    supports = list(itertools.combinations(range(d), c.nnz))
    log_prior = log_weight - math.log(len(supports))
    out = []
    for support in supports:  # a loop over supports; every prompt and prefix at once
        mask = torch.zeros(d, dtype=torch.bool, device=xs.device)
        mask[list(support)] = True
        chol = torch.linalg.cholesky(on_support(gram + c.noise * eye, mask.expand(len(gram), d)))
        w = torch.cholesky_solve((xty * mask).unsqueeze(-1), chol).squeeze(-1)
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        quad = (yty - (xty * w).sum(-1)) / c.noise
        log_evidence = -0.5 * (quad + (count - c.nnz) * math.log(c.noise) + logdet)
        out.append(((log_prior + log_evidence).view(b, n), predict_with(w, query).view(b, n)))
    return out


def _pool_parts(xs: Tensor, ys: Tensor, c: TaskPool, log_weight: float) -> list[tuple[Tensor, Tensor]]:
    """Per block of task vectors: log of the block's prior x likelihood (the same constants as the Gaussian
    parts) and the block's posterior-weighted prediction."""
    tasks = c.tasks.to(xs)
    log_prior = log_weight - math.log(len(tasks))
    count = torch.arange(xs.shape[1], dtype=torch.float64, device=xs.device)
    out = []
    for start in range(0, len(tasks), POOL_BLOCK):  # blocks of the pool; every prompt and prefix at once
        preds = torch.einsum("bnd,md->bnm", xs, tasks[start : start + POOL_BLOCK])
        sq = (ys.unsqueeze(-1) - preds).square()
        sse = torch.cat([torch.zeros_like(sq[:, :1]), sq.cumsum(1)[:, :-1]], 1)  # the examples before each k
        log_lik = log_prior - 0.5 * (sse / c.noise + count[:, None] * math.log(c.noise))
        out.append((torch.logsumexp(log_lik, -1), (torch.softmax(log_lik, -1) * preds).sum(-1)))
    return out


@dataclass
class PosteriorMean(Estimator):
    """The Bayes-optimal predictor under squared error: the posterior mean of y at the query given the examples,
    under the evaluated task's own prior, which `fit_prior` reads into `prior_`. Exact for linear and
    sparse_linear (noiseless: noise variance NOISELESS_VARIANCE), noisy_linear (ridge with alpha = noise_std^2),
    finite_pool of these (the dMMSE estimator: the posterior-weighted mean of the pool's task vectors) and
    mixtures of all of them with any weights and noise levels (the posterior runs over the class, its noise
    level, its support or pool member). Sparse classes enumerate their supports: keep C(d, nnz) small.
    With `task` (a task spec) it uses that task's prior instead, whatever it is evaluated on: e.g. a finite
    pool's dMMSE on fresh Gaussian tasks."""

    name = "posterior_mean"
    task: dict = field(default_factory=dict)  # empty: the evaluated task's prior

    def fit_prior(self, task, inputs=None, points: int | None = None) -> PosteriorMean:
        self.prior_ = exact_prior(make_task(self.task, task.dims, "posterior_mean.task") if self.task else task)
        return self

    def _predict(self, xs, ys):
        prior = getattr(self, "prior_", None)
        if prior is None:
            raise UserError("posterior_mean: evaluate it on a task (fit_prior), whose prior it then uses")
        return posterior_mean(xs, ys, prior).to(ys.dtype)


@dataclass
class BayesLinear(Estimator):
    """Posterior mean under a mixture prior: class i (weight_i) draws a support of nnz_i coordinates uniformly and
    Gaussian N(0, 1) weights on it (nnz = d is the dense class); y = w.x + N(0, noise). For every support it
    computes the exact marginal likelihood of the examples and the ridge posterior mean, and averages the
    supports' predictions by posterior probability: the model-selection reference for the transformer.
    Supports are enumerated, so keep C(d, nnz) small (d <= ~12). `posterior_mean` covers more priors (pools,
    several noise levels); this one takes explicit classes.

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
        if max(prior.nnz) > xs.shape[-1]:
            raise UserError(f"bayes: nnz {max(prior.nnz)} exceeds the input dimension {xs.shape[-1]}")
        classes = [GaussianClass(w, s, prior.noise) for s, w in zip(prior.nnz, prior.weights, strict=True)]
        return posterior_mean(xs, ys, classes).view(ys.shape).to(ys.dtype)


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
