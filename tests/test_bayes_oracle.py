"""The posterior-mean oracle against independent computations: the Gaussian-process (function-space) formula,
brute-force enumeration of classes, supports and pool members with scipy densities, and Monte Carlo
importance sampling from the prior."""

from itertools import combinations

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from iclab.baselines import make_estimator
from iclab.baselines.bayes import NOISELESS_VARIANCE, GaussianClass, TaskPool, exact_prior, posterior_mean
from iclab.errors import UserError
from iclab.tasks import make_inputs, make_task, sample_prompts


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def per_prefix(xs, ys, fn):
    """fn(X_k, y_k, x_query) for every prompt and prefix k, by plain loops."""
    out = np.zeros(ys.shape)
    for b in range(xs.shape[0]):
        for k in range(xs.shape[1]):
            out[b, k] = fn(xs[b, :k].numpy(), ys[b, :k].numpy(), xs[b, k].numpy())
    return out


def brute_force(prior):
    """The posterior mean by enumeration: every (class, support) and every pool member is a hypothesis with its
    prior probability, its marginal density of y_k (scipy) and its prediction at the query."""

    def predict(X, y, q):
        d = len(q)
        weights, preds = [], []
        total = sum(c.weight for c in prior)
        for c in prior:
            if isinstance(c, TaskPool):
                for w in c.tasks.numpy():
                    lik = np.prod([multivariate_normal(x @ w, c.noise).pdf(t) for x, t in zip(X, y, strict=True)])
                    weights.append(c.weight / total / len(c.tasks) * lik)
                    preds.append(q @ w)
                continue
            supports = list(combinations(range(d), c.nnz))
            if not len(y):  # no examples: the class's prior mean, 0
                weights.append(c.weight / total)
                preds.append(0.0)
                continue
            for s in supports:
                Xs = X[:, list(s)]
                density = multivariate_normal(np.zeros(len(y)), Xs @ Xs.T + c.noise * np.eye(len(y))).pdf(y)
                # GP form of the conditional mean: k_q^T (K + s^2 I)^-1 y
                mean = (q[list(s)] @ Xs.T) @ np.linalg.solve(Xs @ Xs.T + c.noise * np.eye(len(y)), y)
                weights.append(c.weight / total / len(supports) * density)
                preds.append(mean)
        weights = np.array(weights) / np.sum(weights)
        return float(weights @ np.array(preds))

    return predict


def test_noisy_dense_is_the_gaussian_process_mean(gen):
    task = make_task("noisy_linear:noise_std=0.5", 4)
    xs, ys, _ = sample_prompts(task, make_inputs("isotropic", 4), 6, 9, gen)
    xs, ys = xs.double(), ys.double()
    ours = make_estimator("posterior_mean").fit_prior(task).predict(xs, ys).numpy()

    def gp(X, y, q):  # E[w.q | y] = q^T X^T (X X^T + s^2 I)^-1 y: no Gram matrix of the weight space
        return float(q @ X.T @ np.linalg.solve(X @ X.T + 0.25 * np.eye(len(y)), y)) if len(y) else 0.0

    assert np.allclose(ours, per_prefix(xs, ys, gp), atol=1e-10)
    assert torch.allclose(torch.tensor(ours), make_estimator("ridge:alpha=0.25").predict(xs, ys), atol=1e-10)


def test_finite_pool_is_the_dmmse_of_its_own_pool(gen):
    task = make_task({"name": "finite_pool", "size": 5, "base": {"name": "noisy_linear", "noise_std": 0.5}}, 3)
    tasks, std = task.linear_pool()
    assert torch.equal(tasks, task.pool(torch.device("cpu"))["w"]) and std == 0.5
    xs, ys, params = sample_prompts(task, make_inputs("isotropic", 3), 5, 7, gen)
    xs, ys = xs.double(), ys.double()
    ours = make_estimator("posterior_mean").fit_prior(task).predict(xs, ys).numpy()
    assert np.allclose(ours, per_prefix(xs, ys, brute_force([TaskPool(1.0, tasks.double(), 0.25)])), atol=1e-10)
    # with no examples it predicts the pool's mean function, not 0
    assert torch.allclose(torch.tensor(ours[:, 0]), xs[:, 0] @ tasks.double().mean(0), atol=1e-12)
    # with many examples the posterior settles on the prompt's own task vector
    truth = (xs[:, -1] * params["w"].double()).sum(-1)
    assert torch.allclose(torch.tensor(ours[:, -1]), truth, atol=0.05)


