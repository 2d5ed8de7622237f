import math

import numpy as np
import pytest
import torch

from iclab.errors import UserError
from iclab.tasks import FUNCTION_CLASSES, make_inputs, make_shift, make_task, sample_prompts

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


# Park et al.'s classes take their own inputs, have outliers or vector outputs: tests/test_park_tasks.py
PARK = {"sparse_parity", "many_outlier_regression", "ortho_outlier_regression", "vector_mqar"}


def test_every_registered_class_is_covered():
    assert set(SPECS) | PARK == set(FUNCTION_CLASSES.names())


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
    assert torch.allclose(task.apply(params, xs), torch.einsum("bpd,bd->bp", xs, params["w"]))


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
    residual = task.apply(params, xs, gen) - torch.einsum("bpd,bd->bp", xs, params["w"])
    assert residual.std().item() == pytest.approx(0.5, rel=0.02)


def test_quadratic_definition(gen):
    task = make_task("quadratic", D)
    params = task.sample(3, gen)
    xs = torch.randn(3, 4, D, generator=gen)
    assert torch.allclose(task.apply(params, xs), (xs**2 @ params["w"].unsqueeze(-1)).squeeze(-1) / math.sqrt(3))


def test_relu_net_definition(gen):
    task = make_task("relu_net:hidden=7", D)
    p = task.sample(2, gen)
    xs = torch.randn(2, 3, D, generator=gen)
    for b in range(2):
        for i in range(3):
            expected = math.sqrt(2 / 7) * torch.relu(xs[b, i] @ p["w1"][b]) @ p["w2"][b]
            assert task.apply(p, xs)[b, i].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)


def test_tree_matches_a_walk_down_the_tree(gen):
    task = make_task("tree:depth=3", D)
    p = task.sample(4, gen)
    xs = torch.randn(4, 10, D, generator=gen)
    ys = task.apply(p, xs)
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
    assert torch.allclose(task.apply(p, xs), expected, atol=1e-5)


def test_classification_label_is_the_sign_of_w_dot_x():
    task, xs, ys, p = draw("linear_classification", batch=200)
    assert set(ys.unique().tolist()) == {-1.0, 1.0}
    # computed here from the drawn w and xs, not through the task: a label from noise or from another w fails
    expected = np.sign((xs.double().numpy() * p["w"].double().numpy()[:, None, :]).sum(-1))
    assert np.array_equal(ys.numpy(), expected)
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
    assert torch.allclose(task.apply(p, xs), 0.25 * f + 0.75 * g, atol=1e-5)
    assert task.expected_y2() == pytest.approx(0.25**2 * D + 0.75**2 * D)


def spectrum(xs: torch.Tensor) -> torch.Tensor:
    """Eigenvalues, largest first, of the empirical second-moment matrix of (n, d) draws."""
    xs = xs.reshape(-1, xs.shape[-1]).double()
    return torch.linalg.eigvalsh(xs.T @ xs / len(xs)).flip(0)


