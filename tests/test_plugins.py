"""A user's own task and estimator, in a module of their own, used by the `iclab` commands: `--import MODULE`
(before or after the command, repeatable) and the `iclab.plugins` entry points of an installed package."""

import csv
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import TINY

PLUGIN = textwrap.dedent(
    '''
    """A user's module: a task and an estimator of their own."""
    from dataclasses import dataclass

    import torch

    from iclab.baselines import ESTIMATORS, Estimator
    from iclab.tasks import FUNCTION_CLASSES
    from iclab.tasks.functions import FunctionClass


    @FUNCTION_CLASSES.register("my_abs_linear")
    @dataclass
    class AbsLinear(FunctionClass):
        """y = |w.x|, w ~ N(0, I_d): a user's own task."""

        scale: float = 1.0

        def sample(self, batch, generator, active_dims=None):
            return {"w": torch.randn(batch, self.dims, generator=generator, device=generator.device)}

        def apply(self, params, xs, generator=None):
            return self.scale * torch.einsum("bnd,bd->bn", xs, params["w"]).abs()


    @ESTIMATORS.register("my_last_y")
    @dataclass
    class LastY(Estimator):
        """Predicts the previous example's y (0 with no examples): a user's own baseline."""

        name = "my_last_y"

        def _predict(self, xs, ys):
            return torch.cat([torch.zeros_like(ys[:, :1]), ys[:, :-1]], dim=1)
    '''
)


def iclab(*args, cwd, pythonpath):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(pythonpath), os.environ.get("PYTHONPATH", "")]))
    env.pop("ICLAB_IMPORT", None)
    return subprocess.run(
        [sys.executable, "-m", "iclab.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env,
        timeout=300,
    )


@pytest.fixture
def plugin(tmp_path):
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "my_plugin.py").write_text(PLUGIN)
    return folder


def test_import_makes_a_users_task_and_estimator_usable_by_every_command(plugin, tmp_path):
    listed = iclab("--import", "my_plugin", "list", "tasks", cwd=tmp_path, pythonpath=plugin)
    assert listed.returncode == 0, listed.stderr
    assert "my_abs_linear" in listed.stdout and "parameters: scale=1.0" in listed.stdout
    # after the command too, and in the --import=MODULE form
    listed = iclab("list", "estimators", "--import=my_plugin", cwd=tmp_path, pythonpath=plugin)
    assert "my_last_y" in listed.stdout

    run, config = tmp_path / "run", tmp_path / "c.yaml"
    config.write_text("task: {name: my_abs_linear, scale: 2.0}\n")
    sets = [a for item in TINY for a in ("--set", item)]
    trained = iclab("train", "--import", "my_plugin", "--config", config, "--out", run, "--steps", 2, "--quiet", *sets,
                    cwd=tmp_path, pythonpath=plugin)  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    evaluated = iclab("--import", "my_plugin", "eval", run, "--baselines", "my_last_y,zero", "--quiet",
                      cwd=tmp_path, pythonpath=plugin)  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    with open(run / "eval" / "curves.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["estimator"] for r in rows} == {"transformer", "my_last_y", "zero"}
    assert {r["task"] for r in rows} == {"my_abs_linear"}

    # without the module the run's task is unknown: one line that names it
    missing = iclab("eval", run, "--quiet", cwd=tmp_path, pythonpath=plugin)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "unknown task 'my_abs_linear'" in missing.stderr


def test_a_missing_module_is_one_line(plugin, tmp_path):
    for args in (["--import", "my_plugn", "list"], ["list", "--import", "my_plugin", "--import", "my_plugn"]):
        result = iclab(*args, cwd=tmp_path, pythonpath=plugin)
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert "--import my_plugn: no module named 'my_plugn'" in result.stderr
    result = iclab("list", "--import", cwd=tmp_path, pythonpath=plugin)
    assert result.returncode == 2 and "--import expects a module name" in result.stderr


def test_a_module_that_takes_a_builtin_name_is_refused(plugin, tmp_path):
    (plugin / "clash.py").write_text(PLUGIN.replace('"my_abs_linear"', '"linear"'))
    result = iclab("--import", "clash", "list", cwd=tmp_path, pythonpath=plugin)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "task 'linear' is already registered (by iclab.tasks.functions.Linear)" in result.stderr


def test_an_installed_packages_entry_point_needs_no_import(plugin, tmp_path):
    info = plugin / "my_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[iclab.plugins]\nmine = my_plugin\n")
    listed = iclab("list", "tasks", cwd=tmp_path, pythonpath=plugin)
    assert listed.returncode == 0, listed.stderr
    assert "my_abs_linear" in listed.stdout


def test_grid_workers_import_the_module_too(plugin, tmp_path):
    """`iclab grid` trains each run in a fresh worker process: it imports the --import modules as well."""
    plain = {k: v for k, v in (item.split("=", 1) for item in TINY) if "." not in k}
    dotted = {k: v for k, v in (item.split("=", 1) for item in TINY) if "." in k} | {"train.steps": "2"}
    base = "\n".join(f"{k}: {v}" for k, v in plain.items()) + "\ntask: {name: my_abs_linear}\n"
    (tmp_path / "base.yaml").write_text(base + "eval: {baselines: [least_squares]}\n")
    fixed = ", ".join(f"{k}: {v}" for k, v in dotted.items())
    (tmp_path / "grid.yaml").write_text(f"base: base.yaml\nset: {{{fixed}}}\ngrid:\n  seed: [0]\n")
    result = iclab("--import", "my_plugin", "grid", "grid.yaml", "--out", "out", "--quiet",
                   cwd=tmp_path, pythonpath=plugin)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "out" / "seed=0" / "checkpoints" / "step-0000002").is_dir()
