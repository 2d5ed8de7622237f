"""Park et al.'s tasks ("Can Mamba learn how to learn?", ICML 2024), defined as in their code,
krafton-ai/mambaformer-icl: `src/tasks.py` (SparseParity, Retrieval, FilterLinearRegression,
FilterOrthoLinearRegression), `src/samplers.py` (SparseParitySampler, GaussianRetrievalSampler,
FilteringGaussianSampler), `src/filtering_utils.py` (the outliers) and `src/train.py` (the loss on clean points).
docs/fidelity.md lists every difference.

- `sparse_parity`: x uniform on {-1, +1}^d (inputs: signs), y = the product of k coordinates chosen per prompt.
- `many_outlier_regression`, `ortho_outlier_regression`: linear regression in which each point is, with
  probability `prob`, replaced by an outlier; trained on the clean points only. The outliers are drawn once the
  prompt length is known (`prompt_inputs`) and recorded in params["outlier"].
- `vector_mqar`: keys and values on the sphere of radius sqrt(d), then queries that repeat a key; the output is
  the value of the key the query matches, a d-dimensional vector: its y tokens carry the whole vector and the model
  reads out d numbers per position (`outputs`, ICLModel.set_outputs). Trained with the squared error on the query
  positions only (their Retrieval predicts at the query alone), scored by the 0-1 recall error (metric: recall).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError
from ..spec import key_error
from .functions import FUNCTION_CLASSES, FunctionClass, Params, _active, _normal, _uniform
from .inputs import INPUT_DISTRIBUTIONS, InputDistribution


@INPUT_DISTRIBUTIONS.register("signs")
@dataclass
class Signs(InputDistribution):
    """x uniform on {-1, +1}^d (Park et al.'s sparse-parity inputs): the signs of a standard normal draw."""

    def transform(self, xs, generator):
        return torch.sign(xs)


@FUNCTION_CLASSES.register("sparse_parity")
@dataclass
class SparseParity(FunctionClass):
    """y = x_i1 * ... * x_ik, the parity of k coordinates drawn uniformly per prompt among the active ones; inputs
    must be signs (inputs: signs). Park et al. use d = 10, k = 2. Scored by the 0-1 error of sign(prediction),
    trained with the logistic loss BCE(sigmoid(prediction), (y + 1) / 2) as theirs."""

    k: int = field(default=2, metadata={"min": 1})
    metric: ClassVar[str] = "sign"

    def check(self, prefix):
        if self.k > self.dims:
            raise key_error(f"{prefix}.k", f"must be <= dims ({self.dims}), got {self.k}")

    def sample(self, batch, generator, active_dims=None):
        active = _active(self.dims, active_dims)
        keys = _uniform(generator, batch, self.dims)
        keys[:, active:] = -1.0  # never among the largest
        chosen = keys.topk(min(self.k, active), dim=1).indices
        return {"support": torch.zeros_like(keys, dtype=torch.bool).scatter_(1, chosen, True)}

    def apply(self, params, xs, generator=None):
        if not ((xs == 1) | (xs == -1) | (xs == 0)).all():  # 0: a coordinate switched off by a curriculum
            raise UserError("sparse_parity takes inputs in {-1, +1}^d: set inputs: signs (--set inputs.name=signs)")
        return torch.where(params["support"].unsqueeze(1), xs, torch.ones_like(xs)).prod(-1)

    def training_loss(self, preds, ys, params, normalized=False):
        return F.binary_cross_entropy_with_logits(preds, (ys + 1) / 2, reduction="none")

    def expected_y2(self):
        return 1.0


class _Outliers(FunctionClass):
    """Linear regression y = w.x, w ~ N(0, I_d), in which each point is an outlier with probability `prob`
    (subclasses say which point). Trained on the clean points only (Park et al.'s train.py masks the loss), so
    training_loss is the squared error on clean points, scaled so that its mean over the batch is their mean."""

    prob: float

    def check(self, prefix):
        if not 0.0 <= self.prob < 1.0:
            raise key_error(f"{prefix}.prob", f"must be in [0, 1) (a prompt needs clean points), got {self.prob}")

    def outlier_point(self, params: Params) -> tuple[Tensor, Tensor]:
        """Each prompt's outlier: x (batch, d) and y (batch,)."""
        raise NotImplementedError

    def sample(self, batch, generator, active_dims=None):
        return {"w": _normal(generator, batch, self.dims)}

    def prompt_inputs(self, params, xs, generator):
        outlier = _uniform(generator, *xs.shape[:2]) < self.prob
        x_out, _ = self.outlier_point(params)
        return torch.where(outlier.unsqueeze(-1), x_out.unsqueeze(1).to(xs), xs), params | {"outlier": outlier}

    def apply(self, params, xs, generator=None):
        if "outlier" not in params:  # drawn by prompt_inputs, which mixture, finite_pool and convex do not call
            raise UserError(f"{self.registry_name} draws outliers per prompt: use it as the task, not inside another")
        _, y_out = self.outlier_point(params)
        ys = torch.einsum("bpd,bd->bp", xs, params["w"].to(xs))
        return torch.where(params["outlier"], y_out.unsqueeze(1).to(ys), ys)

    def training_loss(self, preds, ys, params, normalized=False):
        err = super().training_loss(preds, ys, params, normalized)
        clean = ~params["outlier"]
        return err * clean * (clean.numel() / clean.sum().clamp(min=1))

    def expected_y2(self):
        return float(self.dims)  # of the clean points, the ones scored


@FUNCTION_CLASSES.register("many_outlier_regression")
@dataclass
class ManyOutlierRegression(_Outliers):
    """Linear regression in which each point is, with probability `prob` (Park et al.'s 0.9), replaced by
    x = (1, ..., 1), y = 1; trained on the clean points only."""

    prob: float = 0.9

    def outlier_point(self, params):
        w = params["w"]
        return torch.ones_like(w), torch.ones_like(w[:, 0])


@FUNCTION_CLASSES.register("ortho_outlier_regression")
@dataclass
class OrthoOutlierRegression(_Outliers):
    """Linear regression in which each point is, with probability `prob` (Park et al.'s 0.5), replaced by one
    outlier per prompt, o = a u + b v with u, v orthogonal to w and to each other (a, b from their formula);
    x = o and y = o_1, the first coordinate (their y token is the whole vector o; iclab's carries one number).
    Trained on the clean points only."""

    prob: float = 0.5

    def sample(self, batch, generator, active_dims=None):
        params = super().sample(batch, generator, active_dims)
        u = _reject(_normal(generator, batch, self.dims), params["w"])
        v = _reject(_reject(_normal(generator, batch, self.dims), params["w"]), u)
        a, b = _normal(generator, batch), _normal(generator, batch)
        a = a / (a**2 + b**2)
        b = b / (a**2 + b**2)  # with the new a, as filtering_utils.generate_dummy_vector does
        return params | {"outlier_x": a.unsqueeze(1) * u + b.unsqueeze(1) * v}

    def outlier_point(self, params):
        o = params["outlier_x"]
        return o, o[:, 0]


def _reject(vector: Tensor, basis: Tensor) -> Tensor:
    """`vector` minus its projection on `basis`, row by row (filtering_utils.orthogonalize)."""
    return vector - basis * (vector * basis).sum(1, keepdim=True) / (basis * basis).sum(1, keepdim=True)


@FUNCTION_CLASSES.register("vector_mqar")
@dataclass
class VectorMQAR(FunctionClass):
    """Vector-valued associative recall (Park et al.'s retrieval task): the first points - `queries` x's are keys,
    each with a value (its y, a d-dimensional vector), then `queries` x's each repeat a uniformly drawn key, or with
    probability 1 / (keys + 1) are a fresh vector (their sampler's randint(0, n) includes n); every vector is
    rescaled to norm sqrt(d). A query's y is the value of the key with the largest inner product with it. Park et
    al. use d = 20, 64 keys, one query. Models read out d numbers per position (`outputs`); the loss is the squared
    error averaged over the d coordinates at the query positions (Retrieval's mean_squared_error), the score the
    0-1 recall error (`point_errors`)."""

    queries: int = field(default=1, metadata={"min": 1})
    metric: ClassVar[str] = "recall"

    @property
    def outputs(self) -> int:
        return self.dims

    def sample(self, batch, generator, active_dims=None):
        return {}

    def prompt_inputs(self, params, xs, generator):
        batch, points, dims = xs.shape
        keys = points - self.queries
        if keys < 1:
            raise UserError(f"vector_mqar: a prompt of {points} points has no keys before its {self.queries} queries")
        values = _normal(generator, batch, keys, dims).to(xs)
        pick = (_uniform(generator, batch, self.queries) * (keys + 1)).long().clamp(max=keys)
        chosen = xs[:, :keys].gather(1, pick.clamp(max=keys - 1).unsqueeze(-1).expand(-1, -1, dims))
        queries = torch.where((pick < keys).unsqueeze(-1), chosen, xs[:, keys:])  # pick = keys: its own draw
        xs = _to_sphere(torch.cat([xs[:, :keys], queries], 1))
        return xs, params | {"values": _to_sphere(values), "query": pick}

    def targets(self, params: Params, xs: Tensor) -> Tensor:
        """(batch, points, d) outputs: each key's value, then for each query the value of the key whose inner
        product with it is largest (Retrieval.evaluate)."""
        values = params["values"]
        keys = values.shape[1]
        nearest = torch.einsum("bqd,bkd->bqk", xs[:, keys:], xs[:, :keys]).argmax(-1)
        recalled = values.gather(1, nearest.unsqueeze(-1).expand(-1, -1, values.shape[2]))
        return torch.cat([values, recalled], 1)

    def recall_errors(self, preds: Tensor, params: Params, xs: Tensor) -> Tensor:
        """(batch, queries) 0-1 errors: whether the prompt's value nearest a query's prediction (by inner
        product) is not the value it should recall. preds: (batch, queries, d) at the query positions."""
        values = params["values"]
        truth = self.targets(params, xs)[:, values.shape[1] :]
        guess = torch.einsum("bqd,bkd->bqk", preds.to(values), values).argmax(-1)
        wanted = torch.einsum("bqd,bkd->bqk", truth, values).argmax(-1)
        return (guess != wanted).double()

    def point_errors(self, preds: Tensor, ys: Tensor) -> Tensor:
        """(batch, points) 0-1 errors at every position, from the prompts alone: whether the key value nearest the
        prediction (by inner product) is not the point's own output, ys (batch, points, d). At a query it is
        `recall_errors`; at a key, whose value comes after it, it measures a guess (chance: keys - 1 in keys)."""
        values = ys[:, : ys.shape[1] - self.queries].to(preds)
        guess = torch.einsum("bpd,bkd->bpk", preds, values).argmax(-1)
        wanted = torch.einsum("bpd,bkd->bpk", ys.to(preds), values).argmax(-1)
        return (guess != wanted).double()

    def apply(self, params, xs, generator=None):
        """(batch, points, d): `targets`, drawn by prompt_inputs (which mixture, finite_pool and convex do not
        call)."""
        if "values" not in params:
            raise UserError("vector_mqar draws its keys and values per prompt: use it as the task, not inside another")
        return self.targets(params, xs)

    def training_loss(self, preds, ys, params, normalized=False):
        """(batch, points) squared errors averaged over the d coordinates, 0 at the keys, the queries' scaled so
        that the mean over the batch is their mean (as `normalized`, divided by E[|y|^2] / d = 1: unchanged)."""
        err = (preds - ys).square().mean(-1)
        points = err.shape[1]
        return torch.cat([torch.zeros_like(err[:, : points - self.queries]), err[:, points - self.queries :]], 1) * (
            points / self.queries
        )

    def expected_y2(self):
        return float(self.dims)  # |value|^2: a squared-norm error divided by it scores predicting 0 as 1


def _to_sphere(vectors: Tensor) -> Tensor:
    """Each vector rescaled to norm sqrt(d)."""
    return vectors / vectors.norm(dim=-1, keepdim=True) * math.sqrt(vectors.shape[-1])
