"""Finetuning on the demonstrations (one epoch of plain SGD, batch 1, in the ICL order): `kv-sgd` (Dai et al.: only
the key and value projections move), `lcgd` (Deutch et al. 2024's layer-causal GD) and `full`; and Deutch et al.'s
untrained baseline model (`untrained_like`)."""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from .adapter import AttentionAdapter, forward_hooks

FT_METHODS = ("kv-sgd", "lcgd", "full")


def _trainable(adapter: AttentionAdapter, tuned: AttentionAdapter, method: str) -> list[nn.Parameter]:
    """The parameters of `tuned` that finetuning moves: all (full) or the key/value projections (masked where fused)."""
    if method == "full":
        return [p.requires_grad_(True) for p in tuned.model.parameters()]
    names = {id(p): n for n, p in adapter.model.named_parameters()}
    trainable = dict(tuned.model.named_parameters())
    for p in tuned.model.parameters():
        p.requires_grad_(False)
    params = []
    for kv in adapter.kv_parameters():
        p = trainable[names[id(kv.parameter)]]
        p.requires_grad_(True)
        if kv.mask is not None:  # a fused projection: only its K/V entries may move
            p.register_hook(lambda g, m=kv.mask: g * m)
        params.append(p)
    return params


@contextmanager
def _layer_causal(adapter: AttentionAdapter):
    """While active, every block's input is detached and its output kept: yields the list of block outputs."""
    outputs: list[Tensor] = []

    def detach(module, args, kwargs):
        if args:
            return (args[0].detach(), *args[1:]), kwargs
        return args, kwargs | {"hidden_states": kwargs["hidden_states"].detach()}

    def keep(module, args, kwargs, output):
        outputs.append(output[0] if isinstance(output, tuple) else output)

    blocks = adapter.decoder_blocks()
    handles = [b.register_forward_pre_hook(detach, with_kwargs=True) for b in blocks]
    try:
        with forward_hooks([(b, keep) for b in blocks]):
            yield outputs
    finally:
        for h in handles:
            h.remove()


@contextmanager
def _recording_queries(adapter: AttentionAdapter, into: list):
    """While active, each forward appends the query vectors of every token, (layers, tokens, heads * d), to `into`."""
    per_layer: dict[int, Tensor] = {}

    def hook(index):
        def save(module, args, kwargs, output):
            h = args[0] if args else kwargs["hidden_states"]
            per_layer[index] = adapter.projections(module, h[0])[0].flatten(-2).detach().float().cpu()

        return save

    layers = adapter.attention_layers()
    with forward_hooks([(m, hook(i)) for i, m in enumerate(layers)]):
        yield lambda: into.append(torch.stack([per_layer[i] for i in range(len(layers))]))


def finetune(
    adapter: AttentionAdapter, demos: list[Tensor], lr: float, method: str = "kv-sgd", record_queries: bool = False
) -> AttentionAdapter | None:
    """A copy of the adapter's model after one epoch of SGD on the demonstrations (None if it diverged).

    With `record_queries`, the copy's `train_queries` lists each demonstration's query vectors (layers, tokens,
    heads * d) as the forward pass of its own training step computed them (Dai et al. record them during FT)."""
    if method not in FT_METHODS:
        raise UserError(f"unknown finetuning method '{method}'; choose one of {', '.join(FT_METHODS)}")
    tuned = adapter.with_model(copy.deepcopy(adapter.model))
    params = _trainable(adapter, tuned, method)
    optimizer = torch.optim.SGD(params, lr=lr)
    tuned.model.eval()  # no dropout: the update is a deterministic function of the demonstrations, as in the dual form
    recorded: list[Tensor] = []
    for ids in demos:  # batch 1, one epoch, in the ICL order
        targets = ids[:, 1:].reshape(-1)
        with _recording_queries(tuned, recorded) if record_queries else _nothing() as keep:
            if method == "lcgd":
                with _layer_causal(tuned) as outputs:
                    tuned.logits(ids[:, :-1])
                losses = [_lm_loss(tuned.readout(h), targets) for h in outputs]
                loss = torch.stack(losses).sum()
            else:
                loss = _lm_loss(tuned.logits(ids[:, :-1]), targets)
            if keep is not None:
                keep()
        if not torch.isfinite(loss):
            return None
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for p in tuned.model.parameters():
        p.requires_grad_(False)
    if not all(torch.isfinite(p).all() for p in params):
        return None
    if record_queries:
        tuned.train_queries = recorded
    return tuned


@contextmanager
def _nothing():
    yield None


def _lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.to(logits.device))


def untrained_like(adapter: AttentionAdapter, fresh: nn.Module) -> nn.Module:
    """Deutch et al. 2024's untrained baseline: a copy of the adapter's model whose blocks take the attention and
    MLP weights of `fresh` (the same architecture, freshly initialised); embeddings, every norm and the unembedding
    stay the pretrained ones."""
    model = copy.deepcopy(adapter.model)
    blocks = adapter.with_model(model).decoder_blocks()
    for block, new in zip(blocks, adapter.with_model(fresh).decoder_blocks(), strict=True):
        for (_, m), (_, n) in zip(block.named_modules(), new.named_modules(), strict=True):
            if isinstance(m, nn.LayerNorm) or "norm" in type(m).__name__.lower():
                continue
            with torch.no_grad():
                for name, p in m.named_parameters(recurse=False):
                    p.copy_(getattr(n, name).to(p.dtype))
    return model.eval()
