"""Park et al. (2024), "Can Mamba learn how to learn?": the transformer, Mamba and their hybrid MambaFormer trained
on the same in-context tasks at matched parameter counts. Their Table 1's shapes: every architecture learns linear
regression; Mamba beats the transformer on sparse parity; the transformer beats Mamba on vector-valued MQAR and on
decision trees; MambaFormer learns every task.

One run per architecture x task x learning rate (the sweep is part of the recipe, as Zoology reports the best of a
sweep per mixer): each architecture's width is the one whose parameter count comes closest to the scale's
`parameters` (counted on the first task's model, `matched_width`), every run of a task sees the same prompts, and
the learning rate with the least validation error (fresh prompts of their own seed) is the one scored on the test
prompts. A task's number is its error averaged over a window of positions (`window`): the queries of vector MQAR
(0-1 recall error), the second half of every other prompt (squared error / E[y^2], or the 0-1 sign error of sparse
parity). An architecture passes a task (✓) when that number is within MARGIN of the best architecture's and
clearly below chance (`passes`)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..baselines import make_estimator
from ..config import Config
from ..errors import UserError
from ..evaluation.curves import ModelEstimator, estimator_errors
from ..files import atomic_write_json
from ..markdown import table
from ..plotting import finish, fit_y, plt, reference_line, save_figure, series_style
from ..scoring import EvalSet, make_eval_set
from ..spec import key_error
from ..training.runs import build_model, load_model
from .common import check, note_model, section_lines
from .dryrun import Planned, icl_run
from .models import export_pretrained, pretrained_dir
from .recipe import Recipe
from .sizes import SCALES, Sizes, Trained, training_config
from .trained import ensure_study_model, train_info

NAME = "architectures"
NEAR = 0.1  # "near least squares": at most this much above it (errors / E[y^2]: the zero predictor scores 1)
MARGIN = 0.05  # passing a task: within 15 % or this much of the best architecture's number
AHEAD_SE = 2.0  # "ahead": lower by more than this many standard errors of the difference (a tie is not a lead)
BELOW_CHANCE = 0.1  # and at least this far below chance: the best error without examples (`chance`)
# Park et al.'s Table 1 on the tasks the recipe checks (True: ✓, False: ✗ or their partial mark); an architecture
# or task not listed is not in their table (lstm) or its mark is not checked here (the outlier tasks)
PAPER = {
    "transformer": {"linear": True, "sparse_linear": True, "decision_tree": True, "sparse_parity": False,
                    "vector_mqar": True},
    "mamba": {"linear": True, "sparse_linear": True, "decision_tree": False, "sparse_parity": True,
              "vector_mqar": False},
    "mambaformer": {"linear": True, "sparse_linear": True, "decision_tree": True, "sparse_parity": True,
                    "vector_mqar": True},
}  # fmt: skip


@dataclass
class ArchTask:
    """One task of the study: dotted config keys (dims, points, task, inputs, ...) and the estimators drawn beside
    the architectures (none for vector MQAR, whose outputs are vectors)."""

    set: dict = field(default_factory=dict)
    baselines: list[str] = field(default_factory=list)
    # architecture label -> model keys that replace the matched ones on this task (the paper scale's 12-layer,
    # width-256 transformer for sparse parity, as in Park et al.'s parity.yaml)
    models: dict[str, dict] = field(default_factory=dict)


@dataclass
class ArchitecturesSize(Trained):
    # label -> model spec without its width (chosen by matched_width): {name: mamba, layers: 4}
    architectures: dict[str, dict] = field(default_factory=dict)
    parameters: int = field(default=20000, metadata={"min": 1})  # the count every architecture's width matches
    widths: list[int] = field(default_factory=lambda: [8 * i for i in range(1, 33)])  # the widths considered
    tasks: dict[str, ArchTask] = field(default_factory=dict)  # label -> task (PAPER's labels are checked)
    lrs: list[float] = field(default_factory=lambda: [3e-4, 1e-3, 3e-3])  # the sweep, >= 3 rates
    validation_prompts: int = field(default=256, metadata={"min": 1})  # the sweep picks on these

    def check(self, prefix: str) -> None:
        if len(self.lrs) < 3:
            raise key_error("lrs", f"the learning-rate sweep needs at least 3 rates, got {self.lrs}")
        if not self.architectures or not self.tasks:
            raise key_error("tasks", "a scale file names at least one architecture and one task")


SIZES = Sizes(NAME, ArchitecturesSize)  # scales/architectures/SCALE.yaml


def run_config(size: dict, task: str, model: dict, lr: float) -> Config:
    """The iclab config of one run: the scale's base, the task's keys, the model and the learning rate."""
    return training_config(size, size["tasks"][task]["set"] | {"model": model, "train.lr": lr})


def parameter_count(size: dict, task: str, model: dict) -> int:
    """Parameters of `model` on `task`, counted on the meta device (a UserError where the spec is not valid)."""
    config = run_config(size, task, model, size["lrs"][0])
    with torch.device("meta"):
        return build_model(config).num_parameters()


def matched_width(size: dict, arch: str) -> tuple[int, int]:
    """(width, parameters): the width among `widths` whose parameter count on the first task is closest to
    `parameters`; widths the architecture refuses (heads that do not divide them) are left out."""
    task, counts, refused = next(iter(size["tasks"])), {}, []
    for w in size["widths"]:
        try:
            counts[w] = parameter_count(size, task, size["architectures"][arch] | {"width": w})
        except UserError as e:
            refused.append(f"width {w}: {e}")
    if not counts:
        raise UserError(f"architecture '{arch}': none of the widths {size['widths']} builds a model ({refused[0]})")
    width = min(counts, key=lambda w: (abs(counts[w] - size["parameters"]), w))
    return width, counts[width]


def models_of(size: dict) -> dict[str, dict]:
    """label -> {model spec with its matched width, parameters}."""
    out = {}
    for arch, spec in size["architectures"].items():
        width, count = matched_width(size, arch)
        out[arch] = {"model": spec | {"width": width}, "parameters": count}
    return out


def model_spec(size: dict, models: dict, arch: str, task: str) -> dict:
    """The model of `arch` on `task`: its matched spec, with the task's own keys for it (ArchTask.models)."""
    return models[arch]["model"] | size["tasks"][task]["models"].get(arch, {})


