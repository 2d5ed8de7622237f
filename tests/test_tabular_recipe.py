"""`iclab reproduce tabular`: the packaged prior, the oracle-margin check and the recipe's quick plumbing at a
tiny size (the shipped model's numbers are in results/tabular/)."""

import json

import pytest
import torch

from iclab import recipes
from iclab.baselines import make_estimator
from iclab.config import load_config, packaged_config
from iclab.recipes import tabular
from iclab.recipes.sizes import read_scale
from iclab.scoring import make_eval_set

pytest.importorskip("sklearn")


def tiny_size() -> dict:
    """The quick scale with a two-step model of 9 points and a comparison of one method over two folds."""
    size = read_scale(tabular.NAME, "quick", tabular.TabularSize)
    size["set"] |= {"points": 9, "model.layers": 1, "model.width": 16, "train.steps": 2, "eval.prompts": 16}
    return size | {
        "prompts": 16,
        "folds": 2,
        "repeats": 1,
        "n_estimators": 1,
        "methods": ["RidgeCV"],
        "friedman_rows": 40,
    }


TINY = tiny_size()


def test_the_packaged_prior_is_a_mixture_over_d10_with_varying_noise():
    config = load_config(packaged_config("tabular"))
    assert config.dims == 10 and config.task["name"] == "mixture" and config.train.loss == "normalized"
    assert config.model.layers >= 1 and config.points - 1 >= 128  # context for diabetes' ~353 training rows
    classes = tabular.oracle_classes(config.task)
    noise = sorted(spec["noise_std"] for spec, _ in classes.values() if spec["name"] == "noisy_linear")
    assert len(noise) >= 4 and noise[0] == 0 and noise[-1] >= 4  # R^2 from 1 down to below diabetes' 0.49
    names = {c["name"] for c in config.task["components"]}
    assert {"noisy_linear", "relu_net", "tree", "sparse_linear"} <= names
    assert "sparse, nnz 3" in classes and len(classes) == len(noise) + 1  # trees and ReLU nets have no oracle
    # a renormalized level's oracle is plain noisy_linear's posterior mean: ridge with alpha = noise_std^2
    spec, oracle = classes["dense, noise 3"]
    assert spec["renormalize"] and oracle == {
        "name": "posterior_mean",
        "task": {"name": "noisy_linear", "noise_std": 3.0},
    }


def test_the_oracle_of_a_renormalized_level_is_ridge_with_alpha_noise_squared():
    """The rescaling multiplies w and the noise by the same factor, so the posterior mean keeps its penalty."""
    config = load_config(packaged_config("tabular"), ["points=30", "curriculum.points=null"])
    spec, oracle_spec = tabular.oracle_classes(config.task)["dense, noise 2"]
    evalset = make_eval_set(config, spec, prompts=8)
    oracle = make_estimator(oracle_spec).fit_prior(evalset.task, evalset.inputs, 30)
    preds = oracle.predict(evalset.xs, evalset.ys).double()
    xs, ys = evalset.xs.double(), evalset.ys.double()
    assert ys.square().mean() > 5  # renormalized to E[y^2] = d = 10, not 10 + 4 (nor 1)
    for k in (5, 12, 29):
        x, y = xs[:, :k], ys[:, :k]
        w = torch.linalg.solve(x.mT @ x + 4.0 * torch.eye(10, dtype=torch.float64), x.mT @ y.unsqueeze(-1))
        ridge = (xs[:, k : k + 1] @ w).squeeze(-1).squeeze(-1)
        assert torch.allclose(preds[:, k], ridge, atol=1e-6)


def test_window_gap_is_the_paired_mean_over_the_last_eighth():
    model, oracle = torch.zeros(4, 16), torch.zeros(4, 16)
    model[:, 14:] = torch.tensor([[0.1], [0.3], [0.1], [0.3]])  # the window is k = 14, 15
    model[:, :14] = 5.0  # outside the window: ignored
    gap, se, start = tabular.window_gap(model, oracle, 16)
    assert start == 14 and gap == pytest.approx(0.2) and se == pytest.approx(0.1155 / 2, abs=1e-3)
    assert tabular.window_gap(model, oracle, 4)[2] == 3  # at least one position


def results(gaps: list[float], icl_r2: float, ridge_r2: float = 0.48) -> dict:
    prior = {f"class {i}": {"gap": g, "gap_se": 0.01, "window_start": 112, "errors": {}} for i, g in enumerate(gaps)}
    summary = {m: {"r2": {"mean": r2, "se": 0.02}} for m, r2 in (("ICL (tabular)", icl_r2), ("RidgeCV", ridge_r2))}
    return {
        "context": 128,
        "margin": 0.02,
        "prior": prior,
        "tables": {"diabetes": {"summary": summary, "folds": 5, "repeats": 3}},
    }


def test_checks_want_every_class_within_the_margin_and_r2_within_0_02_of_ridge():
    oracle, diabetes = tabular.check_results(results([0.01, -0.003, 0.019], 0.47))
    assert oracle["passed"] and diabetes["passed"] and "last 17 context lengths" in oracle["claim"]
    oracle, diabetes = tabular.check_results(results([0.01, 0.021], 0.459))
    assert not oracle["passed"] and not diabetes["passed"]  # one class over the margin fails the whole check
    assert "+0.021 ± 0.010" in oracle["detail"] and "R^2 0.459" in diabetes["detail"]
    assert tabular.check_results(results([0.0], 0.6))[1]["passed"]  # better than ridge passes


def test_quick_scale_trains_scores_and_renders(tmp_path, monkeypatch):
    monkeypatch.setitem(tabular.SIZES, "quick", TINY)
    (summary,) = recipes.reproduce("tabular", tmp_path, quick=True, progress=False)
    folder = tmp_path / "tabular"
    stored = json.loads((folder / "results.json").read_text())
    assert "commit" in stored["provenance"] and stored["steps"] == 2 and stored["context"] == 8
    assert set(stored["prior"]) == set(tabular.oracle_classes(tabular.model_config("quick").task))
    for name in ("diabetes", "friedman1"):
        table = stored["tables"][name]
        assert set(table["summary"]) == {"ICL (tabular)", "RidgeCV"} and len(table["folds_rows"]) == 4
        assert (folder / f"{name}.csv").read_text().startswith("method,mse_mean")
        assert (folder / f"{name}.png").stat().st_size > 1000
    assert stored["tables"]["friedman1"]["n_rows"] == 40 and (folder / "prior.png").stat().st_size > 1000
    assert [c["passed"] for c in summary["checks"]] == [c["passed"] for c in tabular.check_results(stored)]
    report = (tmp_path / "report.md").read_text()
    assert tabular.RECIPE.title in report and "| RidgeCV |" in report and "model − oracle" in report
