"""Training compute in floating-point operations, from the model's shape and the tokens it sees.

Counted: the matrix products (2 FLOPs per multiply-add), which are nearly all the work: 2 x (matrix parameters)
per position the model computes, plus attention's two products, query.key and weights.value, over the full
(queries x tokens) score matrix as the kernels compute it at these lengths (PaLM's convention), plus the
momentum term's product with its decay matrix. Not counted: LayerNorms, softmax, GELU, additions. Only positions
the model computes count: the ICL transformer's last block and read-out run at the x positions alone (model.py,
`x_only`). A training step costs 3 forward passes (the backward pass about 2), the usual 6 N per token.
"""

from __future__ import annotations

from ..model import MOMENTUM_BLOCK, ModelConfig

STEP_PASSES = 3  # forward + backward, in forward passes


def _block_flops(config: ModelConfig, tokens: int, queries: int) -> int:
    """One block on `tokens` positions, whose attention output and MLP are computed at `queries` of them."""
    w = config.width
    qkv = 2 * 3 * w * w * tokens  # the fused projection runs at every position (keys and values need them all)
    attention = 2 * 2 * queries * tokens * w  # q.k and weights.v, every head together
    momentum = 2 * tokens * min(tokens, MOMENTUM_BLOCK) * w if config.attention == "momentum" else 0
    out = 2 * w * w * queries + 2 * 2 * config.mlp_ratio * w * w * queries  # attention projection and MLP
    return qkv + attention + momentum + out


def icl_forward_flops(config: ModelConfig, dims: int, points: int) -> int:
    """One forward pass of the ICL transformer over one prompt of `points` (x, y) pairs: 2 points tokens."""
    tokens = 2 * points
    blocks = (config.layers - 1) * _block_flops(config, tokens, tokens) + _block_flops(config, tokens, points)
    return 2 * dims * config.width * tokens + blocks + 2 * config.width * points  # read-in, blocks, read-out


def lm_forward_flops(config: ModelConfig, vocab: int, tokens: int) -> int:
    """One forward pass of the token LM over `tokens` tokens (the embedding lookup is free, the tied output not)."""
    return config.layers * _block_flops(config, tokens, tokens) + 2 * config.width * vocab * tokens


def step_flops(forward: int, batch: int) -> int:
    """A training step on `batch` sequences whose forward pass costs `forward` FLOPs each."""
    return STEP_PASSES * forward * batch
