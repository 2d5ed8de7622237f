"""Fidelity to Garg et al.: the packaged garg.yaml is their setting and trains; classification trains with their
logistic loss; evaluation runs at the curriculum's final length; configs written before the definitions changed
keep their meaning."""

import json
import math

import pytest
import torch
from conftest import TINY

from iclab.config import VERSION, load_config, packaged_config
from iclab.errors import UserError
from iclab.evaluation.curves import evaluate, make_eval_set
from iclab.experiments.grid import expand, read_grid
from iclab.recipes.models import pretrained_dir
from iclab.tasks import sample_prompts
from iclab.training.runs import read_config
from iclab.training.trainer import Trainer, learning_rate


def test_garg_yaml_is_garg_s_setting():
    """src/conf/base.yaml, linear_regression.yaml, models/standard.yaml and src/train.py of the Garg release."""
    c = load_config(packaged_config("garg"))
    assert (c.dims, c.task, c.inputs) == (20, {"name": "linear"}, {"name": "isotropic"})
    m = c.model
    assert (m.layers, m.width, m.heads, m.init, m.activation, m.positions) == (
        12,
        256,
        8,
        "gpt2",
        "gelu_new",
        "learned",
    )
    t = c.train
    assert (t.batch_size, t.lr, t.weight_decay, t.warmup, t.grad_clip, t.betas, t.loss) == (
        64, 1e-4, 0.0, 0, 0.0, [0.9, 0.999], "mse"
    )  # fmt: skip
    assert all(learning_rate(t, step) == 1e-4 for step in (0, 1, 1999, 250_000, 499_999))  # constant, no warm-up
    # Garg's Curriculum.update: +inc after every `interval` steps, capped at end
    for step, dims, points in [(0, 5, 11), (1999, 5, 11), (2000, 6, 13), (29_999, 19, 39), (30_000, 20, 41)]:
        assert (c.curriculum.dims.at(step), c.curriculum.points.at(step)) == (dims, points)
    assert c.eval_points == 41  # eval.py: conf.training.curriculum.points.end
    assert (c.eval.prompts, c.eval.bootstrap, c.eval.confidence) == (1280, 1000, 0.9)


def test_garg_yaml_trains_a_few_steps_on_the_cpu(tmp_path):
    """Two steps of the full model (9.5 M parameters) at the curriculum's start: 5 active dims, 11 points."""
    config = load_config(packaged_config("garg"), ["threads=1", "train.eval_prompts=8"])
    trainer = Trainer(config, tmp_path)
    assert 9.4e6 < trainer.model.num_parameters() < 9.6e6
    assert all(g["weight_decay"] == 0.0 for g in trainer.optimizer.param_groups)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    losses = [trainer.train_step() for _ in range(2)]
    assert all(math.isfinite(loss) and loss > 0 for loss in losses)
    assert trainer.step == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))
    assert len(trainer.validation_curve()) == 41


def test_classification_trains_with_the_logistic_loss(tmp_path):
    """The trainer's loss on linear_classification is Garg's BCE(sigmoid(prediction), (y + 1) / 2), also under
    train.loss: normalized (which only rescales regression classes); loss: squared keeps iclab's old one."""
    losses = {}
    for name, extra in [("logistic", []), ("normalized", ["train.loss=normalized"]), ("squared", [])]:
        task = "task={name: linear_classification" + (", loss: squared}" if name == "squared" else "}")
        trainer = Trainer(load_config(None, TINY + [task, *extra]), tmp_path / name)
        losses[name] = trainer.batch_loss().item()
    trainer.generator.manual_seed(trainer.config.seed + 1)  # the same first batch again, by hand
    xs, ys, _ = sample_prompts(trainer.task, trainer.inputs, 8, trainer.config.points, trainer.generator)
    with torch.no_grad():
        preds = trainer.model(xs, ys)
    garg = torch.nn.BCELoss()(torch.sigmoid(preds), (ys + 1) / 2).item()
    assert losses["logistic"] == pytest.approx(garg, rel=1e-5)
    assert losses["normalized"] == pytest.approx(garg, rel=1e-5)
    assert losses["squared"] == pytest.approx((preds - ys).square().mean().item(), rel=1e-5)


