"""Sweeps and paper recipes: sweep values, errors for runs without the swept parameter, checks on known shapes,
and the whole reproduce pipeline on models trained for a couple of steps."""

import csv
import json
import subprocess
import sys

import pytest
from conftest import TINY

from iclab import recipes
from iclab.config import load_config
from iclab.errors import UserError
from iclab.evaluation.curves import read_curves, series_name
from iclab.evaluation.sweeps import run_sweep, sweep_points, write_sweep
from iclab.recipes import convex, frequency, model_selection
from iclab.recipes import models as zoo
from iclab.recipes.sizes import read_scale
from iclab.spec import parse_named
from iclab.training.trainer import train


def tiny_models(dims: int) -> dict:
    """The shared models' quick settings, read from their file, with two-step models in d = `dims`."""
    size = read_scale("models", "quick", zoo.SharedModels)
    size["families"]["linear"] |= {"dims": dims, "points": 2 * dims + 1, "train.steps": 2}
    size["families"]["scalar"] |= {"train.steps": 2}
    return size


MIX = "task={name: mixture, components: [{name: linear, weight: 1}, {name: sinusoid, weight: 1}]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweeps")
    out = {}
    for name, extra in {"lin": ["task.name=linear"], "mix": [MIX], "sine": ["task.name=sinusoid"]}.items():
        config = load_config(None, TINY + ["train.steps=2", "eval.prompts=24", *extra])
        train(config, root / name, progress=False)
        out[name] = root / name
    return out


def test_sweep_values():
    config = load_config(None, ["dims=4", MIX])
    assert [p.name for p in sweep_points("convex", config)][::5] == ["alpha=0", "alpha=0.5", "alpha=1"]
    freqs = [p.value for p in sweep_points("frequency", config)]
    assert freqs[0] == 0.5 / 8 and freqs[-1] == 2.0 * 8 and {0.5, 1.0, 2.0} <= set(freqs)
    lin = load_config(None, ["dims=4"])
    assert [p.task["nnz"] for p in sweep_points("sparsity", lin)] == [1, 2, 3, 4]
    assert sweep_points("shift", lin)[0].name == "shift=none"


@pytest.mark.parametrize(
    "kind, overrides, message",
    [
        ("sparsity", ["task.name=sinusoid"], "sweep sparsity needs runs trained on linear or sparse_linear tasks"),
        ("convex", ["task.name=linear"], "sweep convex needs a run trained on a mixture (or convex) of two"),
        ("frequency", ["task.name=linear"], "sweep frequency needs a run trained on sinusoids"),
    ],
)
def test_sweeping_a_run_without_the_parameter_is_refused(kind, overrides, message):
    with pytest.raises(UserError) as info:
        sweep_points(kind, load_config(None, overrides))
    assert message in str(info.value)


def test_sweep_rows_cover_runs_and_baselines(runs, tmp_path):
    rows = run_sweep("sparsity", [runs["lin"]], ["least_squares"])
    assert {r["sweep"] for r in rows} == {"nnz=1", "nnz=2", "nnz=3"}
    assert {(r["run"], r["estimator"]) for r in rows} == {("lin", "transformer"), ("", "least_squares")}
    # the default baselines bring zero and each point's own oracle, so every sparsity curve carries the ICL score
    rows = run_sweep("sparsity", [runs["lin"]])
    assert {r["estimator"] for r in rows if not r["run"]} == {"least_squares", "lasso_cv", "zero", "posterior_mean"}
    path = tmp_path / "curves.csv"
    write_sweep(path, rows)
    stored = read_curves(path)
    oracle = [r for r in stored if r["estimator"] == "posterior_mean" and r["k"] > 0]
    assert oracle and all(r["icl_score"] == pytest.approx(1.0, abs=1e-5) for r in oracle)
    assert all(r["icl_score"] is None for r in stored if r["k"] == 0)  # zero = oracle at k = 0: undefined
    scored = [r for r in stored if r["run"] == "lin" and r["k"] > 0]
    assert all(isinstance(r["icl_score"], float) for r in scored)
    # an explicit list stays exact, unless it asks for the oracle too (as the recipes do)
    assert {r["estimator"] for r in run_sweep("sparsity", [runs["lin"]], ["zero"]) if not r["run"]} == {"zero"}
    asked = run_sweep("sparsity", [runs["lin"]], ["zero"], oracle=True)
    assert {r["estimator"] for r in asked if not r["run"]} == {"zero", "posterior_mean"}
    # values come from the first run that has the parameter; the specialist is scored on them too
    rows = run_sweep("convex", [runs["sine"], runs["mix"]], [])
    assert {r["run"] for r in rows} == {"sine", "mix"} and len({r["sweep"] for r in rows}) == 11


