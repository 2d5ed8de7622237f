"""Garg et al.'s learned baselines: the batched MLP against one network fitted at a time, the tree learners
against scikit-learn fitted directly, and all three from the API, a config and the CLI."""

import re

import numpy as np
import pytest
import torch
from conftest import TINY
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.tree import DecisionTreeRegressor

from iclab.baselines import make_estimator
from iclab.baselines.mlp import fit_one_at_a_time, mlp_init
from iclab.errors import UserError


@pytest.fixture
def prompts(gen):
    xs = torch.randn(3, 7, 3, generator=gen, dtype=torch.float64)
    ys = torch.sin(xs.sum(-1)) + 0.1 * torch.randn(3, 7, generator=gen, dtype=torch.float64)
    return xs, ys


def each_prefix(xs, ys, fit_predict):
    out = np.zeros(ys.shape)
    for b in range(xs.shape[0]):
        for k in range(1, xs.shape[1]):
            out[b, k] = fit_predict(xs[b, :k].numpy(), ys[b, :k].numpy(), xs[b, k : k + 1].numpy())
    return out


def test_mlp_matches_one_network_fitted_at_a_time(prompts):
    """The plain way (Garg's GDModel for one prompt): an nn.Sequential, torch's Adam and MSELoss per prefix."""
    xs, ys = prompts
    hidden, lr, steps, seed = 100, 5e-3, 100, 7
    ours = make_estimator(f"mlp:seed={seed}").predict(xs, ys)
    expected = fit_one_at_a_time(xs, ys, hidden, lr, steps, seed)
    assert (ours[:, 0] == 0).all()
    assert torch.allclose(ours, expected, atol=1e-9)
    # Adam moved the networks well away from their initial outputs
    assert not torch.allclose(ours, make_estimator(f"mlp:seed={seed},steps=0").predict(xs, ys), atol=1e-2)


def test_mlp_init_is_nn_linear_init():
    init = mlp_init(200, 4, 50, torch.Generator().manual_seed(0))
    for key, fan_in in [("w1", 4), ("b1", 4), ("w2", 50), ("b2", 50)]:
        bound = 1 / np.sqrt(fan_in)
        assert init[key].abs().max() <= bound and init[key].abs().max() > 0.99 * bound, key
        assert abs(init[key].mean()) < 0.02 * bound, key
    layer = torch.nn.Linear(4, 50)  # torch's own bound, for the record
    assert layer.weight.abs().max() <= 1 / np.sqrt(4) and layer.bias.abs().max() <= 1 / np.sqrt(4)


def test_mlp_prediction_of_a_prompt_does_not_depend_on_its_batch(prompts):
    xs, ys = prompts
    est = make_estimator("mlp:steps=20")
    alone = torch.cat([est.predict(xs[i : i + 1], ys[i : i + 1]) for i in range(3)])
    assert torch.allclose(est.predict(xs, ys), alone, atol=1e-12)
    assert not torch.allclose(est.predict(xs, ys), make_estimator("mlp:steps=20,seed=1").predict(xs, ys))


@pytest.mark.parametrize("depth", [4, 2, None])
def test_tree_is_scikit_learns_tree(prompts, depth):
    xs, ys = prompts
    spec = "tree" if depth == 4 else f"tree:max_depth={'null' if depth is None else depth}"

    def fit(X, y, q):
        return DecisionTreeRegressor(max_depth=depth, random_state=0).fit(X, y).predict(q)[0]

    assert np.allclose(make_estimator(spec).predict(xs, ys).numpy(), each_prefix(xs, ys, fit), atol=1e-12)


def test_a_tree_grown_until_pure_interpolates(prompts):
    xs, ys = prompts
    # the last query repeats the first example: it falls in that example's own leaf
    pred = make_estimator("tree:max_depth=null").predict(torch.cat([xs[:, :-1], xs[:, :1]], 1), ys)
    assert torch.allclose(pred[:, -1], ys[:, 0])


def test_boosting_is_scikit_learns_histogram_boosting_with_xgboost_settings(prompts):
    xs, ys = (t[:2] for t in prompts)

    def fit(X, y, q):
        model = HistGradientBoostingRegressor(
            max_iter=100,
            learning_rate=0.3,
            max_depth=6,
            max_leaf_nodes=None,
            min_samples_leaf=1,
            l2_regularization=1.0,
            early_stopping=False,
        )
        return model.fit(X.astype(np.float32), y).predict(q.astype(np.float32))[0]

    assert np.allclose(make_estimator("boosting").predict(xs, ys).numpy(), each_prefix(xs, ys, fit), atol=1e-9)


def test_one_unshrunk_unregularised_boosting_round_is_a_stump(prompts):
    # the mean plus one depth-1 tree on the residuals with leaves -G/H is a CART stump: same gain, same midpoint
    # thresholds. One feature, so that no two features tie; scikit-learn's boosting sums gradients in float32.
    xs, ys = prompts
    xs = xs[..., :1]

    def stump(X, y, q):
        return DecisionTreeRegressor(max_depth=1).fit(X, y).predict(q)[0]

    ours = make_estimator("boosting:rounds=1,learning_rate=1,max_depth=1,l2=0").predict(xs, ys).numpy()
    assert np.allclose(ours, each_prefix(xs, ys, stump), atol=1e-6)


def test_the_three_from_a_config_and_the_api():
    from iclab.config import load_config
    from iclab.evaluation.curves import evaluate

    config = load_config(None, [*TINY, "eval.prompts=6", "eval.baselines=[mlp:steps=10,tree,boosting:rounds=5]"])
    rows = evaluate(None, config)
    assert {r["estimator"] for r in rows} == {"mlp:steps=10", "tree", "boosting:rounds=5"}
    assert all(np.isfinite(r["mean"]) for r in rows)
    with pytest.raises(UserError, match="config key 'eval.baselines\\[0\\].hidden': must be >= 1, got 0"):
        load_config(None, ["eval.baselines=[mlp:hidden=0]"])
    with pytest.raises(UserError, match="unknown config key 'tree.depth' .*did you mean 'max_depth'"):
        make_estimator("tree:depth=3")


def test_the_three_from_the_cli(tmp_path, capsys):
    from iclab.cli import main
    from iclab.config import load_config
    from iclab.training.trainer import train

    run = tmp_path / "run"
    train(load_config(None, [*TINY, "train.steps=2", "eval.prompts=8"]), run, progress=False)
    assert main(["eval", str(run), "--baselines", "mlp:steps=10,tree,boosting:rounds=5", "--quiet"]) == 0
    curves = (run / "eval" / "curves.csv").read_text()
    assert "mlp:steps=10" in curves and ",tree," in curves and "boosting:rounds=5" in curves
    assert main(["list", "estimators"]) == 0
    listed = capsys.readouterr().out
    assert all(re.search(rf"^  {name}$", listed, re.M) for name in ["mlp", "tree", "boosting"])  # a name per line
