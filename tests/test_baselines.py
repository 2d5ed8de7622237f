import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso as SkLasso
from sklearn.linear_model import Ridge as SkRidge
from sklearn.neighbors import KNeighborsRegressor

from iclab.baselines import ESTIMATORS, lasso_prefixes, make_estimator
from iclab.errors import UserError


@pytest.fixture
def prompts(gen):
    xs = torch.randn(12, 9, 4, generator=gen, dtype=torch.float64)
    w = torch.randn(12, 4, generator=gen, dtype=torch.float64)
    ys = torch.einsum("bpd,bd->bp", xs, w) + 0.3 * torch.randn(12, 9, generator=gen, dtype=torch.float64)
    return xs, ys


def reference(xs, ys, fit_predict):
    """Loop over prompts and prefixes, the slow obvious way."""
    out = np.zeros(ys.shape)
    for b in range(xs.shape[0]):
        for k in range(1, xs.shape[1]):
            out[b, k] = fit_predict(xs[b, :k].numpy(), ys[b, :k].numpy(), xs[b, k : k + 1].numpy())
    return out


def test_every_estimator_predicts_zero_without_examples(prompts):
    xs, ys = prompts
    for name in ESTIMATORS.names():
        pred = make_estimator(name).predict(xs, ys)
        assert pred.shape == ys.shape
        assert torch.all(pred[:, 0] == 0), name


def test_least_squares_is_the_minimum_norm_solution(prompts):
    xs, ys = prompts
    expected = reference(xs, ys, lambda X, y, q: (q @ np.linalg.pinv(X) @ y).item())
    assert np.allclose(make_estimator("least_squares").predict(xs, ys).numpy(), expected, atol=1e-9)


def test_ridge_matches_scikit_learn(prompts):
    xs, ys = prompts
    expected = reference(xs, ys, lambda X, y, q: SkRidge(alpha=0.7, fit_intercept=False).fit(X, y).predict(q).item())
    assert np.allclose(make_estimator("ridge:alpha=0.7").predict(xs, ys).numpy(), expected, atol=1e-9)


@pytest.mark.parametrize("alpha", [1.0, 0.1, 0.01])
def test_lasso_matches_scikit_learn(prompts, alpha):
    xs, ys = prompts

    def fit(X, y, q):
        return SkLasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=1_000_000).fit(X, y).predict(q).item()

    expected = reference(xs, ys, fit)
    assert np.allclose(make_estimator(f"lasso:alpha={alpha}").predict(xs, ys).numpy(), expected, atol=1e-7)


def test_lasso_satisfies_optimality_conditions_where_coordinate_descent_crawls(gen):
    # underdetermined prefixes with a tiny penalty: scikit-learn's coordinate descent can need 10^6 sweeps here;
    # the homotopy solution must satisfy the KKT conditions exactly.
    xs = torch.randn(50, 6, 8, generator=gen, dtype=torch.float64)
    ys = torch.randn(50, 6, generator=gen, dtype=torch.float64)
    alpha = 1e-4
    w = lasso_prefixes(xs, ys, alpha)
    for k in range(1, 6):
        X, y, wk = xs[:, :k], ys[:, :k], w[:, k]
        grad = torch.einsum("bkd,bk->bd", X, y - torch.einsum("bkd,bd->bk", X, wk)) / k  # X^T r / k
        on = wk != 0
        assert torch.allclose(grad[on], alpha * torch.sign(wk[on]), atol=1e-9)
        assert (grad[~on].abs() <= alpha + 1e-9).all()


def test_lasso_ignores_zeroed_curriculum_coordinates(gen):
    xs = torch.randn(5, 7, 6, generator=gen, dtype=torch.float64)
    xs[..., 3:] = 0
    ys = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    w = lasso_prefixes(xs, ys, 0.05)
    assert (w[..., 3:] == 0).all()


def test_knn_matches_scikit_learn(prompts):
    xs, ys = prompts

    def fit(X, y, q):
        return KNeighborsRegressor(n_neighbors=min(3, len(X))).fit(X, y).predict(q).item()

    assert np.allclose(make_estimator("knn").predict(xs, ys).numpy(), reference(xs, ys, fit), atol=1e-12)


def test_averaging_is_the_mean_of_x_times_y(prompts):
    xs, ys = prompts
    expected = reference(xs, ys, lambda X, y, q: (q @ (X * y[:, None]).mean(0)).item())
    assert np.allclose(make_estimator("averaging").predict(xs, ys).numpy(), expected, atol=1e-12)


def test_least_squares_is_exact_on_noiseless_data_once_k_reaches_d(gen):
    xs = torch.randn(20, 10, 4, generator=gen)
    ys = torch.einsum("bpd,bd->bp", xs, torch.randn(20, 4, generator=gen))
    pred = make_estimator("least_squares").predict(xs, ys)
    assert torch.allclose(pred[:, 4:], ys[:, 4:], atol=1e-4)


def test_labels_and_bad_names():
    assert make_estimator("lasso:alpha=0.1").label == "lasso:alpha=0.1"
    with pytest.raises(UserError, match="unknown estimator 'lassso' .*did you mean 'lasso'"):
        make_estimator("lassso")
    with pytest.raises(UserError, match="must be > 0.0"):
        make_estimator("ridge:alpha=-1")
