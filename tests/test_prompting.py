"""Garg et al.'s prompting strategies: each construction checked on hand-built prompts against its definition,
the per-position scoring against known values, and the option through the API, sweeps and the CLI."""

import csv
import math

import pytest
import torch
from conftest import TINY

from iclab.baselines import LeastSquares, make_estimator
from iclab.baselines.base import Estimator
from iclab.cli.commands import main
from iclab.config import load_config
from iclab.errors import UserError
from iclab.evaluation.curves import (
    ModelEstimator,
    bootstrap_band,
    estimator_errors,
    evaluate,
    make_eval_set,
)
from iclab.evaluation.sweeps import run_sweep
from iclab.tasks import make_inputs, make_task, sample_prompts
from iclab.tasks.prompting import make_prompting
from iclab.training.runs import build_model
from iclab.training.trainer import train

STRATEGIES = ["standard", "random_quadrants", "opposite_quadrants", "orthogonal_train_test", "overlapping_train_test"]


def split(name, xs, seed=0):
    return make_prompting(name).split(xs, torch.Generator().manual_seed(seed))


# ---- the constructions, on hand-built prompts


def test_random_quadrants_puts_all_demos_in_one_orthant_and_keeps_the_query(gen):
    xs = torch.randn(64, 9, 4, generator=gen)
    demos, queries = split("random_quadrants", xs)
    signs = torch.sign(demos)
    assert (signs == signs[:, :1]).all()  # every demonstration of a prompt in the same orthant
    assert torch.equal(demos.abs(), xs.abs()) and torch.equal(queries, xs)  # the query: the unrestricted x
    patterns = {tuple(s.tolist()) for s in signs[:, 0]}
    assert len(patterns) > 8  # one pattern per prompt, not one for all (16 orthants in d = 4)
    assert 0.3 < (signs[:, 0] > 0).double().mean() < 0.7


def test_opposite_quadrants_puts_the_query_in_the_opposite_orthant(gen):
    xs = torch.randn(32, 7, 3, generator=gen)
    demos, queries = split("opposite_quadrants", xs)
    assert (torch.sign(demos) == torch.sign(demos[:, :1])).all()
    assert (torch.sign(queries) == -torch.sign(demos[:, :1])).all()
    assert torch.equal(queries.abs(), xs.abs())


def test_orthogonal_query_on_a_known_prompt():
    xs = torch.tensor([[[1.0, 1, 0], [1, 0, 0], [1, 2, 3], [5, 5, 5]]])
    demos, queries = split("orthogonal_train_test", xs)
    assert torch.equal(demos, xs)
    s = 1 / math.sqrt(2)
    expected = [[1, 1, 0], [s, -s, 0], [0, 0, math.sqrt(14)]]  # x - its projection on the span, at |x|
    assert torch.allclose(queries[0, :3], torch.tensor(expected), atol=1e-6)
    assert make_prompting("orthogonal_train_test").positions(points=4, dims=3) == 3  # k < d only
    assert make_prompting("orthogonal_train_test").positions(points=2, dims=3) == 2


def test_orthogonal_query_is_orthogonal_to_earlier_demos_at_its_own_norm(gen):
    d = 8
    xs = torch.randn(16, 11, d, generator=gen)
    _, queries = split("orthogonal_train_test", xs)
    for i in range(d):
        q, x = queries[:, i].double(), xs[:, i].double()
        assert torch.allclose(q.norm(dim=-1), x.norm(dim=-1), rtol=1e-5)
        if i:
            earlier = xs[:, :i].double()
            assert (torch.einsum("bjd,bd->bj", earlier, q).abs() <= 1e-5 * q.norm(dim=-1, keepdim=True)).all()
            # the direction of x minus its projection on the span (projection by the pseudo-inverse)
            coefficients = (torch.linalg.pinv(earlier.mT) @ x.unsqueeze(-1))[..., 0]
            residual = x - torch.einsum("bjd,bj->bd", earlier, coefficients)
            cosine = torch.nn.functional.cosine_similarity(q, residual)
            assert torch.allclose(cosine, torch.ones_like(cosine), atol=1e-5)
        else:
            assert torch.equal(queries[:, 0], xs[:, 0])  # nothing to be orthogonal to