def run_name(arch: str, task: str, lr: float) -> str:
    return f"{NAME}/{arch}-{task}-lr{lr:g}"


def runs(mode: str) -> list[tuple[str, str, float, Config]]:
    """(architecture, task, lr, config) of every run the scale trains."""
    size = SIZES[mode]
    models = models_of(size)
    return [
        (arch, task, lr, run_config(size, task, model_spec(size, models, arch, task), lr))
        for task in size["tasks"]
        for arch in size["architectures"]
        for lr in size["lrs"]
    ]


def plan(mode: str) -> list[Planned]:
    return [icl_run(f"models/{mode}/{run_name(a, t, lr)}", config) for a, t, lr, config in runs(mode)]


def window(evalset: EvalSet) -> int:
    """The first position of the window a task's number averages: vector MQAR's queries, else the second half."""
    points = evalset.targets.shape[1]
    queries = getattr(evalset.task, "queries", None)
    return points - queries if evalset.metric == "recall" else points // 2


def chance(evalset: EvalSet) -> float:
    """The error of the best predictor that ignores the examples: 1 for regression (errors / E[y^2]: predicting
    0), (keys - 1) / keys for recall (a uniform guess among the keys), and for sparse parity the majority sign of
    the query's own characters over every support (`no_example_parity`: below 0.5)."""
    if evalset.metric == "recall":
        keys = evalset.targets.shape[1] - evalset.task.queries
        return (keys - 1) / keys
    if evalset.metric == "sign":
        return no_example_parity(evalset) if hasattr(evalset.task, "k") else 0.5
    return 1.0


