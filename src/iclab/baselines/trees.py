"""Greedy tree learners from scikit-learn fitted on every prefix: Garg et al.'s decision tree and (in place of
XGBoost, whose wheels pull in CUDA) histogram gradient boosting with XGBoost's default settings.

Each (prompt, prefix) is its own fit, so this is a loop; it is kept tight (one thread, trees without input
re-validation) since an evaluation set is ~10^4 to 10^5 fits.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import UserError
from .base import Estimator


class _SklearnEstimator(Estimator):
    def check(self, prefix: str) -> None:
        # scikit-learn is an optional dependency, imported only when predicting (it takes ~2 s to import)
        if importlib.util.find_spec("sklearn") is None:
            raise UserError(f"{prefix}: needs scikit-learn, which is not installed (pip install scikit-learn)")


def fit_each_prefix(xs: torch.Tensor, ys: torch.Tensor, fit_predict: Callable) -> torch.Tensor:
    """(batch, points) predictions of fit_predict(X_k, y_k, query) for every prompt and prefix k >= 1; 0 at k = 0."""
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    x = xs.detach().cpu().numpy().astype(np.float32)  # scikit-learn's trees split on float32 features anyway
    y = ys.detach().cpu().numpy().astype(np.float64)
    out = np.zeros(y.shape)
    # OpenMP threads only slow down fits of a few dozen points (2 s instead of 0.05 s per boosting fit here)
    with threadpool_limits(1):
        for b in range(x.shape[0]):
            for k in range(1, x.shape[1]):
                out[b, k] = fit_predict(x[b, :k], y[b, :k], x[b, k : k + 1])
    return torch.from_numpy(out).to(ys)


@dataclass
class DecisionTree(_SklearnEstimator):
    """A greedy decision tree of `max_depth` (null: unlimited) on the k examples (Garg's "Greedy Tree Learning").

    scikit-learn's DecisionTreeRegressor (CART, squared error); Garg reports max_depth 4 and unlimited."""

    name = "tree"
    max_depth: int | None = field(default=4, metadata={"min": 1})
    seed: int = 0  # scikit-learn permutes the features at every split; ties go the seeded way

    def _predict(self, xs, ys):
        from sklearn.tree import DecisionTreeRegressor

        def fit_predict(x, y, query):
            tree = DecisionTreeRegressor(max_depth=self.max_depth, random_state=self.seed)
            return tree.fit(x, y, check_input=False).predict(query, check_input=False)[0]

        return fit_each_prefix(xs, ys, fit_predict)


@dataclass
class GradientBoosting(_SklearnEstimator):
    """Gradient-boosted trees on the k examples with XGBoost's default settings (Garg's "XGBoost").

    scikit-learn's HistGradientBoostingRegressor set to XGBRegressor()'s defaults: `rounds` trees of depth
    `max_depth`, shrinkage `learning_rate`, leaf values -G/(H + `l2`), leaves of >= 1 example, no early stopping.
    With fewer than 256 examples every distinct value is its own bin, so the splits are XGBoost's exact
    midpoints. It starts from the mean of y, XGBoost 1.6 from 0.5."""

    name = "boosting"
    rounds: int = field(default=100, metadata={"min": 1})
    learning_rate: float = field(default=0.3, metadata={"gt": 0.0})
    max_depth: int = field(default=6, metadata={"min": 1})
    l2: float = field(default=1.0, metadata={"min": 0.0})

    def _predict(self, xs, ys):
        from sklearn.ensemble import HistGradientBoostingRegressor

        def fit_predict(x, y, query):
            model = HistGradientBoostingRegressor(
                max_iter=self.rounds,
                learning_rate=self.learning_rate,
                max_depth=self.max_depth,
                max_leaf_nodes=None,
                min_samples_leaf=1,
                l2_regularization=self.l2,
                early_stopping=False,
            )
            return model.fit(x, y).predict(query)[0]

        return fit_each_prefix(xs, ys, fit_predict)
