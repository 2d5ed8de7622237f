"""Park et al.'s tasks (iclab.tasks.park) and the exact parity learner (iclab.baselines.parity), each against a
hand-written loop over prompts and points that recomputes the draws' outcome from the same random numbers, drawn
in the order the vectorised code draws them."""

import itertools
import math

import numpy as np
import pytest
import torch

from iclab.baselines import make_estimator, parity
from iclab.errors import UserError
from iclab.tasks import make_inputs, make_task, sample_prompts

SEED = 3


def draw(spec, dims, batch, points, inputs="isotropic", active=None):
    task = make_task(spec, dims)
    g = torch.Generator().manual_seed(SEED)
    return task, *sample_prompts(task, make_inputs(inputs, dims), batch, points, g, active)


def raw(*shapes, kinds):
    """The random tensors a seeded generator yields in turn: kind 'n' normal, 'u' uniform."""
    g = torch.Generator().manual_seed(SEED)
    return [
        torch.randn(*s, generator=g) if k == "n" else torch.rand(*s, generator=g)
        for s, k in zip(shapes, kinds, strict=True)
    ]


# --- inputs and sparse parity ---------------------------------------------------------------------------------


def test_signs_are_uniform_on_the_cube_and_follow_the_curriculum(gen):
    xs = make_inputs("signs", 6).sample(4000, 3, gen)
    assert set(xs.unique().tolist()) == {-1.0, 1.0}
    assert xs.mean().abs() < 5 / math.sqrt(xs.numel())  # 5 sigma of a fair coin
    assert (make_inputs("signs", 6).sample(5, 3, gen, active_dims=2)[..., 2:] == 0).all()


def test_sparse_parity_matches_a_hand_written_sampler():
    b, n, d, k, active = 40, 7, 10, 3, 8
    task, xs, ys, params = draw(f"sparse_parity:k={k}", d, b, n, inputs="signs", active=active)
    z, keys = raw((b, n, d), (b, d), kinds="nu")
    for i in range(b):
        support = sorted(range(active), key=lambda j: -keys[i, j].item())[:k]  # the k largest keys among the active
        assert params["support"][i].nonzero().flatten().tolist() == sorted(support)
        for t in range(n):
            x = [(1.0 if z[i, t, j] > 0 else -1.0) if j < active else 0.0 for j in range(d)]
            assert xs[i, t].tolist() == x
            assert ys[i, t].item() == math.prod(x[j] for j in support)


def test_sparse_parity_supports_are_uniform():
    _, _, _, params = draw("sparse_parity:k=2", 5, 20_000, 1, inputs="signs")
    usage = params["support"].double().mean(0)  # each coordinate is in the support with probability k/d
    assert torch.allclose(usage, torch.full((5,), 0.4, dtype=torch.float64), atol=0.02)  # 5 sigma
    assert (params["support"].sum(1) == 2).all()


def test_sparse_parity_is_scored_by_sign_and_trained_with_the_logistic_loss():
    task, _, ys, params = draw("sparse_parity", 10, 8, 5, inputs="signs")
    assert task.metric == "sign" and set(ys.unique().tolist()) <= {-1.0, 1.0}
    preds = torch.linspace(-3, 3, ys.numel()).view_as(ys)
    expected = torch.log1p(torch.exp(-ys * preds))  # log(1 + e^{-y p}) for y in {-1, 1}
    assert torch.allclose(task.training_loss(preds, ys, params), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("sparse_parity:k=11", "must be <= dims (10), got 11"),
        ("sparse_parity:k=0", "k"),
        ("many_outlier_regression:prob=1", "must be in [0, 1)"),
        ("ortho_outlier_regression:prob=-0.5", "must be in [0, 1)"),
        ("vector_mqar:queries=0", "queries"),
    ],
)
def test_bad_parameters_are_one_line_errors(spec, message):
    with pytest.raises(UserError) as e:
        make_task(spec, 10)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_parity_on_gaussian_inputs_says_which_inputs_to_use():
    with pytest.raises(UserError, match="inputs: signs") as e:
        draw("sparse_parity", 10, 2, 3)
    assert "\n" not in str(e.value)


# --- the exact parity learner ---------------------------------------------------------------------------------


def brute_force(xs, ys, k):
    """For each prompt and position, the vote of every size-k support that no earlier example contradicts."""
    b, n, d = xs.shape
    out = np.zeros((b, n))
    for i in range(b):
        for t in range(1, n):
            votes = [
                math.prod(xs[i, t, j].item() for j in s)
                for s in itertools.combinations(range(d), k)
                if all(math.prod(xs[i, e, j].item() for j in s) == ys[i, e].item() for e in range(t))
            ]
            out[i, t] = 0.0 if not votes else (1.0 if sum(votes) >= 0 else -1.0)
    return out


