import math

import pytest
import torch

from iclab.errors import UserError
from iclab.tasks import FUNCTION_CLASSES, make_inputs, make_task, sample_prompts

D = 6
MIXTURE = {
    "name": "mixture",
    "components": [{"name": "linear", "weight": 3}, {"name": "sparse_linear", "nnz": 2, "weight": 1}],
}
SPECS = {
    "linear": "linear",
    "sparse_linear": "sparse_linear:nnz=2",
    "noisy_linear": "noisy_linear:noise_std=0.5",
    "quadratic": "quadratic",
    "relu_net": "relu_net:hidden=50",
    "tree": "tree:depth=3",
    "sinusoid": "sinusoid",
    "linear_classification": "linear_classification",
    "finite_pool": "finite_pool:size=4",
    "mixture": MIXTURE,
    "convex": "convex:alpha=0.3",
}


def test_every_registered_class_is_covered():
    assert set(SPECS) == set(FUNCTION_CLASSES.names())


def draw(spec, seed=0, batch=64, points=9, active=None):
    task = make_task(spec, D)
    g = torch.Generator().manual_seed(seed)
    return task, *sample_prompts(task, make_inputs("isotropic", D), batch, points, g, active)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_shapes_and_seeding(name):
    _, xs, ys, params = draw(SPECS[name])
    assert xs.shape == (64, 9, D) and ys.shape == (64, 9)
    assert torch.isfinite(ys).all()
    _, xs2, ys2, _ = draw(SPECS[name])
    assert torch.equal(xs, xs2) and torch.equal(ys, ys2)  # same seed, same prompts
    _, _, ys3, _ = draw(SPECS[name], seed=1)
    assert not torch.equal(ys, ys3)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_second_moment_matches_normaliser(name):
    # 20,000 independent functions: for Gaussian-like y the relative standard error of mean(y^2) is about
    # sqrt(2 / 20000) = 1 %; a 6 % tolerance leaves room for heavier tails (ReLU nets, trees with 8 leaves).
    task, _, ys, params = draw(SPECS[name], batch=20_000, points=2)
    expected = task.y_scale(params).mean().item()
    assert ys.square().mean().item() == pytest.approx(expected, rel=0.06)


def test_linear_is_a_dot_product(gen):
    task = make_task("linear", D)
    params = task.sample(5, gen)
    xs = torch.randn(5, 4, D, generator=gen)
    assert torch.allclose(task.evaluate(params, xs), torch.einsum("bpd,bd->bp", xs, params["w"]))


def test_sparse_support_lies_in_active_dims(gen):
    task = make_task("sparse_linear:nnz=3", D)
    w = task.sample(2000, gen, active_dims=4)["w"]
    assert ((w != 0).sum(1) == 3).all()
    assert (w[:, 4:] == 0).all()
    # supports are uniform over the 4 active coordinates: each is used with probability 3/4
    usage = (w[:, :4] != 0).float().mean(0)
    assert torch.allclose(usage, torch.full((4,), 0.75), atol=0.05)  # 5 sigma for 2000 draws


def test_curriculum_zeroes_inactive_coordinates(gen):
    xs = make_inputs("isotropic", D).sample(10, 5, gen, active_dims=2)
    assert (xs[..., 2:] == 0).all() and (xs[..., :2] != 0).all()


def test_noisy_linear_noise_level(gen):
    task = make_task("noisy_linear:noise_std=0.5", D)
    params = task.sample(4000, gen)
    xs = torch.randn(4000, 5, D, generator=gen)
    residual = task.evaluate(params, xs, gen) - torch.einsum("bpd,bd->bp", xs, params["w"])
    assert residual.std().item() == pytest.approx(0.5, rel=0.02)


def test_quadratic_definition(gen):
    task = make_task("quadratic", D)
    params = task.sample(3, gen)
    xs = torch.randn(3, 4, D, generator=gen)
    assert torch.allclose(task.evaluate(params, xs), (xs**2 @ params["w"].unsqueeze(-1)).squeeze(-1) / math.sqrt(3))


def test_relu_net_definition(gen):
    task = make_task("relu_net:hidden=7", D)
    p = task.sample(2, gen)
    xs = torch.randn(2, 3, D, generator=gen)
    for b in range(2):
        for i in range(3):
            expected = math.sqrt(2 / 7) * torch.relu(xs[b, i] @ p["w1"][b]) @ p["w2"][b]
            assert task.evaluate(p, xs)[b, i].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)


def test_tree_matches_a_walk_down_the_tree(gen):
    task = make_task("tree:depth=3", D)
    p = task.sample(4, gen)
    xs = torch.randn(4, 10, D, generator=gen)
    ys = task.evaluate(p, xs)
    for b in range(4):
        for i in range(10):
            node = 0
            for _ in range(3):
                node = 2 * node + (2 if xs[b, i, p["split"][b, node]] > 0 else 1)
            assert ys[b, i] == p["leaf"][b, node - 7]


