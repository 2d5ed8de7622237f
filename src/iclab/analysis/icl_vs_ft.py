"""The ICL-vs-finetuning engine (Dai et al. 2023), written against `AttentionAdapter` only.

For one task instance with k demonstrations and N test queries:
  ZSL  the query alone;
  ICL  the demonstrations, then the query (the same demonstrations for every query);
  FT   a copy of the model finetuned on the demonstrations, each its own sequence, in the ICL order: plain SGD,
       batch 1, one epoch, LM cross-entropy on all tokens, only the key and value projections trainable; the
       learning rate is picked from a grid by accuracy on separate validation queries; then queried alone.
Predictions are the argmax over the candidate label tokens at the last position. The measures (metrics.py) are
computed per layer at the last position, each beside a random-update baseline; the caller runs the same study
on an untrained model of the same shape for the second baseline.

Our reading where the paper leaves room (REFERENCE.md marks these details unverified): FT's "attention" to a
training token is the dot product of that token's attention-layer input (in its own training sequence, original
model) with the query's (ZSL pass), the weight it gets in the dual form of the K/V update; ICL's attention to a
demonstration token is its softmax weight at the query, averaged over heads.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError
from .adapter import AttentionAdapter, Internals
from .metrics import kendall, rec2ftp, simam, simaou


@dataclass
class StudyData:
    demos: list[Tensor]  # each demonstration as its own training sequence (1, tokens), in ICL order
    icl: Tensor  # (N, tokens): demonstrations + query, for every test query
    zsl: Tensor  # (N, tokens): the query alone (with BOS)
    gold: Tensor  # (N,) index of the right candidate
    val_zsl: Tensor  # validation queries alone, for choosing the FT learning rate
    val_gold: Tensor
    candidates: Tensor  # (C,) label token ids
    query_tokens: int  # how many tokens at the end of `icl` and `zsl` are the query's own
    demo_positions: slice  # where the demonstration tokens sit in `icl` (BOS excluded)


@dataclass
class Condition:
    correct: Tensor  # (N,) bool
    internals: Internals

    @property
    def accuracy(self) -> float:
        return float(self.correct.float().mean())


@dataclass
class StudyResult:
    accuracy: dict[str, float | None]
    ft_lr: float | None
    ft_grid: dict[str, float | str]  # lr -> validation accuracy, or "diverged"
    measures: dict[str, float | None]
    random: dict[str, float | None]  # the same measures with a random update in place of FT's
    per_layer: dict[str, list[float]] = field(default_factory=dict)


def run(adapter: AttentionAdapter, ids: Tensor, candidates: Tensor, gold: Tensor, batch: int = 64) -> Condition:
    preds, parts = [], []
    for i in range(0, len(ids), batch):
        logits, internals = adapter.internals(ids[i : i + batch])
        preds.append(logits[:, candidates].argmax(-1))
        parts.append(internals)
    internals = Internals(*(torch.cat([getattr(p, f) for p in parts], dim=1) for f in ("attn_out", "scores", "inputs")))
    return Condition(torch.cat(preds) == gold, internals)


def finetune(adapter: AttentionAdapter, demos: list[Tensor], lr: float) -> AttentionAdapter | None:
    """A copy of the adapter's model after one epoch of K/V-only SGD on the demonstrations (None if it diverged)."""
    tuned = copy.copy(adapter)
    tuned.model = copy.deepcopy(adapter.model)
    names = {id(p): n for n, p in adapter.model.named_parameters()}
    trainable = dict(tuned.model.named_parameters())
    for p in tuned.model.parameters():
        p.requires_grad_(False)
    params = []
    for kv in adapter.kv_parameters():
        p = trainable[names[id(kv.parameter)]]
        p.requires_grad_(True)
        if kv.rows is not None:  # a fused projection: only its K/V rows may move
            mask = torch.zeros_like(p)
            mask[kv.rows] = 1
            p.register_hook(lambda g, m=mask: g * m)
        params.append(p)
    optimizer = torch.optim.SGD(params, lr=lr)
    tuned.model.train()
    for ids in demos:  # batch 1, one epoch, in the ICL order
        logits = tuned.logits(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        if not torch.isfinite(loss):
            return None
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tuned.model.eval()
    if not all(torch.isfinite(p).all() for p in params):
        return None
    return tuned


def _query_scores(c: Condition, query_tokens: int) -> Tensor:
    return c.internals.scores[..., -query_tokens:]


def study(adapter: AttentionAdapter, data: StudyData, lrs: list[float], seed: int = 0) -> StudyResult:
    limit = adapter.context_length()
    if limit is not None and data.icl.shape[1] > limit:
        raise UserError(
            f"demonstrations + query take {data.icl.shape[1]} tokens but the model's context is {limit}: "
            "use fewer or shorter demonstrations"
        )
    if not adapter.kv_parameters():
        raise UserError(f"the adapter found no key/value projections in {type(adapter.model).__name__}")
    if not lrs:
        raise UserError("give at least one finetuning learning rate")
    adapter.model.eval()
    zsl = run(adapter, data.zsl, data.candidates, data.gold)
    icl = run(adapter, data.icl, data.candidates, data.gold)
    grid, best, best_acc = {}, None, -1.0
    for lr in lrs:
        tuned = finetune(adapter, data.demos, lr)
        if tuned is None:
            grid[f"{lr:g}"] = "diverged"
            continue
        acc = run(tuned, data.val_zsl, data.candidates, data.val_gold).accuracy
        grid[f"{lr:g}"] = acc
        if acc > best_acc:
            best, best_acc = (lr, tuned), acc
    accuracy = {"zsl": zsl.accuracy, "icl": icl.accuracy, "ft": None}
    nothing = dict.fromkeys(("rec2ftp", "simaou", "simam_icl_ft", "simam_icl_zsl", "kendall"))
    if best is None:  # every learning rate diverged: a reported failure, not a NaN
        return StudyResult(accuracy, None, grid, nothing | {"simam_icl_zsl": _simam_zsl(icl, zsl, data)}, dict(nothing))
    lr, tuned = best
    ft = run(tuned, data.zsl, data.candidates, data.gold)
    accuracy["ft"] = ft.accuracy
    g = torch.Generator().manual_seed(seed)
    aou = simaou(zsl.internals.attn_out, icl.internals.attn_out, ft.internals.attn_out)
    am_ft = simam(_query_scores(icl, data.query_tokens), _query_scores(ft, data.query_tokens))
    icl_attn, ft_attn = demo_attention(adapter, icl, zsl, data)
    kt = kendall(icl_attn, ft_attn)
    measures = {
        "rec2ftp": rec2ftp(zsl.correct, ft.correct, icl.correct),
        "simaou": aou.mean,
        "simam_icl_ft": am_ft.mean,
        "simam_icl_zsl": _simam_zsl(icl, zsl, data),
        "kendall": kt.mean,
    }
    random_ft = torch.randint(0, len(data.candidates), data.gold.shape, generator=g) == data.gold
    update = torch.randn(zsl.internals.attn_out.shape, generator=g, dtype=torch.float64)
    random = {
        "rec2ftp": rec2ftp(zsl.correct, random_ft, icl.correct),
        "simaou": _random_update_simaou(zsl, icl, update),
        "simam_icl_ft": simam(
            _query_scores(icl, data.query_tokens), torch.randn(_query_scores(icl, data.query_tokens).shape, generator=g)
        ).mean,
        "simam_icl_zsl": None,
        "kendall": kendall(icl_attn, torch.randn(ft_attn.shape, generator=g, dtype=torch.float64)).mean,
    }
    per_layer = {"simaou": aou.per_layer, "simam_icl_ft": am_ft.per_layer, "kendall": kt.per_layer}
    return StudyResult(accuracy, lr, grid, measures, random, per_layer)


def _simam_zsl(icl: Condition, zsl: Condition, data: StudyData) -> float:
    return simam(_query_scores(icl, data.query_tokens), _query_scores(zsl, data.query_tokens)).mean


def _random_update_simaou(zsl: Condition, icl: Condition, update: Tensor) -> float:
    """SimAOU with a random vector in place of FT's (unit-normalised) output update."""
    z = zsl.internals.attn_out.double()
    i = icl.internals.attn_out.double()
    diff = i / i.norm(dim=-1, keepdim=True) - z / z.norm(dim=-1, keepdim=True)
    return float(F.cosine_similarity(diff, update, dim=-1).mean())


def demo_attention(adapter: AttentionAdapter, icl: Condition, zsl: Condition, data: StudyData) -> tuple[Tensor, Tensor]:
    """(ICL attention to demonstration tokens, FT attention to the same tokens as training tokens), each
    (layers, N, demo_tokens)."""
    weights = torch.softmax(icl.internals.scores.double(), dim=-1).mean(2)  # (layers, N, tokens), heads averaged
    icl_attn = weights[..., data.demo_positions]
    train_inputs = []
    for ids in data.demos:  # the training tokens as the original model sees them in FT (BOS dropped)
        _, internals = adapter.internals(ids)
        train_inputs.append(internals.inputs[:, 0, 1:])
    tokens = torch.cat(train_inputs, dim=1).double()  # (layers, demo_tokens, width)
    query = zsl.internals.inputs[:, :, -1].double()  # (layers, N, width)
    ft_attn = torch.einsum("lnw,ltw->lnt", query, tokens) / math.sqrt(tokens.shape[-1])
    if ft_attn.shape != icl_attn.shape:
        raise ValueError(
            f"demonstration tokens do not line up: ICL sees {icl_attn.shape[-1]}, FT trains on {ft_attn.shape[-1]}"
        )
    return icl_attn, ft_attn