def test_overlapping_query_is_a_copy_of_one_earlier_demo(gen):
    xs = torch.randn(3000, 6, 2, generator=gen)
    demos, queries = split("overlapping_train_test", xs)
    assert torch.equal(demos, xs) and torch.equal(queries[:, 0], xs[:, 0])
    for i in range(1, 6):
        same = (queries[:, i : i + 1] == xs).all(-1)  # (prompts, points): which demos the query copies
        assert (same[:, :i].sum(1) == 1).all() and not same[:, i:].any()
    chosen = (queries[:, 4:5] == xs[:, :4]).all(-1).double().mean(0)
    assert torch.allclose(chosen, torch.full((4,), 0.25, dtype=torch.float64), atol=0.04)  # uniform over 4


def test_unknown_strategy_is_a_one_line_error_with_a_suggestion():
    with pytest.raises(UserError, match=r"unknown prompting strategy 'random_quadrant' \(did you mean 'random_qua"):
        make_prompting("random_quadrant")
    with pytest.raises(UserError, match="allowed: opposite_quadrants, orthogonal_train_test"):
        evaluate(None, load_config(None, ["eval.prompts=4"]), baselines=[], prompting="orthogonal")


# ---- evaluation sets and scoring


def test_standard_gives_exactly_the_plain_curves():
    config = load_config(None, ["eval.prompts=50", "eval.bootstrap=30"])
    plain = evaluate(None, config, baselines=["least_squares", "knn"])
    assert evaluate(None, config, baselines=["least_squares", "knn"], prompting="standard") == plain
    # an independent computation of the plain curve: the seeded prompts, least squares, error / E[y^2]
    task, inputs = make_task(config.task, config.dims), make_inputs(config.inputs, config.dims)
    xs, ys, params = sample_prompts(task, inputs, 50, config.points, torch.Generator().manual_seed(config.eval.seed))
    errors = (LeastSquares().predict(xs, ys).double() - ys.double()).square() / task.y_scale(params).double()[:, None]
    mean, lo, hi = bootstrap_band(errors, 30, config.eval.confidence, seed=config.eval.seed)
    rows = [r for r in plain if r["estimator"] == "least_squares"]
    assert [r["task"] for r in rows] == ["linear"] * config.points
    assert [r["mean"] for r in rows] == mean.tolist() and [r["hi"] for r in rows] == hi.tolist()


def test_labels_and_query_outputs_are_the_functions_values():
    config = load_config(None, ["eval.prompts=10"])
    plain = make_eval_set(config, prompting="random_quadrants")
    assert plain.label == "linear@random_quadrants" and plain.positions == config.points
    shifted = make_eval_set(config, shift="scaled_y:factor=3", prompting="random_quadrants")
    assert shifted.label == "linear@scaled_y:factor=3@random_quadrants"
    assert torch.allclose(shifted.query_ys, 3 * plain.query_ys) and torch.allclose(shifted.ys, 3 * plain.ys)
    # one w per prompt answers demos and query: recover it from d demos and check the query's y
    d = config.dims
    w = torch.linalg.solve(plain.xs[:, :d].double(), plain.ys[:, :d].double().unsqueeze(-1))[..., 0]
    assert torch.allclose((plain.query_xs.double() * w.unsqueeze(1)).sum(-1), plain.query_ys.double(), atol=1e-4)
    assert make_eval_set(config, prompting="orthogonal_train_test").targets.shape == (10, d)


@pytest.mark.parametrize("name", ["random_quadrants", "opposite_quadrants", "overlapping_train_test"])
def test_least_squares_is_exact_from_d_demos_on_any_query(name):
    # the query's y is f(query): noiseless least squares with d demonstrations recovers f wherever the query is
    config = load_config(None, ["eval.prompts=40", "eval.bootstrap=20"])
    rows = evaluate(None, config, baselines=["least_squares"], prompting=name)
    assert all(r["mean"] < 1e-8 for r in rows if r["k"] >= config.dims)
    assert rows[0]["task"] == f"linear@{name}"


def test_least_squares_under_orthogonal_queries_predicts_exactly_zero():
    # the minimum-norm solution lies in the span of the demos and the query is orthogonal to it: prediction 0,
    # so the error is that of predicting 0, E[(w.q)^2] / d = E|q|^2 / d = 1 at every k < d
    config = load_config(None, ["eval.prompts=3000", "dims=5", "points=11"])
    evalset = make_eval_set(config, prompting="orthogonal_train_test")
    errors = estimator_errors([make_estimator("least_squares"), make_estimator("zero")], evalset, batch_size=1000)
    assert errors["least_squares"].shape == (3000, 5)  # k = 0 .. d-1
    assert torch.allclose(errors["least_squares"], errors["zero"], rtol=1e-5, atol=1e-9)
    mean = errors["least_squares"].mean(0)
    assert torch.allclose(mean, torch.ones(5, dtype=torch.float64), atol=0.12)  # standard error ~0.033
    standard = estimator_errors([make_estimator("least_squares")], make_eval_set(config), 1000)["least_squares"]
    assert standard[:, 4].mean() < 0.4  # (d - k) / d = 0.2 on ordinary queries


