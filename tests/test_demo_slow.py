"""The main job end to end (minutes): run with `make test-slow`."""

import json

import pytest

from iclab.demo import run_demo


@pytest.mark.slow
def test_demo_reaches_least_squares_quality(tmp_path):
    summary = run_demo(tmp_path / "demo", progress=False)
    assert summary["passed"], summary["checks"]
    assert summary["seconds_to_quality"] is not None
    stored = json.loads((tmp_path / "demo" / "checks.json").read_text())
    assert stored["passed"]
    assert "**PASS**" in (tmp_path / "demo" / "report.md").read_text()