def no_example_parity(evalset: EvalSet) -> float:
    """The 0-1 error of the Bayes prediction from x alone under the sparse-parity prior: the sign (ties +1) of the
    sum over all size-k supports of the product of x's coordinates on the support, at every point."""
    xs = evalset.xs.double()
    supports = torch.combinations(torch.arange(xs.shape[-1]), evalset.task.k).reshape(-1, evalset.task.k)
    votes = xs[..., supports].prod(-1).sum(-1)
    return float((torch.where(votes >= 0, 1.0, -1.0) != evalset.targets.double()).double().mean())


def summary(errors: Tensor, start: int) -> dict:
    """The curve (mean over prompts at each k) and the window's mean with its standard error over prompts."""
    per_prompt = errors[:, start:].mean(1)
    return {
        "curve": errors.mean(0).tolist(),
        "window": float(per_prompt.mean()),
        "se": float(per_prompt.std() / math.sqrt(len(per_prompt))),
    }


def score(model, evalset: EvalSet, config: Config) -> dict:
    (errors,) = estimator_errors([ModelEstimator(model)], evalset, config.eval.batch_size).values()
    return summary(errors, window(evalset))


def shipped_name(arch: str, task: str) -> str:
    """The folder under iclab/pretrained of the model the sweep picked for `arch` on `task`."""
    return f"{NAME}-{arch}-{task}"


def sweep_pick(arch: str, task: str, models: dict, out: Path, mode: str, progress: bool) -> tuple[float, Path, dict]:
    """Train the architecture on the task at every rate and pick the rate with the least validation error:
    (lr, its run folder, every rate's validation error)."""
    size = SIZES[mode]
    val, picked = {}, None
    for lr in size["lrs"]:
        config = run_config(size, task, model_spec(size, models, arch, task), lr)
        run_dir = ensure_study_model(run_name(arch, task, lr), config, out, mode, False, progress)
        model, _ = load_model(run_dir, config)
        valset = make_eval_set(config, prompts=size["validation_prompts"], seed=config.eval.seed + 1)
        val[f"{lr:g}"] = score(model, valset, config)["window"]
        if picked is None or val[f"{lr:g}"] < val[f"{picked[0]:g}"]:
            picked = (lr, run_dir)
    return *picked, val


def shipped_pick(arch: str, task: str) -> tuple[float, Path, dict]:
    """The sweep's pick as shipped (`ship`): only the picked model ships, with the validation errors that picked
    it, so --pretrained scores the same model on the same test prompts."""
    run_dir = pretrained_dir(shipped_name(arch, task))
    note_model(shipped_name(arch, task), run_dir)
    sweep = json.loads((run_dir / "sweep.json").read_text())
    return sweep["lr"], run_dir, sweep["validation"]


def ship(out: Path, dest_root: Path, mode: str = "full") -> list[Path]:
    """Copy each architecture's picked model on each task from a finished run of the recipe in `out` (its
    results.json names the picks) into dest_root/NAME-ARCH-TASK, with sweep.json beside it."""
    results = json.loads((out / NAME / "results.json").read_text())
    shipped = []
    for task, entry in results["tasks"].items():
        for arch, picked in entry["runs"].items():
            run_dir = out / "models" / mode / run_name(arch, task, picked["lr"])
            dest = export_pretrained(run_dir, shipped_name(arch, task), dest_root)
            atomic_write_json(dest / "sweep.json", {"lr": picked["lr"], "validation": picked["validation"]})
            shipped.append(dest)
    return shipped


