"""Evaluation: error against the number of in-context examples, for the transformer and every baseline,
on one fixed, seeded set of prompts, with bootstrap confidence bands.

The error at k is the prediction error for y_{k+1} given k examples, averaged over prompts: squared error
divided by the task's E[y^2] (so predicting 0 scores about 1), or the 0-1 sign error for classification.
Under a prompting strategy (tasks/prompting.py) the query at k comes from another set than the k demonstrations:
every estimator then sees, for each k, one batch of prompts made of k demonstrations and that query.

The ICL score (Campbell et al. 2024) maps an error onto the scale from the zero predictor (0) to the Bayes
oracle (1): (err_zero - err) / (err_zero - err_oracle). It is computed from the rows of `zero` and of an oracle
fitted to the evaluated task (ORACLES) when curves.csv is written (its `icl_score` column, empty where either row
is missing), and again from the rows when a report is rendered, so older CSVs without the column score too.
Evaluating with the config's baselines adds `posterior_mean` by itself where it is exact and cheap, when `zero` is
among them.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from ..baselines import Estimator, make_estimator
from ..baselines.bayes import CHEAP_PARTS, exact_prior, prior_parts
from ..config import Config
from ..errors import UserError
from ..files import atomic_write_text
from ..models import MODELS
from ..scoring import EvalSet, make_eval_set, prompt_errors
from ..tasks import FunctionClass

CURVE_COLUMNS = ["task", "estimator", "k", "mean", "lo", "hi", "icl_score"]
ORACLES = ("posterior_mean", "bayes")  # estimator labels fitted to the evaluated task's own prior: the score's 1


def bootstrap_band(errors: Tensor, resamples: int, confidence: float, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Mean over prompts and the percentile bootstrap band of that mean, per k."""
    generator = torch.Generator().manual_seed(seed)
    n = errors.shape[0]
    means = torch.empty(resamples, errors.shape[1], dtype=errors.dtype)
    for start in range(0, resamples, 100):  # blocks of resamples bound memory at 100 x prompts x points
        stop = min(start + 100, resamples)
        index = torch.randint(0, n, (stop - start, n), generator=generator)
        means[start:stop] = errors[index].mean(1)
    tail = (1 - confidence) / 2
    q = torch.tensor([tail, 1 - tail], dtype=errors.dtype)
    lo, hi = torch.quantile(means, q, dim=0)
    return errors.mean(0), lo, hi


class ModelEstimator(Estimator):
    """A trained in-context learner behind the estimator interface; its curves are labelled by its architecture
    (`transformer`, `lstm`, ...: is_model_row)."""

    name = "transformer"

    def __init__(self, model: torch.nn.Module):
        self.model, self.param = model, next(model.parameters())
        self.name = self.label = getattr(getattr(model, "config", None), "name", "transformer")

    @torch.no_grad()
    def predict(self, xs, ys):
        return self.model(xs.to(self.param), ys.to(self.param)).to(ys.dtype).cpu()


def predictions(est: Estimator, evalset: EvalSet, rows: slice) -> Tensor:
    """Predictions (prompts in `rows`, scored positions). Standard prompts: one call scores every position.
    Otherwise one call per position k, on prompts of length k + 1: the k demonstrations, then the query (whose
    answer is shown as 0; a causal estimator never reads it)."""
    xs, ys = evalset.xs[rows], evalset.ys[rows]
    if evalset.query_xs is None:
        return est.predict(xs, ys)
    query_xs, blank = evalset.query_xs[rows], torch.zeros_like(evalset.query_ys[rows])
    columns = []
    for k in range(evalset.positions):  # one batch per position, every prompt at once
        prompt_xs = torch.cat([xs[:, :k], query_xs[:, k : k + 1]], 1)
        prompt_ys = torch.cat([ys[:, :k], blank[:, k : k + 1]], 1)
        columns.append(est.predict(prompt_xs, prompt_ys)[:, k])
    return torch.stack(columns, 1)


