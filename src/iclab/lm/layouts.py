"""Where a Hugging Face causal LM keeps its attention projections: the three layouts iclab supports (see
`iclab.lm.adapters`), shared by the adapter and the momentum patch."""

from __future__ import annotations

from torch import nn


def layout_of(module: nn.Module) -> str | None:
    """'gpt2', 'gpt_neox' or 'separate' (see above) for an attention module; None for any other module."""
    if hasattr(module, "c_attn"):
        return "gpt2"
    if hasattr(module, "query_key_value"):
        return "gpt_neox"
    if all(hasattr(module, p) for p in ("q_proj", "k_proj", "v_proj")):
        return "separate"
    return None


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The decoder self-attention modules, in layer order (cross-attention of encoder-decoders is not supported)."""
    return [m for m in model.modules() if layout_of(m) and hasattr(m, "layer_idx")]
