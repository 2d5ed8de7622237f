"""What every in-context learner shares, whatever its architecture.

A prompt x_1, y_1, ..., x_n, y_n becomes 2n tokens in R^d (x_i as is, y_i as [y_i, 0, ..., 0]); a linear read-in
maps them to `width`, a causal sequence model (the architecture) runs over them, and a linear read-out at every
x-position predicts the y that follows it: `forward(xs, ys)[:, k]` predicts y_{k+1} from the k examples before
x_{k+1}, every prefix in one pass. This is Garg et al.'s wrapper around GPT2Model, with the backbone swappable.

An architecture is a config dataclass (extending `ModelConfig`, registered in `iclab.models.MODELS` under its
`name`) whose `build(dims, max_points)` returns an `ICLModel`. Nothing else in iclab knows architectures: the
trainer asks the model for its FLOPs, its hidden matrices (for Muon) and its one-line description.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..spec import Registry, key_error, unknown_key_error

MODELS = Registry("model")


@dataclass
class ModelConfig:
    """The keys every architecture takes; each architecture's dataclass adds its own."""

    # the architecture (`iclab list models`); left out, the transformer (all configs before the model registry)
    name: str = "transformer"
    layers: int = field(default=3, metadata={"min": 1})  # blocks (or recurrent layers) of the backbone
    width: int = field(default=64, metadata={"min": 1})  # hidden size: the read-in's output, the read-out's input

    @classmethod
    def from_spec(cls, spec: dict, prefix: str = "model") -> ModelConfig:
        """The config of the architecture `spec['name']` names (transformer when it names none), validated: how
        spec.build reads a `model:` section."""
        name = spec.get("name", "transformer")
        if name not in MODELS.names():
            raise key_error(f"{prefix}.name", str(unknown_key_error(str(name), MODELS.names(), "model")))
        return MODELS.make({"name": name} | spec, prefix)

    def check(self, prefix: str) -> None:
        own = getattr(type(self), "registry_name", self.name)
        if self.name != own:  # built in Python with another architecture's name
            raise key_error(f"{prefix}.name", f"{type(self).__name__} is the '{own}' model, got name {self.name!r}")

    @property
    def length_limited(self) -> bool:
        """Whether the model refuses prompts longer than the `points` it was built for (a learned position table);
        such a model cannot be evaluated beyond its training length."""
        return False

    def build(self, dims: int, max_points: int) -> ICLModel:
        """The model for d = `dims` inputs and prompts of up to `max_points` (x, y) pairs."""
        raise NotImplementedError


def interleave(xs: Tensor, ys: Tensor) -> Tensor:
    """(batch, n, d) inputs and (batch, n) outputs -> (batch, 2n, d) tokens x_1, [y_1, 0, ...], x_2, ...
    Vector outputs (batch, n, e), e <= d (vector_mqar's values), fill the first e entries of their tokens."""
    b, n, d = xs.shape
    y_tokens = ys.unsqueeze(-1) if ys.dim() == 2 else ys
    y_tokens = F.pad(y_tokens, (0, d - y_tokens.shape[-1]))
    return torch.stack((xs, y_tokens), dim=2).view(b, 2 * n, d)


