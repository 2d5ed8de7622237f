"""Every checkpoint shipped with the package loads, reproduces the error curve stored beside it, and still does what
the docs claim of it.

The claims are measured here, on fresh prompts (seed 99; the stored curves use 1234), against predictors computed in
this file with numpy (least squares, ridge, the Bayes estimator of a finite pool), never through iclab's `evaluate`
or baselines, so a checkpoint that lost its quality fails even when its stored curve was rewritten with it.

Margins. Every claim is read off N = 1,280 prompts as the mean of a per-prompt quantity, and asserted at three
standard errors of that mean (`upper`): a claim passes only if it would still hold with the mean 3 SE worse, so
neither a lucky draw passes it nor an unlucky one fails it. The bounds themselves sit between what the shipped
models measure and what an untrained model of the same config measures (error about 1 relative to predicting 0);
the comments give both, and test_claims_fail_for_an_untrained_model runs every claim on untrained models."""

import functools
import json
import math
import sys

import numpy as np
import pytest
import torch

from iclab.evaluation.curves import evaluate, read_curves
from iclab.recipes import task_diversity
from iclab.recipes.models import model_names, pretrained_dir
from iclab.tasks import make_inputs, make_task, sample_prompts
from iclab.training.runs import build_model, load_model, read_config

N, SEED = 1280, 99


@pytest.mark.parametrize("name", sorted(model_names()))
def test_shipped_checkpoint_reproduces_its_stored_curve(name):
    run = pretrained_dir(name)
    if not (run / "config.json").is_file():
        pytest.fail(f"no shipped checkpoint for {name}: run scripts/ship_pretrained.py")
    config = read_config(run)
    model, _ = load_model(run, config)
    stored = {r["k"]: r["mean"] for r in read_curves(run / "eval" / "curves.csv") if r["estimator"] == "transformer"}
    fresh = {r["k"]: r["mean"] for r in evaluate(model, config, baselines=[])}
    assert stored.keys() == fresh.keys()
    for k in stored:
        assert fresh[k] == pytest.approx(stored[k], rel=1e-4, abs=1e-6)  # the CSV keeps 6 significant digits


# --- measuring: prompts, predictors and errors, computed here ---


def draw(spec, config) -> tuple[torch.Tensor, torch.Tensor]:
    task = make_task(spec, config.dims)
    xs, ys, _ = sample_prompts(task, make_inputs("isotropic", config.dims), N, config.points,
                               torch.Generator().manual_seed(SEED))
    return xs, ys


def predict(model, xs, ys) -> np.ndarray:
    with torch.no_grad():
        return model(xs, ys).double().numpy()


def ridge(xs, ys, alpha: float) -> np.ndarray:
    """The prediction at every position k from the k points before it: 0 at k = 0, then ridge with penalty alpha
    (alpha = 0: the minimum-norm least-squares fit)."""
    x, y = xs.double().numpy(), ys.double().numpy()
    out = np.zeros(y.shape)
    for k in range(1, y.shape[1]):
        if alpha == 0:
            w = np.einsum("nij,nj->ni", np.linalg.pinv(x[:, :k]), y[:, :k])
        else:
            gram = np.einsum("nki,nkj->nij", x[:, :k], x[:, :k]) + alpha * np.eye(x.shape[-1])
            w = np.linalg.solve(gram, np.einsum("nki,nk->ni", x[:, :k], y[:, :k])[..., None])[..., 0]
        out[:, k] = np.einsum("ni,ni->n", x[:, k], w)
    return out