def estimator_errors(
    estimators: list[Estimator], evalset: EvalSet, batch_size: int, progress: bool = False
) -> dict[str, Tensor]:
    """Errors (prompts, scored positions) of each estimator on the same prompts, computed in batches of prompts."""
    out = {}
    for est in tqdm(estimators, desc="eval", disable=not progress, leave=False):
        est.fit_prior(evalset.task, evalset.inputs, evalset.xs.shape[1])
        preds = torch.cat(
            [predictions(est, evalset, slice(i, i + batch_size)) for i in range(0, len(evalset.xs), batch_size)]
        )
        out[est.label] = prompt_errors(preds, evalset)
    return out


def curve_rows(label: str, errors: dict[str, Tensor], config: Config) -> list[dict]:
    rows = []
    for name, err in errors.items():
        mean, lo, hi = bootstrap_band(err, config.eval.bootstrap, config.eval.confidence, seed=config.eval.seed)
        for k in range(err.shape[1]):
            rows.append(
                {
                    "task": label,
                    "estimator": name,
                    "k": k,
                    "mean": float(mean[k]),
                    "lo": float(lo[k]),
                    "hi": float(hi[k]),
                }
            )
    return rows


def evaluate(
    model: torch.nn.Module | None,
    config: Config,
    task: str | dict | None = None,
    shift: str | dict | None = None,
    baselines: list[str] | None = None,
    progress: bool = False,
    prompting: str | dict | None = None,
) -> list[dict]:
    """Curve rows for the model (if given) and the baselines on one evaluation set; under a `prompting` strategy
    other than 'standard' the task column reads e.g. 'linear@random_quadrants'. With the config's baselines
    (`baselines` None) and no shift, the Bayes oracle joins them where it is exact and cheap (default_oracle)."""
    evalset = make_eval_set(config, task, shift, prompting=prompting)
    names = config.eval.baselines if baselines is None else baselines
    if baselines is None and shift is None:
        names = names + default_oracle(evalset.task, names, config.dims)
    estimators = ([ModelEstimator(model)] if model is not None else []) + [
        make_estimator(name, prefix="--baselines") for name in names
    ]
    return curve_rows(evalset.label, estimator_errors(estimators, evalset, config.eval.batch_size, progress), config)


def default_oracle(task: FunctionClass, names: list[str], dims: int) -> list[str]:
    """['posterior_mean'] when `names` has `zero` but no oracle yet and the task's posterior mean is exact and
    costs at most CHEAP_PARTS batched solves, else []: so that the config's curves carry the ICL score. (Not
    under a shift of the outputs, where the task's own prior no longer describes the prompts: evaluate adds it
    only unshifted.)"""
    if "zero" not in names or any(n in ORACLES for n in names):
        return []
    try:
        return ["posterior_mean"] if prior_parts(exact_prior(task), dims) <= CHEAP_PARTS else []
    except UserError:
        return []


def icl_score(error: float, zero: float, oracle: float) -> float | None:
    """Campbell et al.'s score of `error`: 0 at the zero predictor's error, 1 at the oracle's; None where the
    oracle is not better than zero by more than rounding (e.g. at k = 0, where both predict 0)."""
    return None if zero - oracle <= 1e-9 else (zero - error) / (zero - oracle)


def curve_score(errors: list[float], zero: list[float], oracle: list[float]) -> float | None:
    """The ICL score of a whole curve as Campbell et al.'s code computes it (in-context-learning-2024/in-context,
    src/metrics/score.py): the errors' mean over k against the zero predictor's and the oracle's, a ratio of
    means, not a mean of per-k scores. The three curves share their k."""
    return icl_score(*(sum(c) / len(c) for c in (errors, zero, oracle)))


