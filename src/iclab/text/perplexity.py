"""Validation perplexity at several context lengths, from one pass over fixed validation windows.

A causal model scores position t of a window from the t + 1 tokens before it, so the first L positions of a
window are scored exactly as they would be in a window of L tokens. One pass over windows of the longest length
therefore gives the mean next-token loss at every position, and the perplexity with a context of L tokens is
exp(mean loss over the first L positions): the perplexity of the model run on windows of L tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm


@torch.no_grad()
def position_loss(model: nn.Module, windows: Tensor, batch_size: int = 64, progress: bool = False) -> Tensor:
    """Mean next-token cross-entropy (nats) at each position of `windows` (n, length + 1): shape (length,)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total = torch.zeros(windows.shape[1] - 1, dtype=torch.float64)
    for chunk in tqdm(windows.split(batch_size), desc="validation", disable=not progress, leave=False):
        chunk = chunk.to(device)
        logits = model(chunk[:, :-1])
        loss = F.cross_entropy(logits.transpose(1, 2).float(), chunk[:, 1:], reduction="none")
        total += loss.double().sum(0).cpu()
    model.train(was_training)
    return total / len(windows)


def mean_loss_at(loss_by_position: Tensor, lengths: list[int]) -> list[float]:
    """Mean loss with a context of L tokens, for each L in `lengths`."""
    return [float(loss_by_position[:length].mean()) for length in lengths]


def perplexities(loss_by_position: Tensor, lengths: list[int]) -> list[float]:
    return [math.exp(loss) for loss in mean_loss_at(loss_by_position, lengths)]
