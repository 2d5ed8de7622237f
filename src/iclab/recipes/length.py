"""Length generalisation (Lee et al. 2024, Lin et al. 2025): trained on linear-regression prompts of n points, how
far past n does each positional scheme and architecture stay at least squares' level?

Every model is built for the longest evaluation prompt (the largest factor times n points) and trained on prompts
of n points only (a curriculum that holds the prompt length at n), as Lee et al. build theirs (ivnle/synth-icl,
sweeps/linear_regression.yaml: trained on 32 points with max_seq_len 4,096 tokens, evaluated at 1,024 points). A
learned position table then has rows past the 2n training tokens that no gradient ever reached (they keep their
initialisation, shrunk only by AdamW's decoupled weight decay), and the recipe measures what the model does with
them. Built at its training length instead, the same model refuses longer prompts in one line (config.py); the
recipe records that message beside its numbers.

One evaluation set of the longest length scores every factor: the models are causal (tests/test_architectures.py),
so the prediction at position k reads the first k examples only, as in a prompt cut at f n points.

Error at factor f: the normalised squared error (squared error / E[y^2], the curves' metric) averaged over the
positions k = f n / 2 .. f n - 1, the examples that doubling the length added (at 1x: the second half of the
training length). A model is at least squares' level at f when that error is at most `tolerance` (0.05) above
least squares' on the same positions: an absolute difference of normalised errors. Its longest factor is the
largest f up to which it stays there at every factor (0: not even at its training length).

Comparable sizes: the first model of the scale file has `layers` and `width`; every other model has the same
layers and the width (a multiple of 8) whose trained parameter count (the model built at n points) is closest to
the first model's.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..baselines import make_estimator
from ..config import Config, Curriculum
from ..errors import UserError
from ..evaluation.curves import ModelEstimator, estimator_errors
from ..files import atomic_write_json
from ..markdown import table
from ..models import ModelConfig
from ..plotting import finish, fit_y, plt, reference_line, save_figure, series_style
from ..scoring import make_eval_set
from ..spec import key_error
from ..training.runs import load_model
from .common import check, section_lines
from .dryrun import Planned, icl_run
from .recipe import Recipe
from .sizes import SCALES, Sizes, Trained, training_config
from .trained import ensure_study_model, train_info

NAME = "length"
WIDTH_STEP = 8  # candidate widths are multiples of this (every family's heads divide it)
PLATEAU = 0.01  # "plateaus": its error at the longest factor is at most this much below its error at 1x


@dataclass
class LengthSize(Trained):
    factors: list[int] = field(default_factory=lambda: [1, 2, 4, 8])  # evaluation lengths / the training length
    layers: int = field(default=2, metadata={"min": 1})  # every model's
    width: int = field(default=32, metadata={"min": 1})  # the first model's; the others' match its parameters
    match: bool = True  # false: every model at `width` (Lee et al.'s d_model 64 for every architecture)
    models: dict[str, dict] = field(default_factory=dict)  # name -> its model section without layers and width
    tolerance: float = field(default=0.05, metadata={"gt": 0.0})  # "at least squares' level": error difference

    def check(self, prefix: str) -> None:
        check_factors(self.factors, "factors")
        if not self.models:
            raise key_error("models", "name at least one model, e.g. nope: {name: transformer, positions: none}")
        for name, spec in self.models.items():
            if {"layers", "width"} & set(spec):
                raise key_error(
                    f"models.{name}",
                    "takes no layers or width: they are the scale's `layers` and "
                    "`width` (the width matched to the first model's parameters)",
                )


def check_factors(factors: list, key: str) -> None:
    """Length factors are whole multiples of the training length, 1 (the training length itself) first, rising."""
    for i, f in enumerate(factors):
        if isinstance(f, bool) or not isinstance(f, int) or f < 1:
            raise key_error(
                f"{key}[{i}]",
                f"a length factor is a positive whole multiple of the training points (1, 2, 4, 8, ...), got {f!r}",
            )
    if not factors or factors[0] != 1 or factors != sorted(set(factors)):
        raise key_error(key, f"must start at 1 (the training length) and rise, e.g. [1, 2, 4, 8]; got {factors}")


SIZES = Sizes(NAME, LengthSize)  # scales/length/SCALE.yaml


def training_points(size: dict) -> int:
    """n: the points per training prompt (the scale's `points`)."""
    return training_config(size).points


def model_spec(size: dict, name: str, width: int) -> dict:
    return {"layers": size["layers"], "width": width} | size["models"][name]


def trained_parameters(spec: dict, dims: int, points: int) -> int | None:
    """The parameters of model `spec` built for `points` (on the meta device: nothing is allocated); None where
    the family refuses the shape (e.g. a width its heads do not divide)."""
    try:
        config = ModelConfig.from_spec(spec)
    except UserError:
        return None
    with torch.device("meta"):
        return config.build(dims, points).num_parameters()


def matched_widths(size: dict) -> dict[str, int]:
    """Each model's width: the first model's `width`, and (with `match`) for every other model the multiple of
    WIDTH_STEP whose trained parameter count is closest to the first model's (parameters grow with the width, so
    the search stops once past it)."""
    dims, n = training_config(size).dims, training_points(size)
    names = list(size["models"])
    target = trained_parameters(model_spec(size, names[0], size["width"]), dims, n)
    if target is None:
        raise UserError(f"model '{names[0]}' cannot be built at width {size['width']}: see `iclab list models`")
    widths = {name: size["width"] for name in names}
    for name in names[1:] if size["match"] else []:
        best, best_gap, width = None, None, WIDTH_STEP
        while width <= 16 * size["width"]:
            count = trained_parameters(model_spec(size, name, width), dims, n)
            if count is not None:
                if best_gap is None or abs(count - target) < best_gap:
                    best, best_gap = width, abs(count - target)
                if count > target:
                    break
            width += WIDTH_STEP
        if best is None:
            raise UserError(f"model '{name}' builds at no width that is a multiple of {WIDTH_STEP}: check its keys")
        widths[name] = best
    return widths


def model_config(size: dict, name: str, width: int) -> Config:
    """Model `name` built for the longest evaluation prompt, trained on prompts of n points, evaluated at the
    longest length."""
    n, top = training_points(size), max(size["factors"])
    held = {"start": n, "end": n, "inc": 0}
    extra = {"model": model_spec(size, name, width), "points": top * n, "curriculum.points": held}
    return training_config(size, extra | {"eval.points": top * n})


def configs(mode: str) -> dict[str, Config]:
    size = SIZES[mode]
    return {name: model_config(size, name, width) for name, width in matched_widths(size).items()}


def run_name(name: str) -> str:
    return f"length-{name}"


def plan(mode: str) -> list[Planned]:
    return [icl_run(f"models/{mode}/{run_name(name)}", config) for name, config in configs(mode).items()]


def refusal(config: Config, n: int) -> str | None:
    """What the model built at its training length n says to a prompt of the longest length: the one-line error
    of a learned position table, or None where it takes any length."""
    short = dataclasses.replace(config, points=n, curriculum=Curriculum())
    try:
        short.check("")
    except UserError as e:
        return str(e)
    return None


def run(out: Path, mode: str, pretrained: bool, progress: bool) -> dict:
    started, scoring = time.perf_counter(), 0.0
    size = SIZES[mode]
    n = training_points(size)
    models, least_squares = [], None
    for name, config in configs(mode).items():
        run_dir = ensure_study_model(run_name(name), config, out, mode, pretrained, progress)
        model, _ = load_model(run_dir, config)
        scored = time.perf_counter()
        evalset = make_eval_set(config)  # the same prompts for every model (their configs differ in the model only)
        estimators = [ModelEstimator(model)] + ([make_estimator("least_squares")] if least_squares is None else [])
        errors = list(estimator_errors(estimators, evalset, config.eval.batch_size).values())
        least_squares = least_squares or errors[1].mean(0).tolist()
        scoring += time.perf_counter() - scored
        spec = dataclasses.asdict(config.model)
        models.append(
            {"name": name, "model": spec, "parameters": trained_parameters(spec, config.dims, n)}
            | {"refusal": refusal(config, n), "errors": errors[0].mean(0).tolist()}
            | train_info(run_dir)
        )
    results = {
        "mode": mode,
        "dims": config.dims,
        "points": n,
        "factors": size["factors"],
        "tolerance": size["tolerance"],
        "least_squares": least_squares,
        "models": models,
        "scoring_seconds": round(scoring, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write_json(out / NAME / "results.json", results)
    draw(results, out / NAME)
    return {"checks": check_results(results), "seconds": results["seconds"]}


def factor_error(errors: list[float], factor: int, n: int) -> float:
    """Mean error over the positions k = factor n / 2 .. factor n - 1 (the ones doubling the length added)."""
    window = errors[factor * n // 2 : factor * n]
    return sum(window) / len(window)


def excess(r: dict, entry: dict, factor: int) -> float:
    """The model's error above least squares' at `factor`."""
    n = r["points"]
    return factor_error(entry["errors"], factor, n) - factor_error(r["least_squares"], factor, n)


def longest(r: dict, entry: dict) -> int:
    """The largest factor up to which the model stays within `tolerance` of least squares at every factor (0: not
    even at 1x, its training length)."""
    reached = 0
    for factor in r["factors"]:
        if excess(r, entry, factor) > r["tolerance"]:
            break
        reached = factor
    return reached


def times(factor: int) -> str:
    return f"{factor}x" if factor else "none"


def check_results(r: dict) -> list[dict]:
    n, top, tol = r["points"], max(r["factors"]), r["tolerance"]
    after = r["factors"][1] if len(r["factors"]) > 1 else 1  # the first length past the training length
    models = r["models"]

    def errs(m: dict) -> str:
        return f"{m['name']} {factor_error(m['errors'], 1, n):.3f} -> {factor_error(m['errors'], top, n):.3f}"

    flat = [m for m in models if factor_error(m["errors"], top, n) >= factor_error(m["errors"], 1, n) - PLATEAU]
    limited = [m for m in models if ModelConfig.from_spec(m["model"]).length_limited]
    reached = {m["name"]: longest(r, m) for m in models}
    at_top = [name for name, f in reached.items() if f == top]
    closest = min(models, key=lambda m: excess(r, m, top))
    return [
        check(
            f"at the training length (1x = {n} points) every model is within {tol:g} of least squares",
            all(reached[m["name"]] >= 1 for m in models),
            ", ".join(f"{m['name']} {excess(r, m, 1):+.3f}" for m in models) + " (error minus least squares')",
        ),
        check(
            f"Lee et al.: past the training length most models plateau or degrade: error at {top}x at or above "
            f"error at 1x (less {PLATEAU:g})",
            2 * len(flat) > len(models),
            f"{len(flat)} of {len(models)} do; error at 1x -> {top}x: " + ", ".join(errs(m) for m in models),
        ),
        check(
            "a learned position table refuses prompts past its length, and with rows past the training length "
            f"that were never trained it leaves least squares' level (by more than {tol:g}) before {top}x",
            bool(limited) and all(m["refusal"] and reached[m["name"]] < top for m in limited),
            "; ".join(
                f"{m['name']}: {'refuses' if m['refusal'] else 'does not refuse'} when built at {n} points; with "
                f"untrained rows {excess(r, m, after):+.3f} at {after}x, {excess(r, m, top):+.3f} at {top}x "
                f"(longest {times(reached[m['name']])})"
                for m in limited
            )
            or "no learned-position model in this scale",
        ),
        check(
            f"the goal: at least one scheme or architecture stays within {tol:g} of least squares up to {top}x "
            "the training length",
            bool(at_top),
            (f"{', '.join(at_top)} (" if at_top else "none; closest ")
            + f"{closest['name']} {excess(r, closest, top):+.3f} at {top}x"
            + (")" if at_top else ""),
        ),
    ]


def draw(r: dict, folder: Path) -> list[Path]:
    """Every model's error against k = 1 .. top n - 1 on one log-log plot (k = 0, no example yet, is left out),
    least squares beside them, the training length marked; the legend gives each model's longest factor."""
    n, top = r["points"], max(r["factors"])
    fig, ax = plt.subplots(figsize=(8.4, 4.2), dpi=120)
    ks = range(1, top * n)
    for i, m in enumerate(r["models"]):
        ax.plot(ks, m["errors"][1:], label=f"{m['name']} ({times(longest(r, m))})", **series_style(i, False, len(ks)))
    ax.plot(ks, r["least_squares"][1:], label="least squares", color="black", lw=1.2)
    reference_line(ax, x=n, label=f"training length ({n} points)")
    ax.set_xscale("log", base=2)
    ax.set_xticks([f * n for f in r["factors"]] + [max(1, n // 2)])
    ax.set_yscale("log")
    fit_y(ax, floor=1e-3)  # least squares is exact (1e-14) from k = d on: the floor keeps the models in view
    title = f"trained on {n} points (d = {r['dims']}); in brackets: longest length within {r['tolerance']:g}"
    finish(ax, "in-context examples k", "error (normalised)", title, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return [save_figure(fig, folder / "length.png")]


def tables(r: dict) -> list[str]:
    n, tol = r["points"], r["tolerance"]
    rows = []
    for m in r["models"]:
        spec = ", ".join(f"{k}={v}" for k, v in m["model"].items() if k in ("name", "positions", "width"))
        marks = [f"{excess(r, m, f):+.3f} {'✓' if excess(r, m, f) <= tol else '✗'}" for f in r["factors"]]
        rows.append([m["name"], spec, m["parameters"], m["steps"], *marks, times(longest(r, m))])
    ls = ["least squares", "", "", "", *[factor_error(r["least_squares"], f, n) for f in r["factors"]], ""]
    header = ["model", "architecture", "parameters", "steps", *[f"{f}x ({f * n} pts)" for f in r["factors"]]]
    refusals = [f"- {m['name']}, built at {n} points: {m['refusal']}" for m in r["models"] if m["refusal"]]
    refused = ["What a learned position table does when built at the training length:", "", *refusals, ""]
    return [
        f"Error above least squares' at each factor (mean normalised squared error over k = f n / 2 .. f n - 1, "
        f"n = {n}), ✓ within {tol:g}; the least-squares row is its own error there; the last column is the longest "
        "length within it at every factor up to it:",
        "",
        *table([*header, "longest"], rows + [ls]),
        "",
        *(refused if refusals else []),
    ]


def section(folder: Path, stored: dict) -> list[str]:
    r = json.loads((folder / "results.json").read_text())
    trained = sum(m["train_seconds"] for m in r["models"])
    footer = (
        f"{len(r['models'])} models, {trained:.0f} s of training; scoring {r['scoring_seconds']:.0f} s. "
        f"Numbers: `{folder.name}/results.json`."
    )
    return section_lines(RECIPE, folder, draw(r, folder), check_results(r), stored | {"tables": tables(r)}, footer)


RECIPE = Recipe(
    name=NAME,
    title="Length generalisation: positional schemes and recurrent models past their training length",
    claim=(
        "Trained on linear-regression prompts of one length, every architecture learns in context, but all plateau "
        "or degrade when given many more examples than in training (Lee et al. 2024, 'Is attention required for "
        "ICL?': 32 training points, evaluated up to 1,024); learned positions fail past the 40 training examples, "
        "while the best positional scheme stays accurate at more than 8x the training length (Lin et al. 2025)."
    ),
    differences=(
        "Quick: d = 1 and 8 training points, 2 layers of width 32 (or the width with as many parameters), 3,000 "
        "steps; full: d = 3 and 12 points, 3 layers of width 48, 5,000 steps; Lee et al.: d = 5, 10 and 20, 32 "
        "points, width 64 for every architecture, 4 to 12 layers, 100k steps, evaluated to 32x (here 8x; the paper "
        "scale goes to 32x). One learning rate per scale, not their sweep of three, and one seed, not three. "
        "The learned-position model is iclab's transformer with GPT-2's initialisation (HF GPT-2 at the paper "
        "scale), built, as theirs, with a table longer than its training prompts; NoPE is the same transformer "
        "without positions; ALiBi (BLOOM) and MambaFormer are not in Lee et al.'s sweep."
    ),
    modes=SCALES,
    plan=plan,
    run=run,
    check=check_results,
    draw=draw,
    section=section,
    shipped=True,  # its full-size models ship (pretrained/length-*: scripts/ship_pretrained.py --only length)
)
