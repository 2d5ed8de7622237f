"""Running the momentum study: train (or reuse) every run of the grid, score it, store the results."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from ...errors import UserError
from ...evaluation.curves import CURVE_COLUMNS, default_oracle, evaluate, write_curves
from ...files import atomic_write_json
from ...tasks import make_task
from ...text import load_text_model, prepare_data, read_text_config, resume_text, train_text
from ...text.tokenizer import save_tokenizer
from ...text.train import evaluate_run
from ...training.runs import load_model
from ...training.trainer import resume, train
from ..common import ensure_run
from .figures import draw
from .paired import check_results
from .settings import EMA, NAME, SIZES, STANDARD, eta_label, icl_config, label, lm_config, lm_study_config, variants

BINS = 20  # of the learned decays' histograms, over (0, 1)


def grid(size: dict, root: Path, make_config: Callable, what: str, progress: bool) -> Iterator[tuple]:
    """(variant, seed, config, run folder) for every point of the study's grid, announced as it comes."""
    for variant in variants(size):
        for seed in range(size["seeds"]):
            if progress:
                print(f"{what}: {label(variant)}, seed {seed}", flush=True)
            yield variant, seed, make_config(size, variant, seed), root / variant / f"seed={seed}"


def learned_decays(model: torch.nn.Module) -> list[dict]:
    """What a learned-EMA model chose, layer by layer: a histogram of its decays sigmoid(delta) over BINS equal
    bins of (0, 1), their 10/50/90 % quantiles, and their mean weighted by |gamma| (a decay whose weight went to
    zero adds nothing)."""
    layers = []
    for block in model.blocks:
        decay = block.attn.ema.decay().detach().double().flatten()
        weight = block.attn.ema.gamma.detach().double().abs().flatten()
        layers.append(
            {
                "histogram": torch.histc(decay, BINS, 0, 1).long().tolist(),
                "quantiles": [
                    round(q, 4) for q in torch.quantile(decay, torch.tensor([0.1, 0.5, 0.9]).double()).tolist()
                ],
                "weighted_mean": round(float((weight * decay).sum() / weight.sum()), 4),
            }
        )
    return layers


def lm_study(size: dict, root: Path, progress: bool) -> dict:
    """Train (or reuse) every language model of the grid and score it: perplexity at every eval length."""
    corpus = lm_config(size, STANDARD, 0).corpus
    stored = root / "corpus.json"  # the settings the grid's one tokenizer was trained with
    if stored.is_file() and json.loads(stored.read_text()) != dataclasses.asdict(corpus):
        raise UserError(f"{root} holds models of another corpus or vocabulary; remove it or choose another --out")
    data = prepare_data(corpus, root / "tokenizer.json")
    save_tokenizer(data.tokenizer, root / "tokenizer.json")
    atomic_write_json(stored, dataclasses.asdict(corpus))
    runs, decays, parameters = [], [], {}
    for variant, seed, config, run_dir in grid(size, root, lm_config, "language model", progress):
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
            result = evaluate_run(run_dir, data, progress, config)
        runs.append({"variant": variant, "seed": seed} | {k: result[k] for k in ("perplexity", "loss_by_position")})
        runs[-1] |= {k: result[k] for k in ("train_seconds", "eval_seconds", "steps")}
        parameters[variant] = result["parameters"]
        if variant == EMA:
            decays.append({"seed": seed, "layers": learned_decays(load_text_model(run_dir, data.vocab, config)[0])})
    return {
        "lengths": config.eval.lengths,
        "runs": runs,
        "decays": decays,
        "corpus": corpus.source,
        "vocab": data.vocab,
        "train_tokens": len(data.train),
        "val_tokens": len(data.val),
        "tokens_scored": result["tokens_scored"],
        "parameters": parameters,
        "context": config.context,
        "batch_size": config.train.batch_size,
        "model": f"{config.model.layers} layers, width {config.model.width}, {config.model.heads} heads",
    }


def icl_study(size: dict, root: Path, progress: bool) -> dict:
    """Train (or reuse) every ICL transformer of the grid; error curves on one fixed prompt set."""
    runs, curves, decays, parameters = [], [], [], {}
    for variant, seed, config, run_dir in grid(size, root, icl_config, "in-context regression", progress):
        ensure_run(
            run_dir,
            config,
            lambda c=config, r=run_dir: train(c, r, progress=progress),
            lambda r=run_dir: resume(r, progress=progress),
        )
        model, state = load_model(run_dir, config)
        rows = evaluate(model, config, baselines=[])
        curves += [r | {"run": f"{variant}/seed={seed}"} for r in rows]
        errors = [r["mean"] for r in sorted(rows, key=lambda r: r["k"])]
        runs.append({"variant": variant, "seed": seed, "error": errors, "train_seconds": state["elapsed_seconds"]})
        parameters[variant] = model.num_parameters()
        if variant == EMA:
            decays.append({"seed": seed, "layers": learned_decays(model)})
    # zero and the task's posterior mean (where cheap) besides the config's: the ends of the ICL score
    names = config.eval.baselines + ["zero"]
    names += default_oracle(make_task(config.task, config.dims), names, config.dims)
    baselines = evaluate(None, config, baselines=names)
    curves += [r | {"run": ""} for r in baselines]
    return {
        "runs": runs,
        "decays": decays,
        "parameters": parameters,
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


def pretrained_lm_study(settings: dict, root: Path, progress: bool) -> dict:
    """Momentum patched into a pretrained LM at inference: the lm study for every task and eta (eta = 0: the
    unpatched model), each in root/TASK/eta=E/ and reused when done. Returns the accuracies per run, or
    {"skipped": why} when the model cannot be loaded."""
    from ...lm.loading import load
    from ...lm.study import finished, run_study

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
            print(f"pretrained LM {settings['model']}: {task}, {eta_label(eta)}", flush=True)
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
    """The whole study into out/momentum/ (results.json, icl_curves.csv, figures); its runs in out/models/MODE/."""
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
        "variants": variants(size),
        "etas": size["etas"],
        "seeds": size["seeds"],
        "lm": lm,
        "icl": {k: v for k, v in icl.items() if k != "curves"},
        "pretrained_lm": pretrained_lm,
        "seconds": round(time.perf_counter() - started, 1),  # this call's wall time; reused runs cost ~nothing
    }
    folder.mkdir(parents=True, exist_ok=True)
    write_curves(folder / "icl_curves.csv", icl["curves"], ["run", *CURVE_COLUMNS])
    atomic_write_json(folder / "results.json", results)
    draw(results, folder)
    return {"checks": check_results(results), "seconds": round(time.perf_counter() - started, 1)}
