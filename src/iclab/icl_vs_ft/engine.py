"""The ICL-vs-finetuning engine (Dai et al. 2023), written against `AttentionAdapter` only.

For one task instance with k demonstrations and N test queries:
  ZSL  the query alone;
  ICL  the demonstrations, then the query (the same demonstrations for every query);
  FT   a copy of the model finetuned on the demonstrations, each its own sequence, in the ICL order: plain SGD,
       batch 1, one epoch, LM cross-entropy on all tokens; the learning rate is picked from a grid by accuracy on
       separate validation queries; then queried alone. Three methods (`ft`): `kv-sgd` (Dai et al.: only the key
       and value projections move), `lcgd` (Deutch et al. 2024's layer-causal GD: K/V only, each block's input
       detached, the final norm + unembedding read out after every block, the per-block losses summed) and `full`
       (every parameter).
A prediction is the label whose tokens have the highest mean log-probability after the query; `calibrated`
subtracts the same score after a content-free query (contextual calibration, Zhao et al. 2021) and `pmi` the
score after the domain premise alone (domain-conditional PMI, Holtzman et al. 2021; lm-evaluation-harness's
acc_mutual_info with an empty premise). The measures (metrics.py) are computed per layer at the query's last token,
each beside random-update baselines (uniform [0, 1) as Dai et al.'s code draws them, and centred); the caller
runs the same study on untrained models for the other baselines (`untrained_like`).

Two variants of the measures (`measures`): `dai` computes each as the authors' code does (Kendall: ICL's pre-softmax
scores to the demonstration tokens summed over heads then softmax, BOS and separators left out, against the
finetuned model's query vector · the query vectors of the training tokens recorded during FT, then softmax; over
the first 100 test queries, per token and per demonstration; top-k recall); `dual` is iclab's earlier dual-form
reading (ICL: the softmax weights averaged over heads; FT: the query's layer input · each training token's layer
input in the original model, /sqrt(width)), kept bit-identical. Both report SimAM∆ (Deutch et al.) and the update
comparison: per layer and head, ΔW_ICL = Σ_i (W_V x'_i)(W_K x'_i)ᵀ over the demonstration tokens against
ΔW_FT = W_V' X (W_K' X)ᵀ - W_V X (W_K X)ᵀ over each query's tokens.

This module runs the study (`study`, `studies`) and assembles the measures; its parts: conditions.py (the data,
conditions and results), finetune.py (the FT methods, `untrained_like`), attention.py and updates.py (what the
measures compare).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from ..errors import UserError
from .adapter import AttentionAdapter, Prompts
from .attention import KENDALL_EXAMPLES, dai_attention, demo_attention, query_scores
from .conditions import (
    RANDOM,
    RANDOM_BASELINES,
    SCORINGS,
    VARIANT_KEYS,
    VARIANTS,
    Condition,
    StudyData,
    StudyResult,
    run,
)
from .finetune import FT_METHODS, finetune, untrained_like
from .metrics import (
    TOP_K,
    kendall,
    per_demo,
    random_recall,
    rec2ftp,
    simam,
    simam_delta,
    simaou,
    topk_recall,
    update_similarity,
)
from .updates import UPDATE_QUERIES, ft_update, icl_update

# the engine's public names, also those its parts define (callers import them from here)
__all__ = [
    "FT_METHODS",
    "KENDALL_EXAMPLES",
    "RANDOM",
    "RANDOM_BASELINES",
    "SCORINGS",
    "UPDATE_QUERIES",
    "VARIANTS",
    "VARIANT_KEYS",
    "Condition",
    "StudyData",
    "StudyResult",
    "dai_attention",
    "demo_attention",
    "finetune",
    "run",
    "studies",
    "study",
    "untrained_like",
]


def study(
    adapter: AttentionAdapter,
    data: StudyData,
    lrs: list[float],
    seed: int = 0,
    batch: int = 64,
    calibrated: bool = False,
    progress: bool = False,
    measures: str = "dai",
    ft: str = "kv-sgd",
    pmi: bool = False,
) -> StudyResult:
    """ZSL, ICL and FT on one task instance, and the measures of how alike ICL and FT are.

    With `calibrated` (or `pmi`), every prediction (also the validation accuracy that picks FT's learning rate)
    subtracts the label scores of `data.content_free` after the same prefix and model (of `data.domain` after BOS).
    Every scoring whose reference query is given is reported in `StudyResult.scoring`."""
    return studies(adapter, data, {ft: lrs}, seed, batch, calibrated, progress, measures, pmi)[ft]


def studies(
    adapter: AttentionAdapter,
    data: StudyData,
    lrs: dict[str, list[float]],
    seed: int = 0,
    batch: int = 64,
    calibrated: bool = False,
    progress: bool = False,
    measures: str = "dai",
    pmi: bool = False,
) -> dict[str, StudyResult]:
    """`study` for several finetuning methods (`lrs`: method -> its learning-rate grid) on the same
    demonstrations in the same order; the ZSL and ICL passes are shared."""
    if measures not in VARIANTS:
        raise UserError(f"unknown measures '{measures}'; choose one of {', '.join(VARIANTS)}")
    for method, grid in lrs.items():
        if method not in FT_METHODS:
            raise UserError(f"unknown finetuning method '{method}'; choose one of {', '.join(FT_METHODS)}")
        if not grid:
            raise UserError("give at least one finetuning learning rate")
    limit = adapter.context_length()
    longest = data.icl.prefix.shape[1] + data.icl.queries.shape[1] + max(len(c) for c in data.candidates) - 1
    if limit is not None and longest > limit:
        raise UserError(
            f"demonstrations + query take {longest} tokens but the model's context is {limit}: "
            "use fewer or shorter demonstrations"
        )
    if not adapter.kv_parameters():
        raise UserError(f"the adapter found no key/value projections in {type(adapter.model).__name__}")
    adapter.model.eval()
    total = 2 + sum(len(g) + 1 for g in lrs.values())
    steps = tqdm(total=total, desc="ZSL, ICL, FT", disable=not progress, leave=False)

    def condition(a: AttentionAdapter, prompts: Prompts, gold: Tensor) -> Condition:
        c = run(a, prompts, data.candidates, gold, batch, data.content_free, calibrated, domain=data.domain, pmi=pmi)
        steps.update()
        return c

    zsl = condition(adapter, data.zsl, data.gold)
    icl = condition(adapter, data.icl, data.gold)
    shared = _Shared(adapter, data, zsl, icl, measures)
    out = {}
    for method, grid_lrs in lrs.items():
        grid, best, best_acc = {}, None, -1.0
        for lr in grid_lrs:
            tuned = finetune(adapter, data.demos, lr, method, record_queries=measures == "dai")
            if tuned is None:
                grid[f"{lr:g}"] = "diverged"
                steps.update()
                continue
            acc = condition(tuned, data.val_zsl, data.val_gold).accuracy
            grid[f"{lr:g}"] = acc
            if acc > best_acc:
                best, best_acc = (lr, tuned), acc
        ft = None
        if best is not None:
            ft = condition(best[1], data.zsl, data.gold)
        out[method] = shared.result(method, grid, best, ft, seed)
    steps.close()
    return out


class _Shared:
    """What every finetuning method's measures share: the ZSL and ICL conditions and the ICL-side inputs."""

    def __init__(self, adapter: AttentionAdapter, data: StudyData, zsl: Condition, icl: Condition, variant: str):
        self.adapter, self.data, self.zsl, self.icl, self.variant = adapter, data, zsl, icl, variant
        self.icl_scores = query_scores(icl, data.icl)
        self.zsl_scores = query_scores(zsl, data.zsl)
        self.simam_icl_zsl = simam(self.icl_scores, self.zsl_scores).mean
        self._train_inputs = None
        self.icl_update, self.query_inputs = icl_update(adapter, data)
        gap = icl.internals.linear_gap
        self.linear_gap = [float(v) for v in gap.double().mean(1)] if gap is not None else []

    def train_inputs(self) -> list[Tensor]:
        if self._train_inputs is None:
            self._train_inputs = [self.adapter.layer_inputs(ids)[:, 1:] for ids in self.data.demos]
        return self._train_inputs

    def result(self, method: str, grid: dict, best, ft: Condition | None, seed: int) -> StudyResult:
        zsl, icl, data = self.zsl, self.icl, self.data
        accuracy = {"zsl": zsl.accuracy, "icl": icl.accuracy, "ft": None}
        scoring = {"zsl": zsl.summary(), "icl": icl.summary()}
        keys = VARIANT_KEYS[self.variant]
        nothing = dict.fromkeys(keys)
        common = {"variant": self.variant, "ft": method, "linear_gap": self.linear_gap}
        if ft is None:  # every learning rate diverged: a reported failure, not a NaN
            measures = nothing | {"simam_icl_zsl": self.simam_icl_zsl}
            baselines = {f"random {kind}": dict(nothing) for kind in ("uniform", "centred")}
            return StudyResult(accuracy, None, grid, measures, dict(nothing), scoring=scoring, baselines=baselines,
                               **common)
        lr, tuned = best
        accuracy["ft"] = ft.accuracy
        scoring["ft"] = ft.summary()
        aou = simaou(zsl.internals.attn_out, icl.internals.attn_out, ft.internals.attn_out)
        ft_scores = query_scores(ft, data.zsl)
        am_ft = simam(self.icl_scores, ft_scores)
        delta = simam_delta(self.icl_scores, self.zsl_scores, ft_scores)
        cos, norm = update_similarity(self.icl_update[:, None], ft_update(self.adapter, tuned, self.query_inputs))
        measures = {
            "rec2ftp": rec2ftp(zsl.correct, ft.correct, icl.correct),
            "simaou": aou.mean,
            "simam_icl_ft": am_ft.mean,
            "simam_icl_zsl": self.simam_icl_zsl,
            "simam_delta": delta.mean,
            "update_cos": float(cos.mean()),
            "update_norm": float(norm.mean()),
        }
        per_layer = {"simaou": aou.per_layer, "simam_icl_ft": am_ft.per_layer, "simam_delta": delta.per_layer}
        per_layer |= {"update_cos": _layers(cos), "update_norm": _layers(norm)}
        if self.variant == "dual":
            icl_attn, ft_attn = demo_attention(self.adapter, icl, zsl, data, self.train_inputs())
            attention = {"kendall": (icl_attn, ft_attn)}
        else:
            icl_attn, ft_attn = dai_attention(icl, ft, data, tuned.train_queries)
            sizes = data.demo_tokens()
            attention = {"kendall": (icl_attn, ft_attn), "kendall_demo": (per_demo(icl_attn, sizes),
                                                                          per_demo(ft_attn, sizes))}
        for key, (a, b) in attention.items():
            kt = kendall(a, b)
            measures[key], per_layer[key] = kt.mean, kt.per_layer
        if self.variant == "dai":
            for key, level in (("recall_token", "kendall"), ("recall_demo", "kendall_demo")):
                r = topk_recall(*attention[level], TOP_K[key])
                measures[key], per_layer[key] = r.mean, r.per_layer
        baselines = {
            f"random {kind}": self._random(kind, seed, ft, attention, cos.shape) for kind in ("centred", "uniform")
        }
        random = baselines[f"random {RANDOM[self.variant]}"]
        return StudyResult(
            accuracy, lr, grid, {k: measures.get(k) for k in keys}, random, per_layer, scoring,
            baselines=baselines, **common
        )

    def _random(self, kind: str, seed: int, ft: Condition, attention: dict, update_shape) -> dict:
        """Every measure with random draws in place of FT's: `centred` (torch.randn; its first four draws are the
        ones iclab's dual reading always made, in the same order) or `uniform` [0, 1) as Dai et al.'s code draws."""
        zsl, icl, data = self.zsl, self.icl, self.data
        g = torch.Generator().manual_seed(seed if kind == "centred" else seed + 7919)
        draw = torch.randn if kind == "centred" else torch.rand
        n_labels = len(data.candidates)
        random_ft = torch.randint(0, n_labels, data.gold.shape, generator=g) == data.gold
        update = draw(zsl.internals.attn_out.shape, generator=g, dtype=torch.float64)
        icl_scores = self.icl_scores
        random_map = _masked_like(icl_scores, draw(icl_scores.shape, generator=g))
        icl_attn, ft_attn = attention["kendall"]
        out = {
            "rec2ftp": rec2ftp(zsl.correct, random_ft, icl.correct),
            "simaou": _random_update_simaou(zsl, icl, update),
            "simam_icl_ft": simam(icl_scores, random_map).mean,
            "simam_icl_zsl": None,
            "kendall": kendall(icl_attn, draw(ft_attn.shape, generator=g, dtype=torch.float64)).mean,
        }
        change = _masked_like(icl_scores, draw(icl_scores.shape, generator=g))
        out["simam_delta"] = simam(icl_scores - self.zsl_scores, change).mean
        if "kendall_demo" in attention:
            a, b = attention["kendall_demo"]
            out["kendall_demo"] = kendall(a, draw(b.shape, generator=g, dtype=torch.float64)).mean
            out["recall_token"] = random_recall(ft_attn, TOP_K["recall_token"], g).mean
            out["recall_demo"] = random_recall(b, TOP_K["recall_demo"], g).mean
        rand_update = draw(self.icl_update.shape, generator=g, dtype=torch.float64)
        cos, _ = update_similarity(self.icl_update, rand_update)
        out["update_cos"], out["update_norm"] = float(cos.mean()), None
        return {k: out.get(k) for k in VARIANT_KEYS[self.variant]}


def _layers(per_head: Tensor) -> list[float]:
    """(layers, ..., heads) -> the mean per layer."""
    return [float(v) for v in per_head.flatten(1).mean(1)]


def _masked_like(reference: Tensor, values: Tensor) -> Tensor:
    """`values` with zeros where `reference` is exactly 0 (padding after a query): a random map of the same support."""
    return values.masked_fill(reference == 0, 0.0)


def _random_update_simaou(zsl: Condition, icl: Condition, update: Tensor) -> float:
    """SimAOU with a random vector in place of FT's (unit-normalised) output update."""
    z = zsl.internals.attn_out.double()
    i = icl.internals.attn_out.double()
    diff = i / i.norm(dim=-1, keepdim=True) - z / z.norm(dim=-1, keepdim=True)
    return float(F.cosine_similarity(diff, update, dim=-1).mean())
