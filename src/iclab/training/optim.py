"""The optimizers of `train.optimizer`: AdamW, or Muon for the blocks' hidden matrices with AdamW for the rest.

Muon (torch.optim.Muon) orthogonalises each matrix's momentum by a Newton-Schulz iteration; it is meant for the
2-D weights of hidden layers only. Embeddings, the read-in and read-out (or the tied token embedding), biases and
LayerNorm gains stay with AdamW, as is standard. Muon's update is rescaled by 0.2 sqrt(max(rows, cols))
("match_rms_adamw", Moonshot's rule) so that one `train.lr` and `train.weight_decay` serve both optimizers.
"""

from __future__ import annotations

import torch

from ..config import TrainConfig


class Optimizers:
    """Several torch optimizers stepped as one. `parts` names them; a checkpoint stores each under its name."""

    def __init__(self, **parts: torch.optim.Optimizer):
        self.parts = parts

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.parts.values() for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.parts.values():
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.parts.values():
            o.step()


def is_hidden_matrix(model: torch.nn.Module, name: str, p: torch.nn.Parameter) -> bool:
    """A hidden layer's weight matrix: the model says which (ICLModel.is_hidden_matrix, for any architecture); a
    model that does not (the token LM) keeps them inside its transformer blocks, under `blocks.`."""
    if hasattr(model, "is_hidden_matrix"):
        return model.is_hidden_matrix(name, p)
    return name.startswith("blocks.") and p.dim() == 2


def _adamw(named: list[tuple[str, torch.nn.Parameter]], train: TrainConfig) -> torch.optim.AdamW:
    # weight decay on matrices only (not on biases, LayerNorm gains), as in GPT-2 / nanoGPT
    decay = [p for _, p in named if p.dim() >= 2]
    rest = [p for _, p in named if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": train.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=train.lr, betas=tuple(train.betas))


def make_optimizer(model: torch.nn.Module, train: TrainConfig) -> torch.optim.Optimizer | Optimizers:
    named = list(model.named_parameters())
    if train.optimizer == "adamw":
        return _adamw(named, train)
    hidden = [p for n, p in named if is_hidden_matrix(model, n, p)]
    muon = torch.optim.Muon(hidden, lr=train.lr, weight_decay=train.weight_decay, adjust_lr_fn="match_rms_adamw")
    return Optimizers(muon=muon, adamw=_adamw([(n, p) for n, p in named if not is_hidden_matrix(model, n, p)], train))
