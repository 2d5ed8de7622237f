import copy
import dataclasses

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
    from iclab.tasks import make_inputs, make_task

    xs, ys = (t[:3] for t in prompts)  # three prompts: the tree learners fit every prefix in a loop
    task, inputs = make_task("linear", 4), make_inputs("isotropic", 4)
    for name in ESTIMATORS.names():
        pred = make_estimator(name).fit_prior(task, inputs, xs.shape[1]).predict(xs, ys)
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


def test_bayes_with_one_dense_class_is_ridge_with_the_matching_prior(prompts):
    xs, ys = prompts
    bayes = make_estimator("bayes:nnz=[4],weights=[1],noise=0.09").predict(xs, ys)
    ridge = make_estimator("ridge:alpha=0.09").predict(xs, ys)
    assert torch.allclose(bayes, ridge, atol=1e-10)


def test_bayes_mixture_matches_a_brute_force_posterior(gen):
    from itertools import combinations

    from scipy.stats import multivariate_normal

    d, noise = 3, 0.05
    xs = torch.randn(4, 5, d, generator=gen, dtype=torch.float64)
    ys = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    classes = [(3, 0.3), (1, 0.7)]  # dense and 1-sparse
    ours = make_estimator("bayes:nnz=[3,1],weights=[0.3,0.7],noise=0.05").predict(xs, ys).numpy()

    def brute(X, y, q):
        posts, preds = [], []
        for nnz, weight in classes:
            supports = list(combinations(range(d), nnz))
            for s in supports:
                Xs = X[:, s]
                cov = Xs @ Xs.T + noise * np.eye(len(y))
                posts.append(weight / len(supports) * multivariate_normal(np.zeros(len(y)), cov).pdf(y))
                w = np.linalg.solve(Xs.T @ Xs + noise * np.eye(nnz), Xs.T @ y)
                preds.append(q[0, list(s)] @ w)
        posts = np.array(posts) / sum(posts)
        return float(posts @ np.array(preds))

    assert np.allclose(ours, reference(xs, ys, brute), atol=1e-9)


def test_bayes_selects_the_sparse_class_on_sparse_prompts(gen):
    xs = torch.randn(200, 8, 5, generator=gen)
    w = torch.zeros(200, 5)
    w[:, :2] = torch.randn(200, 2, generator=gen)
    ys = torch.einsum("bpd,bd->bp", xs, w)
    err = (make_estimator("bayes:nnz=[5,2],weights=[0.5,0.5]").predict(xs, ys) - ys).square().mean(0)
    ls = (make_estimator("least_squares").predict(xs, ys) - ys).square().mean(0)
    # three examples almost always identify a 2-sparse w (a rare near-tie between supports remains); least
    # squares needs five
    assert err[3] < 0.05 * ls[3] and err[4] < 1e-3 < ls[4]


def test_tuned_lasso_picks_alpha_on_held_out_prompts():
    from iclab.tasks import make_inputs, make_task

    task, inputs = make_task("sparse_linear:nnz=1", 6), make_inputs("isotropic", 6)
    est = make_estimator("lasso_cv:alphas=[1.0,0.001],prompts=64").fit_prior(task, inputs, 9)
    assert len(est.alpha_per_k_) == 9 and set(est.alpha_per_k_) <= {1.0, 0.001}
    assert est.alpha_per_k_[-1] == 0.001  # with 8 examples of a noiseless 1-sparse task the small penalty wins
    with pytest.raises(UserError, match="lasso_cv: evaluate it on a task"):
        make_estimator("lasso_cv").predict(torch.randn(2, 3, 6), torch.randn(2, 3))


def test_bayes_refuses_tasks_it_does_not_cover():
    from iclab.tasks import make_task

    for name in ["quadratic", "linear_classification", "relu_net", "convex"]:
        with pytest.raises(UserError, match=f"bayes covers linear, sparse_linear.*not '{name}'; give nnz"):
            make_estimator("bayes").fit_prior(make_task(name, 3), None, 5)
    parts = [{"name": "linear", "weight": 1}, {"name": "tree", "weight": 1}]
    mixed = make_task({"name": "mixture", "components": parts}, 3)
    with pytest.raises(UserError, match="not 'mixture'"):
        make_estimator("bayes").fit_prior(mixed, None, 5)


# --- scikit-learn's estimator contract: hyper-parameters fixed at construction, learned state in attributes_ ---


def _hyper_parameters(est):
    return {f.name: copy.deepcopy(getattr(est, f.name)) for f in dataclasses.fields(est) if f.init}


def test_fit_prior_never_changes_hyper_parameters():
    from iclab.tasks import make_inputs, make_task

    inputs = make_inputs("isotropic", 4)
    tasks = [make_task("sparse_linear:nnz=1", 4), make_task("noisy_linear:noise_std=0.3", 4)]
    for name in ESTIMATORS.names():
        est = make_estimator(name if name != "lasso_cv" else "lasso_cv:prompts=16")
        before = _hyper_parameters(est)
        for task in tasks:
            est.fit_prior(task, inputs, 6)
            assert _hyper_parameters(est) == before, name