def test_sinusoid_definition(gen):
    task = make_task("sinusoid:freq_min=1,freq_max=3,amplitude=2", D)
    p = task.sample(500, gen, active_dims=4)
    assert torch.allclose(p["v"].norm(dim=1), torch.ones(500)) and (p["v"][:, 4:] == 0).all()
    assert p["freq"].min() >= 1 and p["freq"].max() <= 3
    xs = torch.randn(500, 3, D, generator=gen)
    expected = 2 * torch.sin(p["freq"][:, None] * (xs @ p["v"].unsqueeze(-1)).squeeze(-1) + p["phase"][:, None])
    assert torch.allclose(task.evaluate(p, xs), expected, atol=1e-5)


def test_classification_outputs_signs():
    task, xs, ys, p = draw("linear_classification")
    assert set(ys.unique().tolist()) <= {-1.0, 1.0}
    assert task.metric == "sign"


def test_finite_pool_reuses_its_functions():
    task, xs, ys, p = draw("finite_pool:size=4,pool_seed=3", batch=200)
    pool = task.pool(torch.device("cpu"))["w"]
    assert torch.equal(p["w"], pool[p["index"]])
    assert len(p["index"].unique()) == 4
    other, *_ = draw("finite_pool:size=4,pool_seed=3", seed=9)
    assert torch.equal(other.pool(torch.device("cpu"))["w"], pool)  # the pool depends on pool_seed only


def test_mixture_proportions_and_components():
    task, xs, ys, p = draw(MIXTURE, batch=4000)
    share = p["component"].float().mean().item()  # weight 1 of 4 on component 1
    assert share == pytest.approx(0.25, abs=0.035)  # 5 sigma at n = 4000
    sparse = p["component"] == 1
    w_sparse = p["parts"]["1"]["w"][sparse]
    assert ((w_sparse != 0).sum(1) == 2).all()
    assert torch.allclose(ys[sparse], torch.einsum("bpd,bd->bp", xs[sparse], w_sparse))
    assert torch.allclose(ys[~sparse], torch.einsum("bpd,bd->bp", xs[~sparse], p["parts"]["0"]["w"][~sparse]))
    assert set(task.y_scale(p).unique().tolist()) == {2.0, 6.0}


def test_convex_combination(gen):
    task = make_task({"name": "convex", "alpha": 0.25, "first": {"name": "linear"}, "second": {"name": "quadratic"}}, D)
    p = task.sample(3, gen)
    xs = torch.randn(3, 4, D, generator=gen)
    f = torch.einsum("bpd,bd->bp", xs, p["f"]["w"])
    g = torch.einsum("bpd,bd->bp", xs**2, p["g"]["w"]) / math.sqrt(3)
    assert torch.allclose(task.evaluate(p, xs), 0.25 * f + 0.75 * g, atol=1e-5)
    assert task.expected_y2() == pytest.approx(0.25**2 * D + 0.75**2 * D)


@pytest.mark.parametrize("name", ["skewed", "half_subspace", "scaled:factor=3"])
def test_input_covariances(name, gen):
    dist = make_inputs(name, D)
    xs = dist.sample(1, 60_000, gen).reshape(-1, D).double()  # one call: one rotation
    cov = xs.T @ xs / len(xs)
    eig = torch.linalg.eigvalsh(cov).flip(0)
    if name == "skewed":
        expected = 1 / torch.arange(1, D + 1, dtype=torch.float64)
        expected *= D / expected.sum()
    elif name == "half_subspace":
        expected = torch.tensor([2.0] * (D // 2) + [0.0] * (D - D // 2), dtype=torch.float64)
    else:
        expected = torch.full((D,), 9.0, dtype=torch.float64)
    assert torch.allclose(eig, expected, atol=0.05 * expected.max())


@pytest.mark.parametrize(
    "spec, message",
    [
        ("sparse_linear:nnz=7", "config key 'task.nnz': must be <= dims (6), got 7"),
        ("sparse_linea", "unknown task 'sparse_linea' (did you mean 'sparse_linear'?); allowed: convex"),
        ("tree:depht=3", "unknown config key 'task.depht' (did you mean 'depth'?)"),
        ("relu_net:hidden=-1", "config key 'task.hidden': must be >= 1, got -1"),
        ("sinusoid:freq_min=x", "config key 'task.freq_min': expected a number, got 'x'"),
        ({"name": "mixture", "components": [{"name": "linear", "weight": -1}]}, "weight': must be a number >= 0"),
        ({"name": "mixture", "components": [{"name": "linear", "weight": 0}]}, "must sum to a positive number"),
        ({"name": "convex", "first": {"name": "nope"}}, "unknown task 'nope'"),
        ({"name": "convex", "second": {"name": "linear_classification"}}, "need two regression classes"),
    ],
)
def test_bad_task_specs(spec, message):
    with pytest.raises(UserError, match=None) as info:
        make_task(spec, D)
    assert message in str(info.value)


def test_negative_dims_rejected():
    with pytest.raises(UserError, match="must be >= 1"):
        make_task("linear", -2)