def train_and_pick(arch: str, task: str, models: dict, out: Path, mode: str, pretrained: bool, progress: bool) -> dict:
    """The sweep's pick for the architecture on the task (trained, or shipped), scored on the test prompts."""
    size = SIZES[mode]
    if pretrained:
        lr, run_dir, val = shipped_pick(arch, task)
    else:
        lr, run_dir, val = sweep_pick(arch, task, models, out, mode, progress)
    config = run_config(size, task, model_spec(size, models, arch, task), lr)
    model, _ = load_model(run_dir, config)
    test = make_eval_set(config)
    return (
        {
            "lr": lr,
            "validation": val,
            "parameters": model.num_parameters(),
            "flops": model.forward_flops(config.points),
            "model": model_spec(size, models, arch, task),
        }
        | train_info(run_dir)
        | score(model, test, config)
    )


def task_entry(task: str, size: dict, config: Config) -> dict:
    """What a task's results hold beside its runs: metric, window, chance and the baselines' numbers."""
    evalset = make_eval_set(config)
    start = window(evalset)
    estimators = [make_estimator(b) for b in size["tasks"][task]["baselines"]]
    errors = estimator_errors(estimators, evalset, config.eval.batch_size) if estimators else {}
    return {
        "metric": evalset.metric,
        "window_start": start,
        "points": evalset.targets.shape[1],
        "dims": config.dims,
        "chance": chance(evalset),
        "baselines": {name: summary(e, start) for name, e in errors.items()},
        "runs": {},
    }


