"""Dai et al.'s measures of how alike in-context learning (ICL) and finetuning (FT) are, as plain functions.

Shapes: `layers` x `examples` x ...; every function returns per-layer values and their mean. A measure that is
undefined on the given data (e.g. Rec2FTP when FT fixes no example) returns None instead of NaN, so that tables
say "n/a" rather than printing a silent NaN.
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
    "kendall": "Kendall",
}


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
