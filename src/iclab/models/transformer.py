"""The in-context learning transformer (`model: {name: transformer}`, the default): GPT-style causal blocks.

The prompt's 2n tokens (models/base.py) are read in to `width`, learned position embeddings are added (or only an
x/y type embedding, or nothing: `positions`), pre-LayerNorm blocks run with causal attention, and the read-out at
every x-position predicts the y that follows it.

By default parameters keep PyTorch's default initialisation (position embeddings start at zero) and the MLP uses
the exact GELU: on the demo task this init learned faster than GPT-2's N(0, 0.02) scheme (error at k = 2d 0.066
vs 0.080 after 2,500 steps, one seed each), and the tanh form took 1.3x as long as the exact GELU on this CPU.
`init: gpt2` and `activation: gelu_new` give the Garg release's model (Hugging Face GPT2Model, dropout 0) exactly.
There is no token-embedding table (the GPT-2 model of the Garg release carries an unused 50257 x width one).

Momentum attention (Dai et al. 2023) adds to softmax attention an exponential moving average of the earlier value
vectors, sum_{i<t} eta^(t-i) v_i, by analogy with gradient descent with momentum. `momentum_term` computes it for a
whole sequence at once; its `carry` argument continues a sequence (a cached prefix, or one token at a time).

`attention: ema` is momentum attention as the authors built it (the code posted in microsoft/LMOps issue #9,
`NewGPTEMA`): a learned EMA per channel of the value vectors, the sum of `ema_dims` components each with its own
decay p = sigmoid(delta) and weight gamma / sqrt(width), added to the attention output before the output projection
and trained in. `MovingAverage` holds those parameters; `ema_term` computes it without a loop over positions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import InitVar, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..spec import key_error
from .base import MODELS, ICLModel, ModelConfig

EMA_DIMS = 8  # EMA components per channel in the authors' code


@MODELS.register("transformer")
@dataclass
class TransformerConfig(ModelConfig):
    """iclab's GPT-style transformer (nanoGPT-like, pre-LayerNorm): softmax, linear, momentum or EMA attention;
    learned, type-only or no positions (NoPE); PyTorch's or GPT-2's initialisation."""

    name: str = "transformer"
    heads: int = field(default=2, metadata={"min": 1})  # attention heads; must divide width
    mlp_ratio: int = field(default=4, metadata={"min": 1})  # MLP hidden size / width
    # softmax: standard attention. linear: un-normalised attention, scores (q.k)/sqrt(head_dim) without softmax,
    # the "relaxed" attention of the dual form (Dai et al.; von Oswald et al.). momentum: softmax attention plus
    # sum_{i<t} eta^(t-i) v_i, an exponential moving average of earlier value vectors (Dai et al.). ema: softmax
    # attention plus a learned EMA of the value vectors, the authors' own momentum attention (see MovingAverage).
    attention: str = field(default="softmax", metadata={"choices": ["softmax", "linear", "momentum", "ema"]})
    # eta of momentum attention, in [0, 1); eta = 0 is softmax attention exactly. Only with attention: momentum.
    momentum: float | None = None
    # attention: ema only. EMA components per channel, each with its own learned decay (the authors' code: 8);
    # and whether a token's own value enters its EMA (the authors' code: yes, at weight gamma / sqrt(width); false
    # gives sum_{i<t}, the form of the paper's formula). Left out, they take those defaults.
    ema_dims: int | None = field(default=None, metadata={"min": 1})
    ema_current: bool | None = None  # attention: ema only; whether a token's own value enters its EMA (above)
    # learned: a learned embedding per position (GPT-2, as in Garg et al.); prompts longer than `points` are
    # refused. type: only a learned x-token / y-token embedding; order then comes from the causal mask alone, which
    # suits prompts whose examples are exchangeable. none: no position information at all (NoPE).
    positions: str = field(default="learned", metadata={"choices": ["learned", "type", "none"]})
    # default: PyTorch's. gpt2: Hugging Face GPT-2's, as in Garg et al.: the blocks' weights and the position
    # embeddings N(0, 0.02), the two residual projections of each block N(0, 0.02 / sqrt(2 layers)), biases 0;
    # the read-in and read-out keep PyTorch's default, as in Garg's model (they sit outside its GPT2Model)
    init: str = field(default="default", metadata={"choices": ["default", "gpt2"]})
    # gelu: the exact GELU. gelu_new: its tanh approximation, GPT-2's (Hugging Face's name for it)
    activation: str = field(default="gelu", metadata={"choices": ["gelu", "gelu_new"]})
    _prefix: InitVar[str | None] = None  # the config key of this section, so that errors name it

    def __post_init__(self, _prefix: str | None) -> None:
        if self.attention == "ema":  # stored explicitly, so that a run's config.json keeps its meaning
            self.ema_dims = EMA_DIMS if self.ema_dims is None else self.ema_dims
            self.ema_current = True if self.ema_current is None else self.ema_current
        self.check(_prefix or "model")  # also when built in Python, not only from a config file

    def check(self, prefix: str) -> None:
        super().check(prefix)
        if self.width % self.heads:
            raise key_error(f"{prefix}.width", f"must be divisible by heads ({self.heads}), got {self.width}")
        if self.attention == "momentum" and self.momentum is None:
            raise key_error(f"{prefix}.momentum", "attention: momentum needs the decay eta in [0, 1), e.g. 0.5")
        if self.momentum is not None and self.attention != "momentum":
            raise key_error(
                f"{prefix}.momentum", f"applies only to attention: momentum (attention is {self.attention!r})"
            )
        if self.momentum is not None and not 0 <= self.momentum < 1:
            raise key_error(f"{prefix}.momentum", f"eta must be in [0, 1), got {self.momentum}")
        for key in ("ema_dims", "ema_current"):
            if getattr(self, key) is not None and self.attention != "ema":
                raise key_error(f"{prefix}.{key}", f"applies only to attention: ema (attention is {self.attention!r})")

    @property
    def eta(self) -> float:
        """The momentum decay; 0 (no momentum term) for the other attentions."""
        return self.momentum or 0.0

    @property
    def length_limited(self) -> bool:
        return self.positions == "learned"

    def build(self, dims: int, max_points: int) -> ICLTransformer:
        return ICLTransformer(self, dims, max_points)


MOMENTUM_BLOCK = 64  # block length of momentum_term: cost O(tokens x block), not O(tokens^2)


def _powers(base: float, exponents: Tensor, like: Tensor) -> Tensor:
    """base ** exponents, taken in float64 and cast to like's dtype: with base < 1 and exponents >= 0 the powers
    only shrink and underflow harmlessly to 0, so nothing overflows at any sequence length."""
    return (torch.tensor(base, dtype=torch.float64, device=like.device) ** exponents).to(like.dtype)


def momentum_weights(tokens: int, base: float, like: Tensor, shift: int = 0) -> Tensor:
    """The (tokens, tokens) lower-triangular matrix W[t, i] = base^(t - i - shift) for i < t, 0 elsewhere: with
    shift 0, (W @ v)[t] is the momentum term of position t."""
    position = torch.arange(tokens, device=like.device)
    lag = position[:, None] - position[None, :]
    return torch.where(lag > 0, _powers(base, (lag - shift).clamp(min=0), like), 0.0)


def momentum_term(v: Tensor, eta: float, carry: Tensor | None = None) -> Tensor:
    """sum_{i<t} eta^(t-i) v_i for every position t of v (..., tokens, dim), batched, without a loop over positions.

    Blocks of MOMENTUM_BLOCK tokens: inside a block, a matmul with the decay matrix; across blocks, each block's
    sum decayed to the next block's start, carried by a small block-level decay matrix. Every power is <= 1, so
    this is stable at any length, and costs O(tokens x block) instead of the O(tokens^2) of one big matrix.

    `carry` (..., dim) is the term the first position receives from tokens before this chunk (a cached prefix);
    `momentum_carry` gives the carry into the next chunk, so a sequence can also be processed in pieces, down to
    one token at a time: the O(T) recurrence m_(t+1) = eta (m_t + v_t)."""
    *batch, tokens, dim = v.shape
    if tokens <= MOMENTUM_BLOCK and carry is None:  # one block: the decay matrix alone
        return momentum_weights(tokens, eta, v) @ v
    size = min(MOMENTUM_BLOCK, tokens)
    blocks = -(-tokens // size)
    vb = F.pad(v, (0, 0, 0, blocks * size - tokens)).reshape(*batch, blocks, size, dim)  # zeros after the end
    inside = momentum_weights(size, eta, v) @ vb  # (..., blocks, size, dim)
    powers = _powers(eta, torch.arange(size + 1, device=v.device), v).unsqueeze(-1)  # eta^0 .. eta^size
    exits = (powers[1:].flip(0) * vb).sum(-2)  # each block's sum, decayed to the next block's start
    carries = momentum_weights(blocks, eta**size, v, shift=1) @ exits  # (..., blocks, dim): the term at each start
    if carry is not None:  # the prefix's term reaches the start of block b decayed by eta^(b * size)
        starts = _powers(eta**size, torch.arange(blocks, device=v.device), v).unsqueeze(-1)
        carries = carries + starts * carry.unsqueeze(-2)
    term = inside + powers[:size] * carries.unsqueeze(-2)
    return term.reshape(*batch, blocks * size, dim)[..., :tokens, :]


def momentum_carry(term: Tensor, v: Tensor, eta: float) -> Tensor:
    """The carry into the token after the chunk whose values are v and momentum terms `term`: eta (m_T + v_T)."""
    return eta * (term[..., -1, :] + v[..., -1, :])


# up to this many tokens ema_term multiplies by the kernel's matrix, beyond it convolves by FFT: on this CPU the
# matrix is 2x faster at 22 tokens (the ICL models), the two tie at 64, the FFT is 1.5x faster at 128
EMA_DIRECT = 64


def ema_kernel(log_decay: Tensor, weight: Tensor, length: int, current: bool = True) -> Tensor:
    """k[d, l] = sum_n weight[d, n] decay[d, n]^l for lags l = 0 .. length-1, from log decays (channels, dims) < 0:
    every power is exp(l log p) <= 1, so nothing overflows at any length. Without `current`, k[d, 0] = 0."""
    lags = torch.arange(int(not current), length, dtype=log_decay.dtype, device=log_decay.device)
    kernel = torch.einsum("dnl,dn->dl", torch.exp(lags * log_decay.unsqueeze(-1)), weight)
    return F.pad(kernel, (length - kernel.shape[-1], 0))


def ema_term(v: Tensor, log_decay: Tensor, weight: Tensor, current: bool = True) -> Tensor:
    """out[t, d] = sum_{i<=t} k[d, t-i] v[i, d] with the kernel of `ema_kernel`, for v (..., tokens, channels).

    The causal convolution is a matmul with the kernel's lower-triangular Toeplitz matrix for short sequences, and
    an FFT convolution (the authors' and MEGA's way, O(T log T)) for longer ones, where it is faster on this CPU
    (benchmarks/momentum.py)."""
    tokens = v.shape[-2]
    kernel = ema_kernel(log_decay, weight, tokens, current)  # (channels, tokens)
    if tokens <= EMA_DIRECT:  # (channels, t, i) = k[d, t - i], 0 for i > t: windows of the zero-padded kernel
        toeplitz = F.pad(kernel, (tokens - 1, 0)).unfold(-1, tokens, 1).flip(-1)
        return torch.einsum("dti,...id->...td", toeplitz, v)
    n = 2 * tokens  # zero-padded so that the circular convolution is the causal one
    spectrum = torch.fft.rfft(v.transpose(-2, -1), n=n) * torch.fft.rfft(kernel, n=n)
    return torch.fft.irfft(spectrum, n=n)[..., :tokens].transpose(-2, -1)


class MovingAverage(nn.Module):
    """The learned EMA of the authors' momentum attention, per channel of the value vectors: `dims` components
    with decays sigmoid(delta) in (0, 1) and weights gamma / sqrt(channels) (MEGA's EMA without its expansion
    beta, damping alpha and residual omega; the authors' scale is 1 / sqrt(channels), MEGA's 1 / sqrt(dims)).

    Its parameters start at zero (an EMA that adds nothing) and are drawn by `reset_parameters`, which the models
    call after every other weight: a model with the same seed then has the weights of softmax attention, plus
    these, so that runs pair by seed."""

    def __init__(self, channels: int, dims: int = EMA_DIMS, current: bool = True):
        super().__init__()
        self.current, self.scale = current, 1 / math.sqrt(channels)
        self.delta = nn.Parameter(torch.zeros(channels, dims))
        self.gamma = nn.Parameter(torch.zeros(channels, dims))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            nn.init.normal_(self.delta, std=0.2)  # decays sigmoid(delta) near 0.5 at the start
            nn.init.normal_(self.gamma, std=1.0)

    def decay(self) -> Tensor:
        """The decays sigmoid(delta), (channels, dims)."""
        return torch.sigmoid(self.delta)

    def forward(self, v: Tensor) -> Tensor:
        """The EMA term for values v (..., tokens, channels)."""
        return ema_term(v, F.logsigmoid(self.delta), self.gamma * self.scale, self.current)


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, attention: str, momentum: float = 0.0, ema: MovingAverage | None = None):
        super().__init__()
        self.heads, self.attention, self.momentum = heads, attention, momentum
        self.qkv = nn.Linear(width, 3 * width)  # fused query, key and value projections
        self.proj = nn.Linear(width, width)
        self.ema = ema

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
        if self.attention == "linear":
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
            out = scores.masked_fill(~causal, 0.0) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=causal if x_only else None, is_causal=not x_only)
        if self.momentum:  # eta = 0 adds nothing, so it stays exactly softmax attention
            term = momentum_term(v, self.momentum)
            out = out + (term[:, :, 0::2] if x_only else term)
        b, _, tq, _ = out.shape
        out = out.transpose(1, 2).reshape(b, tq, -1)  # heads merged: (batch, tokens, width)
        if self.ema is not None:  # per channel of the merged values, before the projection (the authors' code)
            term = self.ema(v.transpose(1, 2).reshape(b, t, -1))
            out = out + (term[:, 0::2] if x_only else term)
        return self.proj(out)


class Block(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.width)
        ema = MovingAverage(config.width, config.ema_dims, config.ema_current) if config.attention == "ema" else None
        self.attn = CausalSelfAttention(config.width, config.heads, config.attention, config.eta, ema)
        self.ln2 = nn.LayerNorm(config.width)
        self.fc = nn.Linear(config.width, config.mlp_ratio * config.width)
        self.fc_out = nn.Linear(config.mlp_ratio * config.width, config.width)
        self.approximate = "tanh" if config.activation == "gelu_new" else "none"

    def forward(self, h: Tensor, x_only: bool = False) -> Tensor:
        a = self.attn(self.ln1(h), x_only)
        h = (h[:, 0::2] if x_only else h) + a
        return h + self.fc_out(self.act(self.fc(self.ln2(h))))

    def act(self, x: Tensor) -> Tensor:
        return F.gelu(x, approximate=self.approximate)


def init_gpt2(blocks: nn.ModuleList, pos: nn.Parameter | None, std: float = 0.02) -> None:
    """GPT-2's initialisation of the blocks and position embeddings (Hugging Face GPT2PreTrainedModel): weights
    N(0, std), biases 0, LayerNorms 1 and 0, and each residual projection N(0, std / sqrt(2 layers)), since two of
    them per block add up on the residual stream."""
    for block in blocks:
        for module in block.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for proj in (block.attn.proj, block.fc_out):
            nn.init.normal_(proj.weight, std=std / math.sqrt(2 * len(blocks)))
    if pos is not None:
        nn.init.normal_(pos, std=std)


def init_ema(blocks: nn.ModuleList) -> None:
    """Draw the EMA parameters, last of all weights (see MovingAverage)."""
    for block in blocks:
        if block.attn.ema is not None:
            block.attn.ema.reset_parameters()


class ICLTransformer(ICLModel):
    def __init__(self, config: TransformerConfig, dims: int, max_points: int):
        super().__init__(config, dims, max_points)
        self.read_in = nn.Linear(dims, config.width)
        if config.positions != "none":  # a row per token position, or an x row and a y row (type)
            self.pos = nn.Parameter(torch.zeros(2 * max_points if config.length_limited else 2, config.width))
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.ln_f = nn.LayerNorm(config.width)
        self.read_out = nn.Linear(config.width, 1)
        if config.init == "gpt2":
            init_gpt2(self.blocks, getattr(self, "pos", None))
        init_ema(self.blocks)

    def describe(self) -> str:
        c = self.config
        eta = f" (eta {c.momentum})" if c.momentum is not None else ""
        return (f"transformer: {c.layers} layers, width {c.width}, {c.heads} heads, {c.attention} attention{eta}, "
                f"{self.num_parameters():,} parameters")

    def embed(self, xs: Tensor, ys: Tensor) -> Tensor:
        """Interleave (batch, n, d) inputs and (batch, n) outputs into (batch, 2n, width) input embeddings."""
        h = self.read_in(self.tokens(xs, ys))
        if self.config.positions == "none":
            return h
        n = xs.shape[1]
        return h + (self.pos[: 2 * n] if self.config.length_limited else self.pos.repeat(n, 1))

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

    def forward_flops(self, points: int) -> int:
        return icl_forward_flops(self.config, self.dims, points)

    @property
    def caches_context(self) -> bool:
        """Whether `query_predictor` computes a shared context once: plain softmax or linear attention. Momentum
        and EMA terms add a sum over every earlier value, so those models run each prompt whole."""
        return all(
            b.attn.attention in ("softmax", "linear") and not b.attn.momentum and b.attn.ema is None
            for b in self.blocks
        )

    def query_predictor(self, cx: Tensor, cy: Tensor) -> Callable[[Tensor], Tensor]:
        """ICLModel.query_predictor computed as causal attention allows: the context's keys and values at every
        layer once per context (B, c, d), then each query token alone, attending to them and to itself. The same
        numbers as whole prompts (up to rounding), with 2c + 2 times fewer tokens per query."""
        if not self.caches_context:
            return super().query_predictor(cx, cy)
        c = cx.shape[1]
        h, memory = self.embed(cx, cy), []
        for block in self.blocks:
            memory.append(block.attn.split_heads(block.ln1(h))[1:])  # the context's keys and values
            h = block(h)
        position = {"learned": 2 * c, "type": 0}.get(self.config.positions)  # the query's row of the table

        def run(q: Tensor) -> Tensor:
            h = self.read_in(q) + (self.pos[position] if position is not None else 0)  # (B, m, width)
            for block, (k, v) in zip(self.blocks, memory, strict=True):
                attn = block.attn
                qq, kq, vq = attn.split_heads(block.ln1(h))  # (B, heads, m, head_dim)
                scores = torch.cat([qq @ k.transpose(-2, -1), (qq * kq).sum(-1, keepdim=True)], -1)
                weights = scores / math.sqrt(qq.shape[-1])
                weights = weights.softmax(-1) if attn.attention == "softmax" else weights
                out = weights[..., :-1] @ v + weights[..., -1:] * vq
                h = h + attn.proj(out.transpose(1, 2).flatten(2))
                h = h + block.fc_out(block.act(block.fc(block.ln2(h))))
            return self.read_out(self.ln_f(h)).squeeze(-1)

        return run


# FLOPs of a forward pass, by training/flops.py's convention (matrix products only, 2 per multiply-add)


def _block_flops(config: TransformerConfig, tokens: int, queries: int) -> int:
    """One block on `tokens` positions, whose attention output and MLP are computed at `queries` of them."""
    w = config.width
    qkv = 2 * 3 * w * w * tokens  # the fused projection runs at every position (keys and values need them all)
    attention = 2 * 2 * queries * tokens * w  # q.k and weights.v, every head together
    momentum = 2 * tokens * min(tokens, MOMENTUM_BLOCK) * w if config.attention == "momentum" else 0
    out = 2 * w * w * queries + 2 * 2 * config.mlp_ratio * w * w * queries  # attention projection and MLP
    return qkv + attention + momentum + out


def icl_forward_flops(config: TransformerConfig, dims: int, points: int) -> int:
    """One forward pass of the ICL transformer over one prompt of `points` (x, y) pairs: 2 points tokens."""
    tokens = 2 * points
    blocks = (config.layers - 1) * _block_flops(config, tokens, tokens) + _block_flops(config, tokens, points)
    return 2 * dims * config.width * tokens + blocks + 2 * config.width * points  # read-in, blocks, read-out


def lm_forward_flops(config: TransformerConfig, vocab: int, tokens: int) -> int:
    """One forward pass of the token LM over `tokens` tokens (the embedding lookup is free, the tied output not)."""
    return config.layers * _block_flops(config, tokens, tokens) + 2 * config.width * vocab * tokens



class TokenLM(nn.Module):
    """A GPT-style causal language model over token ids, built from the same blocks: token embeddings plus learned
    position embeddings in, a LayerNorm and the tied token embedding out. It runs the synthetic classification
    prompts of the ICL-vs-finetuning study (and language modelling)."""

    def __init__(self, config: TransformerConfig, vocab: int, max_tokens: int):
        super().__init__()
        self.config, self.vocab, self.max_tokens = config, vocab, max_tokens
        self.tok = nn.Embedding(vocab, config.width)
        nn.init.normal_(self.tok.weight, std=0.02)  # tied to the output layer: keep the first logits small
        self.pos = nn.Parameter(torch.zeros(max_tokens, config.width))
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.ln_f = nn.LayerNorm(config.width)
        if config.init == "gpt2":
            init_gpt2(self.blocks, self.pos)
        init_ema(self.blocks)

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
