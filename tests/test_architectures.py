"""Every registered architecture is a first-class model: causal, trains, checkpoints, resumes bit-identically,
evaluates with the estimators and the ICL score, takes Muon, runs in a grid and under DDP.

Parametrised over the whole registry (iclab.models.MODELS), so a new architecture is covered by adding it; each
runs at a tiny size (1-2 layers of width 16) for a handful of steps."""

import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import TINY

from iclab.config import load_config
from iclab.errors import UserError
from iclab.evaluation.curves import evaluate, icl_scores, is_model_row
from iclab.experiments.grid import run_grid
from iclab.models import MODELS, ICLModel
from iclab.training.checkpoint import checkpoint_dirs, read_state
from iclab.training.runs import build_model, load_model, read_metrics
from iclab.training.trainer import resume, train

ARCHITECTURES = MODELS.names()
RUN = [s for s in TINY if not s.startswith("model.")] + ["train.checkpoint_every=3", "train.keep_checkpoints=5"]


def overrides(name: str, *more: str) -> list[str]:
    return RUN + [f"model.name={name}", "model.layers=2", "model.width=16", *more]


def losses(run_dir):
    return [(m["step"], m["loss"]) for m in read_metrics(run_dir) if "loss" in m]


def test_the_zoo_has_its_families():
    expected = {"transformer", "gpt2", "llama", "bloom"}
    assert expected <= set(ARCHITECTURES)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_a_prediction_never_depends_on_later_tokens(name):
    """Causality, by perturbing every token after a cut: the predictions at and before the cut do not move (1e-12
    in float64), those after it do (so the test would see a model that ignores its input)."""
    config = load_config(None, overrides(name, "dtype=float64"))
    torch.manual_seed(0)
    model = build_model(config).double().eval()
    assert isinstance(model, ICLModel)
    xs, ys = torch.randn(3, 7, 3, dtype=torch.float64), torch.randn(3, 7, dtype=torch.float64)
    with torch.no_grad():
        before = model(xs, ys)
        for k in range(7):  # prediction k sees xs[:, :k+1] and ys[:, :k]
            xs2, ys2 = xs.clone(), ys.clone()
            xs2[:, k + 1 :] += torch.randn_like(xs2[:, k + 1 :])
            ys2[:, k:] += torch.randn_like(ys2[:, k:])
            after = model(xs2, ys2)
            assert torch.allclose(after[:, : k + 1], before[:, : k + 1], rtol=0, atol=1e-12), (name, k)
            if k < 6:
                assert (after[:, k + 1 :] - before[:, k + 1 :]).abs().max() > 1e-6, (name, k)


@pytest.mark.parametrize("name", ARCHITECTURES)
@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_training_resumes_bit_identically(tmp_path, name, optimizer):
    config = load_config(None, overrides(name, "train.steps=6", f"train.optimizer={optimizer}"))
    straight = train(config, tmp_path / "straight", progress=False)
    assert straight.parameters == build_model(config).num_parameters()
    assert json.loads((tmp_path / "straight" / "config.json").read_text())["model"]["name"] == name
    # the same run, as if it had died right after its step-3 checkpoint, resumed: the same losses and weights
    shutil.copytree(tmp_path / "straight", tmp_path / "cut")
    for ckpt in checkpoint_dirs(tmp_path / "cut"):
        if read_state(ckpt)["step"] > 3:
            shutil.rmtree(ckpt)
    resume(tmp_path / "cut", progress=False)
    assert losses(tmp_path / "cut") == losses(tmp_path / "straight")
    flops = [[m["flops"] for m in read_metrics(tmp_path / run) if "flops" in m] for run in ("cut", "straight")]
    assert flops[0] == flops[1] and flops[1][-1] > 0
    a, _ = load_model(tmp_path / "straight")
    b, _ = load_model(tmp_path / "cut")
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_a_trained_model_evaluates_with_the_estimators_and_the_icl_score(tmp_path, name):
    """A few steps on the linear class: every estimator on the same prompts, and the ICL score (which needs the
    Bayes oracle the config's baselines bring)."""
    config = load_config(None, overrides(name, "train.steps=3"))
    train(config, tmp_path / "run", progress=False)
    model, _ = load_model(tmp_path / "run")
    rows = evaluate(model, config)
    estimators = {r["estimator"] for r in rows}
    assert {name, "least_squares", "posterior_mean"} <= estimators  # the curve is labelled by the architecture
    ours = [r for r in rows if is_model_row(r)]
    assert [r["estimator"] for r in ours] == [name] * config.eval_points
    assert all(math.isfinite(r["mean"]) for r in ours)
    scores = icl_scores(rows)
    assert all(math.isfinite(scores["", "linear", name, r["k"]]) for r in ours if r["k"] > 0)