def test_sweep_command(runs, tmp_path):
    out = tmp_path / "f"
    cmd = [
        sys.executable,
        "-m",
        "iclab.cli",
        "sweep",
        "frequency",
        str(runs["mix"]),
        "--out",
        str(out),
        "--baselines",
        "knn",
        "--quiet",
    ]
    assert subprocess.run(cmd, capture_output=True, text=True).returncode == 0
    with open(out / "curves.csv") as f:
        assert list(next(csv.reader(f))) == ["run", "sweep", "task", "estimator", "k", "mean", "lo", "hi", "icl_score"]
    assert (out / "frequency.png").stat().st_size > 1000
    bad = subprocess.run(cmd[:4] + ["sparsity", str(runs["sine"])], capture_output=True, text=True)
    assert bad.returncode == 2 and "sweep sparsity needs" in bad.stderr


def test_list_values_in_named_specs():
    assert parse_named("bayes:nnz=[5,2],weights=[0.5,0.5]") == {"name": "bayes", "nnz": [5, 2], "weights": [0.5, 0.5]}


def rows_for(series_values: dict[str, dict[str, float]], k: int = 10) -> list[dict]:
    """Sweep rows with given means: {series: {sweep: mean}}; baselines have run ''."""
    out = []
    for series, points in series_values.items():
        run, est = (series, "transformer") if series in zoo.model_names() else ("", series)
        for sweep, mean in points.items():
            out.append(
                {
                    "run": run,
                    "sweep": sweep,
                    "task": "t",
                    "estimator": est,
                    "k": k,
                    "mean": mean,
                    "lo": mean,
                    "hi": mean,
                }
            )
    return out


def test_convex_check_wants_a_hump():
    hump = rows_for({"line_sine": {"alpha=0": 0.1, "alpha=0.5": 0.3, "alpha=1": 0.05}})
    ramp = rows_for({"line_sine": {"alpha=0": 0.1, "alpha=0.5": 0.08, "alpha=1": 0.05}})
    assert convex.check_rows(hump)[0]["passed"] and not convex.check_rows(ramp)[0]["passed"]


def test_frequency_check_names_the_failing_side():
    inside = {"freq=0.5": 0.1, "freq=1": 0.1, "freq=2": 0.1}
    series = {"freq=0.1": 0.1, **inside, "freq=8": 1.0}
    checks = frequency.check_rows(rows_for({"sine": series, "line_sine": series}))
    assert checks[0]["passed"] and "far above only above the range" in checks[0]["detail"]


def test_sparsity_check_wants_a_rise_from_the_sparse_to_the_dense_level():
    from iclab.recipes import sparsity

    setting = {"dims": 4, "nnz": 1}
    levels = {f"nnz={s}": v for s, v in zip(range(1, 5), [0.20, 0.25, 0.27, 0.30], strict=True)}
    series = {"dense_sparse": levels, "sparse": {"nnz=1": 0.19}, "dense": {"nnz=4": 0.29}, "lasso_cv": levels}
    assert all(c["passed"] for c in sparsity.check_rows(rows_for(series, k=3), setting))
    flat = {k: 0.25 for k in levels}
    checks = sparsity.check_rows(rows_for(series | {"dense_sparse": flat}, k=3), setting)
    assert [c["passed"] for c in checks] == [False, True, False]  # above the sparse level, no rise