class ICLModel(nn.Module):
    """Read-in, a causal sequence model over the interleaved tokens (`sequence`), read-out at the x positions.

    Subclasses build `read_in`, their backbone and `read_out` (in that order, so that a seed fixes every weight)
    and implement `sequence`; an architecture with a position table says so (`ModelConfig.length_limited`) and
    refuses longer prompts."""

    def __init__(self, config: ModelConfig, dims: int, max_points: int):
        super().__init__()
        self.config, self.dims, self.max_points = config, dims, max_points

    def tokens(self, xs: Tensor, ys: Tensor) -> Tensor:
        """The (batch, 2n, d) token sequence of a batch of prompts, checked against the model's shape."""
        n, d = xs.shape[1:]
        if d != self.dims:
            raise ValueError(f"the model takes {self.dims}-dimensional inputs, got {d}")
        if self.config.length_limited and n > self.max_points:
            raise ValueError(
                f"the model takes at most {self.max_points} points per prompt (its learned position table), got {n}"
            )
        return interleave(xs, ys)

    def sequence(self, h: Tensor) -> Tensor:
        """(batch, tokens, width) -> (batch, tokens, width): the architecture, causal (subclasses)."""
        raise NotImplementedError

    def forward(self, xs: Tensor, ys: Tensor) -> Tensor:
        """Predictions (batch, n), or (batch, n, outputs) (`set_outputs`): entry k predicts ys[:, k] from
        xs[:, :k+1] and ys[:, :k]."""
        h = self.sequence(self.read_in(self.tokens(xs, ys)))
        return self.read_out(h[:, 0::2]).squeeze(-1)

    def set_outputs(self, outputs: int) -> None:
        """Read out `outputs` numbers per position, for a task whose outputs are vectors (vector_mqar): a fresh
        linear read-out of that width, drawn after every other weight (one output, the default, changes nothing)."""
        if outputs != 1:
            self.read_out = nn.Linear(self.read_out.in_features, outputs)

    def query_predictor(self, cx: Tensor, cy: Tensor) -> Callable[[Tensor], Tensor]:
        """For contexts cx (B, c, d), cy (B, c): the function of queries q (B, m, d) -> (B, m) that predicts each
        query's y from its own context alone, as the prompt (context, query) would. This one runs every such
        prompt whole; an architecture that can compute a shared context once overrides it (ICLTransformer)."""
        B, c, d = cx.shape

        def run(q: Tensor) -> Tensor:
            m = q.shape[1]
            xs = torch.cat([cx[:, None].expand(B, m, c, d), q[:, :, None]], 2).reshape(B * m, c + 1, d)
            ys = torch.cat([cy[:, None].expand(B, m, c), cy.new_zeros(B, m, 1)], 2).reshape(B * m, c + 1)
            return self(xs, ys)[:, -1].reshape(B, m)

        return run

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def describe(self) -> str:
        """One line for logs and reports: the architecture, its shape and size."""
        c = self.config
        return f"{c.name}: {c.layers} layers, width {c.width}, {self.num_parameters():,} parameters"

    def is_hidden_matrix(self, name: str, p: nn.Parameter) -> bool:
        """Whether Muon trains `p`: the weight of a linear map inside the backbone. The read-in and read-out,
        embeddings, biases, norms, convolution kernels and per-channel SSM parameters stay with AdamW."""
        return p.dim() == 2 and name in self._linear_weights()

    def _linear_weights(self) -> set[str]:
        linear = (nn.Linear, *_hf_conv1d())
        return {
            f"{module_name}.weight"
            for module_name, module in self.named_modules()
            if isinstance(module, linear) and module_name not in ("read_in", "read_out")
        }

    def forward_flops(self, points: int) -> int:
        """FLOPs of one forward pass over one prompt of `points` pairs: the matrix products, counted by torch's
        FlopCounterMode on a real pass (the analytic count of training/flops.py's convention, for any backbone)."""
        from torch.utils.flop_counter import FlopCounterMode

        p = next(self.parameters())
        xs = torch.zeros(1, points, self.dims, dtype=p.dtype, device=p.device)
        counter = FlopCounterMode(display=False)
        with counter:  # not under no_grad: the counter's module hooks fail on HF's kernel-wrapped convolutions there
            self(xs, xs[..., 0])
        return int(counter.get_total_flops())


def _hf_conv1d() -> tuple[type, ...]:
    """Hugging Face's GPT-2 Conv1D (a linear map stored transposed), if a backbone has loaded it: no model can
    hold one otherwise, and importing transformers here would cost every run seconds."""
    module = sys.modules.get("transformers.pytorch_utils")
    return (module.Conv1D,) if module is not None else ()
