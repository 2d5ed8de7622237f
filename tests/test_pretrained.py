"""Every checkpoint shipped with the package loads and reproduces the error curve stored beside it."""

import pytest

from iclab.evaluate import evaluate, read_curves
from iclab.recipes.models import MODELS, pretrained_dir
from iclab.runs import load_model, read_config


@pytest.mark.parametrize("name", sorted(MODELS))
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
