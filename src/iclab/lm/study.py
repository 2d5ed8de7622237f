"""`iclab lm run`: Dai et al.'s ICL-vs-finetuning study on a pretrained causal LM and a text task.

For each demonstration seed, the engine (icl_vs_ft/engine.py) runs ZSL, ICL and finetuning (kv-sgd, lcgd, full) on the
pretrained model and on an untrained model of the same architecture (Deutch et al. 2024's baseline), and records
every measure beside a random-update baseline. Each (seed, model) result is saved in OUT/seed-S/ as soon as it is
done, keyed by the settings that produced it: a re-run with the same settings reads it back instead of
recomputing, so an interrupted run resumes where it stopped. OUT/results.json holds the per-seed numbers and
their mean, sd and standard error over seeds; OUT/results.md the same as tables (mean ± s.e.), written by the
study's one reporting module, icl_vs_ft/results.py, which the icl-vs-ft recipe's report uses too.

With `momentum` (eta in [0, 1)) both models run with momentum attention patched in at inference (lm/momentum.py):
ZSL, ICL and finetuning all see it, and a cached result is reused only for the same eta. Without it nothing is
patched and the study is exactly the plain one.
"""

from __future__ import annotations

import dataclasses
import json
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import UserError
from ..files import atomic_write_json, atomic_write_text
from ..icl_vs_ft.engine import SCORINGS, studies, untrained_like
from ..icl_vs_ft.results import (
    CONDITIONS,
    UNTRAINED,
    as_dict,
    draw_sweep,
    fmt,
    markdown,
    spread_note,
    summarise,
    summary_table,
    sweep_rows,
    sweep_table,
)

if TYPE_CHECKING:
    from .loading import Loaded

# the study's public names (`markdown` and `summary_table` from icl_vs_ft/results.py, the study's reporting)
__all__ = ["FORMAT", "StudyConfig", "finished", "markdown", "run_study", "run_sweep", "study_results", "summary_table"]

FORMAT = 3  # bump when a change makes cached (seed, model) results stale (3: `scoring` replaced calibrate/pmi)


@dataclass
class StudyConfig:
    model: str
    task: str
    k: int = field(default=16, metadata={"min": 1})
    seeds: list[int] = field(default_factory=lambda: [0])
    limit: int = field(default=64, metadata={"min": 1})  # test queries
    val: int = field(default=16, metadata={"min": 1})  # validation queries that pick FT's learning rate
    lrs: list[float] = field(default_factory=lambda: [1e-3, 1e-2, 0.1])
    # the headline scoring: the top-level accuracies, Rec2FTP and the pick of FT's learning rate use it; plain,
    # calibrated (contextual calibration, Zhao et al. 2021) and pmi (domain-conditional PMI) are all reported
    scoring: str = "plain"
    separator: str = "eos"  # after each demonstration: the EOS token (Dai et al.) or a text such as "\n"
    max_tokens: int = field(default=2048, metadata={"min": 8})  # token budget of a prompt (Dai et al.: 2,048)
    batch: int = field(default=8, metadata={"min": 1})
    untrained: bool = True  # also run the untrained-model baselines (all weights fresh; Deutch et al.'s)
    ft: list[str] = field(default_factory=lambda: ["kv-sgd"])  # finetuning methods, each on the same demos
    device: str = "cpu"
    dtype: str = "float32"
    threads: int = field(default=1, metadata={"min": 0})  # torch threads; 0 keeps torch's default
    train_file: str | None = None
    test_file: str | None = None
    trust_remote_code: bool = False
    revision: str | None = None  # a hub model's branch, tag or commit
    momentum: float | None = None  # eta of momentum attention patched into the model at inference; None: off
    measures: str = "dai"  # dai: as the authors' code computes them; dual: iclab's dual-form reading

    def check(self, prefix: str = "") -> None:
        from ..icl_vs_ft.engine import FT_METHODS, VARIANTS

        if self.measures not in VARIANTS:
            raise UserError(f"unknown measures '{self.measures}'; choose one of {', '.join(VARIANTS)}")
        bad = [f for f in self.ft if f not in FT_METHODS]
        if bad or not self.ft:
            raise UserError(f"unknown finetuning method '{bad[0] if bad else ''}'; choose from {', '.join(FT_METHODS)}")
        if self.scoring not in SCORINGS:
            raise UserError(f"unknown scoring '{self.scoring}'; choose one of {', '.join(SCORINGS)}")
        self._check()

    def _check(self) -> None:
        if not self.seeds:
            raise UserError("give at least one demonstration seed")
        if not self.lrs or any(lr <= 0 for lr in self.lrs):
            raise UserError(f"finetuning learning rates must be positive numbers, got {self.lrs}")
        if self.momentum is not None:
            from .momentum import check_eta

            check_eta(self.momentum)

    def key(self, task_hash: str | None = None) -> dict:
        """What a cached (seed, model) result depends on: the settings and the task's content (`task_hash`: of its
        YAML and data files), so that editing a task recomputes it."""
        skip = {"seeds", "batch", "device", "threads", "untrained"}
        if not self.momentum:  # off, or eta = 0, which leaves every output exactly unchanged: the plain study's key
            skip.add("momentum")
        key = {k: v for k, v in dataclasses.asdict(self).items() if k not in skip} | {"format": FORMAT}
        return key | ({"task_sha256": task_hash} if task_hash else {})

    def models(self) -> list[str]:
        """The models the study runs: the pretrained one, then the untrained baselines if asked for."""
        return ["trained"] + (list(UNTRAINED) if self.untrained else [])