def test_a_given_task_prior_replaces_the_evaluated_one(gen):
    pool = {"name": "finite_pool", "size": 4, "base": {"name": "noisy_linear", "noise_std": 0.5}}
    fresh = make_task("noisy_linear:noise_std=0.5", 3)
    xs, ys, _ = sample_prompts(fresh, make_inputs("isotropic", 3), 5, 6, gen)
    dmmse = make_estimator({"name": "posterior_mean", "task": pool}).fit_prior(fresh).predict(xs, ys)
    assert torch.equal(dmmse, make_estimator("posterior_mean").fit_prior(make_task(pool, 3)).predict(xs, ys))


def test_a_pool_larger_than_a_block_gives_the_same_answer(gen, monkeypatch):
    from iclab.baselines import bayes

    tasks = torch.randn(37, 3, generator=gen, dtype=torch.float64)
    xs, ys = torch.randn(4, 6, 3, generator=gen, dtype=torch.float64), torch.randn(4, 6, generator=gen)
    whole = posterior_mean(xs, ys, [TaskPool(1.0, tasks, 0.3)])
    monkeypatch.setattr(bayes, "POOL_BLOCK", 5)
    assert torch.allclose(posterior_mean(xs, ys, [TaskPool(1.0, tasks, 0.3)]), whole, atol=1e-12)


def test_mixture_with_uneven_weights_and_noise_levels_matches_enumeration(gen):
    components = [
        {"name": "noisy_linear", "noise_std": 0.1, "weight": 0.5},
        {"name": "noisy_linear", "noise_std": 1.0, "weight": 0.2},
        {"name": "sparse_linear", "nnz": 1, "weight": 0.3},
    ]
    task = make_task({"name": "mixture", "components": components}, 3)
    prior = exact_prior(task)
    assert prior == [
        GaussianClass(pytest.approx(0.5), 3, pytest.approx(0.01)),
        GaussianClass(pytest.approx(0.2), 3, 1.0),
        GaussianClass(pytest.approx(0.3), 1, NOISELESS_VARIANCE),
    ]
    xs, ys, _ = sample_prompts(task, make_inputs("isotropic", 3), 6, 6, gen)
    xs, ys = xs.double(), ys.double()
    ours = make_estimator("posterior_mean").fit_prior(task).predict(xs, ys).numpy()
    assert np.allclose(ours, per_prefix(xs, ys, brute_force(prior)), atol=1e-8)


def test_a_mixture_of_a_pool_and_a_gaussian_class_matches_monte_carlo(gen):
    """Self-normalised importance sampling with the prior as proposal: 400,000 draws of (class, w); each draw
    weighs by its likelihood of the 3 examples. The estimate's standard error is estimated from the weighted draws
    (sqrt(sum w_i^2 (f_i - mean)^2) / sum w_i); the two must agree within 5 of them."""
    d, noise_std = 2, 0.5
    pool = torch.randn(3, d, generator=gen, dtype=torch.float64)
    prior = [TaskPool(0.6, pool, noise_std**2), GaussianClass(0.4, d, noise_std**2)]
    xs = torch.randn(3, 4, d, generator=gen, dtype=torch.float64)
    ys = torch.einsum("bnd,d->bn", xs, pool[1]) + noise_std * torch.randn(3, 4, generator=gen, dtype=torch.float64)
    ours = posterior_mean(xs, ys, prior)[:, 3]
    draws = 400_000
    from_pool = torch.rand(draws, generator=gen, dtype=torch.float64) < 0.6
    w = torch.where(
        from_pool[:, None],
        pool[torch.randint(0, 3, (draws,), generator=gen)],
        torch.randn(draws, d, generator=gen, dtype=torch.float64),
    )
    for b in range(3):
        resid = ys[b, :3, None] - xs[b, :3] @ w.T  # (3 examples, draws)
        lik = torch.exp(-0.5 * resid.square().sum(0) / noise_std**2)
        f = w @ xs[b, 3]
        estimate = (lik * f).sum() / lik.sum()
        stderr = torch.sqrt((lik.square() * (f - estimate).square()).sum()) / lik.sum()
        assert abs(ours[b] - estimate) < 5 * stderr, (b, float(ours[b]), float(estimate), float(stderr))


