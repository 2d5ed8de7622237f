"""The paper recipes' shape checks in quick mode, for real (about 15 minutes on 2 cores): `make test-slow`.

Quick mode exists so that these checks can run here: smaller d and fewer steps, but the same claims, checked
honestly. icl-vs-ft and momentum are left out: their checks measure whether the papers' readings hold on our
small models, and they do not all hold (README, Paper recipes), so a FAIL there is a finding, not a bug."""

import pytest

from iclab import recipes


@pytest.mark.slow
def test_quick_recipes_pass_their_shape_checks(tmp_path):
    names = "model-selection,sparsity,convex,frequency,lsa-gd"
    summaries = recipes.reproduce(names, tmp_path, quick=True, progress=False, jobs=2)
    failed = [f"{s['recipe']}: {c['claim']}: {c['detail']}" for s in summaries for c in s["checks"] if not c["passed"]]
    assert not failed, failed
    assert "**FAIL**" not in (tmp_path / "report.md").read_text()
