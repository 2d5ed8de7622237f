"""Function classes for in-context learning: each draws a batch of random functions and applies them.

A function class is a small dataclass of hyper-parameters. `sample(batch, generator)` returns the parameters of
`batch` independent functions as a dict of tensors whose first axis is the batch; `apply(params, xs, generator)`
maps inputs `xs` of shape (batch, points, dims) to outputs (batch, points), and `training_loss` is what training
minimises for it: squared error for regression, logistic loss for classification (as in Garg et al.). Defaults
follow the Garg et al. release (see REFERENCE.md and docs/fidelity.md); iclab's earlier definitions stay
available as parameters. Every draw comes from the explicit `torch.Generator`, so the same seed
gives the same functions; tensors are created on the generator's device.

`y_scale(params)` is E[y^2] of each prompt's function class under isotropic inputs; evaluation divides squared
errors by it so that predicting 0 scores about 1 for every class.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import InitVar, dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ..spec import Registry, key_error

FUNCTION_CLASSES = Registry("task")
Params = dict  # nested dict of tensors, every tensor with the batch as its first axis


def _normal(generator: torch.Generator, *shape: int) -> Tensor:
    return torch.randn(*shape, generator=generator, device=generator.device)


def _uniform(generator: torch.Generator, *shape: int) -> Tensor:
    return torch.rand(*shape, generator=generator, device=generator.device)


def _active(dims: int, active_dims: int | None) -> int:
    return dims if active_dims is None else min(active_dims, dims)


def index_params(params: Params, index: Tensor) -> Params:
    """Select prompts `index` from a (nested) parameter dict."""
    return {k: index_params(v, index) if isinstance(v, dict) else v[index] for k, v in params.items()}


@dataclass
class FunctionClass:
    dims: int = field(default=5, metadata={"min": 1})
    # where the spec came from (e.g. "task.components[1]"), so that errors name the config key
    _prefix: InitVar[str | None] = None
    # "squared": squared error / y_scale; "sign": 0-1 error of sign(prediction); "recall": vector_mqar's 0-1 recall
    metric: ClassVar[str] = "squared"
    registry_name: ClassVar[str]

    def __post_init__(self, _prefix: str | None) -> None:
        self.check(_prefix or self.registry_name)

    def check(self, prefix: str) -> None:
        """Validate parameters that depend on each other (single fields are checked by their metadata)."""

    def __init_subclass__(cls, **kwargs) -> None:
        # `evaluate` is the old name of `apply` (it collided with the evaluation stage): a class that defines only
        # `evaluate` has it used as its `apply`; every `apply` gets a warning `evaluate` alias of its own, so that
        # an old-style super().apply() reaches the parent's apply (not this class's, which would recurse)
        super().__init_subclass__(**kwargs)
        if "evaluate" in cls.__dict__ and "apply" not in cls.__dict__:
            message = f"{cls.__name__}: define apply(), not evaluate() (its deprecated alias)"
            warnings.warn(message, DeprecationWarning, stacklevel=2)
            cls.apply = cls.__dict__["evaluate"]
        elif "apply" in cls.__dict__ and "evaluate" not in cls.__dict__:
            cls.evaluate = _deprecated_alias(cls.__dict__["apply"])

    @property
    def outputs(self) -> int:
        """How many numbers each output y is: 1, or d for a vector-valued class (the model's read-out width)."""
        return 1

    def sample(self, batch: int, generator: torch.Generator, active_dims: int | None = None) -> Params:
        raise NotImplementedError

    def apply(self, params: Params, xs: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """f(xs) for each prompt's function: (batch, points, dims) -> (batch, points)."""
        raise NotImplementedError

    def prompt_inputs(self, params: Params, xs: Tensor, generator: torch.Generator) -> tuple[Tensor, Params]:
        """The inputs the prompts show, once their length is known, and `params` with what was drawn for them: xs
        as drawn for most classes; a class that replaces points (Park et al.'s outliers) records which in params."""
        return xs, params

    def training_loss(self, preds: Tensor, ys: Tensor, params: Params, normalized: bool = False) -> Tensor:
        """(batch, points) loss of each prediction: the squared error, divided by the class's E[y^2] if
        `normalized` (train.loss: normalized). Classification classes override it."""
        err = (preds - ys).square()
        return err / self.y_scale(params).to(err).unsqueeze(1) if normalized else err

    def y_scale(self, params: Params) -> Tensor:
        batch = next(iter(_leaves(params)))
        return torch.full((batch.shape[0],), float(self.expected_y2()), device=batch.device)

    def expected_y2(self) -> float:
        return float(self.dims)

    def linear_prior(self) -> list[tuple[float, int, float]] | None:
        """The prior as (probability, nnz, noise_std) components when the class is linear-Gaussian: with that
        probability w is N(0, 1) on nnz coordinates drawn uniformly among the d (nnz = d: dense) and
        y = w.x + N(0, noise_std^2). None for every other class (what the Bayes oracle needs to know)."""
        return None

    def sample_ys(self, xs: Tensor, generator: torch.Generator, active_dims: int | None = None) -> Tensor:
        return self.apply(self.sample(xs.shape[0], generator, active_dims), xs, generator)


def _deprecated_alias(apply):
    def evaluate(self, params: Params, xs: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Deprecated: the old name of `apply`."""
        warnings.warn("FunctionClass.evaluate() is deprecated; call apply()", DeprecationWarning, stacklevel=2)
        return apply(self, params, xs, generator)

    return evaluate


FunctionClass.evaluate = _deprecated_alias(FunctionClass.apply)


def _leaves(params: Params):
    for v in params.values():
        yield from _leaves(v) if isinstance(v, dict) else (v,)


@FUNCTION_CLASSES.register("linear")
@dataclass
class Linear(FunctionClass):
    """y = w.x with w ~ N(0, I_d)."""

    def sample(self, batch, generator, active_dims=None):
        return {"w": _normal(generator, batch, self.dims)}

    def apply(self, params, xs, generator=None):
        return torch.einsum("bpd,bd->bp", xs, params["w"])

    def linear_prior(self):
        return [(1.0, self.dims, 0.0)]


@FUNCTION_CLASSES.register("sparse_linear")
@dataclass
class SparseLinear(Linear):
    """y = w.x with w ~ N(0, I_d) restricted to `nnz` coordinates drawn uniformly among the active ones (nnz 3 by
    default, Garg's sparsity; iclab's configs before version 2 meant 2)."""

    nnz: int = field(default=3, metadata={"min": 1})

    def check(self, prefix):
        if self.nnz > self.dims:
            raise key_error(f"{prefix}.nnz", f"must be <= dims ({self.dims}), got {self.nnz}")

    def sample(self, batch, generator, active_dims=None):
        active = _active(self.dims, active_dims)
        w = _normal(generator, batch, self.dims)
        # a uniformly random subset of size nnz: the nnz smallest of i.i.d. uniforms over the active coordinates
        keys = _uniform(generator, batch, self.dims)
        keys[:, active:] = 2.0
        support = keys.argsort(dim=1)[:, : min(self.nnz, active)]
        mask = torch.zeros_like(w).scatter_(1, support, 1.0)
        return {"w": w * mask}

    def expected_y2(self):
        return float(self.nnz)

    def linear_prior(self):
        return [(1.0, self.nnz, 0.0)]


@FUNCTION_CLASSES.register("noisy_linear")
@dataclass
class NoisyLinear(Linear):
    """y = w.x + noise_std * eps, eps ~ N(0, 1) drawn afresh for every point. With `renormalize` (Garg's
    renormalize_ys), the outputs are then scaled by sqrt(d) / their standard deviation over the whole batch."""

    noise_std: float = field(default=0.5, metadata={"min": 0.0})
    renormalize: bool = False

    def apply(self, params, xs, generator=None):
        if generator is None:
            raise ValueError("noisy_linear needs a generator to draw its noise")
        ys = super().apply(params, xs)
        ys = ys + self.noise_std * _normal(generator, *ys.shape).to(ys.dtype)
        return ys * (math.sqrt(self.dims) / ys.std()) if self.renormalize else ys

    def expected_y2(self):
        return float(self.dims) if self.renormalize else self.dims + self.noise_std**2

    def linear_prior(self):
        return [(1.0, self.dims, self.noise_std)]


@FUNCTION_CLASSES.register("quadratic")
@dataclass
class Quadratic(Linear):
    """y = (x^2).w / sqrt(3), so that E[y^2] = d as for the linear class."""

    def apply(self, params, xs, generator=None):
        return super().apply(params, xs.square()) / math.sqrt(3)

    def linear_prior(self):
        return None  # linear in x^2, not in x


@FUNCTION_CLASSES.register("relu_net")
@dataclass
class ReluNet(FunctionClass):
    """y = sqrt(2/hidden) * relu(x W1) W2 with W1 (d x hidden), W2 (hidden) ~ N(0, 1); E[y^2] = d."""

    hidden: int = field(default=100, metadata={"min": 1})

    def sample(self, batch, generator, active_dims=None):
        return {"w1": _normal(generator, batch, self.dims, self.hidden), "w2": _normal(generator, batch, self.hidden)}

    def apply(self, params, xs, generator=None):
        hidden = torch.relu(torch.bmm(xs, params["w1"]))
        return math.sqrt(2 / self.hidden) * torch.einsum("bph,bh->bp", hidden, params["w2"])


@FUNCTION_CLASSES.register("tree")
@dataclass
class DecisionTree(FunctionClass):
    """A full binary tree of `depth`: each node splits at 0 (x > 0 goes right) on a uniform random coordinate,
    leaves ~ N(0, 1). Under a curriculum the coordinate is any of the d (splits: all, Garg's: a split on a zeroed
    coordinate always goes left) or only an active one (splits: active, iclab's before version 2)."""

    depth: int = field(default=4, metadata={"min": 1, "max": 16})
    splits: str = field(default="all", metadata={"choices": ["all", "active"]})

    def sample(self, batch, generator, active_dims=None):
        high = self.dims if self.splits == "all" else _active(self.dims, active_dims)
        nodes = 2**self.depth - 1
        split = torch.randint(0, high, (batch, nodes), generator=generator, device=generator.device)
        return {"split": split, "leaf": _normal(generator, batch, 2**self.depth)}

    def apply(self, params, xs, generator=None):
        batch, points, _ = xs.shape
        node = torch.zeros(batch, points, dtype=torch.long, device=xs.device)
        for _ in range(self.depth):  # a loop over tree levels, vectorised over prompts and points
            feature = params["split"].gather(1, node)
            right = xs.gather(2, feature.unsqueeze(-1)).squeeze(-1) > 0
            node = 2 * node + 1 + right.long()
        return params["leaf"].to(xs.dtype).gather(1, node - (2**self.depth - 1))

    def expected_y2(self):
        return 1.0


@FUNCTION_CLASSES.register("sinusoid")
@dataclass
class Sinusoid(FunctionClass):
    """y = amplitude * sin(freq * v.x + phase): a sine wave along a random unit direction v of the active
    coordinates, freq ~ U[freq_min, freq_max], phase ~ U[0, 2 pi). Since v.x ~ N(0, 1) and the phase is uniform,
    E[y^2] = amplitude^2 / 2; the default amplitude sqrt(2) makes it 1."""

    freq_min: float = field(default=0.5, metadata={"min": 0.0})
    freq_max: float = field(default=2.0, metadata={"min": 0.0})
    amplitude: float = field(default=math.sqrt(2), metadata={"gt": 0.0})

    def check(self, prefix):
        if self.freq_max < self.freq_min:
            raise key_error(f"{prefix}.freq_max", f"must be >= freq_min ({self.freq_min}), got {self.freq_max}")

    def sample(self, batch, generator, active_dims=None):
        active = _active(self.dims, active_dims)
        v = _normal(generator, batch, self.dims)
        v[:, active:] = 0
        v = v / v.norm(dim=1, keepdim=True)
        freq = self.freq_min + (self.freq_max - self.freq_min) * _uniform(generator, batch)
        phase = 2 * math.pi * _uniform(generator, batch)
        return {"v": v, "freq": freq, "phase": phase}

    def apply(self, params, xs, generator=None):
        t = torch.einsum("bpd,bd->bp", xs, params["v"])
        return self.amplitude * torch.sin(params["freq"][:, None] * t + params["phase"][:, None])

    def expected_y2(self):
        return self.amplitude**2 / 2


@FUNCTION_CLASSES.register("linear_classification")
@dataclass
class LinearClassification(Linear):
    """y = sign(w.x), w ~ N(0, I_d). Scored by the 0-1 error of sign(prediction). Trained (loss: logistic, Garg's)
    with the binary cross-entropy of sigmoid(prediction) against (y + 1) / 2, or (loss: squared, iclab's before
    version 2) with the squared error against y."""

    metric: ClassVar[str] = "sign"
    loss: str = field(default="logistic", metadata={"choices": ["logistic", "squared"]})

    def apply(self, params, xs, generator=None):
        return torch.sign(super().apply(params, xs))

    def training_loss(self, preds, ys, params, normalized=False):
        if self.loss == "squared":
            return super().training_loss(preds, ys, params, normalized)
        # the logits form of BCE(sigmoid(p), t): the same value, without sigmoid's saturation at large |p|
        return F.binary_cross_entropy_with_logits(preds, (ys + 1) / 2, reduction="none")

    def linear_prior(self):
        return None

    def expected_y2(self):
        return 1.0


class _Composite(FunctionClass):
    """Helpers for classes built from other classes' specs."""

    def _make(self, spec, prefix: str) -> FunctionClass:
        return FUNCTION_CLASSES.make(spec, prefix=prefix, dims=self.dims)


@FUNCTION_CLASSES.register("finite_pool")
@dataclass
class FinitePool(_Composite):
    """A fixed pool of `size` functions drawn once from `base` (seeded by `pool_seed`); every prompt uses one
    of them (Raventos et al.'s task diversity). A batch draws them without replacement (Garg's randperm): all
    different when batch <= size, else in rounds of a fresh permutation of the pool each; with `replacement`
    (iclab's before version 2), independently and uniformly."""

    size: int = field(default=16, metadata={"min": 1})
    base: dict = field(default_factory=lambda: {"name": "linear"})
    pool_seed: int = 0
    replacement: bool = False

    def check(self, prefix):
        self._base = self._make(self.base, f"{prefix}.base")
        self.metric = self._base.metric
        self._pools: dict[torch.device, Params] = {}

    def pool(self, device: torch.device) -> Params:
        if device not in self._pools:  # drawn on the CPU so that the pool is the same on every device
            params = self._base.sample(self.size, torch.Generator().manual_seed(self.pool_seed))
            self._pools[device] = _to(params, device)
        return self._pools[device]

    def sample(self, batch, generator, active_dims=None):
        if self.replacement:
            index = torch.randint(0, self.size, (batch,), generator=generator, device=generator.device)
        else:  # a uniform permutation per round: the order of i.i.d. uniform keys
            index = _uniform(generator, -(-batch // self.size), self.size).argsort(dim=1).flatten()[:batch]
        return index_params(self.pool(generator.device), index) | {"index": index}

    def apply(self, params, xs, generator=None):
        return self._base.apply(params, xs, generator)

    def linear_pool(self) -> tuple[Tensor, float] | None:
        """The pool as (size, dims) weight vectors w (on the CPU) and the noise std of y = w.x + noise, when the
        base class is one linear-Gaussian class (linear, sparse_linear, noisy_linear without renormalize): what
        the Bayes estimator of the pool (Raventos et al.'s dMMSE) needs. None for every other base."""
        prior = self._base.linear_prior()
        if prior is None or len(prior) != 1 or getattr(self._base, "renormalize", False):
            return None
        return self.pool(torch.device("cpu"))["w"], prior[0][2]

    def training_loss(self, preds, ys, params, normalized=False):
        return self._base.training_loss(preds, ys, params, normalized)

    def expected_y2(self):
        return self._base.expected_y2()


def _to(params: Params, device) -> Params:
    return {k: _to(v, device) if isinstance(v, dict) else v.to(device) for k, v in params.items()}


@FUNCTION_CLASSES.register("mixture")
@dataclass
class Mixture(_Composite):
    """Each prompt draws its function class i with probability weight_i / sum(weights), then a function from it.

    components: a list of task specs, each with an extra `weight` key, e.g.
      [{name: linear, weight: 0.5}, {name: sparse_linear, nnz: 2, weight: 0.5}]
    """

    components: list[dict] = field(default_factory=list)

    def check(self, prefix):
        if not self.components:
            raise key_error(f"{prefix}.components", "give at least one component, e.g. [{name: linear, weight: 1}]")
        self._classes, weights = [], []
        for i, comp in enumerate(self.components):
            if not isinstance(comp, dict) or "weight" not in comp:
                raise key_error(f"{prefix}.components[{i}]", f"needs a 'weight' and a 'name', got {comp!r}")
            weight = comp["weight"]
            if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
                raise key_error(f"{prefix}.components[{i}].weight", f"must be a number >= 0, got {weight!r}")
            weights.append(float(weight))
            spec = {k: v for k, v in comp.items() if k != "weight"}
            self._classes.append(self._make(spec, f"{prefix}.components[{i}]"))
        if sum(weights) <= 0:
            raise key_error(f"{prefix}.components", f"the weights must sum to a positive number, got {weights}")
        metrics = {c.metric for c in self._classes}
        if len(metrics) > 1:  # one curve cannot average squared errors and 0-1 errors
            raise key_error(
                f"{prefix}.components",
                "cannot mix regression and classification classes (a curve scores one metric); train them apart",
            )
        self.metric = metrics.pop()
        self.weights = torch.tensor(weights) / sum(weights)

    @property
    def classes(self) -> list[FunctionClass]:
        return self._classes

    def sample(self, batch, generator, active_dims=None):
        # Every component draws a full batch and `apply` keeps each prompt's own: simple, vectorised, and the
        # draws of one component do not depend on which prompts the others got.
        which = torch.multinomial(self.weights.to(generator.device), batch, replacement=True, generator=generator)
        parts = {str(i): c.sample(batch, generator, active_dims) for i, c in enumerate(self._classes)}
        return {"component": which, "parts": parts}

    def apply(self, params, xs, generator=None):
        ys = torch.stack([c.apply(params["parts"][str(i)], xs, generator) for i, c in enumerate(self._classes)])
        return self._pick(ys, params)

    def _pick(self, values: Tensor, params: Params) -> Tensor:
        """From (components, batch, points) values, each prompt's own component's (batch, points)."""
        return values.gather(0, params["component"][None, :, None].expand(1, *values.shape[1:]))[0]

    def training_loss(self, preds, ys, params, normalized=False):
        parts = params["parts"]
        losses = [c.training_loss(preds, ys, parts[str(i)], normalized) for i, c in enumerate(self._classes)]
        return self._pick(torch.stack(losses), params)

    def y_scale(self, params):
        scales = torch.tensor([c.expected_y2() for c in self._classes], device=params["component"].device)
        return scales[params["component"]]

    def expected_y2(self):
        return float(sum(w * c.expected_y2() for w, c in zip(self.weights.tolist(), self._classes, strict=True)))

    def linear_prior(self):
        parts = [c.linear_prior() for c in self._classes]
        if any(p is None for p in parts):
            return None
        return [(w * p, nnz, std) for w, part in zip(self.weights.tolist(), parts, strict=True) for p, nnz, std in part]


@FUNCTION_CLASSES.register("convex")
@dataclass
class ConvexCombination(_Composite):
    """y = alpha * f(x) + (1 - alpha) * g(x) with f and g drawn independently from the classes `first`, `second`."""

    first: dict = field(default_factory=lambda: {"name": "linear"})
    second: dict = field(default_factory=lambda: {"name": "sinusoid"})
    alpha: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})

    def check(self, prefix):
        self._f = self._make(self.first, f"{prefix}.first")
        self._g = self._make(self.second, f"{prefix}.second")
        if self._f.metric != "squared" or self._g.metric != "squared":
            raise key_error(f"{prefix}", "convex combinations need two regression classes")

    def sample(self, batch, generator, active_dims=None):
        return {"f": self._f.sample(batch, generator, active_dims), "g": self._g.sample(batch, generator, active_dims)}

    def apply(self, params, xs, generator=None):
        f = self._f.apply(params["f"], xs, generator)
        g = self._g.apply(params["g"], xs, generator)
        return self.alpha * f + (1 - self.alpha) * g

    def expected_y2(self):
        return self.alpha**2 * self._f.expected_y2() + (1 - self.alpha) ** 2 * self._g.expected_y2()

    @property
    def classes(self) -> list[FunctionClass]:
        """The built classes of f and g (the fields `first` and `second` are their specs)."""
        return [self._f, self._g]


def make_task(spec: dict | str, dims: int, prefix: str = "task") -> FunctionClass:
    """Build a function class from a spec such as {'name': 'sparse_linear', 'nnz': 2} or 'sparse_linear:nnz=2'."""
    return FUNCTION_CLASSES.make(spec, prefix=prefix, dims=dims)