class Recorder(Estimator):
    """Predicts 0 and keeps every prompt it was asked about."""

    name = "recorder"

    def __init__(self):
        self.calls = []

    def predict(self, xs, ys):
        self.calls.append((xs.clone(), ys.clone()))
        return torch.zeros_like(ys)


def test_every_estimator_sees_the_same_prompts_one_batch_per_position():
    config = load_config(None, ["eval.prompts=10", "points=6", "dims=3"])
    evalset = make_eval_set(config, prompting="opposite_quadrants")
    a, b = Recorder(), Recorder()
    estimator_errors([a, b], evalset, batch_size=4)
    assert len(a.calls) == 3 * 6  # batches of prompts x positions, never one call per prompt
    for (xa, ya), (xb, yb) in zip(a.calls, b.calls, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    xs, ys = a.calls[3]  # first batch, position 3: three demos, then the query with its answer hidden
    assert torch.equal(xs[:, :3], evalset.xs[:4, :3]) and torch.equal(xs[:, 3], evalset.query_xs[:4, 3])
    assert torch.equal(ys[:, :3], evalset.ys[:4, :3]) and (ys[:, 3] == 0).all()


def test_per_position_prompts_of_the_plain_queries_reproduce_one_pass():
    # queries = the prompt's own xs: the per-position batches must give the one-pass predictions (causality)
    config = load_config(None, TINY + ["eval.prompts=12"])
    torch.manual_seed(0)
    model = build_model(config).eval()
    plain = make_eval_set(config)
    per_position = make_eval_set(config)
    per_position.query_xs, per_position.query_ys, per_position.positions = plain.xs, plain.ys, config.points
    estimators = [ModelEstimator(model), make_estimator("least_squares"), make_estimator("knn")]
    one_pass, by_position = estimator_errors(estimators, plain, 5), estimator_errors(estimators, per_position, 5)
    for name, errors in one_pass.items():
        assert torch.allclose(by_position[name], errors, rtol=1e-4, atol=1e-7), name


# ---- the option through sweeps and the CLI


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prompting") / "run"
    train(load_config(None, TINY + ["train.steps=2"]), folder, progress=False)
    return folder


def test_eval_cli_with_prompting(run, capsys):
    for name in ["random_quadrants", "orthogonal_train_test"]:
        assert main(["eval", str(run), "--prompting", name, "--baselines", "least_squares", "--quiet"]) == 0
    with open(run / "eval" / "curves.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["task", "estimator", "k", "mean", "lo", "hi", "icl_score"]
    ks = {t: {int(r["k"]) for r in rows if r["task"] == t} for t in {r["task"] for r in rows}}
    assert ks == {"linear@random_quadrants": set(range(7)), "linear@orthogonal_train_test": set(range(3))}
    assert {r["estimator"] for r in rows} == {"transformer", "least_squares"}
    assert (run / "eval" / "curves-linear_orthogonal_train_test.png").is_file()
    assert "## Evaluation: linear@random_quadrants" in (run / "report.md").read_text()
    capsys.readouterr()
    assert main(["eval", str(run), "--prompting", "overlaping_train_test"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'overlapping_train_test'" in err
    assert main(["list", "prompting"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in STRATEGIES)


def test_sweep_with_prompting(run, tmp_path, capsys):
    rows = run_sweep("shift", [run], ["least_squares"], prompting="overlapping_train_test")
    expected = {"linear@overlapping_train_test", "linear@skewed:power=2@overlapping_train_test"}
    assert {r["task"] for r in rows} >= expected
    assert all(r["task"].endswith("@overlapping_train_test") for r in rows)
    assert main(["sweep", "shift", str(run), "--out", str(tmp_path), "--prompting", "orthogonal_train_test"]) == 0
    assert (tmp_path / "shift.png").is_file()
    with open(tmp_path / "curves.csv") as f:
        assert max(int(r["k"]) for r in csv.DictReader(f)) == 2  # k < d = 3
    with pytest.raises(UserError, match="unknown prompting strategy"):
        run_sweep("shift", [run], prompting="nope")