def test_posterior_mean_beats_every_ridge_on_its_own_prior(gen):
    """Bayes-optimality on samples: on 4,000 prompts of a two-noise-level mixture, no fixed ridge penalty does
    better at any k than the posterior mean (beyond the sampling error of the difference)."""
    spec = {
        "name": "mixture",
        "components": [
            {"name": "noisy_linear", "noise_std": 0.1, "weight": 1},
            {"name": "noisy_linear", "noise_std": 2.0, "weight": 1},
        ],
    }
    task = make_task(spec, 3)
    xs, ys, _ = sample_prompts(task, make_inputs("isotropic", 3), 4000, 8, gen)
    oracle = (make_estimator("posterior_mean").fit_prior(task).predict(xs, ys) - ys).square()
    for alpha in [0.01, 0.3, 1.0, 4.0]:
        ridge = (make_estimator(f"ridge:alpha={alpha}").predict(xs, ys) - ys).square()
        diff = ridge - oracle
        assert (diff.mean(0) >= -3 * diff.std(0) / 4000**0.5).all(), alpha


def test_exact_prior_refuses_what_it_cannot_compute():
    for spec in ["quadratic", "relu_net", "linear_classification", "noisy_linear:renormalize=true"]:
        with pytest.raises(UserError, match="posterior_mean is exact for linear"):
            make_estimator("posterior_mean").fit_prior(make_task(spec, 3))
    # nor does bayes, on outputs rescaled by the batch's std, alone or inside a mixture
    renormalized = {"name": "noisy_linear", "renormalize": True}
    mixed = {"name": "mixture", "components": [{"name": "linear", "weight": 1}, renormalized | {"weight": 1}]}
    for task in [renormalized, mixed]:
        with pytest.raises(UserError, match="with renormalize"):
            make_estimator("bayes").fit_prior(make_task(task, 3))
    trees = make_task({"name": "finite_pool", "base": {"name": "tree"}}, 3)
    with pytest.raises(UserError, match="posterior_mean covers finite pools of linear"):
        make_estimator("posterior_mean").fit_prior(trees)
    with pytest.raises(UserError, match="posterior_mean: evaluate it on a task"):
        make_estimator("posterior_mean").predict(torch.randn(2, 3, 4), torch.randn(2, 3))
    est = make_estimator("posterior_mean").fit_prior(make_task("sparse_linear:nnz=3", 3))
    with pytest.raises(UserError, match="nnz 3 exceeds the input dimension 2"):
        est.predict(torch.randn(2, 3, 2), torch.randn(2, 3))


def test_three_classes_with_uneven_weights_match_enumeration(gen):
    """Dense + nnz = 1 + nnz = 2 at 0.5/0.25/0.25 in d = 3 (the K-class model-selection oracle): `bayes` with
    explicit classes and `posterior_mean` of the mixture task both equal the brute-force enumeration."""
    components = [
        {"name": "linear", "weight": 0.5},
        {"name": "sparse_linear", "nnz": 1, "weight": 0.25},
        {"name": "sparse_linear", "nnz": 2, "weight": 0.25},
    ]
    task = make_task({"name": "mixture", "components": components}, 3)
    xs, ys, _ = sample_prompts(task, make_inputs("isotropic", 3), 8, 7, gen)
    xs, ys = xs.double(), ys.double()
    v = NOISELESS_VARIANCE
    hand = [GaussianClass(0.5, 3, v), GaussianClass(0.25, 1, v), GaussianClass(0.25, 2, v)]
    reference = per_prefix(xs, ys, brute_force(hand))
    mixture = make_estimator("posterior_mean").fit_prior(task).predict(xs, ys).numpy()
    sparse_task = make_task("sparse_linear:nnz=2", 3)  # bayes reads only the noise from the evaluated task
    bayes = make_estimator("bayes:nnz=[3,1,2],weights=[0.5,0.25,0.25]").fit_prior(sparse_task).predict(xs, ys)
    assert np.allclose(mixture, reference, atol=1e-6) and np.allclose(bayes.numpy(), reference, atol=1e-6)
    # the weights matter: the even-weight oracle is a different predictor on the same prompts
    even = make_estimator("bayes:nnz=[3,1,2],weights=[1,1,1]").fit_prior(sparse_task).predict(xs, ys).numpy()
    assert np.abs(even - reference).max() > 1e-3