def run(out: Path, mode: str, pretrained: bool, progress: bool) -> dict:
    started = time.perf_counter()
    size = SIZES[mode]
    models = models_of(size)
    tasks = {}
    for task in size["tasks"]:
        first = run_config(size, task, next(iter(models.values()))["model"], size["lrs"][0])
        tasks[task] = task_entry(task, size, first)
        for arch in size["architectures"]:
            tasks[task]["runs"][arch] = train_and_pick(arch, task, models, out, mode, pretrained, progress)
    results = {
        "mode": mode,
        "parameters": size["parameters"],
        "lrs": size["lrs"],
        "architectures": models,
        "tasks": tasks,
        "seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write_json(out / NAME / "results.json", results)
    draw(results, out / NAME)
    return {"checks": check_results(results), "seconds": results["seconds"]}


def number(r: dict, task: str, arch: str) -> float:
    return r["tasks"][task]["runs"][arch]["window"]


def best(r: dict, task: str) -> float:
    """The best (least) number of any architecture on the task."""
    return min(run["window"] for run in r["tasks"][task]["runs"].values())


def passes(r: dict, task: str, arch: str) -> bool:
    """Within 15 % (or MARGIN) of the best architecture's number on the task, and BELOW_CHANCE under chance."""
    value, top = number(r, task, arch), best(r, task)
    return value <= top + max(0.15 * top, MARGIN) and value <= r["tasks"][task]["chance"] - BELOW_CHANCE


def _missing(r: dict, tasks: tuple[str, ...], archs: tuple[str, ...]) -> str | None:
    for task in tasks:
        if task not in r["tasks"]:
            return f"task '{task}' is not in this scale"
        for arch in archs:
            if arch not in r["tasks"][task]["runs"]:
                return f"architecture '{arch}' is not in this scale"
    return None


def _ahead(r: dict, task: str, first: str, second: str, what: str) -> dict:
    claim = (
        f"{first} ahead of {second} on {what} (lower {_metric_name(r, task)} over the window, by more than "
        f"{AHEAD_SE:g} standard errors of the difference)"
    )
    missing = _missing(r, (task,), (first, second))
    if missing:
        return check(claim, False, missing)
    a, b = (r["tasks"][task]["runs"][x] for x in (first, second))
    gap = AHEAD_SE * math.hypot(a["se"], b["se"])  # unpaired: conservative while errors on shared prompts correlate
    detail = f"{first} {a['window']:.3f} ± {a['se']:.3f}, {second} {b['window']:.3f} ± {b['se']:.3f}"
    return check(claim, a["window"] < b["window"] - gap, detail + f" (needs a gap above {gap:.3f})")


def _metric_name(r: dict, task: str) -> str:
    metric = r["tasks"].get(task, {}).get("metric")  # a task not in the scale: its check fails saying so
    return {"recall": "recall error", "sign": "0-1 error"}.get(metric, "error")


def check_results(r: dict) -> list[dict]:
    archs = tuple(r["architectures"])
    checks = []
    claim = f"every architecture near least squares on linear regression (within {NEAR} of it)"
    missing = _missing(r, ("linear",), ())
    if missing or "least_squares" not in r["tasks"]["linear"]["baselines"]:
        checks.append(check(claim, False, missing or "least squares is not among the linear task's baselines"))
    else:
        ls = r["tasks"]["linear"]["baselines"]["least_squares"]["window"]
        values = {a: number(r, "linear", a) for a in archs}
        detail = ", ".join(f"{a} {v:.3f}" for a, v in values.items()) + f"; least squares {ls:.3f}"
        checks.append(check(claim, all(v <= ls + NEAR for v in values.values()), detail))
    checks.append(_ahead(r, "sparse_parity", "mamba", "transformer", "sparse parity"))
    checks.append(_ahead(r, "vector_mqar", "transformer", "mamba", "vector MQAR"))
    checks.append(_ahead(r, "decision_tree", "transformer", "mamba", "decision trees"))
    claim = (
        f"MambaFormer passes every task (within 15 % or {MARGIN} of the best architecture, and {BELOW_CHANCE} "
        "below chance)"
    )
    missing = _missing(r, tuple(r["tasks"]), ("mambaformer",))
    if missing:
        checks.append(check(claim, False, missing))
    else:
        failed = [t for t in r["tasks"] if not passes(r, t, "mambaformer")]
        detail = "; ".join(
            f"{t}: {number(r, t, 'mambaformer'):.3f} (best {best(r, t):.3f}, chance {r['tasks'][t]['chance']:.2f})"
            for t in (failed or r["tasks"])
        )
        checks.append(check(claim, not failed, ("fails " if failed else "") + detail))
    return checks


def draw(r: dict, folder: Path) -> list[Path]:
    """One panel per task: every architecture's error at each position of the window's prompt (vector MQAR: at
    its queries), with the baselines dashed."""
    tasks = list(r["tasks"])
    cols = min(3, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), dpi=120, squeeze=False)
    for ax, task in zip(axes.flat, tasks, strict=False):
        entry = r["tasks"][task]
        start = entry["window_start"] if entry["metric"] == "recall" else 0
        series = list(entry["runs"].items()) + list(entry["baselines"].items())
        for i, (name, s) in enumerate(series):
            curve = s["curve"][start:]
            model = name in entry["runs"]
            label = f"{name} (lr {s['lr']:g})" if model else name
            ax.plot(range(start, start + len(curve)), curve, label=label, **series_style(i, model, len(curve)))
        reference_line(ax, y=entry["chance"], label="chance")
        fit_y(ax)
        finish(ax, "k (examples before the query)", _metric_name(r, task), task.replace("_", " "), fontsize=7)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    fig.suptitle(f"Architectures at about {r['parameters']:,} parameters, best of {len(r['lrs'])} learning rates")
    fig.tight_layout()
    return [save_figure(fig, folder / "architectures.png")]


def mark(value: bool | None) -> str:
    return "—" if value is None else "✓" if value else "✗"


