"""Evaluation beyond the training length (`iclab eval --points N`, `Run.evaluate(points=N)`): models without a
learned position table read longer prompts; a model with one refuses in one line."""

import pytest
import torch
from conftest import TINY

import iclab
from iclab.config import load_config
from iclab.errors import UserError
from iclab.training.runs import build_model
from iclab.training.trainer import train

RUN = [s for s in TINY if not s.startswith("model.")] + ["train.steps=3", "model.layers=1", "model.width=16"]


@pytest.mark.parametrize("model", ["model.positions=none", "model.positions=type", "model.name=lstm",
                                   "model.name=llama"])
def test_a_model_without_a_position_table_evaluates_at_twice_its_length(tmp_path, model):
    train(load_config(None, RUN + [model]), tmp_path / "run", progress=False)
    run = iclab.load_run(tmp_path / "run")
    result = run.evaluate(baselines=["least_squares"], points=14)  # trained on 7 points
    assert result.task == "linear@points=14"
    ks = sorted({r["k"] for r in result.rows if r["estimator"] == run.config.model.name})
    assert ks == list(range(14))
    least_squares = {r["k"]: r["mean"] for r in result.rows if r["estimator"] == "least_squares"}
    assert max(least_squares[k] for k in range(4, 14)) < 1e-6  # exact from k = d = 3 on, far past 7 points
    path, _ = result.save()
    assert "linear@points=14" in path.read_text()


@pytest.mark.parametrize("model", ["model.positions=learned", "model.name=gpt2"])
def test_a_learned_position_table_refuses_longer_prompts_in_one_line(tmp_path, model):
    train(load_config(None, RUN + [model]), tmp_path / "run", progress=False)
    with pytest.raises(UserError, match=r"must be <= points \(7\) for a model with a learned position table") as e:
        iclab.load_run(tmp_path / "run").evaluate(points=14)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="eval.points"):
        load_config(None, RUN + [model, "eval.points=8"])
    direct = build_model(load_config(None, RUN + [model]))
    with pytest.raises(ValueError, match="at most 7 points per prompt"):
        direct(torch.zeros(1, 8, 3), torch.zeros(1, 8))


def test_points_must_be_positive(tmp_path):
    train(load_config(None, RUN + ["model.positions=none"]), tmp_path / "run", progress=False)
    with pytest.raises(UserError, match="positive number"):
        iclab.load_run(tmp_path / "run").evaluate(points=0)
