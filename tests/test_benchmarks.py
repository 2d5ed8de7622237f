"""Every benchmark result is traceable: it names the committed script that wrote it, the commit, the date and the
machine, so a number in the docs can be checked against the command that produced it."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
RESULTS = sorted((BENCHMARKS / "results").glob("*.json"))


def test_there_are_results():
    assert len(RESULTS) >= 5


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.name)
def test_result_has_provenance(path: Path):
    prov = json.loads(path.read_text())["provenance"]
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", prov["commit"]), prov["commit"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d.*", prov["date"]), prov["date"]
    machine = prov["machine"]
    for key in ("cores", "threads", "load_average", "device"):
        assert machine[key] is not None, key
    assert isinstance(machine["load_average"], (int, float))


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.name)
def test_result_names_the_script_that_writes_it(path: Path):
    """The command is `python benchmarks/NAME.py ...`, that script exists and writes this very file (gpu.json alone
    comes from scripts/gpu_check.py, the GPU machine's one script)."""
    command = shlex.split(json.loads(path.read_text())["provenance"]["command"])
    scripts = [arg for arg in command if arg.endswith(".py")]
    if path.name == "gpu.json":
        assert scripts and scripts[0].endswith("scripts/gpu_check.py"), command
        return
    assert scripts and Path(scripts[0]).parent.name == "benchmarks", command
    script = BENCHMARKS / Path(scripts[0]).name
    assert script.is_file(), f"{path.name} names {scripts[0]}, which is not in benchmarks/"
    writes = re.search(rf'write_result\(\s*"{path.stem}"', script.read_text())
    assert writes, f"{script.name} does not write {path.name}"
