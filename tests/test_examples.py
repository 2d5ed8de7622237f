"""examples/: the quickstart notebook-as-script runs as a user runs it (a subprocess), cut to 30 steps per run here;
its full length, which must show the deeper model learning, is a slow test."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from iclab.config import load_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RUNS = ("one-layer", "three-layers")


def quickstart(out: Path, steps: int | None) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", ICLAB_EXAMPLE_OUT=str(out))
    env.pop("ICLAB_EXAMPLE_STEPS", None)
    if steps is not None:
        env["ICLAB_EXAMPLE_STEPS"] = str(steps)
    return subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")], capture_output=True, text=True, env=env, timeout=1800
    )


def compared(out: Path) -> list[dict]:
    with open(out / "compare" / "compare.csv") as f:
        return list(csv.DictReader(f))


def test_the_example_configs_differ_only_in_depth():
    configs = [load_config(EXAMPLES / f"{name}.yaml").to_dict() for name in RUNS]
    assert configs[0]["model"].pop("layers") == 1 and configs[1]["model"].pop("layers") == 3
    assert configs[0] == configs[1]


def test_quickstart_trains_evaluates_compares_and_plots(tmp_path):
    done = quickstart(tmp_path, steps=30)
    assert done.returncode == 0, done.stderr
    for name in RUNS:
        run = tmp_path / name
        stored = json.loads((run / "config.json").read_text())
        assert stored == load_config(EXAMPLES / f"{name}.yaml", ["train.steps=30"]).to_dict()
        assert (run / "checkpoints" / "step-0000030").is_dir()
        assert (run / "eval" / "curves.png").stat().st_size > 1000
        assert "## Evaluation: linear" in (run / "report.md").read_text()
        assert f"{name}: " in done.stdout
    rows = compared(tmp_path)
    assert [r["run"] for r in rows] == list(RUNS) and [r["model.layers"] for r in rows] == ["1", "3"]
    assert list(rows[0])[:4] == ["run", "path", "step", "model.layers"] and "error_k10" in rows[0]
    assert "| model.layers | 1 | 3 |" in done.stdout
    assert (tmp_path / "compare" / "compare.png").stat().st_size > 1000
    assert (tmp_path / "three-layers-scaled_x.png").stat().st_size > 1000


@pytest.mark.slow
def test_quickstart_at_full_length_shows_the_deeper_model_learning(tmp_path):
    done = quickstart(tmp_path, steps=None)
    assert done.returncode == 0, done.stderr
    one, three = compared(tmp_path)
    assert float(three["error_k10"]) < 0.2 and float(three["error_k10"]) < float(one["error_k10"])
