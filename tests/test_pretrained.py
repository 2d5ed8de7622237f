"""Every checkpoint shipped with the package loads and reproduces the error curve stored beside it."""

import pytest

from iclab.evaluation.curves import evaluate, read_curves
from iclab.recipes.models import model_names, pretrained_dir
from iclab.training.runs import load_model, read_config


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


def test_shipped_keywords_lm_loads_and_learns_in_context(tmp_path):
    """The ICL-vs-finetuning recipe's shipped token model loads with the recipe's settings and reads label maps
    off demonstrations: on 256 fresh instances with 8 demonstrations it is right far above the 75 % that zero-shot
    reaches (half the instances keep the canonical map)."""
    import torch

    from iclab.recipes import icl_vs_ft

    folder = pretrained_dir(icl_vs_ft.MODEL_NAME)
    if not (folder / "model.safetensors").is_file():
        pytest.fail("no shipped keywords LM: run scripts/ship_pretrained.py")
    model, info = icl_vs_ft.ensure_model(folder, icl_vs_ft.SIZES["full"]["steps"], progress=False)
    task, g = icl_vs_ft.TASK, torch.Generator().manual_seed(7)
    ex = task.examples(task.instances(256, g), icl_vs_ft.DEMOS + 1, g)
    ids = task.sequence(ex["inputs"][:, :-1], ex["labels"][:, :-1], ex["inputs"][:, -1])
    with torch.no_grad():
        guess = model(ids)[:, -1, task.label_tokens].argmax(-1) + task.label_tokens[0]
    assert (guess == ex["labels"][:, -1]).float().mean() > 0.9
