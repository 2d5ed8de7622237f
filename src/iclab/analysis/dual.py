"""The dual form of linear attention: attention to demonstrations as an implicit weight update.

Two exact statements, each with a test:

1. von Oswald et al. (2023): one linear self-attention (LSA) layer over tokens e_i = (x_i, y_i) can compute one
   gradient-descent step on the in-context least-squares loss L(W) = 1/(2N) sum_i ||W x_i - y_i||^2. With
   W_K = W_Q = [[I, 0], [0, 0]], W_V = [[0, 0], [W0, -I]] and P = (eta / N) I, the query token (x_q, 0) leaves the
   layer holding (W0 - W1) x_q in its y-slot, where W1 = W0 - eta grad L(W0). `gd_construction` builds these
   weights and `lsa_forward` runs the layer.

2. Dai et al. (2023): with relaxed (un-normalised) attention, the output of a head for the query q splits into
   W_ZSL q from the query-side tokens plus Delta W_ICL q with Delta W_ICL = sum_i (W_V x_i)(W_K x_i)^T over the
   demonstration tokens: a sum of outer products, the form of a gradient update of a linear layer.
   `dual_decomposition` computes both parts for an attention layer of iclab's transformer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class LSAWeights:
    query: Tensor  # (d+1, d+1)
    key: Tensor
    value: Tensor
    projection: Tensor


def gd_construction(dims: int, eta: float, n: int, w0: Tensor | None = None, dtype=torch.float64) -> LSAWeights:
    """Weights with which one LSA layer performs one GD step of size eta from W0 (default 0) on N examples."""
    e = dims + 1
    kq = torch.zeros(e, e, dtype=dtype)
    kq[:dims, :dims] = torch.eye(dims, dtype=dtype)
    value = torch.zeros(e, e, dtype=dtype)
    value[dims, :dims] = torch.zeros(dims, dtype=dtype) if w0 is None else w0.to(dtype)
    value[dims, dims] = -1.0
    return LSAWeights(kq, kq.clone(), value, (eta / n) * torch.eye(e, dtype=dtype))


def tokens(xs: Tensor, ys: Tensor) -> Tensor:
    """(batch, N, d), (batch, N) -> (batch, N, d+1) tokens e_i = (x_i, y_i)."""
    return torch.cat((xs, ys.unsqueeze(-1)), dim=-1)


def lsa_forward(weights: LSAWeights, context: Tensor, queries: Tensor) -> Tensor:
    """Query tokens after one LSA layer whose keys and values are the context tokens only:
    e_q + P sum_i (W_V e_i)(W_K e_i)^T W_Q e_q. context (batch, N, e), queries (batch, M, e)."""
    k = context @ weights.key.T
    v = context @ weights.value.T
    q = queries @ weights.query.T
    return queries + (q @ k.transpose(-2, -1)) @ v @ weights.projection.T


def gd_step(xs: Tensor, ys: Tensor, eta: float, w0: Tensor | None = None) -> Tensor:
    """W1 = W0 - eta/N sum_i (W0 x_i - y_i) x_i^T for each prompt: (batch, d)."""
    w0 = torch.zeros(xs.shape[0], xs.shape[-1], dtype=xs.dtype) if w0 is None else w0.expand(xs.shape[0], -1)
    residual = torch.einsum("bnd,bd->bn", xs, w0) - ys
    return w0 - eta / xs.shape[1] * torch.einsum("bn,bnd->bd", residual, xs)


@dataclass
class DualParts:
    zsl: Tensor  # W_ZSL q: the head outputs from the query-side tokens, projected (batch, width)
    icl: Tensor  # Delta W_ICL q: from the demonstration tokens
    bias: Tensor  # the output projection's bias
    delta_w: Tensor  # Delta W_ICL per head before the projection: (batch, heads, head_dim, head_dim)
    direct: Tensor  # the attention module's own output at the query position


@torch.no_grad()
def dual_decomposition(attention, h: Tensor, split: int, position: int = -1) -> DualParts:
    """Split the linear-attention output at `position` into contributions of tokens [0, split) (demonstrations)
    and [split, position] (the query side). `attention` is an iclab CausalSelfAttention with attention='linear',
    `h` its input (batch, tokens, width)."""
    if attention.attention != "linear":
        raise ValueError("the dual form is exact for linear (un-normalised) attention; set model.attention=linear")
    q, k, v = attention.split_heads(h)  # (batch, heads, tokens, head_dim)
    t = h.shape[1]
    position = position % t
    scale = 1 / math.sqrt(q.shape[-1])
    query = q[:, :, position]
    # Delta W_ICL = sum over demonstrations of v_i k_i^T (scaled as the scores are); W_ZSL the same over the rest
    delta_w = scale * torch.einsum("bhtd,bhte->bhde", v[:, :, :split], k[:, :, :split])
    zsl_w = scale * torch.einsum("bhtd,bhte->bhde", v[:, :, split : position + 1], k[:, :, split : position + 1])
    weight = attention.proj.weight  # (width, heads * head_dim): maps concatenated heads to the output

    def project(w: Tensor) -> Tensor:
        return torch.einsum("bhde,bhe->bhd", w, query).flatten(1) @ weight.T

    direct = attention(h)[:, position]
    return DualParts(project(zsl_w), project(delta_w), attention.proj.bias, delta_w, direct)


class LSARegressor(torch.nn.Module):
    """One trainable linear self-attention layer on tokens (x_i, y_i), as in von Oswald et al.: the prediction
    for a query is minus the y-slot of its token after the layer (the sign their construction produces)."""

    def __init__(self, dims: int, init_std: float = 0.02, generator: torch.Generator | None = None):
        super().__init__()
        e = dims + 1

        def param():
            return torch.nn.Parameter(init_std * torch.randn(e, e, generator=generator))

        self.query, self.key, self.value, self.projection = param(), param(), param(), param()

    def weights(self) -> LSAWeights:
        return LSAWeights(self.query, self.key, self.value, self.projection)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, xs: Tensor, ys: Tensor, xq: Tensor) -> Tensor:
        """Predictions (batch,) for queries xq (batch, d) from examples xs (batch, N, d), ys (batch, N)."""
        query = tokens(xq.unsqueeze(1), torch.zeros(xq.shape[0], 1, dtype=xq.dtype))
        return -lsa_forward(self.weights(), tokens(xs, ys), query)[:, 0, -1]


def best_gd_step(xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> float:
    """The step size eta minimising the squared error of one GD step from 0: the prediction is eta * a with
    a = 1/N sum_i y_i x_i.x_q, so eta* = E[a yq] / E[a^2] (least squares in eta)."""
    a = gd_step(xs, ys, 1.0).mul(xq).sum(-1)
    return float((a * yq).sum() / a.square().sum())
