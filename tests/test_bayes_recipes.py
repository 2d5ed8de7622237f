"""The task-diversity and algorithm-selection recipes: their checks on known shapes (the whole pipeline on
two-step models runs in test_recipes.py's end-to-end test, with every recipe)."""

import json
from types import SimpleNamespace

import pytest
import torch

from iclab.errors import UserError
from iclab.recipes import algorithm_selection, render_recipes, task_diversity
from iclab.recipes.sizes import read_scale
from iclab.spec import build


def tiny(sizes, **keys) -> dict:
    """A study recipe's quick settings, read from its file, with two-step models in d = 3 (and `keys` replaced)."""
    size = read_scale(sizes.recipe, "quick", sizes.schema)
    size["set"] |= {"dims": 3, "points": 7, "train.steps": 2, "eval.prompts": 32}
    return size | keys


TD_TINY = tiny(task_diversity.SIZES, pools=[2, 8])
AS_TINY = tiny(algorithm_selection.SIZES)


def pool_entry(size, own, fresh, errors=None):
    """A task-diversity model entry with given (to_dmmse, to_ridge) distances on its own and on fresh tasks."""
    errors = errors or {"transformer": [1, 0.5], "dmmse": [1, 0.5], "ridge": [1, 0.3], "zero": [1, 1]}
    entry = {"pool": size, "steps": 2, "train_seconds": 1.0}
    for where, (d, r) in (("own", own), ("fresh", fresh)):
        entry[where] = {"errors": errors, "to_dmmse": d, "to_ridge": r, "dmmse_to_ridge": 0.1}
    return entry


def test_the_threshold_is_where_models_turn_towards_ridge_for_good():
    models = [pool_entry(2, (0.01, 0.3), (0.2, 0.9)), pool_entry(8, (0.1, 0.2), (0.1, 0.05))]
    models += [pool_entry(32, (0.1, 0.2), (0.1, 0.2)), pool_entry(128, (0.1, 0.2), (0.3, 0.01))]
    assert task_diversity.threshold(models) == {"below": 32, "at": 128}  # 8 was closer to ridge, but not for good
    assert task_diversity.threshold(models[:1]) is None
    assert task_diversity.threshold(models[1:2]) == {"below": None, "at": 8}


def test_task_diversity_checks_want_dmmse_below_and_ridge_above():
    worse = {"transformer": [1, 0.8], "dmmse": [1, 0.8], "ridge": [1, 0.3], "zero": [1, 1]}
    good = {"transformer": [1, 0.31], "dmmse": [1, 0.32], "ridge": [1, 0.3], "zero": [1, 1]}
    models = [pool_entry(2, (0.01, 0.3), (0.2, 0.9), worse), pool_entry(64, (0.1, 0.05), (0.3, 0.01), good)]
    results = {"models": models, "threshold": task_diversity.threshold(models)}
    assert [c["passed"] for c in task_diversity.check_results(results)] == [True, True, True, True]
    flat = [pool_entry(2, (0.3, 0.01), (0.9, 0.2), good), models[1]]
    checks = task_diversity.check_results({"models": flat, "threshold": task_diversity.threshold(flat)})
    assert [c["passed"] for c in checks] == [False, False, True, False]


def level(own: str, errors: dict) -> dict:
    return {"own": own, "errors": {n: [1.0, e] for n, e in errors.items()}}


def test_bais_levels_run_at_the_same_signal_to_noise_with_bais_penalties():
    # Bai et al.'s y = x.w / sqrt(d) + sigma * noise is iclab's w ~ N(0, I) with noise sigma * sqrt(d)
    assert algorithm_selection.level_task(0.5, 4) == {"name": "noisy_linear", "noise_std": 1.0}
    assert algorithm_selection.level_optimum(0.5, 20) == "ridge:alpha=5"  # their RIDGE_LAMS: d sigma^2
    assert (
        algorithm_selection.level_optimum(0.0, 4) == "least_squares"
    )  # ridge's lambda -> 0 limit, the noiseless Bayes
    assert algorithm_selection.single_penalties([0.0, 0.5], 4)[:2] == ["least_squares", "ridge:alpha=0.01"]


