"""The Python API (iclab.api): configs in every form, train / load_run / Run.evaluate, and the files it writes are
the ones `iclab eval` writes."""

import csv
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY

import iclab
from iclab.cli import main
from iclab.config import load_config, parse_value
from iclab.errors import UserError
from iclab.models.transformer import ICLTransformer
from iclab.scoring import make_eval_set, prompt_errors
from iclab.training.runs import load_model

OVERRIDES = {key: parse_value(value) for key, value in (item.split("=", 1) for item in TINY)} | {"train.steps": 6}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> iclab.Run:
    return iclab.train({"task": {"name": "linear"}}, tmp_path_factory.mktemp("api") / "run", OVERRIDES, progress=False)


def test_import_iclab_loads_no_torch():
    code = "import sys, iclab; assert 'torch' not in sys.modules and 'iclab.api' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0


def test_iclab_train_is_the_function_and_its_old_module_path_is_retired_with_a_pointer():
    assert callable(iclab.train) and iclab.train.__module__ == "iclab.api"
    with pytest.raises(ModuleNotFoundError, match="iclab.training.trainer"):
        importlib.import_module("iclab.train")
    assert callable(iclab.train)  # the failed import left the function in place
    from iclab import load_run, train

    assert train is iclab.train and load_run is iclab.load_run
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        iclab.trian  # noqa: B018


def test_a_config_as_object_dict_yaml_path_or_packaged_name_with_dotted_overrides(tmp_path):
    yaml = tmp_path / "c.yaml"
    yaml.write_text("dims: 4\npoints: 9\nmodel: {layers: 2}\n")
    expected = load_config(yaml, ["train.steps=7", "task={name: sparse_linear, nnz: 2}"])
    overrides = {"train.steps": 7, "task": {"name": "sparse_linear", "nnz": 2}}
    for form in (yaml, str(yaml), {"dims": 4, "points": 9, "model": {"layers": 2}}, load_config(yaml)):
        assert iclab.make_config(form, overrides) == expected
    demo = iclab.make_config("demo", {"model.layers": 2})
    assert (demo.dims, demo.model.layers, demo.train.steps) == (5, 2, 3000)


@pytest.mark.parametrize(
    "config, overrides, message",
    [
        ({}, {"train.stepz": 1}, "unknown config key 'train.stepz' \\(did you mean 'steps'\\?\\)"),
        ("no_such_config", None, "unknown packaged config 'no_such_config'"),
        ("missing.yaml", None, "config file not found: missing.yaml"),
        (42, None, "a config is a Config, a dict, a YAML path or a packaged name"),
        ({}, ["train.steps=5"], "overrides are a dict such as"),
    ],
)
def test_bad_configs_are_one_line_errors(config, overrides, message):
    with pytest.raises(UserError, match=message):
        iclab.make_config(config, overrides)


def test_a_trained_run_has_its_path_config_step_and_model(run):
    assert run.path.name == "run" and (run.path / "config.json").is_file()
    assert (run.config.dims, run.config.train.steps, run.step) == (3, 6, 6)
    assert run.metrics[-1]["step"] == 6
    loaded = iclab.load_run(run.path)
    assert isinstance(loaded.model, ICLTransformer) and not loaded.model.training
    reference, _ = load_model(run.path)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name
    assert repr(loaded) == f"Run('{run.path}', step 6 of 6)"


def test_train_refuses_an_existing_run_unless_overwrite(run):
    with pytest.raises(UserError, match="already holds a run"):
        iclab.train(run.config, run.path, progress=False)
    with pytest.raises(UserError, match="is not a run directory"):
        iclab.load_run(run.path / "eval")


def test_the_transformer_curve_is_the_mean_error_of_the_model_on_the_evaluation_prompts(run):
    result = run.evaluate(baselines=[])
    evalset = make_eval_set(run.config)
    with torch.no_grad():
        expected = prompt_errors(run.model(evalset.xs, evalset.ys), evalset).mean(0)
    curve = [r["mean"] for r in result.rows if r["estimator"] == "transformer"]
    assert curve == pytest.approx(expected.tolist(), rel=1e-6)
    assert {r["estimator"] for r in result.rows} == {"transformer"}


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_evaluate_and_save_write_exactly_what_iclab_eval_writes(run, tmp_path):
    by_cli, by_api = tmp_path / "cli" / "run", tmp_path / "api" / "run"
    shutil.copytree(run.path, by_cli)
    shutil.copytree(run.path, by_api)
    assert main(["eval", str(by_cli), "--quiet"]) == 0
    result = iclab.load_run(by_api).evaluate()
    csv_path, png = result.save()
    assert csv_path == by_api / "eval" / "curves.csv" and png == by_api / "eval" / "curves.png"
    assert csv_path.read_text() == (by_cli / "eval" / "curves.csv").read_text()
    assert (by_api / "report.md").read_text() == (by_cli / "report.md").read_text()
    assert png.stat().st_size > 1000

    # to_pandas holds the same numbers as the CSV, icl_score included (NaN where the CSV leaves it empty)
    frame = result.to_pandas()
    stored = read_csv(by_cli / "eval" / "curves.csv")
    assert list(frame.columns) == list(stored[0]) and len(frame) == len(stored)
    for (_, got), want in zip(frame.iterrows(), stored, strict=True):
        assert (got["task"], got["estimator"], got["k"]) == (want["task"], want["estimator"], int(want["k"]))
        for column in ("mean", "lo", "hi", "icl_score"):
            if want[column] == "":
                assert got[column] != got[column], (column, want)  # NaN
            else:
                assert got[column] == pytest.approx(float(want[column]), rel=1e-5), (column, want)
    assert frame["icl_score"].notna().sum() > 0


def test_another_task_and_baselines_add_rows_and_a_figure_of_their_own(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    loaded = iclab.load_run(copy)
    loaded.evaluate(baselines="least_squares").save()
    result = loaded.evaluate(task="sparse_linear:nnz=1", baselines="least_squares,zero")
    assert result.task == "sparse_linear:nnz=1"
    assert (
        repr(result)
        == f"EvalResult(run '{copy}', task 'sparse_linear:nnz=1', k = 0 .. 6: transformer, least_squares, zero)"
    )
    assert {r["estimator"] for r in result.rows} == {"transformer", "least_squares", "zero"}
    _, png = result.save()
    assert png.name == "curves-sparse_linear_nnz=1.png" and png.is_file()
    tasks = {r["task"] for r in read_csv(copy / "eval" / "curves.csv")}
    assert tasks == {"linear", "sparse_linear:nnz=1"}
    assert "## Evaluation: sparse_linear:nnz=1" in (copy / "report.md").read_text()
    elsewhere = result.plot(tmp_path / "figure.png")
    assert elsewhere == tmp_path / "figure.png" and elsewhere.stat().st_size > 1000
