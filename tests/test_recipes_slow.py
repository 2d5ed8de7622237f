"""The paper recipes' shape checks in quick mode, for real (about 15 minutes on 2 cores): `make test-slow`.

Quick mode exists so that these checks can run here: smaller d and fewer steps, but the same claims, checked
honestly. icl-vs-ft and momentum are left out: their checks measure whether the papers' readings hold on our
small models, and they do not all hold (README, Paper recipes), so a FAIL there is a finding, not a bug.

task-diversity, algorithm-selection and model-selection-3 are not in the quick run either: at quick scale their
claims do not all hold (2 of 4, 1 of 3 and 2 of 3 checks pass, as the docs report), since they need the full
scale's pool sizes and steps (the three-class mixture four times a specialist's steps), which take longer to train
than this suite allows. Their checks run instead on the shipped full-scale models (`--pretrained`: scoring only,
about 2 min of CPU), where every one passes; tests/test_pretrained.py also checks those models' claims directly."""

import pytest

from iclab import recipes


@pytest.mark.slow
def test_quick_recipes_pass_their_shape_checks(tmp_path):
    names = "model-selection,sparsity,convex,frequency,lsa-gd"
    summaries = recipes.reproduce(names, tmp_path, quick=True, progress=False, jobs=2)
    failed = [f"{s['recipe']}: {c['claim']}: {c['detail']}" for s in summaries for c in s["checks"] if not c["passed"]]
    assert not failed, failed
    assert "**FAIL**" not in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_shipped_models_pass_the_full_scale_recipes(tmp_path):
    names = "task-diversity,algorithm-selection,model-selection-3"
    summaries = recipes.reproduce(names, tmp_path, pretrained=True, progress=False)
    assert sorted(s["recipe"] for s in summaries) == sorted(names.split(","))
    failed = [f"{s['recipe']}: {c['claim']}: {c['detail']}" for s in summaries for c in s["checks"] if not c["passed"]]
    assert not failed, failed
    assert sum(len(s["checks"]) for s in summaries) == 10  # 4 + 3 + 3: no check silently dropped
