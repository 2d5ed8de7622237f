"""The update comparison: per layer and key/value head, ICL's implicit update ΔW_ICL from the demonstration tokens
against finetuning's ΔW_FT over the queries' own tokens."""

from __future__ import annotations

import torch
from torch import Tensor

from .adapter import AttentionAdapter
from .conditions import StudyData
from .metrics import head_updates

UPDATE_QUERIES = 16  # queries whose tokens make X in the update comparison


def icl_update(adapter: AttentionAdapter, data: StudyData) -> tuple[Tensor, list[Tensor]]:
    """ΔW_ICL per layer and key/value head, (layers, heads, d, d), from the demonstration tokens' layer inputs in
    the ICL prompt; and the layer inputs (layers, tokens, width) of the first UPDATE_QUERIES queries' own tokens
    (ZSL prompt, BOS left out), which make X of ΔW_FT."""
    inputs = adapter.layer_inputs(data.icl.prefix)[:, data.demo_positions]
    updates = []
    for layer, module in enumerate(adapter.attention_layers()):
        with torch.no_grad():
            _, k, v = adapter.projections(module, inputs[layer].to(_device(adapter)))
        updates.append(head_updates(k.cpu(), v.cpu()))
    queries = []
    zsl = data.zsl
    for i in range(min(UPDATE_QUERIES, len(zsl))):
        ids = torch.cat((zsl.prefix[0], zsl.queries[i, : int(zsl.lengths[i])])).unsqueeze(0)
        queries.append(adapter.layer_inputs(ids)[:, zsl.prefix.shape[1] :])
    return torch.stack(updates), queries


def ft_update(adapter: AttentionAdapter, tuned: AttentionAdapter, queries: list[Tensor]) -> Tensor:
    """ΔW_FT = W_V' X (W_K' X)ᵀ - W_V X (W_K X)ᵀ per query, layer and key/value head: (queries, layers, heads, d, d)."""
    out = []
    with torch.no_grad():
        for x in queries:
            per_layer = []
            for layer, (m, m2) in enumerate(zip(adapter.attention_layers(), tuned.attention_layers(), strict=True)):
                h = x[layer].to(_device(adapter))
                _, k, v = adapter.projections(m, h)
                _, k2, v2 = tuned.projections(m2, h)
                per_layer.append(head_updates(k2.cpu(), v2.cpu()) - head_updates(k.cpu(), v.cpu()))
            out.append(torch.stack(per_layer))
    return torch.stack(out).transpose(0, 1)  # (layers, queries, heads, d, d)


def _device(adapter: AttentionAdapter) -> torch.device:
    return next(adapter.model.parameters()).device
