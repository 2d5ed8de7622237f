"""The ICL score: zero maps to 0 and the Bayes oracle to 1, from stored rows; evaluation adds the oracle where it
is exact and cheap; reports show the score where the rows exist and stay as before where they do not."""

import math

import pytest
from conftest import TINY

from iclab.config import load_config
from iclab.evaluation.curves import (
    default_oracle,
    evaluate,
    icl_curve_scores,
    icl_scores,
    read_curves,
    write_curves,
)
from iclab.evaluation.report import render_report, score_table, sweep_score_table
from iclab.experiments.gridfile import Run
from iclab.experiments.results import write_results
from iclab.recipes import algorithm_selection, task_diversity
from iclab.tasks import make_task
from iclab.training.runs import load_model
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


def test_the_whole_curve_scores_as_campbells_code_a_ratio_of_means_over_k():
    rows = [row("zero", 0, 1.0), row("posterior_mean", 0, 1.0), row("transformer", 0, 1.0)]
    rows += [row("zero", 1, 1.0), row("posterior_mean", 1, 0.2), row("transformer", 1, 0.6)]
    rows += [row("zero", 2, 1.0), row("posterior_mean", 2, 0.9), row("transformer", 2, 1.0)]
    per_k = icl_scores(rows)
    assert (per_k["", "linear", "transformer", 1], per_k["", "linear", "transformer", 2]) == pytest.approx((0.5, 0))
    whole = icl_curve_scores(rows)  # (0.4 + 0) / (0.8 + 0.1), not the mean 0.25 of the per-k scores
    assert whole["", "linear", "transformer"] == pytest.approx(0.4 / 0.9) and whole["", "linear", "zero"] == 0
    assert whole["", "linear", "posterior_mean"] == pytest.approx(1.0)


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
    cells = [c.strip() for c in oracle_line.split("|")]
    assert cells[2] == "1.000" and cells[3] == "n/a" and cells[4] == "1.000"  # all k, then k = 0, 1, ...


def test_curves_csv_carries_the_score_and_old_files_still_score(tmp_path):
    rows = [row("zero", 0, 1.0), row("posterior_mean", 0, 1.0), row("transformer", 0, 1.0)]
    rows += [row("zero", 2, 1.0), row("posterior_mean", 2, 0.2), row("transformer", 2, 0.6)]
    path = tmp_path / "curves.csv"
    write_curves(path, rows)
    stored = {(r["estimator"], r["k"]): r["icl_score"] for r in read_curves(path)}
    assert stored["transformer", 2] == pytest.approx(0.5) and stored["posterior_mean", 2] == 1
    assert stored["transformer", 0] is None  # undefined at k = 0: an empty cell
    old = tmp_path / "old.csv"
    write_curves(old, rows, ["task", "estimator", "k", "mean", "lo", "hi"])  # a file from before the column
    assert "icl_score" not in old.read_text() and icl_scores(read_curves(old)) == icl_scores(rows)


def test_sweep_reports_score_every_point_that_has_both_ends():
    ks = range(4)
    rows = [row("zero", k, 1.0, run="", sweep=p) for p in ("a", "b") for k in ks]
    rows += [row("posterior_mean", k, 1.0 if k == 0 else 0.2, run="", sweep="a") for k in ks]
    rows += [row("transformer", k, 1.0 if k == 0 else 0.6, run="mix", sweep=p) for p in ("a", "b") for k in ks]
    lines = sweep_score_table(rows, dims=3)
    body = [line for line in lines if line.startswith("| a ")]
    assert "| a | mix | 0.500 | n/a | 0.500 | 0.500 |" in body and len(body) == 3  # mix, zero, posterior_mean at a
    assert not any(line.startswith("| b ") for line in lines)  # no oracle at point b: no score
    assert sweep_score_table([r for r in rows if r["sweep"] == "b"], dims=3) == []


def test_study_tables_score_the_model_against_each_prompt_sets_bayes_predictor():
    errors = {"transformer": [1, 0.5], "dmmse": [1, 0.5], "ridge": [1, 0.3], "zero": [1, 1]}
    where = {"errors": errors, "to_dmmse": 0.1, "to_ridge": 0.2}
    entry = {"pool": 2, "steps": 2, "own": where, "fresh": where}
    assert task_diversity.model_score(entry, "own") == pytest.approx(1.0)  # dMMSE is the pool's Bayes predictor
    assert task_diversity.model_score(entry, "fresh") == pytest.approx(0.5 / 0.7)  # ridge is the Gaussian one's
    text = "\n".join(task_diversity.tables({"models": [entry]}))
    assert "ICL score" in text and "| 1.000 | 0.714 |" in text
    level = {"own": "ridge:alpha=1", "errors": {"transformer": [1, 0.6], "zero": [1, 1.0], "ridge:alpha=1": [1, 0.2]}}
    assert algorithm_selection.level_score(level, "transformer") == pytest.approx(0.5)
    assert algorithm_selection.level_score(level, "ridge:alpha=1") == pytest.approx(1.0)


def test_grid_results_gain_the_score_where_runs_were_evaluated_with_both_ends(tmp_path):
    config = load_config(None, TINY + ["train.steps=2", "eval.prompts=24", "eval.bootstrap=10"])
    train(config, tmp_path / "a", progress=False)
    train(config, tmp_path / "b", progress=False)
    model = load_model(tmp_path / "a", config)[0]
    write_curves(tmp_path / "a" / "eval" / "curves.csv", evaluate(model, config, baselines=["zero", "posterior_mean"]))
    runs = [Run(n, {"run": n}, config.to_dict(), tmp_path / n) for n in ("a", "b")]
    rows = write_results(tmp_path / "grid", runs, ["run"], [2, 3], {})
    assert isinstance(rows[0]["score_k3"], float) and math.isnan(rows[1]["score_k3"])  # b: validation only
    assert "score_k3" in (tmp_path / "grid" / "results.csv").read_text().splitlines()[0]
    runs = [Run("b", {"run": "b"}, config.to_dict(), tmp_path / "b")]
    assert "score_k3" not in write_results(tmp_path / "grid2", runs, ["run"], [2, 3], {})[0]  # none anywhere
