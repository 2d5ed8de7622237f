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
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ..errors import UserError
from .adapter import AttentionAdapter, Internals, Prompts, _hooks
from .metrics import (
    TOP_K,
    VARIANT_MEASURES,
    dai_ft_attention,
    dai_icl_attention,
    head_updates,
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

VARIANTS = ("dai", "dual")
VARIANT_KEYS = VARIANT_MEASURES
FT_METHODS = ("kv-sgd", "lcgd", "full")
SCORINGS = ("plain", "calibrated", "pmi")  # calibrated: contextual calibration
RANDOM = {"dai": "uniform", "dual": "centred"}
RANDOM_BASELINES = ("random uniform", "random centred")  # the random-update baseline each variant's code draws
KENDALL_EXAMPLES = 100  # Dai et al. average Kendall's tau over the first 100 test examples
UPDATE_QUERIES = 16  # queries whose tokens make X in the update comparison


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
    domain: Tensor | None = None  # (1, tokens) the domain premise (e.g. " Label:"), scored after BOS, for PMI
    separator_tokens: int = 0  # tokens that end each demonstration as a separator (Dai's Kendall leaves them out)

    def __post_init__(self):
        for name in ("icl", "zsl", "val_zsl"):
            value = getattr(self, name)
            if not isinstance(value, Prompts):
                setattr(self, name, Prompts.split(value, self.query_tokens))
        if isinstance(self.candidates, Tensor):
            self.candidates = [c.view(1) for c in self.candidates]

    def demo_tokens(self) -> list[int]:
        """Tokens of each demonstration that Dai et al.'s Kendall compares: BOS and the separator left out, and at
        least the last token, which FT only predicts (it is never a training input)."""
        return [d.shape[1] - 1 - max(self.separator_tokens, 1) for d in self.demos]

    def dai_positions(self) -> Tensor:
        """Those tokens' positions in the ICL prompt."""
        start, out = self.demo_positions.start or 0, []
        for d, n in zip(self.demos, self.demo_tokens(), strict=True):
            out.append(torch.arange(start, start + n))
            start += d.shape[1] - 1
        return torch.cat(out)


@dataclass
class Condition:
    scores: Tensor  # (N, C): mean log-probability of each label
    gold: Tensor  # (N,)
    internals: Internals
    content_free: Tensor | None = None  # (C,): the label scores of a content-free query
    calibrated: bool = False  # predict from scores minus the content-free ones (Zhao et al. 2021)
    domain: Tensor | None = None  # (C,): the label scores after the domain premise alone
    pmi: bool = False  # predict from scores minus the domain premise's (domain-conditional PMI)

    def baseline(self, mode: str) -> Tensor | None:
        return {"plain": None, "calibrated": self.content_free, "pmi": self.domain}[mode]

    @property
    def mode(self) -> str:
        return "pmi" if self.pmi else "calibrated" if self.calibrated else "plain"

    def predictions(self, calibrated: bool | None = None, mode: str | None = None) -> Tensor:
        if mode is None:
            mode = self.mode if calibrated is None else ("calibrated" if calibrated else "plain")
        base = self.baseline(mode)
        return (self.scores if mode == "plain" else self.scores - base).argmax(-1)

    @property
    def correct(self) -> Tensor:
        return self.predictions() == self.gold

    @property
    def accuracy(self) -> float:
        return float(self.correct.float().mean())

    def summary(self) -> dict:
        """Accuracy under every scoring whose reference query was scored (plain, contextual calibration, PMI), and
        the share of predictions on the most predicted label (1.0: the model always says the same label)."""
        out = {}
        for mode in SCORINGS:
            if mode != "plain" and self.baseline(mode) is None:
                continue
            pred = self.predictions(mode=mode)
            share = torch.bincount(pred, minlength=self.scores.shape[1]).max() / len(pred)
            out[mode] = {"accuracy": float((pred == self.gold).float().mean()), "top_label_share": float(share)}
        return out


@dataclass
class StudyResult:
    accuracy: dict[str, float | None]
    ft_lr: float | None
    ft_grid: dict[str, float | str]  # lr -> validation accuracy, or "diverged"
    measures: dict[str, float | None]
    random: dict[str, float | None]  # the same measures with the variant's own random update in place of FT's
    per_layer: dict[str, list[float]] = field(default_factory=dict)
    scoring: dict[str, dict] = field(default_factory=dict)  # condition -> Condition.summary()
    variant: str = "dai"
    ft: str = "kv-sgd"
    baselines: dict[str, dict[str, float | None]] = field(default_factory=dict)  # "random uniform"/"random centred"
    # per layer: ‖softmax attention output - its relaxed linear form‖ / ‖output‖ at the ICL queries
    linear_gap: list[float] = field(default_factory=list)


def run(
    adapter: AttentionAdapter,
    prompts: Prompts | Tensor,
    candidates: Tensor | list[Tensor],
    gold: Tensor,
    batch: int = 64,
    content_free: Tensor | None = None,
    calibrated: bool = False,
    query_tokens: int | None = None,
    domain: Tensor | None = None,
    pmi: bool = False,
) -> Condition:
    """Score every prompt (and, if given, a content-free query after the same prefix, and the domain premise after
    the prompts' first token) and record the internals."""
    if not isinstance(prompts, Prompts):
        prompts = Prompts.split(prompts, query_tokens)
    labels = [c.view(1) for c in candidates] if isinstance(candidates, Tensor) else candidates
    scores, internals = adapter.score(prompts, labels, batch)
    cf = dom = None
    if content_free is not None:
        cf = adapter.score(Prompts(prompts.prefix, content_free), labels, batch)[0][0]
    elif calibrated:
        raise UserError("calibrated scoring needs a content-free query")
    if domain is not None:
        dom = adapter.score(Prompts(prompts.prefix[:, :1], domain), labels, batch)[0][0]
    elif pmi:
        raise UserError("PMI scoring needs a domain premise (the text before the label)")
    return Condition(scores, gold, internals, cf, calibrated, dom, pmi)


def _trainable(adapter: AttentionAdapter, tuned: AttentionAdapter, method: str) -> list[nn.Parameter]:
    """The parameters of `tuned` that finetuning moves: all (full) or the key/value projections (masked where fused)."""
    if method == "full":
        return [p.requires_grad_(True) for p in tuned.model.parameters()]
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
    return params


@contextmanager
def _layer_causal(adapter: AttentionAdapter):
    """While active, every block's input is detached and its output kept: yields the list of block outputs."""
    outputs: list[Tensor] = []

    def detach(module, args, kwargs):
        if args:
            return (args[0].detach(), *args[1:]), kwargs
        return args, kwargs | {"hidden_states": kwargs["hidden_states"].detach()}

    def keep(module, args, kwargs, output):
        outputs.append(output[0] if isinstance(output, tuple) else output)

    blocks = adapter.decoder_blocks()
    handles = [b.register_forward_pre_hook(detach, with_kwargs=True) for b in blocks]
    try:
        with _hooks([(b, keep) for b in blocks]):
            yield outputs
    finally:
        for h in handles:
            h.remove()


@contextmanager
def _recording_queries(adapter: AttentionAdapter, into: list):
    """While active, each forward appends the query vectors of every token, (layers, tokens, heads * d), to `into`."""
    per_layer: dict[int, Tensor] = {}

    def hook(index):
        def save(module, args, kwargs, output):
            h = args[0] if args else kwargs["hidden_states"]
            per_layer[index] = adapter.projections(module, h[0])[0].flatten(-2).detach().float().cpu()

        return save

    layers = adapter.attention_layers()
    with _hooks([(m, hook(i)) for i, m in enumerate(layers)]):
        yield lambda: into.append(torch.stack([per_layer[i] for i in range(len(layers))]))


def finetune(
    adapter: AttentionAdapter, demos: list[Tensor], lr: float, method: str = "kv-sgd", record_queries: bool = False
) -> AttentionAdapter | None:
    """A copy of the adapter's model after one epoch of SGD on the demonstrations (None if it diverged).

    With `record_queries`, the copy's `train_queries` lists each demonstration's query vectors (layers, tokens,
    heads * d) as the forward pass of its own training step computed them (Dai et al. record them during FT)."""
    if method not in FT_METHODS:
        raise UserError(f"unknown finetuning method '{method}'; choose one of {', '.join(FT_METHODS)}")
    tuned = adapter.with_model(copy.deepcopy(adapter.model))
    params = _trainable(adapter, tuned, method)
    optimizer = torch.optim.SGD(params, lr=lr)
    tuned.model.eval()  # no dropout: the update is a deterministic function of the demonstrations, as in the dual form
    recorded: list[Tensor] = []
    for ids in demos:  # batch 1, one epoch, in the ICL order
        targets = ids[:, 1:].reshape(-1)
        with _recording_queries(tuned, recorded) if record_queries else _nothing() as keep:
            if method == "lcgd":
                with _layer_causal(tuned) as outputs:
                    tuned.logits(ids[:, :-1])
                losses = [_lm_loss(tuned.readout(h), targets) for h in outputs]
                loss = torch.stack(losses).sum()
            else:
                loss = _lm_loss(tuned.logits(ids[:, :-1]), targets)
            if keep is not None:
                keep()
        if not torch.isfinite(loss):
            return None
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for p in tuned.model.parameters():
        p.requires_grad_(False)
    if not all(torch.isfinite(p).all() for p in params):
        return None
    if record_queries:
        tuned.train_queries = recorded
    return tuned


@contextmanager
def _nothing():
    yield None


def _lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.to(logits.device))


