from __future__ import annotations

from typing import ClassVar

from torch import Tensor


class Estimator:
    """The common interface of baselines and the transformer (see the package docstring)."""

    name: ClassVar[str]
    label: str = ""

    def fit_prior(self, task, inputs, points: int) -> Estimator:
        """Learn from the prompt distribution itself (not from the evaluation prompts); most estimators don't."""
        return self

    def predict(self, xs: Tensor, ys: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.label or self.name