def _ends(rows: list[dict]) -> dict[tuple, tuple[float, float]]:
    """(sweep, task, k) -> (error of zero, error of the oracle), wherever the rows hold both."""
    by = {(r.get("sweep", ""), r["task"], r["estimator"], r["k"]): r["mean"] for r in rows if not r.get("run")}
    out = {}
    for sweep, task, name, k in by:
        oracle = next((by[sweep, task, o, k] for o in ORACLES if (sweep, task, o, k) in by), None)
        if name == "zero" and oracle is not None:
            out[sweep, task, k] = (by[sweep, task, name, k], oracle)
    return out


def icl_scores(rows: list[dict]) -> dict[tuple, float]:
    """The ICL score of every row whose curve (its task, and sweep point if any) has rows of `zero` and of an
    oracle (ORACLES) at its k, keyed by (sweep, task, series, k) (sweep '' outside sweeps): iclab's per-k reading.
    Absent where the oracle is not better than zero by more than rounding (e.g. at k = 0, where both predict 0)."""
    ends, out = _ends(rows), {}
    for r in rows:
        key = (r.get("sweep", ""), r["task"], r["k"])
        score = icl_score(r["mean"], *ends[key]) if key in ends else None
        if score is not None:
            out[key[0], key[1], series_name(r), key[2]] = score
    return out


def icl_curve_scores(rows: list[dict]) -> dict[tuple, float]:
    """curve_score of every series, keyed by (sweep, task, series), over the k where its curve has rows of `zero`
    and of an oracle (ORACLES)."""
    ends, curves = _ends(rows), {}
    for r in rows:
        key = (r.get("sweep", ""), r["task"], r["k"])
        if key in ends:
            parts = curves.setdefault((key[0], key[1], series_name(r)), ([], [], []))
            for part, value in zip(parts, (r["mean"], *ends[key]), strict=True):
                part.append(value)
    scores = {key: curve_score(*parts) for key, parts in curves.items()}
    return {key: score for key, score in scores.items() if score is not None}


def is_model_row(row: dict) -> bool:
    """Whether a curve row is a trained model's (its estimator an architecture's name), not a baseline's."""
    return row["estimator"] in MODELS.names()


def series_name(row: dict) -> str:
    """A row's series: its run for a sweep's models, else its estimator."""
    return row["run"] if row.get("run") and is_model_row(row) else row["estimator"]


def read_curves(path: Path) -> list[dict]:
    """Rows of a curves CSV (also a sweep's, whose extra columns come through as strings); `icl_score` is a float,
    or None where the file has no score for the row (or no such column)."""
    if not Path(path).is_file():
        return []
    with open(path, newline="") as f:
        return [
            r
            | {"k": int(r["k"]), "mean": float(r["mean"]), "lo": float(r["lo"]), "hi": float(r["hi"])}
            | {"icl_score": float(r["icl_score"]) if r.get("icl_score") else None}
            for r in csv.DictReader(f)
        ]


def write_curves(path: Path, rows: list[dict], columns: list[str] = CURVE_COLUMNS) -> None:
    """Write `rows` as CSV, atomically; with an `icl_score` column, each row's score from the rows themselves
    (icl_scores), empty where they hold no `zero` or oracle row for its curve."""
    scores = icl_scores(rows) if "icl_score" in columns else {}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        if "icl_score" in columns:
            row = row | {"icl_score": scores.get((row.get("sweep", ""), row["task"], series_name(row), row["k"]))}
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def merge_curves(path: Path, rows: list[dict]) -> list[dict]:
    """Replace the rows of the tasks in `rows` in the CSV at `path`, keeping other tasks' rows."""
    tasks = {r["task"] for r in rows}
    merged = [r for r in read_curves(path) if r["task"] not in tasks] + rows
    write_curves(path, merged)
    return merged


def curve_value(rows: list[dict], task: str, estimator: str, k: int) -> float:
    for r in rows:
        if r["task"] == task and r["estimator"] == estimator and r["k"] == k:
            return r["mean"]
    raise KeyError(f"no curve row for task={task}, estimator={estimator}, k={k}")
