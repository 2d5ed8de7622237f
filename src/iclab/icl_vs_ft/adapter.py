"""The interface between the ICL-vs-finetuning engine and a causal language model.

An adapter lists the model's attention layers, names the key and value projection parameters (for a fused QKV
matrix, a mask of the entries that hold K and V), scores candidate labels after a batch of prompts, and records
for every layer what the engine measures at each query's last token: the attention output before the residual,
the pre-softmax attention scores over every earlier token, and the layer's input. It reads these through forward
hooks; no model source is edited. iclab's TokenLM has one here; Hugging Face causal LMs get theirs in iclab.lm,
which also reuses the key/value cache of a prefix shared by all prompts instead of recomputing it per prompt.
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError


@dataclass
class KVParameter:
    name: str
    parameter: nn.Parameter
    mask: Tensor | None = None  # 1 where a fused projection holds key/value weights; None: the whole parameter


@dataclass
class Prompts:
    """Token sequences that share a prefix: `prefix` (1, P), then each query's own tokens `queries` (N, T),
    right-padded to the longest; `lengths` (N,) counts each query's real tokens (None: all T are real).

    Right padding needs no attention mask in a causal model: no real token can see the pads after it."""

    prefix: Tensor
    queries: Tensor
    lengths: Tensor | None = None

    def __post_init__(self):
        if self.lengths is None:
            self.lengths = torch.full((len(self.queries),), self.queries.shape[1], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.queries)

    @classmethod
    def split(cls, ids: Tensor, query_tokens: int) -> Prompts:
        """Prompts from full sequences (N, tokens) whose last `query_tokens` tokens are each query's own."""
        prefix, queries = ids[:, :-query_tokens], ids[:, -query_tokens:]
        if not torch.equal(prefix, prefix[:1].expand_as(prefix)):
            raise ValueError("the sequences do not share the tokens before their last query_tokens tokens")
        return cls(prefix[:1], queries)

    def rows(self, index: slice) -> Prompts:
        return Prompts(self.prefix, self.queries[index], self.lengths[index])

    def full(self) -> Tensor:
        """Prefix and queries as one (N, P + T) tensor (pads included)."""
        return torch.cat((self.prefix.expand(len(self.queries), -1), self.queries), dim=1)


@dataclass
class Internals:
    attn_out: Tensor  # (layers, N, width): attention output at each query's last token, before the residual
    scores: Tensor  # (layers, N, heads, P + T): pre-softmax scores of that token; -inf at the positions after it
    inputs: Tensor  # (layers, N, width): the attention layer's input at that token
    query: Tensor | None = None  # (layers, N, heads * d): that token's query vector (projection, no rotary)
    # (layers, N): ‖softmax attention output - its relaxed linear form Σ_j (q·k_j) v_j‖ / ‖softmax output‖
    linear_gap: Tensor | None = None

    FIELDS = ("attn_out", "scores", "inputs", "query", "linear_gap")

    @staticmethod
    def cat(parts: list[Internals]) -> Internals:
        return Internals(*(torch.cat([getattr(p, f) for p in parts], dim=1) for f in Internals.FIELDS))

    def select(self, index: Tensor) -> Internals:
        """The rows `index` along the examples axis."""
        return Internals(*(getattr(self, f)[:, index] for f in Internals.FIELDS))


@dataclass
class Capture:
    """What one attention module's forward hook yields (see AttentionAdapter._capture)."""

    out: Tensor  # (batch, tokens, width): the attention output before the residual
    scores: Tensor  # (batch, heads, keys): pre-softmax scores of the tokens `last`, over every key
    inputs: Tensor  # (batch, tokens, width): the layer input
    query: Tensor  # (batch, heads * d): the query vector of the tokens `last` (no rotary)
    values: Tensor  # (batch, kv_heads, keys, d): the value vectors of every key
    scale: float  # the scores are scale * q·k


