from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from ..errors import UserError


class Estimator:
    """The common interface of baselines and the transformer (see the package docstring).

    As in scikit-learn, the constructor's arguments are the hyper-parameters and nothing changes them afterwards;
    what `fit_prior` learns from the prompt distribution lives in attributes ending in '_', which a later
    `fit_prior` on another task recomputes, so one estimator can be reused across tasks."""

    name: ClassVar[str]
    label: str = ""

    def fit_prior(self, task, inputs, points: int) -> Estimator:
        """Learn from the prompt distribution itself (not from the evaluation prompts); most estimators don't."""
        return self

    def predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        """(batch, points) predictions: entry k predicts ys[:, k] from the k examples before it."""
        check_prompts(xs, ys, self.label or self.name)
        return self._predict(xs, ys)

    def _predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.label or self.name


def check_prompts(xs: Tensor, ys: Tensor, who: str) -> None:
    if xs.dim() != 3 or ys.dim() != 2 or xs.shape[:2] != ys.shape:
        raise UserError(
            f"{who}: predict takes xs (batch, points, d) and ys (batch, points), "
            f"got xs {tuple(xs.shape)} and ys {tuple(ys.shape)}"
        )
