"""The ICL-vs-finetuning engine (Dai et al. 2023), written against `AttentionAdapter` only.

For one task instance with k demonstrations and N test queries:
  ZSL  the query alone;
  ICL  the demonstrations, then the query (the same demonstrations for every query);
  FT   a copy of the model finetuned on the demonstrations, each its own sequence, in the ICL order: plain SGD,
       batch 1, one epoch, LM cross-entropy on all tokens, only the key and value projections trainable; the
       learning rate is picked from a grid by accuracy on separate validation queries; then queried alone.
A prediction is the label whose tokens have the highest mean log-probability after the query (optionally minus
the same score after a content-free query: contextual calibration). The measures (metrics.py) are computed per
layer at the query's last token, each beside a random-update baseline; the caller runs the same study on an
untrained model of the same shape for the second baseline.

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
from tqdm import tqdm

from ..errors import UserError
from .adapter import AttentionAdapter, Internals, Prompts
from .metrics import kendall, rec2ftp, simam, simaou


@dataclass
class StudyData:
    """One task instance. The three prompt sets are `Prompts` (a shared prefix, then each query's own tokens,
    right-padded), or full (N, tokens) tensors whose last `query_tokens` tokens are the query's own."""

    demos: list[Tensor]  # each demonstration as its own training sequence (1, tokens), in ICL order
    icl: Prompts | Tensor  # the demonstrations, then each test query
    zsl: Prompts | Tensor  # each test query alone (after BOS)
    gold: Tensor  # (N,) index of the right candidate
    val_zsl: Prompts | Tensor  # validation queries alone, for choosing the FT learning rate
    val_gold: Tensor
    candidates: Tensor | list[Tensor]  # (C,) single label tokens, or each label's token ids
    query_tokens: int | None = None  # needed only when the prompt sets are full tensors
    # where the demonstration tokens sit in the ICL prompts (BOS excluded)
    demo_positions: slice = field(default_factory=lambda: slice(0))
    content_free: Tensor | None = None  # (1, tokens) a content-free query, for contextual calibration

    def __post_init__(self):
        for name in ("icl", "zsl", "val_zsl"):
            value = getattr(self, name)
            if not isinstance(value, Prompts):
                setattr(self, name, Prompts.split(value, self.query_tokens))
        if isinstance(self.candidates, Tensor):
            self.candidates = [c.view(1) for c in self.candidates]


@dataclass
class Condition:
    scores: Tensor  # (N, C): mean log-probability of each label
    gold: Tensor  # (N,)
    internals: Internals
    content_free: Tensor | None = None  # (C,): the label scores of a content-free query
    calibrated: bool = False  # predict from scores minus the content-free ones (Zhao et al. 2021)

    def predictions(self, calibrated: bool | None = None) -> Tensor:
        calibrated = self.calibrated if calibrated is None else calibrated
        return (self.scores - self.content_free if calibrated else self.scores).argmax(-1)

    @property
    def correct(self) -> Tensor:
        return self.predictions() == self.gold

    @property
    def accuracy(self) -> float:
        return float(self.correct.float().mean())

    def summary(self) -> dict:
        """Accuracy under plain and (when a content-free query was scored) calibrated scoring, and the share of
        predictions on the most predicted label (1.0: the model always says the same label)."""
        out = {}
        for mode in ("plain", "calibrated"):
            if mode == "calibrated" and self.content_free is None:
                continue
            pred = self.predictions(mode == "calibrated")
            share = torch.bincount(pred, minlength=self.scores.shape[1]).max() / len(pred)
            out[mode] = {"accuracy": float((pred == self.gold).float().mean()), "top_label_share": float(share)}
        return out


@dataclass
class StudyResult:
    accuracy: dict[str, float | None]
    ft_lr: float | None
    ft_grid: dict[str, float | str]  # lr -> validation accuracy, or "diverged"
    measures: dict[str, float | None]
    random: dict[str, float | None]  # the same measures with a random update in place of FT's
    per_layer: dict[str, list[float]] = field(default_factory=dict)
    scoring: dict[str, dict] = field(default_factory=dict)  # condition -> Condition.summary()