CURRICULUM = ["curriculum={points: {start: 3, end: 5, inc: 1, every: 10}}"]


def test_evaluation_runs_at_the_curriculum_s_final_length():
    config = load_config(None, TINY + CURRICULUM)  # points = 7, the curriculum ends at 5
    assert config.eval_points == 5 and make_eval_set(config).xs.shape[1] == 5
    longer = load_config(None, TINY + CURRICULUM + ["eval.points=7"])  # iclab's before version 2: all the points
    assert make_eval_set(longer).xs.shape[1] == 7
    assert {r["k"] for r in evaluate(None, config, baselines=["zero"])} == set(range(5))
    assert load_config(None, TINY).eval_points == 7  # no points curriculum: the model's length
    # learned positions (TINY's) cannot go beyond the model's length (tests/test_length.py: models that can)
    longer_than_model = "config key 'eval.points': must be <= points \\(7\\) for a model with a learned"
    with pytest.raises(UserError, match=longer_than_model):
        load_config(None, TINY + ["eval.points=8"])


def old_config(tmp_path, **changes):
    """A config.json as iclab wrote it before version 2 (no `version` key)."""
    data = load_config(None, TINY).to_dict()
    data.pop("version")
    data["eval"].pop("points")
    data |= changes
    run = tmp_path / "old"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(data))
    return run


def test_a_config_written_before_version_2_keeps_its_meaning(tmp_path):
    task = {
        "name": "mixture",
        "components": [
            {"name": "tree", "depth": 2, "weight": 1},
            {"name": "finite_pool", "size": 4, "base": {"name": "sparse_linear"}, "weight": 1},
            {"name": "convex", "first": {"name": "sparse_linear", "nnz": 1}, "second": {"name": "tree"}, "weight": 1},
        ],
    }
    curriculum = {"dims": None, "points": {"start": 3, "end": 5, "inc": 1, "every": 10}}
    config = read_config(old_config(tmp_path, task=task, inputs={"name": "skewed"}, curriculum=curriculum))
    assert config.version == VERSION
    assert config.inputs == {"name": "skewed", "power": 1.0}
    tree, pool, convex = config.task["components"]
    assert tree["splits"] == "active" and convex["second"]["splits"] == "active"
    assert pool["replacement"] is True and pool["base"]["nnz"] == 2
    assert convex["first"]["nnz"] == 1  # what the config says stays as it is
    assert config.eval.points == 7 and config.eval_points == 7
    classifier = read_config(old_config(tmp_path / "c", task={"name": "linear_classification"}))
    assert classifier.task == {"name": "linear_classification", "loss": "squared"}
    half = read_config(old_config(tmp_path / "h", inputs={"name": "half_subspace"}))
    assert half.inputs == {"name": "half_subspace", "rounding": "ceil"} and half.eval.points is None


def test_version_1_in_a_yaml_file_asks_for_the_old_definitions(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("version: 1\ntask: {name: tree}\ninputs: {name: skewed, power: 3}\n")
    config = load_config(path)
    assert config.task == {"name": "tree", "splits": "active"} and config.inputs == {"name": "skewed", "power": 3}
    assert load_config(None, ["task.name=tree"]).task == {"name": "tree"}  # current: the tree's own default
    grid = tmp_path / "grid.yaml"
    grid.write_text("base: demo\nset: {version: 1}\ngrid: {seed: [0]}\n")
    with pytest.raises(UserError, match="version-1 config is only read by load_config"):
        expand(read_grid(grid), tmp_path / "runs")  # a builder that does not rewrite old versions refuses them


@pytest.mark.parametrize("name", ["dense", "sparse_linear", "dense_sparse", "sine"])
def test_shipped_configs_mean_what_they_meant(name):
    """The shipped models' configs (version 1, none of the changed definitions) read unchanged."""
    folder = pretrained_dir("sparse" if name == "sparse_linear" else name)
    stored = json.loads((folder / "config.json").read_text())
    config = read_config(folder)
    assert (config.task, config.inputs, config.eval_points) == (stored["task"], stored["inputs"], stored["points"])
