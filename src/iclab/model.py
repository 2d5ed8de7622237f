"""The in-context learning transformer: a GPT-style causal model over interleaved (x, y) tokens.

A prompt x_1, y_1, ..., x_n, y_n becomes 2n tokens in R^d: x_i as is and y_i as [y_i, 0, ..., 0]. A linear read-in
maps d -> width, learned position embeddings are added, pre-LayerNorm blocks run with causal attention, and a
linear read-out at every x-position predicts the y that follows it. So `forward(xs, ys)[:, k]` is the prediction
for y_{k+1} from the k examples before x_{k+1}: one pass evaluates every prefix length at once.

Parameters keep PyTorch's default initialisation (position embeddings start at zero): on the demo task it
learned faster than GPT-2's N(0, 0.02) scheme (error at k = 2d 0.066 vs 0.080 after 2,500 steps, one seed each).
There is no token-embedding table (the GPT-2 model of the Garg release carries an unused 50257 x width one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .spec import key_error


@dataclass
class ModelConfig:
    layers: int = field(default=3, metadata={"min": 1})
    width: int = field(default=64, metadata={"min": 1})
    heads: int = field(default=2, metadata={"min": 1})
    mlp_ratio: int = field(default=4, metadata={"min": 1})
    # softmax: standard attention. linear: un-normalised attention, scores (q.k)/sqrt(head_dim) without softmax,
    # the "relaxed" attention of the dual form (Dai et al.; von Oswald et al.).
    attention: str = field(default="softmax", metadata={"choices": ["softmax", "linear"]})
    # learned: a learned embedding per position (GPT-2, as in Garg et al.). type: only a learned x-token / y-token
    # embedding; order then comes from the causal mask alone, which suits prompts whose examples are exchangeable.
    positions: str = field(default="learned", metadata={"choices": ["learned", "type"]})

    def check(self, prefix: str) -> None:
        if self.width % self.heads:
            raise key_error(f"{prefix}.width", f"must be divisible by heads ({self.heads}), got {self.width}")


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, attention: str):
        super().__init__()
        self.heads, self.attention = heads, attention
        self.qkv = nn.Linear(width, 3 * width)  # fused query, key and value projections
        self.proj = nn.Linear(width, width)

    def split_heads(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(batch, tokens, width) -> q, k, v each (batch, heads, tokens, head_dim)."""
        b, t, c = h.shape
        return self.qkv(h).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)

    def forward(self, h: Tensor, x_only: bool = False) -> Tensor:
        """Causal attention over all tokens; with `x_only`, outputs for the x positions (even indices) only."""
        q, k, v = self.split_heads(h)
        t = h.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=h.device).tril()
        if x_only:
            q, causal = q[:, :, 0::2], causal[0::2]
        if self.attention == "softmax":
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=causal if x_only else None, is_causal=not x_only)
        else:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
            out = scores.masked_fill(~causal, 0.0) @ v
        b, _, tq, _ = out.shape
        return self.proj(out.transpose(1, 2).reshape(b, tq, -1))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.width)
        self.attn = CausalSelfAttention(config.width, config.heads, config.attention)
        self.ln2 = nn.LayerNorm(config.width)
        self.fc = nn.Linear(config.width, config.mlp_ratio * config.width)
        self.fc_out = nn.Linear(config.mlp_ratio * config.width, config.width)

    def forward(self, h: Tensor, x_only: bool = False) -> Tensor:
        a = self.attn(self.ln1(h), x_only)
        h = (h[:, 0::2] if x_only else h) + a
        return h + self.fc_out(F.gelu(self.fc(self.ln2(h))))


class ICLTransformer(nn.Module):
    def __init__(self, config: ModelConfig, dims: int, max_points: int):
        super().__init__()
        self.config, self.dims, self.max_points = config, dims, max_points
        self.read_in = nn.Linear(dims, config.width)
        self.pos = nn.Parameter(torch.zeros(2 * max_points if config.positions == "learned" else 2, config.width))
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.ln_f = nn.LayerNorm(config.width)
        self.read_out = nn.Linear(config.width, 1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def embed(self, xs: Tensor, ys: Tensor) -> Tensor:
        """Interleave (batch, n, d) inputs and (batch, n) outputs into (batch, 2n, width) input embeddings."""
        b, n, d = xs.shape
        if d != self.dims:
            raise ValueError(f"the model takes {self.dims}-dimensional inputs, got {d}")
        if n > self.max_points:
            raise ValueError(f"the model takes at most {self.max_points} points per prompt, got {n}")
        y_tokens = F.pad(ys.unsqueeze(-1), (0, d - 1))
        tokens = torch.stack((xs, y_tokens), dim=2).view(b, 2 * n, d)
        pos = self.pos[: 2 * n] if self.config.positions == "learned" else self.pos.repeat(n, 1)
        return self.read_in(tokens) + pos

    def hidden(self, xs: Tensor, ys: Tensor, x_only: bool = False) -> Tensor:
        """Final hidden states (batch, 2n, width), or with `x_only` those of the n x positions (batch, n, width).

        `x_only` lets the last block skip the y positions, whose outputs nothing reads: their keys and values are
        still computed, but not their queries, attention output or MLP (about 15 % of a training step)."""
        h = self.embed(xs, ys)
        for i, block in enumerate(self.blocks):
            h = block(h, x_only and i == len(self.blocks) - 1)
        return self.ln_f(h)

    def forward(self, xs: Tensor, ys: Tensor) -> Tensor:
        """Predictions (batch, n): entry k predicts ys[:, k] from xs[:, :k+1] and ys[:, :k]."""
        return self.read_out(self.hidden(xs, ys, x_only=True)).squeeze(-1)


class TokenLM(nn.Module):
    """A GPT-style causal language model over token ids, built from the same blocks: token embeddings plus learned
    position embeddings in, a LayerNorm and the tied token embedding out. It runs the synthetic classification
    prompts of the ICL-vs-finetuning study (and language modelling)."""

    def __init__(self, config: ModelConfig, vocab: int, max_tokens: int):
        super().__init__()
        self.config, self.vocab, self.max_tokens = config, vocab, max_tokens
        self.tok = nn.Embedding(vocab, config.width)
        nn.init.normal_(self.tok.weight, std=0.02)  # tied to the output layer: keep the first logits small
        self.pos = nn.Parameter(torch.zeros(max_tokens, config.width))
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.ln_f = nn.LayerNorm(config.width)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, ids: Tensor) -> Tensor:
        """Logits (batch, tokens, vocab); entry t scores the token that follows ids[:, t]."""
        t = ids.shape[1]
        if t > self.max_tokens:
            raise ValueError(f"the model takes at most {self.max_tokens} tokens, got {t}")
        h = self.tok(ids) + self.pos[:t]
        for block in self.blocks:
            h = block(h)
        return self.ln_f(h) @ self.tok.weight.T