def test_a_reused_bayes_oracle_follows_the_new_task(prompts):
    from iclab.baselines.bayes import NOISELESS_VARIANCE, Prior
    from iclab.tasks import make_task

    xs, ys = prompts
    est = make_estimator("bayes")
    first = est.fit_prior(make_task("sparse_linear:nnz=1", 4)).predict(xs, ys)
    assert est.prior_ == Prior([1], [1.0], NOISELESS_VARIANCE)
    second = est.fit_prior(make_task("noisy_linear:noise_std=0.3", 4)).predict(xs, ys)
    assert est.prior_ == Prior([4], [1.0], pytest.approx(0.09)) and est.nnz == [] and est.noise == 0.0
    # the dense Gaussian prior with noise variance 0.09 is ridge with alpha 0.09, whatever came before
    assert torch.allclose(second, make_estimator("ridge:alpha=0.09").predict(xs, ys), atol=1e-10)
    assert not torch.allclose(first, second)


def test_bayes_reads_a_mixture_prior_and_keeps_explicit_values():
    from iclab.baselines.bayes import NOISELESS_VARIANCE, Prior
    from iclab.tasks import make_task

    sparse = {"name": "sparse_linear", "nnz": 2, "weight": 1}
    spec = {"name": "mixture", "components": [{"name": "linear", "weight": 3}, sparse]}
    mixture = make_task(spec, 5)
    assert make_estimator("bayes").fit_prior(mixture).prior_ == Prior([5, 2], [0.75, 0.25], NOISELESS_VARIANCE)
    explicit = make_estimator("bayes:noise=0.5").fit_prior(mixture)
    assert explicit.prior_ == Prior([5, 2], [0.75, 0.25], 0.5)
    # everything given: any task will do, since the task adds nothing
    fixed = make_estimator("bayes:nnz=[2],weights=[1],noise=0.1").fit_prior(make_task("quadratic", 5))
    assert fixed.prior_ == Prior([2], [1.0], 0.1)
    noisy = {"name": "mixture", "components": [{"name": "linear", "weight": 1}, {"name": "noisy_linear", "weight": 1}]}
    with pytest.raises(UserError, match="one noise level shared by all mixture components"):
        make_estimator("bayes").fit_prior(make_task(noisy, 5))


def test_a_reused_tuned_lasso_follows_the_new_task():
    from iclab.tasks import make_inputs, make_task

    inputs = make_inputs("isotropic", 6)
    sparse, noisy = make_task("sparse_linear:nnz=1", 6), make_task("noisy_linear:noise_std=3", 6)
    spec = "lasso_cv:alphas=[1.0,0.001],prompts=64"
    est = make_estimator(spec).fit_prior(sparse, inputs, 9)
    on_sparse = est.alpha_per_k_
    est.fit_prior(noisy, inputs, 9)
    assert est.alpha_per_k_ == make_estimator(spec).fit_prior(noisy, inputs, 9).alpha_per_k_
    assert on_sparse[-1] == 0.001 and est.alpha_per_k_[-1] == 1.0  # heavy noise: the large penalty wins
    assert est.alphas == [1.0, 0.001]
    with pytest.raises(UserError, match="lasso_cv: tuned for prompts of 9 points, got 12; call fit_prior with points"):
        est.predict(torch.randn(2, 12, 6), torch.randn(2, 12))


def test_tasks_describe_their_linear_prior():
    from iclab.tasks import make_task

    assert make_task("linear", 4).linear_prior() == [(1.0, 4, 0.0)]
    assert make_task("sparse_linear:nnz=3", 4).linear_prior() == [(1.0, 3, 0.0)]
    assert make_task("noisy_linear:noise_std=0.2", 4).linear_prior() == [(1.0, 4, 0.2)]
    for name in ["quadratic", "linear_classification", "relu_net", "tree", "sinusoid", "finite_pool", "convex"]:
        assert make_task(name, 4).linear_prior() is None, name
    convex = make_task({"name": "convex", "first": {"name": "linear"}, "second": {"name": "quadratic"}}, 4)
    assert [c.registry_name for c in convex.classes] == ["linear", "quadratic"]


def test_predict_refuses_badly_shaped_prompts():
    for xs, ys in [(torch.randn(2, 3), torch.randn(2, 3)), (torch.randn(2, 3, 4), torch.randn(2, 4))]:
        with pytest.raises(UserError, match=r"ridge: predict takes xs \(batch, points, d\) and ys \(batch, points\)"):
            make_estimator("ridge").predict(xs, ys)


def test_bayes_parameter_errors():
    with pytest.raises(UserError, match="give one weight per nnz"):
        make_estimator("bayes:nnz=[2,1],weights=[1]")
    with pytest.raises(UserError, match="bayes.weights: give weights >= 0 with a positive sum"):
        make_estimator("bayes:nnz=[2],weights=[0]")
    with pytest.raises(UserError, match="bayes: give nnz and weights, or evaluate it on a linear task"):
        make_estimator("bayes").predict(torch.randn(2, 3, 4), torch.randn(2, 3))