def garg_inputs(eigenvalues: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Garg et al.'s sampler, written out as their src/samplers.py and src/eval.py do it: T = U diag(t) U^T with U
    from the SVD of a Gaussian matrix, scaled by sqrt(d / sum t^2), and x = z T."""
    d = len(eigenvalues)
    u, _, _ = torch.linalg.svd(torch.randn(d, d, generator=generator, dtype=torch.float64))
    t = u @ torch.diag(eigenvalues.double()) @ u.T * math.sqrt(d / eigenvalues.double().square().sum())
    return torch.randn(n, d, generator=generator, dtype=torch.float64) @ t


N_COV = 60_000
# The eigenvalues of an empirical covariance of n Gaussian draws scatter by about lambda * sqrt(2 / n) (0.6 % at
# n = 60,000) for well separated eigenvalues: 5 of those standard deviations, relative, plus 1e-9 for exact zeros.
COV_RTOL = 5 * math.sqrt(2 / N_COV)


def test_skewed_inputs_are_garg_s_by_default(gen):
    """Covariance eigenvalues d (1/(i+1))^2 / sum_j (1/(j+1))^2: Garg's x = z T with T's eigenvalues 1/(i+1)."""
    inverse = 1 / torch.arange(1, D + 1, dtype=torch.float64)
    analytic = D * inverse**2 / (inverse**2).sum()  # d = 6: 4.02, 1.01, 0.45, ...
    ours = spectrum(make_inputs("skewed", D).sample(1, N_COV, gen))  # one call: one rotation
    garg = spectrum(garg_inputs(inverse, N_COV, gen))
    assert torch.allclose(ours, analytic, rtol=COV_RTOL, atol=1e-9)
    assert torch.allclose(garg, analytic, rtol=COV_RTOL, atol=1e-9)  # the analytic form is Garg's definition
    old = spectrum(make_inputs("skewed:power=1", D).sample(1, N_COV, gen))  # iclab's before version 2
    assert torch.allclose(old, D * inverse / inverse.sum(), rtol=COV_RTOL, atol=1e-9)  # 2.45, 1.22, 0.82, ...


@pytest.mark.parametrize("dims", [5, 6])
def test_half_subspace_keeps_floor_d_over_2_directions(dims, gen):
    """Garg: eigenvalues 1 on the first d // 2 directions, so the covariance is d / (d // 2) there, 0 elsewhere;
    rounding: ceil keeps iclab's earlier ceil(d / 2) (the two differ at odd d)."""
    ones = torch.zeros(dims, dtype=torch.float64)
    ones[: dims // 2] = 1
    analytic = ones * dims / (dims // 2)
    ours = spectrum(make_inputs("half_subspace", dims).sample(1, N_COV, gen))
    garg = spectrum(garg_inputs(ones, N_COV, gen))
    assert torch.allclose(ours, analytic, rtol=COV_RTOL, atol=1e-9)
    assert torch.allclose(garg, analytic, rtol=COV_RTOL, atol=1e-9)
    up = -(-dims // 2)
    old = spectrum(make_inputs("half_subspace:rounding=ceil", dims).sample(1, N_COV, gen))
    expected = torch.tensor([dims / up] * up + [0.0] * (dims - up), dtype=torch.float64)
    assert torch.allclose(old, expected, rtol=COV_RTOL, atol=1e-9)


def test_scaled_inputs(gen):
    eig = spectrum(make_inputs("scaled:factor=3", D).sample(1, N_COV, gen))
    assert torch.allclose(eig, torch.full((D,), 9.0, dtype=torch.float64), rtol=COV_RTOL)


def test_input_shifts_name_their_definition_in_the_label():
    assert make_shift("skewed").inputs({"name": "isotropic"}) == {"name": "skewed", "power": 2.0}
    assert make_shift("skewed").label({"name": "skewed"}) == "skewed:power=2"
    assert make_shift("skewed:power=1").label({"name": "skewed", "power": 1}) == "skewed:power=1"
    assert make_shift("half_subspace").inputs({}) == {"name": "half_subspace", "rounding": "floor"}
    assert make_shift("half_subspace").label({"name": "half_subspace"}) == "half_subspace:rounding=floor"
    assert make_shift("noisy_y:std=0.5").label({"name": "noisy_y", "std": 0.5}) == "noisy_y:std=0.5,renormalize=True"
    assert make_shift("scaled_x:factor=2").label({"name": "scaled_x", "factor": 2}) == "scaled_x:factor=2"


def test_noisy_y_shift_is_garg_s_renormalised_noisy_regression(gen):
    """Garg's noisyLR: y + N(0, 1) noise, then times sqrt(d) / std(y) over the set; renormalize: false adds the
    noise alone."""
    task = make_task("linear", D)
    ys = task.sample_ys(torch.randn(4000, 9, D, generator=gen), gen)
    state = gen.get_state()
    shifted = make_shift("noisy_y").outputs(ys, gen, task)
    gen.set_state(state)
    noisy = make_shift("noisy_y:renormalize=false").outputs(ys, gen, task)
    assert (noisy - ys).std().item() == pytest.approx(1.0, rel=0.02)  # 36,000 draws: 5 sigma is 1.9 %
    assert torch.allclose(shifted, noisy * math.sqrt(D) / noisy.std())


def test_noisy_linear_renormalize_is_garg_s_renormalize_ys(gen):
    task = make_task("noisy_linear:noise_std=1", D)
    renormalized = make_task("noisy_linear:noise_std=1,renormalize=true", D)
    params = task.sample(64, gen)
    xs = torch.randn(64, 41, D, generator=gen)
    state = gen.get_state()
    ys = task.apply(params, xs, gen)
    gen.set_state(state)
    assert torch.allclose(renormalized.apply(params, xs, gen), ys * math.sqrt(D) / ys.std())  # Garg's line
    assert renormalized.expected_y2() == D and task.expected_y2() == D + 1


def test_tree_splits_on_any_coordinate_under_a_curriculum(gen):
    """Garg draws each node's coordinate from all d (randint(0, n_dims)), also zeroed ones, whose splits then
    always go left; splits: active keeps iclab's earlier draw among the active coordinates."""
    split = make_task("tree:depth=3", D).sample(2000, gen, active_dims=2)["split"]
    usage = torch.bincount(split.flatten(), minlength=D).double() / split.numel()
    # 14,000 draws: the frequency of each coordinate scatters by sqrt(p (1 - p) / n) = 0.003; 5 sigma
    assert torch.allclose(usage, torch.full((D,), 1 / D, dtype=torch.float64), atol=5 * math.sqrt(5 / 36 / 14_000))
    assert make_task("tree:depth=3,splits=active", D).sample(2000, gen, active_dims=2)["split"].max() == 1


def test_tree_walk_under_a_curriculum(gen):
    """A hand-written walk as Garg's loop: a zeroed coordinate is not > 0, so its split goes left."""
    task = make_task("tree:depth=3", D)
    p = task.sample(8, gen, active_dims=2)
    xs = make_inputs("isotropic", D).sample(8, 10, gen, active_dims=2)
    ys = task.apply(p, xs)
    for b in range(8):
        for i in range(10):
            node = 0
            for _ in range(3):
                node = 2 * node + 1 + int(bool(xs[b, i, p["split"][b, node]] > 0))
            assert ys[b, i] == p["leaf"][b, node - 7]


def test_finite_pool_draws_a_batch_without_replacement(gen):
    """Garg: randperm(pool)[:batch], all different; a batch larger than the pool takes rounds of permutations."""
    task = make_task("finite_pool:size=16", D)
    assert len(task.sample(16, gen)["index"].unique()) == 16
    assert len(task.sample(10, gen)["index"].unique()) == 10
    index = task.sample(40, gen)["index"]
    assert sorted(index[:16].tolist()) == list(range(16)) and sorted(index[16:32].tolist()) == list(range(16))
    assert set(torch.bincount(index, minlength=16).tolist()) == {2, 3}
    # the first prompt's function is uniform over the pool: 3,200 batches, 5 sigma of a frequency of 1/16
    first = torch.stack([task.sample(4, gen)["index"][0] for _ in range(3200)])
    assert torch.allclose(torch.bincount(first, minlength=16) / 3200.0, torch.full((16,), 1 / 16), atol=0.022)
    # replacement: true, iclab's before version 2, draws each prompt's function independently (repeats are
    # all but certain: 16 distinct of 16 has probability 16! / 16^16 = 1e-6)
    with_replacement = make_task("finite_pool:size=16,replacement=true", D).sample(16, gen)["index"]
    assert len(with_replacement.unique()) < 16


def test_sparse_linear_default_is_garg_s_sparsity():
    task = make_task("sparse_linear", D)
    w = task.sample(100, torch.Generator().manual_seed(0))["w"]
    assert task.nnz == 3 and ((w != 0).sum(1) == 3).all()


def bce(preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-(t log s + (1 - t) log(1 - s)) with s = sigmoid(p), written out."""
    s = 1 / (1 + torch.exp(-preds.double()))
    return -(targets * torch.log(s) + (1 - targets) * torch.log(1 - s))


def test_classification_trains_with_garg_s_logistic_loss(gen):
    task, xs, ys, p = draw("linear_classification")
    preds = 3 * torch.randn(ys.shape, generator=gen)
    loss = task.training_loss(preds, ys, p)
    assert torch.allclose(loss.double(), bce(preds, (ys + 1) / 2), atol=1e-6)
    garg = torch.nn.BCELoss()(torch.sigmoid(preds), (ys + 1) / 2)  # Garg's cross_entropy, src/tasks.py
    assert loss.mean().item() == pytest.approx(garg.item(), rel=1e-5)
    squared = make_task("linear_classification:loss=squared", D)  # iclab's before version 2
    assert torch.equal(squared.training_loss(preds, ys, p), (preds - ys).square())


def test_regression_losses(gen):
    task, xs, ys, p = draw("sparse_linear:nnz=2")
    preds = torch.randn(ys.shape, generator=gen)
    assert torch.equal(task.training_loss(preds, ys, p), (preds - ys).square())
    assert torch.allclose(task.training_loss(preds, ys, p, normalized=True), (preds - ys).square() / 2)


def test_mixture_loss_is_each_prompt_s_own_class_loss(gen):
    task, xs, ys, p = draw(MIXTURE, batch=400)
    preds = torch.randn(ys.shape, generator=gen)
    scale = torch.where(p["component"] == 1, 2.0, float(D)).unsqueeze(1)  # nnz 2 and d
    assert torch.allclose(task.training_loss(preds, ys, p, normalized=True), (preds - ys).square() / scale)
    spec = {
        "name": "mixture",
        "components": [
            {"name": "linear_classification", "weight": 1},
            {"name": "linear_classification", "loss": "squared", "weight": 1},
        ],
    }
    task, xs, ys, p = draw(spec, batch=400)
    preds = torch.randn(ys.shape, generator=gen)
    logistic = p["component"] == 0
    loss = task.training_loss(preds, ys, p)
    assert torch.allclose(loss[logistic].double(), bce(preds[logistic], (ys[logistic] + 1) / 2), atol=1e-6)
    assert torch.equal(loss[~logistic], (preds[~logistic] - ys[~logistic]).square())


def test_finite_pool_of_classifiers_trains_with_the_logistic_loss(gen):
    task, xs, ys, p = draw({"name": "finite_pool", "base": {"name": "linear_classification"}})
    preds = torch.randn(ys.shape, generator=gen)
    assert task.metric == "sign"
    assert torch.allclose(task.training_loss(preds, ys, p).double(), bce(preds, (ys + 1) / 2), atol=1e-6)


def test_regression_and_classification_do_not_mix():
    spec = {
        "name": "mixture",
        "components": [{"name": "linear", "weight": 1}, {"name": "linear_classification", "weight": 1}],
    }
    with pytest.raises(UserError, match="cannot mix regression and classification classes"):
        make_task(spec, D)


def test_evaluate_is_a_deprecated_alias_of_apply(gen):
    task, xs, ys, p = draw("linear")
    with pytest.warns(DeprecationWarning, match="call apply"):
        assert torch.equal(task.evaluate(p, xs), task.apply(p, xs))


def test_custom_classes_written_for_evaluate_still_work(gen):
    """A user's class from before the rename defines evaluate(); iclab calls apply(), which must reach it, and
    its super().evaluate() must reach the parent's function, not recurse."""
    with pytest.warns(DeprecationWarning, match="define apply"):

        class Doubled(FUNCTION_CLASSES.get("linear")):
            def evaluate(self, params, xs, generator=None):
                return 2 * super().evaluate(params, xs, generator)

    task = Doubled(dims=D)
    xs = torch.randn(3, 4, D, generator=gen)
    params = task.sample(3, gen)
    with pytest.warns(DeprecationWarning):
        ys = task.apply(params, xs)
    assert torch.allclose(ys, 2 * torch.einsum("bpd,bd->bp", xs, params["w"]))


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