def run_study(
    config: StudyConfig, out: Path, progress: bool = True, loaded: Loaded | None = None, shared: dict | None = None
) -> dict:
    """Run (or resume) the study into `out`; `loaded` reuses a model already in memory (loaded only if needed);
    `shared` (a dict the caller keeps) reuses the baseline models and the adapters, with their prefix caches,
    across calls (a k sweep)."""
    shared = {} if shared is None else shared
    from tqdm import tqdm

    from .adapters import HFAdapter
    from .loading import load
    from .momentum import momentum_note, patch_momentum
    from .prompts import build_layout
    from .tasks import load_data, load_task, task_fingerprint

    config.check()
    out = Path(out)
    if config.threads:
        torch.set_num_threads(config.threads)
    task = load_task(config.task, config.train_file, config.test_file)
    task_hash = task_fingerprint(task)
    data = load_data(task)
    if config.k + config.val > len(data.train):  # before the model loads: a typo should cost no time
        raise UserError(
            f"k = {config.k} demonstrations + {config.val} validation queries need {config.k + config.val} training "
            f"examples, but task '{task.name}' has {len(data.train)}: lower --k or --val"
        )
    started = time.perf_counter()
    per_seed, model = {}, None
    baselines, adapters = shared.setdefault("baselines", {}), shared.setdefault("adapters", {})
    with ExitStack() as patches:  # momentum patches come off when the study ends, also on an error

        def prepared(m: torch.nn.Module) -> torch.nn.Module:
            if config.momentum is not None:
                patches.enter_context(patch_momentum(m, config.momentum))
            return m

        for seed in tqdm(config.seeds, desc="seeds", disable=not progress or len(config.seeds) == 1):
            folder = out / f"seed-{seed}"
            wanted = config.models()
            cached = {name: _read_part(folder / f"{name}.json", config, seed, task_hash) for name in wanted}
            if all(cached.values()):
                per_seed[seed] = cached
                continue
            if loaded is None:
                loaded = load(
                    config.model, config.device, config.dtype, config.trust_remote_code, progress, config.revision
                )
            if model is None:
                model = prepared(loaded.model)
            adapter = HFAdapter(model)
            budget = min(config.max_tokens, adapter.context_length() or config.max_tokens)
            layout = build_layout(
                loaded.tokenizer, task, data, config.k, seed, config.limit, config.val, budget, config.separator
            )
            info = {"k_used": layout.k, "prompt_tokens": layout.prompt_tokens, "test": len(layout.test)}
            if layout.k < config.k and progress:
                print(f"seed {seed}: {layout.k} of {config.k} demonstrations fit the {budget}-token budget")
            for name in wanted:
                if cached[name]:
                    continue
                if name != "trained" and name not in baselines:
                    fresh = _untrained_like(model)
                    baselines["untrained"] = prepared(fresh)
                    # a deep copy of `model`, which already carries any momentum patch (a copy keeps it)
                    baselines["untrained-deutch"] = untrained_like(HFAdapter(model), fresh)
                t0 = time.perf_counter()
                if name not in adapters:
                    adapters[name] = HFAdapter(model if name == "trained" else baselines[name])
                by_ft = studies(
                    adapters[name],
                    layout.data,
                    {method: config.lrs for method in config.ft},
                    seed=seed,
                    batch=config.batch,
                    calibrated=config.scoring == "calibrated",
                    progress=progress,
                    measures=config.measures,
                    pmi=config.scoring == "pmi",
                )
                part = as_dict(by_ft[config.ft[0]]) | {"by_ft": {m: as_dict(r) for m, r in by_ft.items()}}
                part |= info | {"seconds": round(time.perf_counter() - t0, 1)}
                key = config.key(task_hash)
                atomic_write_json(folder / f"{name}.json", {"key": key, "seed": seed, "result": part})
                cached[name] = part
                if progress:
                    acc = part["accuracy"]
                    print(f"seed {seed} {name}: " + ", ".join(f"{c.upper()} {fmt(acc[c])}" for c in CONDITIONS))
            per_seed[seed] = cached
    summary = study_results(config, task, per_seed)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    if loaded is not None:
        summary["model_info"] = {"source": loaded.source, "load_seconds": round(loaded.seconds, 1)}
    atomic_write_json(out / "results.json", summary)
    notes = [momentum_note(config.momentum)] if config.momentum is not None else []
    atomic_write_text(out / "results.md", "\n".join(markdown(summary, notes)) + "\n")
    return summary


