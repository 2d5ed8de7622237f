"""The ICL score: zero maps to 0 and the Bayes oracle to 1, from stored rows; evaluation adds the oracle where it
is exact and cheap; reports show the score where the rows exist and stay as before where they do not."""

import pytest
from conftest import TINY

from iclab.config import load_config
from iclab.evaluation.curves import default_oracle, evaluate, icl_scores, read_curves, write_curves
from iclab.evaluation.report import render_report, score_table
from iclab.tasks import make_task
from iclab.training.trainer import train


def row(estimator, k, mean, task="linear", **extra):
    return {"task": task, "estimator": estimator, "k": k, "mean": mean, "lo": mean, "hi": mean} | extra


def test_score_is_zero_for_zero_one_for_the_oracle_and_linear_between():
    rows = [row("zero", 0, 1.0), row("posterior_mean", 0, 1.0), row("transformer", 0, 1.0)]
    rows += [row("zero", 3, 1.0), row("posterior_mean", 3, 0.2), row("transformer", 3, 0.6), row("knn", 3, 1.4)]
    scores = icl_scores(rows)
    assert scores[("", "linear", "zero", 3)] == 0 and scores[("", "linear", "posterior_mean", 3)] == 1
    assert scores[("", "linear", "transformer", 3)] == pytest.approx(0.5)
    assert scores[("", "linear", "knn", 3)] == pytest.approx(-0.5)  # worse than predicting 0: negative
    assert ("", "linear", "transformer", 0) not in scores  # zero = oracle at k = 0: undefined
    # tasks without an oracle row score nothing; sweeps score per sweep point and run
    assert icl_scores([row("zero", 3, 1.0), row("transformer", 3, 0.5)]) == {}
    sweep = [row("zero", 2, 1.0, run="", sweep="a"), row("bayes", 2, 0.5, run="", sweep="a")]
    sweep += [row("transformer", 2, 0.75, run="m", sweep="a")]
    assert icl_scores(sweep)[("a", "linear", "m", 2)] == pytest.approx(0.5)


def test_the_oracle_joins_the_config_baselines_where_exact_and_cheap():
    assert default_oracle(make_task("noisy_linear", 5), ["zero"], 5) == ["posterior_mean"]
    assert default_oracle(make_task("linear", 5), ["zero", "posterior_mean"], 5) == []
    assert default_oracle(make_task("linear", 5), ["least_squares"], 5) == []  # no zero row: no score anyway
    assert default_oracle(make_task("quadratic", 5), ["zero"], 5) == []
    assert default_oracle(make_task("sparse_linear:nnz=3", 20), ["zero"], 20) == []  # 1,140 supports: too many
    config = load_config(None, ["eval.prompts=20", "eval.bootstrap=10", "eval.baselines=[zero,least_squares]"])
    assert {r["estimator"] for r in evaluate(None, config)} == {"zero", "least_squares", "posterior_mean"}
    explicit = evaluate(None, config, baselines=["zero"])
    assert {r["estimator"] for r in explicit} == {"zero"}
    assert {r["estimator"] for r in evaluate(None, config, shift="noisy_y:std=0.5")} == {"zero", "least_squares"}


def test_reports_show_the_score_where_the_rows_exist(tmp_path):
    run = tmp_path / "run"
    config = load_config(None, TINY + ["train.steps=2", "eval.prompts=24", "eval.bootstrap=10"])
    train(config, run, progress=False)
    rows = evaluate(None, config, baselines=["zero", "least_squares"])
    write_curves(run / "eval" / "curves.csv", rows)
    assert "ICL score" not in render_report(run).read_text()  # no oracle row: the old report
    write_curves(run / "eval" / "curves.csv", rows + evaluate(None, config, baselines=["posterior_mean"]))
    text = render_report(run).read_text()
    assert "ICL score" in text
    lines = score_table(read_curves(run / "eval" / "curves.csv"), "linear", config.dims)
    oracle_line = next(line for line in lines if line.startswith("| posterior_mean"))
    assert oracle_line.split("|")[2].strip() == "n/a" and oracle_line.split("|")[3].strip() == "1.000"