def test_model_selection_tolerance():
    ks = range(6)
    rows = []
    for k in ks:
        rows += rows_for(
            {
                "dense": {"class=dense": 0.5, "class=sparse": 0.5},
                "sparse": {"class=dense": 0.9, "class=sparse": 0.30},
                "dense_sparse": {"class=dense": 0.56, "class=sparse": 0.33},
                "least_squares": {"class=sparse": 0.4},
            },
            k,
        )
    setting = {"dims": 5, "nnz": 1}
    checks = model_selection.check_rows(rows, setting)
    assert checks[0]["passed"] and checks[1]["passed"] and checks[2]["passed"]  # 0.56 <= 0.5 * 1.15
    rows = [r | {"mean": 0.6} if r["run"] == "dense_sparse" and r["sweep"] == "class=dense" else r for r in rows]
    assert not model_selection.check_rows(rows, setting)[0]["passed"]


def test_reproduce_end_to_end_with_two_step_models(tmp_path, monkeypatch):
    from test_architecture_recipe import TINY as ARCHITECTURES_TINY
    from test_bayes_recipes import AS_TINY, TD_TINY
    from test_length_recipe import tiny as LENGTH_TINY
    from test_momentum_recipe import TINY as MOMENTUM_TINY
    from test_tabular_recipe import TINY as TABULAR_TINY

    from iclab.recipes import (
        algorithm_selection,
        architectures,
        icl_vs_ft,
        length,
        lsa_gd,
        momentum,
        tabular,
        task_diversity,
    )

    monkeypatch.setitem(task_diversity.SIZES, "quick", TD_TINY)
    monkeypatch.setitem(algorithm_selection.SIZES, "quick", AS_TINY)
    monkeypatch.setitem(zoo.SIZES, "quick", tiny_models(3))
    monkeypatch.setitem(momentum.SIZES, "quick", MOMENTUM_TINY)
    monkeypatch.setitem(lsa_gd.SIZES, "quick", lsa_gd.SIZES["quick"] | {"steps": 5})
    monkeypatch.setitem(icl_vs_ft.SIZES, "quick", {"steps": 3, "instances": 2})
    monkeypatch.setitem(tabular.SIZES, "quick", TABULAR_TINY)
    monkeypatch.setitem(architectures.SIZES, "quick", ARCHITECTURES_TINY)
    monkeypatch.setitem(length.SIZES, "quick", LENGTH_TINY())
    summaries = recipes.reproduce("all", tmp_path, quick=True, progress=False)
    assert [s["recipe"] for s in summaries] == list(recipes.RECIPES)
    report = (tmp_path / "report.md").read_text()
    for recipe in recipes.RECIPES.values():
        assert recipe.title in report and recipe.claim in report
    assert report.count("**PASS**") + report.count("**FAIL**") == sum(len(s["checks"]) for s in summaries)
    summary = json.loads((tmp_path / "summary.json").read_text())  # every check, machine-readable
    assert len(summary["checks"]) == sum(len(s["checks"]) for s in summaries) and set(summary["recipes"]) == set(
        recipes.RECIPES
    )
    assert report.index("## Summary") < report.index("## " + recipes.RECIPES["sparsity"].title)
    for s in summaries:
        assert "provenance" in json.loads((tmp_path / s["recipe"] / "checks.json").read_text()), s["recipe"]
    assert "| pool M |" in report and "mean excess" in report  # the study recipes' tables
    for name, figure in (("task-diversity", "phase"), ("algorithm-selection", "levels")):
        assert (tmp_path / name / f"{figure}.png").stat().st_size > 1000
    (tmp_path / "report.md").unlink()
    result = subprocess.run(
        [sys.executable, "-m", "iclab.cli", "report", str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 0 and (tmp_path / "report.md").read_text() == report  # no recomputation needed
    with pytest.raises(UserError, match="cannot be combined with --quick"):
        recipes.reproduce("sparsity", tmp_path, quick=True, pretrained=True)
    with pytest.raises(UserError, match="unknown recipe 'sparse'"):
        recipes.reproduce("sparse", tmp_path, quick=True)
    with pytest.raises(UserError, match="no models for 'momentum' ship with iclab"):
        recipes.reproduce("momentum", tmp_path, pretrained=True)


def test_models_train_in_parallel_jobs_and_are_then_reused(tmp_path, monkeypatch, capsys):
    from iclab.training.runs import read_config, run_status

    monkeypatch.setitem(zoo.SIZES, "quick", tiny_models(3))
    zoo.train_models(["dense", "sparse", "dense"], tmp_path, "quick", jobs=2, threads=1, progress=False)
    root = tmp_path / "models" / "quick"
    for name in ("dense", "sparse"):
        assert run_status(root / name) == (2, 2)
        assert read_config(root / name).threads == 0  # the worker's threads, set by the job: a resume keeps them
        assert (root / "logs" / f"{name}.log").is_file()
    capsys.readouterr()
    zoo.train_models(["dense", "sparse"], tmp_path, "quick", jobs=2, threads=1, progress=False)
    assert zoo.ensure_model("dense", tmp_path, "quick", False, False) == root / "dense"
    assert capsys.readouterr().out == ""  # finished models are neither retrained nor resumed
    monkeypatch.setitem(zoo.SIZES, "quick", tiny_models(4))
    with pytest.raises(UserError, match="was trained with other settings"):
        zoo.train_models(["dense"], tmp_path, "quick", jobs=2, threads=1, progress=False)
    with pytest.raises(UserError, match="--jobs must be >= 1"):
        recipes.reproduce("sparsity", tmp_path, quick=True, jobs=0)


def test_recipe_names():
    assert recipes.recipe_names("all") == list(recipes.RECIPES)
    assert recipes.recipe_names("sparsity, convex,sparsity") == ["sparsity", "convex"]
    with pytest.raises(UserError, match="unknown recipe 'convx'"):
        recipes.recipe_names("sparsity,convx")
    assert recipes.recipe_names("sparsity,all") == ["sparsity"] + [n for n in recipes.RECIPES if n != "sparsity"]
    with pytest.raises(UserError, match="empty recipe name"):
        recipes.recipe_names("sparsity,")


def test_every_recipe_is_one_declared_frozen_recipe(tmp_path, monkeypatch):
    import dataclasses

    from iclab.recipes import lsa_gd
    from iclab.recipes.recipe import Recipe

    for name, recipe in recipes.RECIPES.items():
        assert isinstance(recipe, Recipe) and recipe.name == name
        for mode in recipe.modes:
            assert set(recipe.models_at(mode)) <= set(zoo.model_names(mode)), (name, mode)
    assert recipes.RECIPES["sparsity"].models == ("dense", "sparse", "dense_sparse")
    unshipped = ["momentum"]  # the others' full-size models ship: --pretrained loads them
    assert [n for n, r in recipes.RECIPES.items() if not r.shipped] == unshipped
    with pytest.raises(dataclasses.FrozenInstanceError):
        lsa_gd.RECIPE.shipped = False
    monkeypatch.setitem(recipes.RECIPES, "lsa-gd", dataclasses.replace(lsa_gd.RECIPE, modes=("full",)))
    with pytest.raises(UserError, match="recipe 'lsa-gd' has no quick size"):
        recipes.reproduce("lsa-gd", tmp_path, quick=True)


Class = model_selection.Class
# a 3-class setting as model-selection-3 reads it from a scale file (names as in quick.yaml but for the mixture's)
THREE = {
    "mixture": "dense_sparse_sparse2",
    "classes": [
        Class("dense", {"name": "linear"}, 0.5, "dense"),
        Class("sparse", {"name": "sparse_linear", "nnz": 1}, 0.25, "sparse"),
        Class("sparse2", {"name": "sparse_linear", "nnz": 2}, 0.25, "sparse2"),
    ],
}


def three_class_rows(mixture: dict[str, float], ks=range(6)) -> list[dict]:
    """Hand-built rows of the 3-class recipe: each specialist at 0.30 on its class, the oracle at 0.10."""
    three = THREE
    rows = []
    for k in ks:
        for c in three["classes"]:
            sweep = f"class={c.label}"
            rows += rows_for({c.specialist: {sweep: 0.30}, three["mixture"]: {sweep: mixture[c.label]}}, k)
            rows += rows_for({name: {sweep: 0.5} for name in ("least_squares", "lasso_cv")}, k)
            rows += rows_for({model_selection.oracle(three | {"dims": 5}): {sweep: 0.10}}, k)
    return rows


def test_three_class_model_selection_checks_each_class_and_reports_the_oracle_gap(tmp_path):
    setting = THREE | {"dims": 5}
    assert model_selection.oracle(setting) == "bayes:nnz=[5,1,2],weights=[0.5,0.25,0.25]"
    assert model_selection.model_names(setting) == ("dense", "sparse", "sparse2", "dense_sparse_sparse2")
    near = {"dense": 0.33, "sparse": 0.32, "sparse2": 0.345}  # 0.345 = 0.30 * 1.15: at the limit
    checks = model_selection.check_rows(three_class_rows(near), setting)
    assert [c["passed"] for c in checks] == [True, True, True]  # one per class; the gap is reported, not checked
    assert "sparse2 specialist" in checks[2]["claim"]
    rows = three_class_rows(near, ks=[0, 1, 2, 4, 5]) + three_class_rows(near | {"sparse2": 0.60}, ks=[3])
    checks = model_selection.check_rows(rows, setting)
    assert [c["passed"] for c in checks] == [True, True, False] and "at k = 3: mixture 0.600" in checks[2]["detail"]
    gaps = model_selection.oracle_gaps(rows, setting)
    assert gaps[("sparse2", "dense_sparse_sparse2")] == pytest.approx([0.245, 0.245, 0.245, 0.5, 0.245, 0.245])
    assert gaps[("sparse2", "sparse2")] == pytest.approx([0.2] * 6)
    table = model_selection.oracle_gap_table(rows, setting)
    assert "| sparse2 | dense_sparse_sparse2 | 0.245 | 0.245 | 0.245 | 0.500 | 0.245 | 0.245 |" in table
    assert "| dense | dense | 0.200 |" in "\n".join(table)
    figures = model_selection.draw(rows, tmp_path, setting)
    assert [f.name for f in figures] == ["dense.png", "sparse.png", "sparse2.png", "oracle_gap.png"]
    assert all(f.stat().st_size > 1000 for f in figures)


def test_the_three_class_mixture_task_has_the_oracle_prior():
    from iclab.baselines.bayes import exact_prior
    from iclab.tasks import make_task

    setting = THREE | {"dims": 5}
    prior = exact_prior(make_task(model_selection.mixture_task(setting), 5))
    oracle = parse_named(model_selection.oracle(setting))
    assert [c.nnz for c in prior] == oracle["nnz"] and [c.weight for c in prior] == pytest.approx(oracle["weights"])


def test_three_class_recipe_runs_on_two_step_models(tmp_path, monkeypatch):
    """The whole 3-class recipe (train, sweep, checks, figures, section with the gap table) with the model
    entries it asks the shared model table for."""
    monkeypatch.setitem(zoo.SIZES, "quick", tiny_models(3))
    recipe = model_selection.RECIPE_3
    models = recipe.models_at("quick")
    assert recipe.name == "model-selection-3" and set(models) <= set(zoo.model_names("quick")) and recipe.shipped
    assert models == ("dense", "sparse", "sparse2", "dense_sparse1_sparse2")
    # the mixture trains on the prior the oracle assumes
    assert zoo.model_config("dense_sparse1_sparse2", "quick").task == model_selection.mixture_task(
        model_selection._three(zoo.setting("quick"))
    )
    summary = recipe.run(tmp_path, "quick", False, False)
    assert len(summary["checks"]) == 3 and summary["setting"]["dims"] == 3
    rows = read_curves(tmp_path / recipe.name / "curves.csv")
    assert {r["sweep"] for r in rows} == {"class=dense", "class=sparse1", "class=sparse2"}
    assert {series_name(r) for r in rows} >= {
        "sparse2",
        "dense_sparse1_sparse2",
        "bayes:nnz=[3,1,2],weights=[0.5,0.25,0.25]",
    }
    lines = recipe.section(tmp_path / recipe.name, summary | {"mode": "quick"})
    assert "![model-selection-3](model-selection-3/oracle_gap.png)" in lines
    assert any(line.startswith("Error above the 3-class Bayes oracle") for line in lines)
    assert sum(line.startswith("- **") for line in lines) == 3


def test_three_class_recipe_names_a_scale_file_without_its_classes():
    with pytest.raises(UserError, match="three_classes"):
        model_selection._three({"dims": 4, "nnz": 1})
    with pytest.raises(UserError, match="label, task, weight, specialist"):
        model_selection._three({"dims": 4, "three_classes": {"mixture": "m", "classes": [{"label": "dense"}]}})