@pytest.mark.parametrize("k", [1, 2, 3])
def test_exact_parity_learner_matches_brute_force(k, monkeypatch):
    task, xs, ys, _ = draw(f"sparse_parity:k={k}", 4, 30, 6, inputs="signs")
    xs[:5, 2], ys[:5, 2] = xs[:5, 1], -ys[:5, 1]  # five prompts contradict themselves: no support is left there
    expected = brute_force(xs, ys, k)
    learner = make_estimator("parity").fit_prior(task, None, 6)
    assert np.array_equal(learner.predict(xs, ys).numpy(), expected)
    monkeypatch.setattr(parity, "BLOCK", 30 * 6)  # one support per block: the same votes
    assert np.array_equal(learner.predict(xs, ys).numpy(), expected)
    assert (expected[:5, 3:] == 0).all()


def test_exact_parity_learner_takes_the_tasks_k_unless_given():
    task = make_task("sparse_parity:k=3", 6)
    assert make_estimator("parity").fit_prior(task, None, 5).k_ == 3
    assert make_estimator("parity:k=1").fit_prior(task, None, 5).k_ == 1
    assert make_estimator("parity").fit_prior(make_task("linear", 6), None, 5).k_ == 2  # Park et al.'s


def test_exact_parity_learner_learns_park_et_al_s_task():
    task, xs, ys, _ = draw("sparse_parity", 10, 200, 60, inputs="signs")
    accuracy = (make_estimator("parity").fit_prior(task, None, 60).predict(xs, ys) == ys).double().mean(0)
    assert accuracy[0] == 0  # no examples: 0, as every estimator
    assert accuracy[1:4].max() < 0.9 and (accuracy[40:] == 1).all()


def test_exact_parity_learner_refuses_k_above_the_dimension():
    xs = torch.ones(2, 3, 4)
    with pytest.raises(UserError, match="k = 5 is more than the prompts' 4 dimensions"):
        make_estimator("parity:k=5").predict(xs, xs[..., 0])


# --- outlier regression ---------------------------------------------------------------------------------------


def test_many_outlier_regression_matches_a_hand_written_sampler():
    b, n, d = 30, 9, 5
    _, xs, ys, params = draw("many_outlier_regression", d, b, n)
    z, w, u = raw((b, n, d), (b, d), (b, n), kinds="nnu")
    for i in range(b):
        for t in range(n):
            outlier = u[i, t].item() < 0.9
            assert params["outlier"][i, t].item() == outlier
            x = [1.0] * d if outlier else z[i, t].tolist()
            assert xs[i, t].tolist() == pytest.approx(x)
            assert ys[i, t].item() == pytest.approx(
                1.0 if outlier else sum(a * c for a, c in zip(w[i].tolist(), x, strict=True))
            )


def test_ortho_outlier_regression_matches_a_hand_written_sampler():
    b, n, d = 20, 8, 6
    _, xs, ys, params = draw("ortho_outlier_regression", d, b, n)
    z, w, g1, g2, a, c, u = raw((b, n, d), (b, d), (b, d), (b, d), (b,), (b,), (b, n), kinds="nnnnnnu")
    w, g1, g2, z = w.double().numpy(), g1.double().numpy(), g2.double().numpy(), z.double().numpy()
    for i in range(b):
        first = g1[i] - w[i] * (g1[i] @ w[i]) / (w[i] @ w[i])
        second = g2[i] - w[i] * (g2[i] @ w[i]) / (w[i] @ w[i])
        second = second - first * (second @ first) / (first @ first)
        ai = a[i].item() / (a[i].item() ** 2 + c[i].item() ** 2)
        ci = c[i].item() / (ai**2 + c[i].item() ** 2)  # the reference divides by the updated a
        o = ai * first + ci * second
        for t in range(n):
            outlier = u[i, t].item() < 0.5
            assert params["outlier"][i, t].item() == outlier
            x = o if outlier else z[i, t]
            assert np.allclose(xs[i, t].numpy(), x, rtol=1e-4, atol=1e-4)
            assert ys[i, t].item() == pytest.approx(o[0] if outlier else x @ w[i], rel=1e-4, abs=1e-4)


def test_outlier_statistics():
    d = 8
    for spec, prob in [("many_outlier_regression", 0.9), ("ortho_outlier_regression:prob=0.3", 0.3)]:
        task, xs, ys, params = draw(spec, d, 4000, 10)
        mask = params["outlier"]
        assert mask.double().mean().item() == pytest.approx(prob, abs=5 * math.sqrt(prob * (1 - prob) / mask.numel()))
        clean = ys[~mask]
        assert clean.square().mean().item() == pytest.approx(task.y_scale(params).mean().item(), rel=0.06)
    o = params["outlier_x"]
    w = params["w"]
    assert ((o * w).sum(1).abs() <= 1e-4 * o.norm(dim=1) * w.norm(dim=1)).all()  # the outlier x is orthogonal to w
    same = torch.where(mask.unsqueeze(-1), xs - o.unsqueeze(1), torch.zeros_like(xs))
    assert (same == 0).all()  # one outlier per prompt, at each of its outlier positions


