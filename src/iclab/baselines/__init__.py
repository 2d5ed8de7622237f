"""Classical in-context learners, vectorised over prompts and prefixes.

Every estimator answers the same call as the transformer: `predict(xs, ys)` with xs (batch, n, d) and
ys (batch, n) returns (batch, n) predictions where entry k predicts ys[:, k] from the k examples before it
(xs[:, :k], ys[:, :k]) and the query xs[:, k]. With no examples (k = 0) every estimator predicts 0, except
posterior_mean on a finite pool: the posterior mean is then the pool's mean function.
"""

from __future__ import annotations

from ..spec import Registry, format_named, parse_named
from .base import Estimator
from .bayes import BayesLinear, PosteriorMean, TunedLasso
from .linear import Averaging, Lasso, LeastSquares, Ridge, lasso_prefixes, least_squares_prefixes
from .mlp import MLP
from .neighbors import KNearestNeighbors, Zero
from .parity import ExactParity
from .trees import DecisionTree, GradientBoosting

ESTIMATORS = Registry("estimator")
for _cls in (
    Zero,
    Averaging,
    KNearestNeighbors,
    LeastSquares,
    Ridge,
    Lasso,
    BayesLinear,
    PosteriorMean,
    TunedLasso,
    MLP,
    DecisionTree,
    GradientBoosting,
    ExactParity,
):
    ESTIMATORS.register(_cls.name)(_cls)

__all__ = [
    "ESTIMATORS",
    "Averaging",
    "BayesLinear",
    "DecisionTree",
    "Estimator",
    "GradientBoosting",
    "KNearestNeighbors",
    "Lasso",
    "LeastSquares",
    "MLP",
    "PosteriorMean",
    "Ridge",
    "TunedLasso",
    "Zero",
    "lasso_prefixes",
    "least_squares_prefixes",
    "make_estimator",
]


def make_estimator(spec: str | dict, prefix: str | None = None) -> Estimator:
    """Build an estimator from 'lasso:alpha=0.1' or {'name': 'lasso', 'alpha': 0.1}; its label is that spec."""
    spec = parse_named(spec) if isinstance(spec, str) else dict(spec)
    estimator = ESTIMATORS.make(spec, prefix=prefix)
    estimator.label = format_named(spec)
    return estimator
