"""`iclab reproduce NAME --scale S --dry-run`: every run a scale would train, with an estimate of its time.

Each recipe plans its runs (`Recipe.plan(mode)`): name, steps, points, parameters, and how to build it in memory.
A run's time is its steps times the seconds of one training step, timed on the chosen device: one warm-up step,
then the mean of TIMED_STEPS, once per model shape (runs of one shape share the timing). Runs train at their final
prompt length here, so a curriculum's shorter early prompts make the estimate an upper bound. On a CPU a step
above STEP_FLOPS, or slower than STEP_SECONDS on a probe of one row (a scan whose cost the matrix-product FLOPs
miss: Mamba at 512 points), is timed on fewer rows of its batch and scaled up (a 0.3 B LM step at batch 16 would
take minutes and more memory than the machine has). Nothing is written: not to OUT, not to the run folders.
"""

from __future__ import annotations

import copy
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from ..config import Config, load_config
from ..models.transformer import TokenLM, lm_forward_flops
from ..spec import build
from ..text.config import TextConfig
from ..text.data import TokenData
from ..text.train import TextTrainer
from ..training.flops import step_flops
from ..training.runs import build_model
from ..training.trainer import Trainer

TIMED_STEPS = 3
STEP_FLOPS = 2e12  # on a CPU, the most FLOPs a timed step may take (about 10-20 s here); above, fewer rows
STEP_SECONDS = 5.0  # on a CPU, about the longest a timed step may take, judged from a one-row probe


@dataclass
class Planned:
    name: str  # where it trains, relative to OUT (models/SCALE/...): a run two recipes share is listed once
    steps: int
    points: int  # (x, y) pairs per prompt, or tokens per training window
    parameters: int
    shape: tuple  # runs of one shape are timed once
    seconds_per_step: Callable[[], float]  # builds the run in memory and times its steps
    config: Config | TextConfig | None = None  # an iclab run's config (None: a recipe's own Trainer)


def per_step(step: Callable[[], object]) -> float:
    """Seconds per call of `step`: one warm-up call, then the mean of TIMED_STEPS."""
    step()
    sync = torch.cuda.synchronize if torch.cuda.is_available() else lambda: None
    sync()
    started = time.perf_counter()
    for _ in range(TIMED_STEPS):
        step()
    sync()
    return (time.perf_counter() - started) / TIMED_STEPS


