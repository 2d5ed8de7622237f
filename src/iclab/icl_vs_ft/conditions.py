"""The ICL-vs-finetuning study's data and results: one task instance (`StudyData`), one scored condition (`run` ->
`Condition`: ZSL, ICL or a finetuned model's queries, under plain, calibrated or PMI scoring) and what a study
returns (`StudyResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import UserError
from .adapter import AttentionAdapter, Internals, Prompts
from .metrics import VARIANT_MEASURES

VARIANTS = ("dai", "dual")
VARIANT_KEYS = VARIANT_MEASURES
SCORINGS = ("plain", "calibrated", "pmi")  # calibrated: contextual calibration
RANDOM = {"dai": "uniform", "dual": "centred"}
RANDOM_BASELINES = ("random uniform", "random centred")  # the random-update baseline each variant's code draws


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
