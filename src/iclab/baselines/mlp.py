"""A 2-layer ReLU network fitted by Adam on every prefix (Garg et al.'s "2-layer NN, GD" baseline).

Every (prompt, prefix) problem gets its own network; all of them are one batched set of weights of shape
(problems, ...), trained together by batched matrix products. The loss is the sum of every network's own mean
squared error, so each network's gradient is exactly the one it would get alone, and Adam, which steps every
coordinate on its own history, trains each of them exactly as an unbatched per-prompt fit would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .base import Estimator

Weights = dict[str, Tensor]
CHUNK = 2**22  # hidden activations per batched fit: bounds memory, changes no result
# Prefix k trains on k rows; fitting prefixes in groups of similar k, each padded to its longest, computes
# ~0.56 n^2 rows per prompt instead of n^2 (networks are independent, so grouping changes no result either)
GROUPS = 8


def mlp_init(networks: int, dims: int, hidden: int, generator: torch.Generator) -> Weights:
    """PyTorch's nn.Linear initialisation for `networks` networks: weights and biases ~ U(-1/sqrt(fan_in),
    1/sqrt(fan_in)). w1 is (networks, dims, hidden), i.e. nn.Linear's weight transposed."""

    def uniform(fan_in: int, *shape: int) -> Tensor:
        return (2 * torch.rand(networks, *shape, generator=generator) - 1) / math.sqrt(fan_in)

    return {
        "w1": uniform(dims, dims, hidden),
        "b1": uniform(dims, hidden),
        "w2": uniform(hidden, hidden),
        "b2": uniform(hidden),
    }


def mlp_forward(weights: Weights, xs: Tensor) -> Tensor:
    """Outputs (networks, m) of every network on its own inputs xs (networks, m, dims)."""
    hidden = torch.relu(torch.baddbmm(weights["b1"].unsqueeze(1), xs, weights["w1"]))
    return torch.einsum("pmh,ph->pm", hidden, weights["w2"]) + weights["b2"].unsqueeze(1)


def fit_mlp(weights: Weights, xs: Tensor, ys: Tensor, mask: Tensor, lr: float, steps: int) -> Weights:
    """Adam on every network's mean squared error over its examples (mask (networks, m): which rows count)."""
    weights = {k: v.detach().clone().requires_grad_() for k, v in weights.items()}
    optimizer = torch.optim.Adam(weights.values(), lr=lr)
    count = mask.sum(1).clamp(min=1)
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            loss = (((mlp_forward(weights, xs) - ys).square() * mask).sum(1) / count).sum()
            loss.backward()
            optimizer.step()
    return {k: v.detach() for k, v in weights.items()}


@dataclass
class MLP(Estimator):
    """A 2-layer ReLU network fitted by Adam on the k examples (Garg's "2-layer NN, GD"), then asked the query.

    `hidden` units, nn.Linear initialisation, full-batch Adam (`lr`, `steps`) on the mean squared error; Garg's
    settings by default. Initial weights are drawn from `seed`, one set per prefix length shared by all prompts,
    so a prompt's prediction does not depend on the other prompts in its batch."""

    name = "mlp"
    hidden: int = field(default=100, metadata={"min": 1})
    lr: float = field(default=5e-3, metadata={"gt": 0.0})
    steps: int = field(default=100, metadata={"min": 0})
    seed: int = 0

    def _predict(self, xs, ys):
        b, n, d = xs.shape
        out = torch.zeros_like(ys)
        generator = torch.Generator().manual_seed(self.seed)
        init = {k: v.to(xs) for k, v in mlp_init(max(n - 1, 0), d, self.hidden, generator).items()}  # k = 1 .. n-1
        width = max(1, math.ceil((n - 1) / GROUPS))
        for lo in range(1, n, width):
            self._fit_prefixes(xs, ys, out, init, lo, min(lo + width, n))
        return out

    def _fit_prefixes(self, xs: Tensor, ys: Tensor, out: Tensor, init: Weights, lo: int, hi: int) -> None:
        """Fit prefixes k = lo .. hi-1 of every prompt, each on the first hi-1 rows with the rows >= k masked out,
        and write their predictions of the queries xs[:, k] into out."""
        d, rows, ks = xs.shape[2], hi - 1, hi - lo
        mask = (torch.arange(rows, device=xs.device) < torch.arange(lo, hi, device=xs.device)[:, None]).to(xs.dtype)
        group = {k: v[lo - 1 : hi - 1] for k, v in init.items()}
        step = max(1, CHUNK // (ks * rows * self.hidden))
        for start in range(0, len(xs), step):  # chunks of prompts bound memory
            x, y = xs[start : start + step], ys[start : start + step]
            c = len(x)
            weights = {k: v.repeat(c, *([1] * (v.dim() - 1))) for k, v in group.items()}  # (c * ks, ...)
            inputs = x[:, :rows].unsqueeze(1).expand(c, ks, rows, d).reshape(-1, rows, d)
            targets = y[:, :rows].unsqueeze(1).expand(c, ks, rows).reshape(-1, rows)
            fitted = fit_mlp(weights, inputs, targets, mask.repeat(c, 1), self.lr, self.steps)
            out[start : start + step, lo:hi] = mlp_forward(fitted, x[:, lo:hi].reshape(-1, 1, d)).view(c, ks)


def fit_one_at_a_time(xs: Tensor, ys: Tensor, hidden: int, lr: float, steps: int, seed: int) -> Tensor:
    """The plain reference for `MLP` (Garg's GDModel, one prompt at a time): for every prompt and prefix an
    nn.Sequential and its own torch Adam on MSELoss, from the same initial weights as the batched fit. Slow on
    purpose: tests and benchmarks/baselines.py compare the batched fit with it."""
    b, n, d = xs.shape
    init = mlp_init(n - 1, d, hidden, torch.Generator().manual_seed(seed))
    out = torch.zeros_like(ys)
    for i in range(b):
        for k in range(1, n):
            net = torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
            net = net.to(xs.dtype)
            with torch.no_grad():  # nn.Linear keeps its weight as (out, in)
                net[0].weight.copy_(init["w1"][k - 1].T)
                net[0].bias.copy_(init["b1"][k - 1])
                net[2].weight.copy_(init["w2"][k - 1][None])
                net[2].bias.copy_(init["b2"][k - 1][None])
            optimizer = torch.optim.Adam(net.parameters(), lr=lr)
            for _ in range(steps):
                optimizer.zero_grad()
                torch.nn.functional.mse_loss(net(xs[i, :k]).squeeze(-1), ys[i, :k]).backward()
                optimizer.step()
            with torch.no_grad():
                out[i, k] = net(xs[i, k : k + 1]).squeeze()
    return out