class AttentionAdapter:
    """Base class: subclasses implement `logits`, `attention_layers`, `kv_parameters` and `_capture`, and may
    override `_forward` (e.g. to reuse a cached prefix)."""

    model: nn.Module

    def logits(self, ids: Tensor) -> Tensor:
        """Logits (batch, tokens, vocab) of a plain forward pass (finetuning trains through this)."""
        raise NotImplementedError

    def attention_layers(self) -> list[nn.Module]:
        raise NotImplementedError

    def kv_parameters(self) -> list[KVParameter]:
        raise NotImplementedError

    def context_length(self) -> int | None:
        """The most tokens the model takes (None: no fixed limit)."""
        return None

    def with_model(self, model: nn.Module) -> AttentionAdapter:
        """The same adapter for another model of the same architecture (a finetuned copy)."""
        other = copy.copy(self)
        other.model = model
        return other

    def _capture(self, module: nn.Module, args: tuple, kwargs: dict, output, last: Tensor) -> Capture:
        """The internals at the tokens `last` (batch,) from one attention module's forward-hook arguments."""
        raise NotImplementedError

    def projections(self, module: nn.Module, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The query, key and value projections of hidden states h (..., width) in one attention module, each
        (..., heads, d) (keys and values: the key/value heads), before any rotary embedding."""
        raise NotImplementedError

    def decoder_blocks(self) -> list[nn.Module]:
        """The residual blocks, in order (each holds one attention layer): what layer-causal GD detaches."""
        raise NotImplementedError

    def readout(self, h: Tensor) -> Tensor:
        """Logits of hidden states from the residual stream: the final norm and the unembedding (the logit lens)."""
        raise NotImplementedError

    def _prepare(self, prefix: Tensor) -> None:
        """Called before the prefix's batches run (outside the recording hooks): adapters with a key/value cache
        encode the shared prefix here, once."""

    def _forward(self, prefix: Tensor, ids: Tensor, positions: Tensor) -> Tensor:
        """Logits (batch, m, vocab) at `positions` (batch, m) of `ids`, each row read after `prefix` (1, P).
        This plain version runs prefix and ids together; adapters with a key/value cache encode the prefix once."""
        logits = self.logits(torch.cat((prefix.expand(len(ids), -1), ids), dim=1))
        return logits.gather(1, (positions + prefix.shape[1]).unsqueeze(-1).expand(-1, -1, logits.shape[-1]))

    @contextmanager
    def _recording(self, tokens: int, last: Tensor, full_inputs: bool = False):
        """Record every attention layer's internals at the tokens `last` (batch,) of the `tokens` forwarded ids
        (the last `tokens` of whatever the model runs on) while the block runs; yields the list of records."""
        records: list = [None] * len(self.attention_layers())

        def hook(index):
            def save(module, args, kwargs, output):
                h = args[0] if args else kwargs["hidden_states"]
                at = (last + h.shape[1] - tokens).to(h.device)  # the model may run a prefix before the ids
                c = self._capture(module, args, kwargs, output, at)
                h, scores = c.inputs, c.scores.detach().float()
                rows = torch.arange(len(at), device=h.device)
                key_of_last = (scores.shape[-1] - h.shape[1] + at).to(scores.device)
                later = torch.arange(scores.shape[-1], device=scores.device) > key_of_last[:, None, None]
                scores = scores.masked_fill(later, float("-inf"))
                records[index] = (
                    c.out[rows, at].detach().float().cpu(),
                    scores.cpu(),
                    (h if full_inputs else h[rows, at]).detach().float().cpu(),
                    c.query.detach().float().cpu(),
                    _linear_gap(scores, c.values.detach().float(), c.scale).cpu(),
                )

            return save

        with forward_hooks([(m, hook(i)) for i, m in enumerate(self.attention_layers())]):
            yield records
        if any(r is None for r in records):
            raise RuntimeError("an attention layer did not run: the adapter does not match the model")

    @torch.no_grad()
    def score(self, prompts: Prompts, labels: list[Tensor], batch: int = 16) -> tuple[Tensor, Internals]:
        """Mean log-probability of each label's tokens after each prompt (N, C), and the internals at each
        query's last token. Queries run in batches of similar length (less padding); labels that share all but
        their last token are scored from one forward pass, so single-token labels cost one pass per query."""
        stems: dict[tuple, list[int]] = {}
        for c, label in enumerate(labels):
            stems.setdefault(tuple(label[:-1].tolist()), []).append(c)
        scores = torch.empty(len(prompts), len(labels))
        parts, done = [], []
        width = prompts.prefix.shape[1] + prompts.queries.shape[1]
        self._prepare(prompts.prefix)
        order = torch.argsort(prompts.lengths, stable=True)
        for start in range(0, len(prompts), batch):
            rows = order[start : start + batch]
            lengths = prompts.lengths[rows]
            queries = prompts.queries[rows, : int(lengths.max())]
            for g, (stem, members) in enumerate(stems.items()):
                ids, last = _append(queries, lengths, torch.tensor(stem, dtype=torch.long))
                positions = last[:, None] + torch.arange(len(stem) + 1)
                if g == 0:  # the internals at the query's last token do not depend on what follows it
                    with self._recording(ids.shape[1], last) as records:
                        logits = self._forward(prompts.prefix, ids, positions)
                    out, sc, inputs, query, gap = (torch.stack(r) for r in zip(*records, strict=True))
                    sc = F.pad(sc, (0, width + len(stem) - sc.shape[-1]), value=float("-inf"))[..., :width]
                    parts.append(Internals(out, sc, inputs, query, gap))
                    done.append(rows)
                else:
                    logits = self._forward(prompts.prefix, ids, positions)
                logp = torch.log_softmax(logits.float(), dim=-1)
                for c in members:
                    picked = logp.gather(2, labels[c].view(1, -1, 1).expand(len(ids), -1, 1))
                    scores[rows, c] = picked.squeeze(-1).mean(-1)
        internals = Internals.cat(parts)
        back = torch.argsort(torch.cat(done))  # batch order -> the prompts' order
        return scores, internals.select(back)

    @torch.no_grad()
    def layer_inputs(self, ids: Tensor) -> Tensor:
        """Every attention layer's input at every token of one sequence (1, T) -> (layers, T, width)."""
        last = torch.tensor([ids.shape[1] - 1])
        with self._recording(ids.shape[1], last, full_inputs=True) as records:
            self._forward(ids[:, :0], ids, last[:, None])
        return torch.stack([r[2][0] for r in records])


def _linear_gap(scores: Tensor, values: Tensor, scale: float) -> Tensor:
    """Per row: ‖softmax attention output - the relaxed linear attention output‖ / ‖softmax output‖, heads
    concatenated. Relaxed linear attention (Dai et al.'s dual form) drops the softmax and the scale: Σ_j (q·k_j) v_j.
    scores (batch, heads, keys) with -inf after the token, values (batch, kv_heads, keys, d)."""
    values = values.repeat_interleave(scores.shape[1] // values.shape[1], dim=1)  # grouped-query attention
    keys = min(scores.shape[-1], values.shape[2])
    scores, values = scores[..., :keys], values[:, :, :keys]
    soft = torch.einsum("bhs,bhsd->bhd", torch.softmax(scores, dim=-1), values).flatten(1)
    linear = torch.einsum("bhs,bhsd->bhd", scores.nan_to_num(neginf=0.0) / scale, values).flatten(1)
    return (soft - linear).norm(dim=-1) / soft.norm(dim=-1).clamp(min=1e-30)


def _append(queries: Tensor, lengths: Tensor, stem: Tensor) -> tuple[Tensor, Tensor]:
    """Each query followed by the `stem` tokens right after its last real token; (ids, index of the last query
    token) per row."""
    if not len(stem):
        return queries, lengths - 1
    ids = torch.cat((queries, queries.new_zeros(len(queries), len(stem))), dim=1)
    cols = lengths[:, None] + torch.arange(len(stem))
    ids.scatter_(1, cols, stem.expand(len(queries), -1))
    return ids, lengths - 1


@contextmanager
def forward_hooks(pairs):
    """Register (module, hook) forward hooks for the duration of a `with` block; removed even on an error."""
    handles = [m.register_forward_hook(fn, with_kwargs=True) for m, fn in pairs]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class IclabLMAdapter(AttentionAdapter):
    """iclab's TokenLM: attention modules `blocks[i].attn` with a fused `qkv` Linear (rows: Q, then K, then V)."""

    def __init__(self, model: nn.Module):
        from ..models.transformer import TokenLM

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
            for kind in ("weight", "bias"):
                p = getattr(block.attn.qkv, kind)
                mask = torch.zeros_like(p)
                mask[width:] = 1  # rows: query, key, value
                out.append(KVParameter(f"blocks.{i}.attn.qkv.{kind}", p, mask))
        return out

    def decoder_blocks(self):
        return list(self.model.blocks)

    def readout(self, h):
        return self.model.ln_f(h) @ self.model.tok.weight.T

    def projections(self, module, h):
        heads = module.heads
        q, k, v = module.qkv(h).view(*h.shape[:-1], 3, heads, -1).unbind(-3)
        return q, k, v

    def _capture(self, module, args, kwargs, output, last):
        h = args[0]
        q, k, v = module.split_heads(h)
        q_last = q[torch.arange(len(h)), :, last]  # (batch, heads, head_dim)
        scores = torch.einsum("bhd,bhsd->bhs", q_last, k) / math.sqrt(q.shape[-1])
        return Capture(output, scores, h, q_last.flatten(1), v, 1 / math.sqrt(q.shape[-1]))