def untrained_like(adapter: AttentionAdapter, fresh: nn.Module) -> nn.Module:
    """Deutch et al. 2024's untrained baseline: a copy of the adapter's model whose blocks take the attention and
    MLP weights of `fresh` (the same architecture, freshly initialised); embeddings, every norm and the unembedding
    stay the pretrained ones."""
    model = copy.deepcopy(adapter.model)
    blocks = adapter.with_model(model).decoder_blocks()
    for block, new in zip(blocks, adapter.with_model(fresh).decoder_blocks(), strict=True):
        for (_, m), (_, n) in zip(block.named_modules(), new.named_modules(), strict=True):
            if isinstance(m, nn.LayerNorm) or "norm" in type(m).__name__.lower():
                continue
            with torch.no_grad():
                for name, p in m.named_parameters(recurse=False):
                    p.copy_(getattr(n, name).to(p.dtype))
    return model.eval()


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
        self.icl_scores = _query_scores(icl, data.icl)
        self.zsl_scores = _query_scores(zsl, data.zsl)
        self.simam_icl_zsl = simam(self.icl_scores, self.zsl_scores).mean
        self._train_inputs = None
        self.icl_update, self.query_inputs = _icl_update(adapter, data)
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
        ft_scores = _query_scores(ft, data.zsl)
        am_ft = simam(self.icl_scores, ft_scores)
        delta = simam_delta(self.icl_scores, self.zsl_scores, ft_scores)
        cos, norm = update_similarity(self.icl_update[:, None], _ft_update(self.adapter, tuned, self.query_inputs))
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


def _icl_update(adapter: AttentionAdapter, data: StudyData) -> tuple[Tensor, list[Tensor]]:
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


def _ft_update(adapter: AttentionAdapter, tuned: AttentionAdapter, queries: list[Tensor]) -> Tensor:
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


def _masked_like(reference: Tensor, values: Tensor) -> Tensor:
    """`values` with zeros where `reference` is exactly 0 (padding after a query): a random map of the same support."""
    return values.masked_fill(reference == 0, 0.0)


def _random_update_simaou(zsl: Condition, icl: Condition, update: Tensor) -> float:
    """SimAOU with a random vector in place of FT's (unit-normalised) output update."""
    z = zsl.internals.attn_out.double()
    i = icl.internals.attn_out.double()
    diff = i / i.norm(dim=-1, keepdim=True) - z / z.norm(dim=-1, keepdim=True)
    return float(F.cosine_similarity(diff, update, dim=-1).mean())


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