def dmmse(xs, ys, pool: torch.Tensor, sigma: float) -> np.ndarray:
    """The Bayes estimator of a uniform prior over the pool's weight vectors, noise sigma (Raventos et al.'s dMMSE):
    the posterior-weighted mean of the pool's predictions, the posterior after the points before k."""
    x, y, w = xs.double().numpy(), ys.double().numpy(), pool.double().numpy()
    out = np.zeros(y.shape)
    for rows in np.array_split(np.arange(len(y)), max(1, len(w) // 64)):  # bounded memory for large pools
        f = np.einsum("npd,md->npm", x[rows], w)  # every pool task's prediction at every point
        seen = np.cumsum((y[rows, :, None] - f) ** 2, axis=1)
        logp = np.concatenate([np.zeros_like(f[:, :1]), -seen[:, :-1] / (2 * sigma**2)], axis=1)
        post = np.exp(logp - logp.max(-1, keepdims=True))
        out[rows] = (post * f).sum(-1) / post.sum(-1)
    return out


def errors(pred: np.ndarray, ys) -> np.ndarray:
    """Per prompt and position: the squared error relative to predicting 0 (the mean of y^2 over the prompts)."""
    y = ys.double().numpy()
    return (pred - y) ** 2 / (y**2).mean(0)


def distance(a: np.ndarray, b: np.ndarray, dims: int) -> np.ndarray:
    """Per prompt: Raventos et al.'s distance of two predictors, their squared difference over every position / d."""
    return ((a - b) ** 2).mean(1) / dims


def upper(per_prompt: np.ndarray) -> float:
    """The mean over prompts plus three standard errors."""
    return float(per_prompt.mean() + 3 * per_prompt.std(ddof=1) / math.sqrt(len(per_prompt)))


def shipped(name):
    config = read_config(pretrained_dir(name))
    return load_model(pretrained_dir(name), config)[0], config


def untrained(name):
    """A model of the shipped config, freshly initialised."""
    config = read_config(pretrained_dir(name))
    torch.manual_seed(0)
    return build_model(config).eval(), config


# --- the claims: each returns the claims that do not hold (empty when the model does what the docs say) ---


def linear_claims(model, config, spec, label, beats: bool = False) -> list[str]:
    """Linear regression in d dimensions. Below d no model can be far below least squares on dense prompts (it is
    the Bayes estimator there) and the shipped ones are at its level on every class: within 0.05 at every k < d
    (measured: at most 0.025 above it, 3-class mixture on dense prompts at k = 2, SE 0.005; untrained: 0.3 to 1
    above). From k = d least squares is exact, and the model nearly: below 0.15 at k = d and 0.05 beyond (measured:
    at most 0.08 and 0.027, the nnz = 2 specialist, SE 0.012 and 0.004; untrained: about 1).
    With `beats` (nnz = 1 prompts), below least squares over k = 1 .. d-1 (the mean over those k per prompt):
    measured sparse1 0.082 below (SE 0.013), the 3-class mixture 0.136 below (SE 0.010). Not claimed for nnz = 2:
    there the specialist's gain is within the noise of fresh prompts (0.008 to 0.017 below, SE 0.0045, on three
    draws) and the 2-class mixture's none (the model-selection recipe's FAIL)."""
    xs, ys = draw(spec, config)
    model_err, d = errors(predict(model, xs, ys), ys), config.dims
    gap = model_err - errors(ridge(xs, ys, 0), ys)
    failed = [f"{label}: not within 0.05 of least squares at k = {k}" for k in range(1, d)
              if upper(gap[:, k]) >= 0.05]
    if beats and upper(gap[:, 1:d].mean(1)) >= 0:
        failed.append(f"{label}: not below least squares for k < d")
    if upper(model_err[:, d]) >= 0.15:
        failed.append(f"{label}: error at k = d = {d} not below 0.15")
    failed += [f"{label}: error at k = {k} not below 0.05" for k in range(d + 1, config.points)
               if upper(model_err[:, k]) >= 0.05]
    return failed


def below(model, config, spec, label, bounds: dict[int, float]) -> list[str]:
    """The model's error under bounds[k] at every k from each key on (until the next key)."""
    xs, ys = draw(spec, config)
    err, starts, failed = errors(predict(model, xs, ys), ys), sorted(bounds), []
    for i, start in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else config.points
        failed += [f"{label}: error at k = {k} not below {bounds[start]}" for k in range(start, stop)
                   if upper(err[:, k]) >= bounds[start]]
    return failed


DENSE, SPARSE1, SPARSE2 = {"name": "linear"}, {"name": "sparse_linear", "nnz": 1}, {"name": "sparse_linear", "nnz": 2}
SINE = {"name": "sinusoid", "freq_min": 0.5, "freq_max": 2.0}
CLAIMS = {
    "dense": lambda m, c: linear_claims(m, c, DENSE, "dense prompts"),
    "sparse": lambda m, c: linear_claims(m, c, SPARSE2, "nnz = 2 prompts"),
    "sparse1": lambda m, c: linear_claims(m, c, SPARSE1, "nnz = 1 prompts", beats=True),
    "dense_sparse": lambda m, c: linear_claims(m, c, DENSE, "dense prompts")
    + linear_claims(m, c, SPARSE2, "nnz = 2 prompts"),
    "dense_sparse1_sparse2": lambda m, c: linear_claims(m, c, DENSE, "dense prompts")
    + linear_claims(m, c, SPARSE1, "nnz = 1 prompts", beats=True)
    + linear_claims(m, c, SPARSE2, "nnz = 2 prompts"),
    # a line through 0 from one point: measured 0.015 at k = 1 (SE 0.007), 0.001 beyond; untrained about 1
    "line": lambda m, c: below(m, c, DENSE, "lines", {1: 0.1, 2: 0.01}),
    # sinusoids, which least squares cannot fit (its error 0.8 to 1.3): measured 0.066 at k = 4, 0.016 at k = 10
    # (SE below 0.01); untrained about 1
    "sine": lambda m, c: below(m, c, SINE, "sinusoids", {4: 0.15, 8: 0.05}),
    # both classes. Lines: 0.021 to 0.037 at k = 3 .. 5 but heavy-tailed (a few lines read as sinusoids: SE up to
    # 0.026, median 0.002), 0.007 at most from k = 6; sinusoids 0.106 at k = 4, 0.025 at k = 10 (SE below 0.01)
    "line_sine": lambda m, c: below(m, c, DENSE, "lines", {3: 0.2, 6: 0.05})
    + below(m, c, SINE, "sinusoids", {4: 0.2, 8: 0.08}),
}


def test_every_shipped_model_has_claims():
    assert set(CLAIMS) == set(model_names())


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_shipped_model_does_what_the_docs_claim(name):
    assert CLAIMS[name](*shipped(name)) == []


def task_diversity_claims(load) -> list[str]:
    """Raventos et al.'s recipe as the task-diversity docs state it, on fresh Gaussian tasks (and the smallest
    pool's own): M = 2 tracks the Bayes estimator of its pool (dMMSE) and fails on fresh tasks; a threshold lies
    between M = 8 and M = 32: up to 8 every model is closer to dMMSE than to ridge (lambda = sigma^2), from 32 on
    every one closer to ridge; M = 2048 is within 0.1 of ridge's error. Measured: M = 2 is 0.003 from its dMMSE on
    its own tasks, its fresh error 1.78 against ridge's 0.36; distances to dMMSE / ridge on fresh tasks M = 8 0.24 /
    0.43, M = 32 0.23 / 0.09, M = 2048 0.055 / 0.045, its error 0.40 against 0.36. Untrained models are near 0.65 from
    both and at error 1."""
    sigma, failed = task_diversity.NOISE_STD, []
    pools = task_diversity.SIZES["full"]["pools"]
    models = {size: load(f"pool{size}") for size in pools}
    config = models[pools[0]][1]
    own = make_task(task_diversity.pool_task(pools[0]), config.dims).pool(torch.device("cpu"))["w"]
    xs, ys = draw(task_diversity.pool_task(pools[0]), config)
    if upper(distance(predict(models[pools[0]][0], xs, ys), dmmse(xs, ys, own, sigma), config.dims)) >= 0.05:
        failed.append(f"M = {pools[0]} is not within 0.05 of its dMMSE on its own tasks")
    xs, ys = draw(task_diversity.fresh_task(), config)
    ridge_pred = ridge(xs, ys, sigma**2)
    for size, (model, _) in models.items():
        pred = predict(model, xs, ys)
        gap = errors(pred, ys)[:, 1:].mean(1) - errors(ridge_pred, ys)[:, 1:].mean(1)
        if size == pools[0] and upper(-gap) >= -0.5:
            failed.append(f"M = {size} does not fail on fresh tasks (0.5 above ridge)")
        if size == pools[-1] and upper(gap) >= 0.1:
            failed.append(f"M = {size} is not within 0.1 of ridge's error on fresh tasks")
        pool = make_task(task_diversity.pool_task(size), config.dims).pool(torch.device("cpu"))["w"]
        to_dmmse = distance(pred, dmmse(xs, ys, pool, sigma), config.dims)
        to_ridge = distance(pred, ridge_pred, config.dims)
        if size <= 8 and upper(to_dmmse - to_ridge) >= 0:
            failed.append(f"M = {size} is not closer to dMMSE than to ridge on fresh tasks")
        if size >= 32 and upper(to_ridge - to_dmmse) >= 0:
            failed.append(f"M = {size} is not closer to ridge than to dMMSE on fresh tasks")
    return failed


def algorithm_selection_claims(model, config) -> list[str]:
    """Bai et al.'s evaluated pair as the algorithm-selection docs state it: at sigma = 0.1 the model beats ridge
    tuned for sigma = 0.5, and at 0.5 ridge tuned for 0.1 (mean error over k >= 1; noise_std = sigma sqrt(d), lambda
    = d sigma^2). Measured: 0.306 against 0.330 (SE of the difference 0.002), 0.590 against 0.852 (SE 0.017);
    untrained about 1."""
    failed = []
    for sigma, other in ((0.1, 0.5), (0.5, 0.1)):
        xs, ys = draw({"name": "noisy_linear", "noise_std": sigma * math.sqrt(config.dims)}, config)
        gap = errors(predict(model, xs, ys), ys) - errors(ridge(xs, ys, config.dims * other**2), ys)
        if upper(gap[:, 1:].mean(1)) >= 0:
            failed.append(f"at sigma = {sigma} the model does not beat ridge tuned for sigma = {other}")
    return failed


def test_task_diversity_models_do_what_the_docs_claim():
    assert task_diversity_claims(shipped) == []


def test_algorithm_selection_model_does_what_the_docs_claim():
    assert algorithm_selection_claims(*shipped("noise_levels")) == []


@pytest.mark.parametrize("name", sorted(CLAIMS) + ["task-diversity", "algorithm-selection"])
def test_claims_fail_for_an_untrained_model(name, monkeypatch):
    """The claims discriminate: an untrained model of each shipped config fails them (on 256 prompts: its errors
    are near 1, far from every bound)."""
    monkeypatch.setattr(sys.modules[__name__], "N", 256)
    if name == "task-diversity":
        assert task_diversity_claims(untrained) != []
    elif name == "algorithm-selection":
        assert algorithm_selection_claims(*untrained("noise_levels")) != []
    else:
        assert CLAIMS[name](*untrained(name)) != []


def test_shipped_keywords_lm_loads_and_learns_in_context(tmp_path):
    """The ICL-vs-finetuning recipe's shipped token model loads with the recipe's settings and reads label maps
    off demonstrations: on 256 fresh instances with 8 demonstrations it is right far above the 75 % that zero-shot
    reaches (half the instances keep the canonical map)."""
    import torch

    from iclab.recipes import icl_vs_ft

    folder = pretrained_dir(icl_vs_ft.MODEL_NAME)
    if not (folder / "config.json").is_file():
        pytest.fail("no shipped keywords LM: run scripts/ship_pretrained.py")
    model, info = icl_vs_ft.load_model(folder, icl_vs_ft.SIZES["full"]["steps"])
    task, g = icl_vs_ft.TASK, torch.Generator().manual_seed(7)
    ex = task.examples(task.instances(256, g), icl_vs_ft.DEMOS + 1, g)
    ids = task.sequence(ex["inputs"][:, :-1], ex["labels"][:, :-1], ex["inputs"][:, -1])
    with torch.no_grad():
        guess = model(ids)[:, -1, task.label_tokens].argmax(-1) + task.label_tokens[0]
    assert (guess == ex["labels"][:, -1]).float().mean() > 0.9


def test_shipped_lsa_layer_is_one_step_of_gradient_descent(tmp_path):
    """lsa-gd's shipped layer (von Oswald et al.): on fresh prompts its predictions are those of one GD step from 0
    at the best step size, both computed here with numpy: their squared difference (mean + 3 SE) is below 1 % of
    GD's loss (measured 0.5 %; an untrained layer 200 %). `reproduce lsa-gd --pretrained` loads it and trains
    nothing."""
    from iclab import recipes
    from iclab.recipes import lsa_gd

    config = lsa_gd.model_config(lsa_gd.SIZES["full"])
    layer = lsa_gd.layer(pretrained_dir(lsa_gd.MODEL_NAME), config)
    rng, n = np.random.default_rng(SEED), config.points
    xs = rng.standard_normal((N, n + 1, config.dims))
    ys = np.einsum("bnd,bd->bn", xs, rng.standard_normal((N, config.dims)))
    step = np.einsum("bnd,bn->bd", xs[:, :n], ys[:, :n]) / n  # minus the gradient at w = 0
    direction = np.einsum("bd,bd->b", step, xs[:, n])
    gd = direction * (direction @ ys[:, n]) / (direction @ direction)  # the best step size, by least squares
    with torch.no_grad():
        args = (torch.tensor(a, dtype=torch.float32) for a in (xs[:, :n], ys[:, :n], xs[:, n]))
        lsa = layer(*args).double().numpy()
    assert upper((lsa - gd) ** 2) < 0.01 * np.mean((gd - ys[:, n]) ** 2)
    [summary] = recipes.reproduce("lsa-gd", tmp_path, pretrained=True, progress=False)
    assert all(c["passed"] for c in summary["checks"]) and not (tmp_path / "models").exists()


def test_every_shipped_model_records_how_it_was_made():
    """Each folder of iclab/pretrained holds provenance.json: the command, the commit and date of the weights, the
    machine and seeds (scripts/ship_pretrained.py writes it when it ships a model)."""
    import json
    from pathlib import Path

    import iclab

    folders = [p for p in (Path(iclab.__file__).parent / "pretrained").iterdir() if p.is_dir()]
    assert len(folders) >= 17
    for folder in folders:
        record = json.loads((folder / "provenance.json").read_text())["provenance"]
        assert {"command", "commit", "date", "machine"} <= set(record), folder.name
        assert len(record["commit"]) >= 40 and "ship_pretrained.py" in record["command"], folder.name


def test_the_length_models_ship_as_the_full_scale_trains_them():
    from iclab.recipes import length

    for name, config in length.configs("full").items():
        assert read_config(pretrained_dir(length.run_name(name))) == config, name


@functools.cache
def length_prompts(dims: int, points: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """256 fresh linear prompts of the length models' evaluation length, and least squares' error over k = 48 .. 95
    (the margins below are 0.04 and more; the standard errors of these means about 0.002)."""
    xs, ys, _ = sample_prompts(make_task({"name": "linear"}, dims), make_inputs("isotropic", dims), 256, points,
                               torch.Generator().manual_seed(SEED))
    return xs, ys, errors(ridge(xs, ys, 0.0), ys)[:, 48:].mean(1)


@pytest.mark.parametrize(
    "name, at_8x",
    [("length-rwkv", True), ("length-gru", True), ("length-lstm", True), ("length-learned", False),
     ("length-rope", False)],
)
def test_shipped_length_models_do_what_the_docs_claim(name, at_8x):
    """Trained on 12 points (d = 3), scored on fresh prompts of 96 (8x): the recurrent models stay within 0.05 of
    least squares over k = 48 .. 95 (measured by the recipe: RWKV +0.009, GRU +0.013, LSTM +0.025), the learned
    position table and RoPE leave it (+0.475 and +0.799); least squares here is this file's own (exact from k = 3)."""
    model, config = shipped(name)
    xs, ys, baseline = length_prompts(config.dims, config.points)
    excess = errors(predict(model, xs, ys), ys)[:, 48:].mean(1) - baseline
    if at_8x:
        assert upper(excess) < 0.05
    else:
        assert excess.mean() - 3 * excess.std(ddof=1) / math.sqrt(len(excess)) > 0.05


def test_each_shipped_architecture_model_is_its_sweeps_pick():
    """The architectures recipe ships one model per architecture and task: the rate with the least validation
    error of the three it trained (sweep.json), and its config trains at that rate with the full scale's model."""
    from iclab.recipes import architectures as arch

    size = arch.SIZES["full"]
    models = arch.models_of(size)
    for task in size["tasks"]:
        for name in size["architectures"]:
            folder = pretrained_dir(arch.shipped_name(name, task))
            sweep = json.loads((folder / "sweep.json").read_text())
            assert set(sweep["validation"]) == {f"{lr:g}" for lr in size["lrs"]}
            assert sweep["lr"] == min(size["lrs"], key=lambda lr: sweep["validation"][f"{lr:g}"])
            assert read_config(folder) == arch.run_config(size, task, arch.model_spec(size, models, name, task),
                                                          sweep["lr"])


