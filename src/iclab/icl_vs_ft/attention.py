"""Attention to the demonstration tokens, ICL's against FT's, as the Kendall and recall measures compare them: Dai et
al.'s reading (`dai_attention`) and iclab's dual-form one (`demo_attention`); and the attention scores over a
query's own tokens (`query_scores`, for SimAM)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .adapter import AttentionAdapter, Prompts
from .conditions import Condition, StudyData
from .metrics import dai_ft_attention, dai_icl_attention

KENDALL_EXAMPLES = 100  # Dai et al. average Kendall's tau over the first 100 test examples


def query_scores(c: Condition, prompts: Prompts) -> Tensor:
    """Scores over the query's own tokens (positions after a query's last token read 0: they are not attended)."""
    s = c.internals.scores[..., prompts.prefix.shape[1] :]
    return s.masked_fill(torch.isinf(s), 0.0)


def demo_attention(
    adapter: AttentionAdapter, icl: Condition, zsl: Condition, data: StudyData, train_inputs: list[Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """The dual reading: (ICL attention to demonstration tokens, FT attention to the same tokens as training
    tokens), each (layers, N, demo_tokens)."""
    weights = torch.softmax(icl.internals.scores.double(), dim=-1).mean(2)  # (layers, N, tokens), heads averaged
    icl_attn = weights[..., data.demo_positions]
    # the training tokens as the original model sees them in FT (BOS dropped)
    if train_inputs is None:
        train_inputs = [adapter.layer_inputs(ids)[:, 1:] for ids in data.demos]
    tokens = torch.cat(train_inputs, dim=1).double()  # (layers, demo_tokens, width)
    query = zsl.internals.inputs.double()  # (layers, N, width): the query's last token
    ft_attn = torch.einsum("lnw,ltw->lnt", query, tokens) / math.sqrt(tokens.shape[-1])
    if ft_attn.shape != icl_attn.shape:
        raise ValueError(
            f"demonstration tokens do not line up: ICL sees {icl_attn.shape[-1]}, FT trains on {ft_attn.shape[-1]}"
        )
    return icl_attn, ft_attn


def dai_attention(icl: Condition, ft: Condition, data: StudyData, train_queries: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Dai et al.'s reading, over the first KENDALL_EXAMPLES test queries: (ICL attention, FT attention) to the
    demonstration tokens, BOS and separators left out, each (layers, examples, tokens)."""
    n = min(KENDALL_EXAMPLES, len(data.gold))
    icl_attn = dai_icl_attention(icl.internals.scores[:, :n], data.dai_positions())
    kept = [q[:, 1 : 1 + t] for q, t in zip(train_queries, data.demo_tokens(), strict=True)]
    ft_attn = dai_ft_attention(ft.internals.query[:, :n], torch.cat(kept, dim=1))
    return icl_attn, ft_attn