def test_outlier_tasks_refuse_to_be_components():
    spec = {"name": "mixture", "components": [{"name": "many_outlier_regression", "weight": 1}]}
    with pytest.raises(UserError, match="use it as the task, not inside another"):
        draw(spec, 4, 2, 3)


def test_outlier_training_loss_is_the_mean_squared_error_on_clean_points():
    task, _, ys, params = draw("many_outlier_regression", 4, 16, 12)
    preds = torch.randn(ys.shape, generator=torch.Generator().manual_seed(1))
    expected = (preds - ys)[~params["outlier"]].square().mean()
    assert task.training_loss(preds, ys, params).mean().item() == pytest.approx(expected.item(), rel=1e-6)
    normalised = task.training_loss(preds, ys, params, normalized=True).mean()
    assert normalised.item() == pytest.approx(expected.item() / 4, rel=1e-6)


# --- vector-valued MQAR ---------------------------------------------------------------------------------------


def mqar(b, n, d, queries=1):
    task = make_task(f"vector_mqar:queries={queries}", d)
    g = torch.Generator().manual_seed(SEED)
    xs, params = task.prompt_inputs(task.sample(b, g), make_inputs("isotropic", d).sample(b, n, g), g)
    return task, xs, params


def test_vector_mqar_matches_a_hand_written_sampler():
    b, n, d, q = 25, 9, 4, 2
    task, xs, params = mqar(b, n, d, q)
    targets = task.targets(params, xs)
    keys = n - q
    z, values, u = raw((b, n, d), (b, keys, d), (b, q), kinds="nnu")
    sphere = lambda v: v / np.linalg.norm(v) * math.sqrt(d)  # noqa: E731
    for i in range(b):
        ks = [sphere(z[i, t].numpy()) for t in range(keys)]
        vs = [sphere(values[i, t].numpy()) for t in range(keys)]
        for t in range(keys):
            assert np.allclose(xs[i, t].numpy(), ks[t], atol=1e-5)
            assert np.allclose(targets[i, t].numpy(), vs[t], atol=1e-5)
        for j in range(q):
            pick = math.floor(u[i, j].item() * (keys + 1))  # randint(0, keys): keys itself is a fresh vector
            query = ks[pick] if pick < keys else sphere(z[i, keys + j].numpy())
            nearest = max(range(keys), key=lambda t: float(query @ ks[t]))
            assert np.allclose(xs[i, keys + j].numpy(), query, atol=1e-5)
            assert np.allclose(targets[i, keys + j].numpy(), vs[nearest], atol=1e-5)


def test_vector_mqar_statistics_and_recall_errors():
    task, xs, params = mqar(4000, 6, 5)
    assert torch.allclose(xs.norm(dim=-1), torch.full(xs.shape[:2], math.sqrt(5)))
    fresh = (params["query"] == 5).double().mean().item()
    assert fresh == pytest.approx(1 / 6, abs=5 * math.sqrt(5 / 36 / 4000))
    repeated = params["query"][:, 0] < 5
    assert torch.equal(xs[repeated, 5], xs[repeated, params["query"][repeated, 0]])  # a repeat is the key itself
    truth = task.targets(params, xs)[:, 5:]
    assert (task.recall_errors(truth + 0.1 * torch.randn(truth.shape), params, xs) == 0).all()
    other = params["values"].roll(1, dims=1)[:, :1]  # another key's value, or the same when it is the same key
    wrong = (task.targets(params, xs)[:, 5:] != other).any(-1)
    assert torch.equal(task.recall_errors(other, params, xs).bool(), wrong)


def test_vector_mqar_outputs_are_its_targets_and_refuses_prompts_without_keys():
    task, xs, params = mqar(2, 4, 3)
    assert torch.equal(task.apply(params, xs), task.targets(params, xs)) and task.outputs == 3
    with pytest.raises(UserError, match="use it as the task"):
        task.apply({}, xs)
    with pytest.raises(UserError, match="no keys before its 4 queries"):
        mqar(2, 4, 3, queries=4)


def test_list_shows_park_tasks_with_their_parameters(capsys):
    from iclab.cli import main

    assert all(main(["list", kind]) == 0 for kind in ("tasks", "inputs", "estimators"))
    out = " ".join(capsys.readouterr().out.split())
    for text in ["sparse_parity", "parameters: k=2", "many_outlier_regression", "parameters: prob=0.9"]:
        assert text in out
    for text in ["ortho_outlier_regression", "parameters: prob=0.5", "vector_mqar", "parameters: queries=1"]:
        assert text in out
    assert "signs" in out and "parity" in out