def test_algorithm_selection_wants_each_level_near_its_own_optimum(monkeypatch):
    monkeypatch.setattr(algorithm_selection, "FIXED_ALPHAS", [0.3])
    ridge = {"ridge:alpha=0.04": (0.1, 0.9), "ridge:alpha=0.3": (0.15, 0.55), "ridge:alpha=1": (0.3, 0.5)}

    def results(model, stds=("0.1", "0.5")):
        return {
            "dims": 4,
            "levels": {
                s: level(
                    algorithm_selection.level_optimum(float(s), 4),
                    {n: v[i] for n, v in ridge.items()} | {"transformer": model[i], "oracle": 0},
                )
                for i, s in enumerate(stds)
            },
        }

    assert all(c["passed"] for c in algorithm_selection.check_results(results([0.12, 0.52])))
    # a model that is ridge at one fixed penalty (0.3) is no better than that penalty, though at each level it
    # beats the other level's penalty
    checks = algorithm_selection.check_results(results([0.15, 0.55]))
    assert [c["passed"] for c in checks] == [False, True, True]
    assert [c["passed"] for c in algorithm_selection.check_results(results([0.6, 0.5]))][1:] == [False, True]
    # the per-level checks are at Bai et al.'s evaluated pair, 0.1 against 0.5, when both are among the levels
    assert "sigma = 0.5" in algorithm_selection.check_results(results([0.12, 0.52]))[1]["claim"]


def test_task_diversity_distance_is_raventos_by_default_and_the_old_reading_on_request():
    evalset = SimpleNamespace(xs=torch.zeros(2, 3, 4), scale=torch.tensor([2.0, 8.0]))
    a, b = torch.zeros(2, 3), torch.full((2, 3), 2.0)
    assert task_diversity.prediction_distance(a, b, evalset) == pytest.approx(4 / 4)  # / d, every position
    b[:, 0] = 0  # position 0 counts in theirs, not in the normalised reading
    assert task_diversity.prediction_distance(a, b, evalset) == pytest.approx(4 * 2 / 3 / 4)
    assert task_diversity.prediction_distance(a, b, evalset, "normalised") == pytest.approx((4 / 2 + 4 / 8) / 2)
    with pytest.raises(UserError, match="distance"):
        build(task_diversity.TaskDiversitySize, {"pools": [2], "distance": "raventós"})


def test_old_study_results_render_or_say_which_folder_to_rerun(tmp_path):
    stale = {"dims": 4, "steps": 2, "train_seconds": 1.0, "seconds": 2.0}
    stale["levels"] = {"0.1": level("ridge:alpha=0.01", {"transformer": 0.3, "zero": 1, "ridge:alpha=0.01": 0.2})}
    folder = tmp_path / "algorithm-selection"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(stale))  # sigma^2 penalties: written before Bai's levels
    with pytest.raises(UserError, match="predates the levels of Bai"):
        algorithm_selection.section(folder, {"mode": "full"})
    errors = {"transformer": [1, 0.5], "dmmse": [1, 0.5], "ridge": [1, 0.3], "zero": [1, 1]}
    old = {"models": [pool_entry(2, (0.01, 0.3), (0.2, 0.9), errors)], "seconds": 5.0}  # no distance, no timing
    old["threshold"] = task_diversity.threshold(old["models"])
    (tmp_path / "task-diversity").mkdir()
    (tmp_path / "task-diversity" / "results.json").write_text(json.dumps(old))
    text = "\n".join(task_diversity.section(tmp_path / "task-diversity", {"mode": "full"}))
    assert "time not recorded" in text and "E[y^2], mean over prompts and k >= 1" in text  # its own definition
    # the report keeps every section that renders, and the error names the one to rerun
    for name in ("algorithm-selection", "task-diversity"):
        (tmp_path / name / "checks.json").write_text(json.dumps({"recipe": name, "mode": "full"}))
    with pytest.raises(UserError, match="without algorithm-selection") as info:
        render_recipes(tmp_path)
    assert "\n" not in str(info.value) and f"reproduce algorithm-selection --out {tmp_path}" in str(info.value)
    report = (tmp_path / "report.md").read_text()
    assert "## Task diversity" in report and "Not rendered from its stored files (algorithm-selection:" in report
