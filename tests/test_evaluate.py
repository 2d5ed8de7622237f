import pytest
import torch

from iclab.config import load_config
from iclab.evaluation.curves import bootstrap_band, evaluate, make_eval_set, prompt_errors


def test_bootstrap_band_of_constant_errors_is_a_point():
    mean, lo, hi = bootstrap_band(torch.full((50, 3), 0.25, dtype=torch.float64), 200, 0.9)
    assert torch.allclose(mean, torch.full((3,), 0.25, dtype=torch.float64))
    assert torch.equal(lo, mean) and torch.equal(hi, mean)


def test_bootstrap_band_width_matches_the_standard_error(gen):
    # for the mean of n i.i.d. N(0, 1) the 90 % band is about +-1.645 / sqrt(n)
    errors = torch.randn(400, 1, generator=gen, dtype=torch.float64)
    mean, lo, hi = bootstrap_band(errors, 2000, 0.9)
    half_width = (hi - lo).item() / 2
    assert half_width == pytest.approx(1.645 * errors.std().item() / 20, rel=0.1)
    assert lo.item() < mean.item() < hi.item()


def test_eval_set_is_fixed_by_its_seed():
    config = load_config(None, ["eval.prompts=20"])
    a, b = make_eval_set(config), make_eval_set(config)
    assert torch.equal(a.xs, b.xs) and torch.equal(a.ys, b.ys)
    c = make_eval_set(load_config(None, ["eval.prompts=20", "eval.seed=7"]))
    assert not torch.equal(a.xs, c.xs)


def test_zero_predictor_scores_about_one():
    config = load_config(None, ["eval.prompts=4000", "dims=8"])
    evalset = make_eval_set(config)
    errors = prompt_errors(torch.zeros_like(evalset.ys), evalset)
    assert errors.mean().item() == pytest.approx(1.0, abs=0.05)  # E[y^2]/d = 1; std err ~ 0.01


def test_sign_metric_for_classification():
    config = load_config(None, ["task.name=linear_classification", "eval.prompts=10"])
    evalset = make_eval_set(config)
    perfect = prompt_errors(evalset.ys * 3.0, evalset)
    wrong = prompt_errors(-evalset.ys, evalset)
    assert perfect.sum() == 0 and (wrong == 1).all()


def test_shift_labels_and_scaled_outputs():
    config = load_config(None, ["eval.prompts=10"])
    plain = make_eval_set(config)
    scaled = make_eval_set(config, shift="scaled_y:factor=3")
    assert scaled.label == "linear@scaled_y:factor=3"
    assert torch.allclose(scaled.ys, 3 * plain.ys)


def test_baselines_only_rows_without_a_model():
    config = load_config(None, ["eval.prompts=30", "eval.bootstrap=20"])
    rows = evaluate(None, config, baselines=["least_squares", "zero"])
    assert {r["estimator"] for r in rows} == {"least_squares", "zero"}
    ls = {r["k"]: r["mean"] for r in rows if r["estimator"] == "least_squares"}
    zero = {r["k"]: r["mean"] for r in rows if r["estimator"] == "zero"}
    assert ls[0] == zero[0]  # with no examples every estimator predicts 0
    assert all(ls[k] < 1e-8 for k in range(5, 11))  # exact once k >= d on noiseless data