def test_muon_trains_hidden_matrices_of_every_architecture():
    for name in ARCHITECTURES:
        model = build_model(load_config(None, overrides(name)))
        hidden = [n for n, p in model.named_parameters() if model.is_hidden_matrix(n, p)]
        assert hidden, name
        assert not any(n.startswith(("read_in", "read_out")) for n in hidden), name
        assert all(p.dim() == 2 for n, p in model.named_parameters() if n in hidden), name


# every architecture in one launch: a process joins the group once (distributed.join), so between runs the ranks
# only meet at the barrier with which a run ends, and leave the group after the last
DDP_SCRIPT = """
import sys
import torch.distributed as dist
from iclab.config import load_config
from iclab.errors import UserError
from iclab.training import distributed
from iclab.training.trainer import train
distributed.leave = lambda ctx: dist.barrier()
root, names, sets = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
for name in names:
    train(load_config(None, sets + [f"model.name={name}"]), f"{root}/{name}", progress=False)
dist.barrier()
dist.destroy_process_group()
"""


def test_every_architecture_trains_data_parallel_as_in_one_process(tmp_path):
    """Two gloo processes under torchrun, one launch for the whole registry: the same losses as one process up to
    the order of floating-point sums (tests/test_distributed.py says why 1e-5 relative)."""
    sets = RUN + ["model.layers=2", "model.width=16", "train.steps=4"]
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONFAULTHANDLER="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    result = subprocess.run(cmd + [str(tmp_path / "two"), ",".join(ARCHITECTURES), *sets], capture_output=True,
                            text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ARCHITECTURES:
        train(load_config(None, sets + [f"model.name={name}"]), tmp_path / "one" / name, progress=False)
        one, two = losses(tmp_path / "one" / name), losses(tmp_path / "two" / name)
        assert [s for s, _ in one] == [s for s, _ in two] == [1, 2, 3, 4], name
        assert all(abs(a - b) <= 1e-5 * abs(a) for (_, a), (_, b) in zip(one, two, strict=True)), (name, one, two)


def test_a_grid_over_the_registry_trains_every_architecture(tmp_path):
    base = "\n".join(f"{k}: {v}" for k, v in (s.split("=", 1) for s in RUN if "." not in s.split("=")[0]))
    (tmp_path / "base.yaml").write_text(base + "\neval: {baselines: [least_squares]}\n")
    fixed = {k: v for k, v in (s.split("=", 1) for s in RUN if "." in s.split("=")[0])}
    fixed |= {"train.steps": "2", "model.layers": "2", "model.width": "16"}
    path = tmp_path / "grid.yaml"
    path.write_text(
        "base: base.yaml\nset: {" + ", ".join(f"{k}: {v}" for k, v in fixed.items()) + "}\n"
        f"grid:\n  model.name: [{', '.join(ARCHITECTURES)}]\n"
    )
    result = run_grid(path, tmp_path / "out", "local", jobs=2, progress=False)
    assert {name: o["status"] for name, o in result["outcomes"].items()} == {
        f"name={name}": "done" for name in ARCHITECTURES
    }
    for name in ARCHITECTURES:
        stored = json.loads((tmp_path / "out" / f"name={name}" / "config.json").read_text())
        assert stored["model"]["name"] == name


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_one_layer_builds_or_is_refused_in_one_line(name):
    """A size a family cannot take (RWKV's initialisation needs 2 layers) is a config error, not a traceback."""
    try:
        config = load_config(None, overrides(name)[:-2] + ["model.layers=1", "model.width=16"])
    except UserError as e:
        assert "\n" not in str(e) and "model.layers" in str(e)
        return
    assert build_model(config).num_parameters() > 0


@pytest.mark.parametrize("name", ["lstm", "mamba"])
def test_a_sweep_recipe_runs_on_another_architecture(tmp_path, monkeypatch, name):
    """The recipes' shared models take `model: {name: ...}` from their scale file like any other key: the
    frequency recipe end to end (train, sweep, checks) on two-step models of another architecture."""
    from iclab.recipes import RECIPES
    from iclab.recipes import models as shared
    from iclab.recipes.sizes import read_scale

    size = read_scale("models", "quick", shared.SharedModels)
    size["set"] = size["set"] | {"model": {"name": name, "layers": 2, "width": 16}}
    size["families"]["scalar"] |= {"train.steps": 2}
    monkeypatch.setitem(shared.SIZES, "quick", size)
    summary = RECIPES["frequency"].run(tmp_path, "quick", False, False)
    assert summary["checks"]
    for model in RECIPES["frequency"].models_at("quick"):
        stored = json.loads((tmp_path / "models" / "quick" / model / "config.json").read_text())
        assert stored["model"] == stored["model"] | {"name": name, "layers": 2, "width": 16}