def study_results(config: StudyConfig, task, per_seed: dict[int, dict]) -> dict:
    """OUT/results.json: the settings, per model the statistics over seeds (`spread`: icl_vs_ft.results.summarise
    of the headline FT method, and of every method under `by_ft`), every per-seed result, and the trained model's
    means at the top level."""
    seeds = list(per_seed)
    spread = {}
    for model in config.models():
        parts = [per_seed[s][model] for s in seeds]
        spread[model] = summarise(parts) | {"by_ft": {f: summarise([p["by_ft"][f] for p in parts]) for f in config.ft}}

    def means(part: dict) -> dict:
        return {k: (v or {}).get("mean") for k, v in part.items()}

    trained = spread["trained"]
    out = {
        "model": config.model,
        "task": task.name,
        "task_description": task.description,
        "labels": task.words,
        "k": config.k,
        "k_used": sorted({per_seed[s]["trained"]["k_used"] for s in seeds}),
        "seeds": seeds,
        "test_queries": per_seed[seeds[0]]["trained"]["test"],
        "scoring": config.scoring,
        "ft": config.ft,
        "momentum": config.momentum,
        "measures": config.measures,
        "accuracy": means(trained["accuracy"]),
    }
    out |= means(trained["measures"]) | {"random": means(trained["random"])}
    if config.untrained:
        out["untrained"] = {"accuracy": means(spread["untrained"]["accuracy"])} | means(spread["untrained"]["measures"])
    out |= {"spread": spread, "per_seed": {str(s): per_seed[s] for s in seeds}}
    return out | {"settings": dataclasses.asdict(config)}


def run_sweep(config: StudyConfig, ks: list[int], out: Path, progress: bool = True) -> dict:
    """The study at every k of `ks` (0: zero-shot only, read off the ZSL condition) into OUT/k-K/, one model load
    and one prefix cache per model (each k's demonstrations start with the smaller k's); OUT/sweep.json, sweep.md
    and accuracy_vs_k.png hold accuracy against k under every scoring."""
    from .loading import load

    out, started, loaded, shared, runs = Path(out), time.perf_counter(), None, {}, {}
    for k in sorted({k for k in ks if k > 0}):
        c = dataclasses.replace(config, k=k)
        if loaded is None and not finished(c, out / f"k-{k}"):
            loaded = load(
                config.model, config.device, config.dtype, config.trust_remote_code, progress, config.revision
            )
        runs[k] = run_study(c, out / f"k-{k}", progress, loaded, shared)
    rows = sweep_rows(runs, ks)
    lines = [f"# Accuracy (%) against k: {config.model} on {config.task}", ""]
    lines += ["k = 0 is zero-shot (ICL reads the ZSL condition); FT at each k uses the same k demonstrations.", ""]
    lines += sweep_table(rows, spread_note(len(config.seeds)))
    results = {"ks": sorted(set(ks)), "accuracy": rows, "runs": {str(k): f"k-{k}" for k in runs}}
    results["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_json(out / "sweep.json", results)
    atomic_write_text(out / "sweep.md", "\n".join(lines) + "\n")
    draw_sweep(rows, out / "accuracy_vs_k.png")
    return results | {"table": lines}


def finished(config: StudyConfig, out: Path) -> bool:
    """Whether `out` holds every (seed, model) result of `config` already: run_study would only read them back."""
    from .tasks import load_task, task_fingerprint

    task_hash = task_fingerprint(load_task(config.task, config.train_file, config.test_file))
    wanted = config.models()
    return all(
        _read_part(Path(out) / f"seed-{s}" / f"{n}.json", config, s, task_hash) for s in config.seeds for n in wanted
    )


def _untrained_like(model: torch.nn.Module) -> torch.nn.Module:
    """The same architecture with all weights fresh (one fixed seed: the same baseline for every demo seed); its
    blocks also give Deutch et al.'s baseline its re-initialised attention and MLP weights."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(20240)
    other = AutoModelForCausalLM.from_config(model.config, dtype=next(model.parameters()).dtype)
    return other.to(next(model.parameters()).device).eval()


def _read_part(path: Path, config: StudyConfig, seed: int, task_hash: str | None) -> dict | None:
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # a damaged cache entry is recomputed, never trusted
    if stored.get("key") != json.loads(json.dumps(config.key(task_hash))) or stored.get("seed") != seed:
        return None  # made with other settings: recompute (and overwrite)
    return stored["result"]
