"""The interface between the ICL-vs-finetuning engine and a causal language model.

An adapter lists the model's attention layers, names the key and value projection parameters (for a fused QKV
matrix, the rows that hold K and V), and runs the model while recording, for every layer, what the engine
measures: the attention output at the last position before the residual, the pre-softmax attention scores of
the last position over every token, and the layer's input at every token. It reads these through forward hooks;
no model source is edited. iclab's TokenLM has one here; Hugging Face causal LMs get theirs in iclab.lm.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import UserError


@dataclass
class KVParameter:
    name: str
    parameter: nn.Parameter
    rows: slice | None = None  # the K/V rows of a fused projection; None: the whole parameter


@dataclass
class Internals:
    attn_out: Tensor  # (layers, batch, width): attention output at the last position, before the residual
    scores: Tensor  # (layers, batch, heads, tokens): pre-softmax scores of the last position
    inputs: Tensor  # (layers, batch, tokens, width): each attention layer's input


class AttentionAdapter:
    """Base class: subclasses implement `logits`, `attention_layers`, `kv_parameters` and `_capture`."""

    model: nn.Module

    def logits(self, ids: Tensor) -> Tensor:
        raise NotImplementedError

    def attention_layers(self) -> list[nn.Module]:
        raise NotImplementedError

    def kv_parameters(self) -> list[KVParameter]:
        raise NotImplementedError

    def context_length(self) -> int | None:
        """The most tokens the model takes (None: no fixed limit)."""
        return None

    def _capture(self, layer: nn.Module, args: tuple, kwargs: dict, output) -> tuple[Tensor, Tensor, Tensor]:
        """(attention output (batch, tokens, width), scores at the last position (batch, heads, tokens), layer
        input (batch, tokens, width)) from one attention module's forward-hook arguments."""
        raise NotImplementedError

    @torch.no_grad()
    def internals(self, ids: Tensor) -> tuple[Tensor, Internals]:
        """Logits at the last position (batch, vocab) and the per-layer internals of one forward pass."""
        records: list = [None] * len(self.attention_layers())

        def hook(index):
            def save(module, args, kwargs, output):
                records[index] = self._capture(module, args, kwargs, output)

            return save

        with _hooks([(m, hook(i)) for i, m in enumerate(self.attention_layers())]):
            logits = self.logits(ids)[:, -1]
        if any(r is None for r in records):
            raise RuntimeError("an attention layer did not run: the adapter does not match the model")
        out, scores, inputs = zip(*records, strict=True)
        return logits, Internals(torch.stack([o[:, -1] for o in out]), torch.stack(scores), torch.stack(inputs))


@contextmanager
def _hooks(pairs):
    handles = [m.register_forward_hook(fn, with_kwargs=True) for m, fn in pairs]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class IclabLMAdapter(AttentionAdapter):
    """iclab's TokenLM: attention modules `blocks[i].attn` with a fused `qkv` Linear (rows: Q, then K, then V)."""

    def __init__(self, model: nn.Module):
        from ..model import TokenLM

        if not isinstance(model, TokenLM):
            raise UserError(
                f"IclabLMAdapter cannot find the key/value projections of {type(model).__name__}: it "
                "expects iclab's TokenLM (blocks[i].attn.qkv)"
            )
        self.model = model

    def context_length(self):
        return self.model.max_tokens

    def logits(self, ids):
        return self.model(ids)

    def attention_layers(self):
        return [block.attn for block in self.model.blocks]

    def kv_parameters(self):
        width = self.model.config.width
        out = []
        for i, block in enumerate(self.model.blocks):
            out.append(KVParameter(f"blocks.{i}.attn.qkv.weight", block.attn.qkv.weight, slice(width, 3 * width)))
            out.append(KVParameter(f"blocks.{i}.attn.qkv.bias", block.attn.qkv.bias, slice(width, 3 * width)))
        return out

    def _capture(self, module, args, kwargs, output):
        h = args[0]
        q, k, _ = module.split_heads(h)
        scores = (q[:, :, -1:] @ k.transpose(-2, -1)).squeeze(2) / math.sqrt(q.shape[-1])
        return output, scores, h