def run(
    adapter: AttentionAdapter,
    prompts: Prompts | Tensor,
    candidates: Tensor | list[Tensor],
    gold: Tensor,
    batch: int = 64,
    content_free: Tensor | None = None,
    calibrated: bool = False,
    query_tokens: int | None = None,
) -> Condition:
    """Score every prompt (and, if given, a content-free query after the same prefix) and record the internals."""
    if not isinstance(prompts, Prompts):
        prompts = Prompts.split(prompts, query_tokens)
    labels = [c.view(1) for c in candidates] if isinstance(candidates, Tensor) else candidates
    scores, internals = adapter.score(prompts, labels, batch)
    cf = None
    if content_free is not None:
        cf = adapter.score(Prompts(prompts.prefix, content_free), labels, batch)[0][0]
    elif calibrated:
        raise UserError("calibrated scoring needs a content-free query")
    return Condition(scores, gold, internals, cf, calibrated)


def finetune(adapter: AttentionAdapter, demos: list[Tensor], lr: float) -> AttentionAdapter | None:
    """A copy of the adapter's model after one epoch of K/V-only SGD on the demonstrations (None if it diverged)."""
    tuned = adapter.with_model(copy.deepcopy(adapter.model))
    names = {id(p): n for n, p in adapter.model.named_parameters()}
    trainable = dict(tuned.model.named_parameters())
    for p in tuned.model.parameters():
        p.requires_grad_(False)
    params = []
    for kv in adapter.kv_parameters():
        p = trainable[names[id(kv.parameter)]]
        p.requires_grad_(True)
        if kv.mask is not None:  # a fused projection: only its K/V entries may move
            p.register_hook(lambda g, m=kv.mask: g * m)
        params.append(p)
    optimizer = torch.optim.SGD(params, lr=lr)
    tuned.model.eval()  # no dropout: the update is a deterministic function of the demonstrations, as in the dual form
    for ids in demos:  # batch 1, one epoch, in the ICL order
        logits = tuned.logits(ids[:, :-1])
        targets = ids[:, 1:].reshape(-1).to(logits.device)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets)
        if not torch.isfinite(loss):
            return None
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for p in params:
        p.requires_grad_(False)
    if not all(torch.isfinite(p).all() for p in params):
        return None
    return tuned


def _query_scores(c: Condition, prompts: Prompts) -> Tensor:
    """Scores over the query's own tokens (positions after a query's last token read 0: they are not attended)."""
    s = c.internals.scores[..., prompts.prefix.shape[1] :]
    return s.masked_fill(torch.isinf(s), 0.0)