def timed_rows(batch: int, row_flops: int, device: str) -> int:
    """The rows of a batch to time: all of them, except a CPU step above STEP_FLOPS."""
    if torch.device(device).type != "cpu":
        return batch
    return max(1, min(batch, int(STEP_FLOPS // row_flops)))


def _timing(data: dict, rows: int) -> dict:
    """A run's config for timing: `rows` rows a step, at the final prompt length, without validation or loggers."""
    data = copy.deepcopy(data)
    data["train"] |= {"batch_size": rows, "eval_every": 0, "loggers": []}
    if "curriculum" in data:
        ramp = data["curriculum"].get("points")
        if ramp:  # its longest training prompt: a model built for longer prompts (recipes/length.py) trains at it
            data["points"], data["eval"]["points"] = ramp["end"], None
        data["curriculum"] = {"dims": None, "points": None}
    return data


def make_trainer(config: Config | TextConfig, scratch: Path) -> Trainer:
    """A run's Trainer in memory (it writes nothing before it saves); a text run trains on random tokens of its
    vocabulary size, so that no tokenizer is trained."""
    if isinstance(config, Config):
        return Trainer(config, scratch)
    vocab = config.corpus.vocab
    size = 8 * config.train.batch_size * (config.context + 1)
    tokens = torch.randint(vocab, (size,), generator=torch.Generator().manual_seed(0))
    return TextTrainer(config, scratch, TokenData(SimpleNamespace(get_vocab_size=lambda: vocab), tokens, tokens))


def _seconds(timing: Callable[[int], Config | TextConfig], batch: int, rows: int, device: str) -> Callable[[], float]:
    """Seconds of a step of `batch` rows, timed on `rows` of them (`timing(n)`: the config of an n-row step) and
    scaled up; on a CPU first on one row, and on fewer rows if `rows` would take more than STEP_SECONDS."""

    def on(n: int) -> float:
        with tempfile.TemporaryDirectory() as scratch:
            return per_step(make_trainer(timing(n), Path(scratch)).train_step) * batch / n

    def seconds() -> float:
        if torch.device(device).type != "cpu" or rows == 1:
            return on(rows)
        probe = on(1)  # a step of one row, scaled to the batch
        if not math.isfinite(probe) or probe <= 0:  # nothing was timed (scripts/gpu_check.py's dry build)
            return probe
        fewer = max(1, min(rows, int(STEP_SECONDS * batch / probe)))
        return probe if fewer == 1 else on(fewer)

    return seconds


def _shape(kind: str, model, size: int, points: int, batch: int, device: str) -> tuple:
    return (kind, model.name, model.layers, model.width, getattr(model, "heads", None), size, points, batch, device)


def icl_run(name: str, config: Config) -> Planned:
    """A run of iclab's ICL transformer."""
    with torch.device("meta"):  # counts parameters and FLOPs without allocating anything
        model = build_model(config)
        parameters = model.num_parameters()
        try:
            forward = model.forward_flops(config.points)
        except RuntimeError:  # a kernel that reads values (Mamba's own scan sizes its chunks): a real CPU pass
            forward = None
    if forward is None:
        with torch.random.fork_rng(devices=[]):
            forward = build_model(config).forward_flops(config.points)
    batch = config.train.batch_size
    rows = timed_rows(batch, step_flops(forward, 1), config.device)
    data = config.to_dict()
    return Planned(
        name,
        config.train.steps,
        config.points,
        parameters,
        _shape("icl", config.model, config.dims, config.points, batch, config.device),
        _seconds(lambda n: load_config(base=_timing(data, n)), batch, rows, config.device),
        config,
    )


def text_run(name: str, config: TextConfig) -> Planned:
    """A run of iclab's token LM, timed on random tokens of its vocabulary size (no tokenizer is trained)."""
    vocab, context = config.corpus.vocab, config.context
    with torch.device("meta"):
        parameters = TokenLM(config.model, vocab, context).num_parameters()
    batch = config.train.batch_size
    rows = timed_rows(batch, step_flops(lm_forward_flops(config.model, vocab, context), 1), config.device)
    data = config.to_dict()
    return Planned(
        name,
        config.train.steps,
        context,
        parameters,
        _shape("lm", config.model, vocab, context, batch, config.device),
        _seconds(lambda n: build(TextConfig, _timing(data, n)), batch, rows, config.device),
        config,
    )


def trainer_run(name: str, kind: type[Trainer], config, points: int, parameters: int) -> Planned:
    """A run of a recipe's own Trainer subclass and config (lsa-gd's layer, icl-vs-ft's keywords LM), timed on
    its own steps."""

    def seconds() -> float:
        with tempfile.TemporaryDirectory() as scratch:
            return per_step(kind(config, Path(scratch)).train_step)

    return Planned(name, config.train.steps, points, parameters, (kind.__name__, name), seconds)


def estimate(planned: list[tuple[str, Planned]], progress: bool = False) -> list[dict]:
    """One row per run (recipe, run, steps, points, parameters, seconds per step, seconds), timing each shape once;
    a run listed by an earlier recipe is left out."""
    timings: dict[tuple, float] = {}
    rows, seen = [], set()
    for recipe, run in planned:
        if run.name in seen:
            continue
        seen.add(run.name)
        if run.shape not in timings:
            if progress:
                print(f"timing {run.name} ...", file=sys.stderr, flush=True)  # stdout: the table
            timings[run.shape] = run.seconds_per_step()
        per = timings[run.shape]
        rows.append(
            {"recipe": recipe, "run": run.name, "steps": run.steps, "points": run.points}
            | {"parameters": run.parameters, "seconds_per_step": per, "seconds": per * run.steps}
        )
    return rows


def duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def plan_lines(rows: list[dict], scale: str, device: str, names: list[str]) -> list[str]:
    """The dry run's table, a total per recipe (of `names`) and the grand total."""
    header = f"{'recipe':<20} {'run':<44} {'steps':>8} {'points':>6} {'parameters':>12} {'s/step':>8} {'time':>9}"
    lines = [header]
    for r in rows:
        lines.append(
            f"{r['recipe']:<20} {r['run']:<44} {r['steps']:>8} {r['points']:>6} {r['parameters']:>12,} "
            f"{r['seconds_per_step']:>8.3f} {duration(r['seconds']):>9}"
        )
    lines.append("")
    for recipe in names:
        mine = [r for r in rows if r["recipe"] == recipe]
        shared = "" if mine else "  (its models are listed under the recipe above that shares them)"
        lines.append(f"{recipe:<20} {len(mine):>3} runs  {duration(sum(r['seconds'] for r in mine)):>9}{shared}")
    total = sum(r["seconds"] for r in rows)
    lines.append(
        f"total: {len(rows)} runs, {duration(total)} of training at scale {scale} on {device}, one run at a time "
        f"(training steps only: evaluation and studies come on top); nothing was written"
    )
    return lines