def tables(r: dict) -> list[str]:
    tasks, archs = list(r["tasks"]), list(r["architectures"])
    rows = []
    for arch in archs:
        cells = [arch]
        for task in tasks:
            ours = passes(r, task, arch)
            paper = PAPER.get(arch, {}).get(task)
            agree = "" if paper is None else " =" if paper == ours else " ≠"
            cells.append(f"{number(r, task, arch):.3f} {mark(ours)} (paper {mark(paper)}{agree})")
        rows.append(cells)
    for name in sorted({b for t in tasks for b in r["tasks"][t]["baselines"]}):
        rows.append([name] + [_baseline_cell(r, t, name) for t in tasks])
    rows.append(["chance (no examples)"] + [f"{r['tasks'][t]['chance']:.2f}" for t in tasks])
    runs = [
        [arch, r["architectures"][arch]["model"]["width"], r["architectures"][arch]["parameters"]]
        + [f"{r['tasks'][t]['runs'][arch]['flops']:,}" for t in tasks]
        + [" / ".join(f"{r['tasks'][t]['runs'][arch]['lr']:g}" for t in tasks)]
        for arch in archs
    ]
    return [
        "Each architecture's number on each task, over the window (vector MQAR: the 0-1 recall error at the queries; "
        "sparse parity: the 0-1 sign error; regression: squared error / E[y^2]) at the learning rate the validation "
        f"prompts picked; ✓ = passes (within 15 % or {MARGIN} of the best architecture and {BELOW_CHANCE} below "
        "chance), beside Park et al.'s Table 1 mark (= agrees, ≠ disagrees, — not in their table):",
        "",
        *table(["architecture"] + tasks, rows),
        "",
        "Matched sizes: the width whose parameter count (on the first task) is closest to the target, FLOPs of one "
        "forward pass over one prompt (matrix products, `model.forward_flops`), and the learning rate picked per "
        "task (in the tasks' order):",
        "",
        *table(["architecture", "width", "parameters"] + [f"FLOPs {t}" for t in tasks] + ["lr picked"], runs),
        "",
    ]


def _baseline_cell(r: dict, task: str, name: str) -> str:
    baselines = r["tasks"][task]["baselines"]
    return f"{baselines[name]['window']:.3f}" if name in baselines else "—"


def section(folder: Path, stored: dict) -> list[str]:
    r = json.loads((folder / "results.json").read_text())
    entries = [run for t in r["tasks"].values() for run in t["runs"].values()]
    trained = len(entries) * len(r["lrs"])
    footer = (
        f"{trained} runs ({len(r['architectures'])} architectures x {len(r['tasks'])} tasks x {len(r['lrs'])} "
        f"learning rates), {entries[0]['steps']} steps each; the {len(entries)} picked models trained "
        f"{sum(e['train_seconds'] for e in entries):.0f} s in all; this run (training what it had to, scoring) took "
        f"{r['seconds']:.0f} s. Numbers: `{folder.name}/results.json`."
    )
    return section_lines(RECIPE, folder, draw(r, folder), check_results(r), stored | {"tables": tables(r)}, footer)


RECIPE = Recipe(
    name=NAME,
    title="Architectures: transformer, Mamba and MambaFormer on the same in-context tasks",
    claim=(
        "At matched size, Mamba is on par with the transformer on linear regression, better on sparse parity, and "
        "worse on decision trees and vector-valued multi-query associative recall; the hybrid MambaFormer (a Mamba "
        "block in place of the position embedding, then attention and Mamba blocks in turn) succeeds on every "
        "task (Park et al. 2024, Table 1: d = 20, 500k Adam steps, batch 64)."
    ),
    differences=(
        "CPU-sized: d = 5 to 8 instead of 20 (10 for parity), 300 (quick) or 1,000 (full) steps instead of 500k, "
        "models of about 16k (quick) or 40k (full) parameters instead of Park et al.'s 2-layer, width-128 "
        "transformer and 4-layer Mamba (2 layers here), no curriculum, and a 3-rate learning-rate sweep per "
        "architecture and task picked on validation prompts (Park et al. fix one rate per task). Vector MQAR has "
        "several queries per prompt (theirs: one) and its values enter as y tokens after each key, one prompt "
        "layout for every task. Table 1's marks are checked as shapes (who is ahead), not as the paper's thresholds."
    ),
    modes=SCALES,
    plan=plan,
    run=run,
    check=check_results,
    draw=draw,
    section=section,
    shipped=True,  # each sweep's pick ships (pretrained/architectures-ARCH-TASK: scripts/ship_pretrained.py)
)