def study(
    adapter: AttentionAdapter,
    data: StudyData,
    lrs: list[float],
    seed: int = 0,
    batch: int = 64,
    calibrated: bool = False,
    progress: bool = False,
) -> StudyResult:
    """ZSL, ICL and FT on one task instance, and the measures of how alike ICL and FT are.

    With `calibrated`, every prediction (also the validation accuracy that picks FT's learning rate) subtracts the
    label scores of `data.content_free` after the same prefix and model. When a content-free query is given, both
    plain and calibrated accuracies are reported in `StudyResult.scoring`."""
    limit = adapter.context_length()
    longest = data.icl.prefix.shape[1] + data.icl.queries.shape[1] + max(len(c) for c in data.candidates) - 1
    if limit is not None and longest > limit:
        raise UserError(
            f"demonstrations + query take {longest} tokens but the model's context is {limit}: "
            "use fewer or shorter demonstrations"
        )
    if not adapter.kv_parameters():
        raise UserError(f"the adapter found no key/value projections in {type(adapter.model).__name__}")
    if not lrs:
        raise UserError("give at least one finetuning learning rate")
    adapter.model.eval()
    steps = tqdm(total=3 + len(lrs), desc="ZSL, ICL, FT grid, FT", disable=not progress, leave=False)

    def condition(a: AttentionAdapter, prompts: Prompts, gold: Tensor) -> Condition:
        c = run(a, prompts, data.candidates, gold, batch, data.content_free, calibrated)
        steps.update()
        return c

    zsl = condition(adapter, data.zsl, data.gold)
    icl = condition(adapter, data.icl, data.gold)
    grid, best, best_acc = {}, None, -1.0
    for lr in lrs:
        tuned = finetune(adapter, data.demos, lr)
        if tuned is None:
            grid[f"{lr:g}"] = "diverged"
            steps.update()
            continue
        acc = condition(tuned, data.val_zsl, data.val_gold).accuracy
        grid[f"{lr:g}"] = acc
        if acc > best_acc:
            best, best_acc = (lr, tuned), acc
    accuracy = {"zsl": zsl.accuracy, "icl": icl.accuracy, "ft": None}
    scoring = {"zsl": zsl.summary(), "icl": icl.summary()}
    nothing = dict.fromkeys(("rec2ftp", "simaou", "simam_icl_ft", "simam_icl_zsl", "kendall"))
    if best is None:  # every learning rate diverged: a reported failure, not a NaN
        steps.close()
        measures = nothing | {"simam_icl_zsl": _simam_zsl(icl, zsl, data)}
        return StudyResult(accuracy, None, grid, measures, dict(nothing), scoring=scoring)
    lr, tuned = best
    ft = condition(tuned, data.zsl, data.gold)
    steps.close()
    accuracy["ft"] = ft.accuracy
    scoring["ft"] = ft.summary()
    g = torch.Generator().manual_seed(seed)
    aou = simaou(zsl.internals.attn_out, icl.internals.attn_out, ft.internals.attn_out)
    icl_scores = _query_scores(icl, data.icl)
    am_ft = simam(icl_scores, _query_scores(ft, data.zsl))
    icl_attn, ft_attn = demo_attention(adapter, icl, zsl, data)
    kt = kendall(icl_attn, ft_attn)
    measures = {
        "rec2ftp": rec2ftp(zsl.correct, ft.correct, icl.correct),
        "simaou": aou.mean,
        "simam_icl_ft": am_ft.mean,
        "simam_icl_zsl": _simam_zsl(icl, zsl, data),
        "kendall": kt.mean,
    }
    n_labels = len(data.candidates)
    random_ft = torch.randint(0, n_labels, data.gold.shape, generator=g) == data.gold
    update = torch.randn(zsl.internals.attn_out.shape, generator=g, dtype=torch.float64)
    random = {
        "rec2ftp": rec2ftp(zsl.correct, random_ft, icl.correct),
        "simaou": _random_update_simaou(zsl, icl, update),
        "simam_icl_ft": simam(icl_scores, _masked_like(icl_scores, torch.randn(icl_scores.shape, generator=g))).mean,
        "simam_icl_zsl": None,
        "kendall": kendall(icl_attn, torch.randn(ft_attn.shape, generator=g, dtype=torch.float64)).mean,
    }
    per_layer = {"simaou": aou.per_layer, "simam_icl_ft": am_ft.per_layer, "kendall": kt.per_layer}
    return StudyResult(accuracy, lr, grid, measures, random, per_layer, scoring)


def _masked_like(reference: Tensor, values: Tensor) -> Tensor:
    """`values` with zeros where `reference` is exactly 0 (padding after a query): a random map of the same support."""
    return values.masked_fill(reference == 0, 0.0)


def _simam_zsl(icl: Condition, zsl: Condition, data: StudyData) -> float:
    return simam(_query_scores(icl, data.icl), _query_scores(zsl, data.zsl)).mean


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
    # the training tokens as the original model sees them in FT (BOS dropped)
    train_inputs = [adapter.layer_inputs(ids)[:, 1:] for ids in data.demos]
    tokens = torch.cat(train_inputs, dim=1).double()  # (layers, demo_tokens, width)
    query = zsl.internals.inputs.double()  # (layers, N, width): the query's last token
    ft_attn = torch.einsum("lnw,ltw->lnt", query, tokens) / math.sqrt(tokens.shape[-1])
    if ft_attn.shape != icl_attn.shape:
        raise ValueError(
            f"demonstration tokens do not line up: ICL sees {icl_attn.shape[-1]}, FT trains on {ft_attn.shape[-1]}"
        )
    return icl_attn, ft_attn
