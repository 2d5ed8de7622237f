"""Dai et al.'s measures of how alike in-context learning (ICL) and finetuning (FT) are, as plain functions.

Shapes: `layers` x `examples` x ...; every function returns per-layer values and their mean. A measure that is
undefined on the given data (e.g. Rec2FTP when FT fixes no example) returns None instead of NaN, so that tables
say "n/a" rather than printing a silent NaN.

Two readings of the attention-weight measures exist (the engine's `measures` option): `dai` as the authors' code
computes them (microsoft/LMOps understand_icl: `dai_icl_attention`, `dai_ft_attention`, per-token and
per-demonstration Kendall, top-k recall), and `dual`, iclab's earlier dual-form reading (`kendall` on the weights
the engine's `demo_attention` gives). SimAM∆ is Deutch et al. 2024's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# the measures of the ICL-vs-finetuning study, in table order, with their names in Dai et al.
MEASURES = {
    "rec2ftp": "Rec2FTP",
    "simaou": "SimAOU",
    "simam_icl_ft": "SimAM ICL-FT",
    "simam_icl_zsl": "SimAM ICL-ZSL",
    "simam_delta": "SimAM∆ (Deutch)",
    "kendall": "Kendall",
    "kendall_demo": "Kendall per demo",
    "recall_token": "top-100 recall",
    "recall_demo": "top-5 recall per demo",
    "update_cos": "cos(ΔW_ICL, ΔW_FT)",
    "update_norm": "‖ΔW_FT‖ / ‖ΔW_ICL‖",
}
# the measures each variant reports (the update comparison is reported beside both)
VARIANT_MEASURES = {
    "dai": [
        "rec2ftp", "simaou", "simam_icl_ft", "simam_icl_zsl", "simam_delta", "kendall", "kendall_demo",
        "recall_token", "recall_demo", "update_cos", "update_norm",
    ],
    "dual": [
        "rec2ftp", "simaou", "simam_icl_ft", "simam_icl_zsl", "simam_delta", "kendall", "update_cos", "update_norm",
    ],
}
TOP_K = {"recall_token": 100, "recall_demo": 5}  # Dai et al.'s k of the top-k recall at each level


@dataclass
class LayerMeasure:
    per_layer: list[float]
    mean: float


def _summarise(per_layer: Tensor) -> LayerMeasure:
    values = [float(v) for v in per_layer]
    return LayerMeasure(values, float(per_layer.mean()))


def rec2ftp(zsl_correct: Tensor, ft_correct: Tensor, icl_correct: Tensor) -> float | None:
    """Of the examples zero-shot gets wrong and finetuning gets right, the fraction ICL also gets right."""
    fixed_by_ft = ~zsl_correct.bool() & ft_correct.bool()
    if not fixed_by_ft.any():
        return None
    return float((icl_correct.bool() & fixed_by_ft).sum() / fixed_by_ft.sum())


def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def simaou(zsl_out: Tensor, icl_out: Tensor, ft_out: Tensor) -> LayerMeasure:
    """Similarity of attention output updates: cosine between ICL - ZSL and FT - ZSL, each output vector
    unit-normalised first; averaged over examples per layer. Inputs (layers, examples, width)."""
    zsl, icl, ft = _unit(zsl_out.double()), _unit(icl_out.double()), _unit(ft_out.double())
    cos = torch.nn.functional.cosine_similarity(icl - zsl, ft - zsl, dim=-1, eps=1e-12)
    return _summarise(cos.mean(1))


def simam(icl_scores: Tensor, other_scores: Tensor) -> LayerMeasure:
    """Similarity of attention maps: cosine between the query token's attention scores over the query's own
    tokens under ICL and under another setting (FT or ZSL); averaged over heads and examples per layer.
    Inputs (layers, examples, heads, query_tokens)."""
    cos = torch.nn.functional.cosine_similarity(icl_scores.double(), other_scores.double(), dim=-1, eps=1e-12)
    return _summarise(cos.mean(dim=(1, 2)))


def kendall_tau(a: Tensor, b: Tensor, chunk: int = 2**24) -> Tensor:
    """Kendall's tau-b between the last axes of a and b (ties handled), vectorised over leading axes.

    Compares all n^2 pairs at once (in float32: values closer than its resolution count as ties), in chunks of
    about `chunk` pairs: thousands of (layer, example) rows of 500 demonstration tokens would otherwise need
    gigabytes."""
    n = a.shape[-1]
    exact = torch.float32 if n * n <= 2**24 else torch.float64  # pair counts stay exact integers
    a2, b2 = a.reshape(-1, n).float().to(exact), b.reshape(-1, n).float().to(exact)
    rows = max(1, chunk // (n * n))
    out = []
    for i in range(0, len(a2), rows):
        da = torch.sign(a2[i : i + rows, :, None] - a2[i : i + rows, None, :])
        db = torch.sign(b2[i : i + rows, :, None] - b2[i : i + rows, None, :])
        concord = torch.einsum("rij,rij->r", da, db).double()
        denom = torch.sqrt(da.abs().sum(dim=(-1, -2)).double() * db.abs().sum(dim=(-1, -2)).double())
        out.append(torch.where(denom > 0, concord / denom.clamp(min=1), torch.zeros_like(denom)))
    return torch.cat(out).view(a.shape[:-1])


def kendall(icl_attn: Tensor, ft_attn: Tensor) -> LayerMeasure:
    """Rank correlation between ICL's attention to the demonstration tokens and FT's attention to the same tokens
    as training tokens; averaged over examples per layer. Inputs (layers, examples, demo_tokens)."""
    return _summarise(kendall_tau(icl_attn.double(), ft_attn.double()).mean(1))


def simam_delta(icl_scores: Tensor, zsl_scores: Tensor, ft_scores: Tensor) -> LayerMeasure:
    """SimAM∆ (Deutch et al. 2024): cosine between the attention-score changes ICL - ZSL and FT - ZSL over the
    query's own tokens, per head; averaged over heads and examples per layer. Inputs (layers, examples, heads,
    query_tokens)."""
    zsl = zsl_scores.double()
    return simam(icl_scores.double() - zsl, ft_scores.double() - zsl)


def dai_icl_attention(scores: Tensor, positions: Tensor) -> Tensor:
    """Dai et al.'s ICL attention to the demonstration tokens: the pre-softmax scores (layers, examples, heads, keys)
    summed over heads, kept at `positions` (the demonstration tokens, BOS and separators left out), then a softmax
    over those positions -> (layers, examples, len(positions))."""
    return torch.softmax(scores.double().sum(2)[..., positions], dim=-1)


def dai_ft_attention(query: Tensor, train_queries: Tensor) -> Tensor:
    """Dai et al.'s FT "attention" to the training tokens: the finetuned model's query vector at the test token
    (layers, examples, q_width) dotted with the query vectors recorded for the training tokens during FT
    (layers, tokens, q_width), then a softmax over the tokens -> (layers, examples, tokens)."""
    return torch.softmax(torch.einsum("lnq,ltq->lnt", query.double(), train_queries.double()), dim=-1)


def per_demo(attn: Tensor, sizes: list[int]) -> Tensor:
    """Attention (..., tokens) summed within each demonstration of `sizes` tokens -> (..., demonstrations)."""
    index = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    out = attn.new_zeros(*attn.shape[:-1], len(sizes))
    return out.index_add_(-1, index.to(attn.device), attn)


def topk_recall(icl_attn: Tensor, ft_attn: Tensor, k: int) -> LayerMeasure:
    """Of ICL's k most attended tokens, the fraction that are among FT's k most attended, averaged over examples
    per layer (Dai et al.: k = 100 per token, k = 5 per demonstration; k is cut to the number of tokens)."""
    k = min(k, icl_attn.shape[-1])
    top_icl = icl_attn.topk(k, dim=-1).indices
    in_ft = torch.zeros_like(ft_attn, dtype=torch.bool).scatter_(-1, ft_attn.topk(k, dim=-1).indices, True)
    return _summarise(in_ft.gather(-1, top_icl).double().mean(-1).mean(1))


def random_recall(ft_attn: Tensor, k: int, generator: torch.Generator) -> LayerMeasure:
    """Dai et al.'s random baseline of the top-k recall: k uniformly drawn token indices in place of ICL's top k."""
    k = min(k, ft_attn.shape[-1])
    drawn = torch.randint(0, ft_attn.shape[-1], (*ft_attn.shape[:-1], k), generator=generator)
    in_ft = torch.zeros_like(ft_attn, dtype=torch.bool).scatter_(-1, ft_attn.topk(k, dim=-1).indices, True)
    return _summarise(in_ft.gather(-1, drawn).double().mean(-1).mean(1))


def head_updates(keys: Tensor, values: Tensor, mask: Tensor | None = None) -> Tensor:
    """Σ_t v_t k_tᵀ per head: keys and values (..., tokens, heads, d) -> (..., heads, d, d); `mask` (..., tokens)
    leaves out padding."""
    if mask is not None:
        keys = keys * mask[..., None, None]
    return torch.einsum("...thd,...the->...hde", values.double(), keys.double())


def update_similarity(icl_update: Tensor, ft_update: Tensor) -> tuple[Tensor, Tensor]:
    """Cosine and relative Frobenius norm ‖ΔW_FT‖ / ‖ΔW_ICL‖ of two per-head updates (..., heads, d, d)."""
    a, b = icl_update.flatten(-2), ft_update.flatten(-2)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1, eps=1e-30)
    return cos, b.norm(dim=-1) / a.norm(dim=-1).clamp(min=1e-30)
