"""An honest `iclab reproduce`: --pretrained trains nothing (a guard raises if a recipe tries), the exit status
separates a documented miss from a regression (--strict: any FAIL), report.md opens with a summary table,
summary.json and every results JSON carry provenance with the models' seeds, and progress names each recipe."""

import json

import pytest
import yaml
from conftest import TINY

from iclab import recipes
from iclab.cli import main
from iclab.config import load_config
from iclab.errors import UserError
from iclab.files import atomic_write_json
from iclab.recipes import outcomes, sizes, trained
from iclab.recipes.common import check, section_lines
from iclab.recipes.progress import progress_line
from iclab.recipes.recipe import Recipe
from iclab.training.guard import TrainingRefused, no_training, refuse_training
from iclab.training.trainer import train

CLAIMS = ("the model learns", "the model beats the oracle")


def fake_recipe(name: str, passes: tuple[bool, bool], trains: bool = False) -> Recipe:
    """A shipped recipe with two checks of the given outcomes; it uses the shipped pool2 model, or (`trains`)
    tries to train a tiny model of its own, as lsa-gd did under --pretrained."""

    def run(out, mode, pretrained, progress):
        config = load_config(None, TINY + ["train.steps=2"])
        trained.ensure_study_model("pool2", config, out, mode, pretrained and not trains, progress)
        atomic_write_json(out / name / "results.json", {"loss": 0.5})
        return {"checks": checks(), "seconds": 0.1}

    def checks():
        pairs = enumerate(zip(CLAIMS, passes, strict=True))
        return [check(claim, ok, f"loss {0.5 + i:.3f}") for i, (claim, ok) in pairs]

    def section(folder, stored):
        return section_lines(RECIPE, folder, [], checks(), stored, "footer")

    RECIPE = Recipe(
        name, f"{name} title", "claim", "differences", sizes.SCALES, run, checks, list, section, shipped=True
    )
    return RECIPE


@pytest.fixture
def record(tmp_path, monkeypatch):
    """scales/expected/full.yaml in a temporary scales folder: 'known' records a FAIL of its second check."""
    folder = tmp_path / "scales"
    (folder / "expected").mkdir(parents=True)
    data = {
        "checks": {"known": {CLAIMS[0]: "PASS", CLAIMS[1]: "FAIL"}, "flipped": {CLAIMS[0]: "PASS", CLAIMS[1]: "PASS"}},
        "pretrained_seconds": {"known": 30, "flipped": 10},
    }
    (folder / "expected" / "full.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setattr(outcomes, "FOLDER", folder)
    return data


def use(monkeypatch, *fakes: Recipe) -> None:
    monkeypatch.setattr(recipes, "RECIPES", {r.name: r for r in fakes})


def test_the_guard_refuses_training_only_inside_no_training(tmp_path):
    config = load_config(None, TINY + ["train.steps=2"])
    refuse_training("anything")  # outside: nothing happens
    with no_training("--pretrained trains nothing"):
        with pytest.raises(TrainingRefused, match="refusing to train a model in .*: --pretrained trains nothing"):
            train(config, tmp_path / "run", progress=False)  # the Trainer itself refuses
    assert not any((tmp_path / "run").rglob("*"))  # nothing written (the run's lock made the empty folder)
    train(config, tmp_path / "run", progress=False)  # and trains again outside the block
    assert (tmp_path / "run" / "config.json").is_file()


def test_a_recipe_that_would_train_under_pretrained_is_stopped_before_it_writes(tmp_path, monkeypatch, record):
    use(monkeypatch, fake_recipe("known", (True, False), trains=True))
    with pytest.raises(TrainingRefused, match="refusing to train pool2 .*yet recipe 'known' would"):
        recipes.reproduce("known", tmp_path, pretrained=True, progress=False)
    assert not (tmp_path / "models").exists() and not (tmp_path / "known" / "checks.json").exists()


def test_an_unshipped_recipe_is_refused_under_pretrained_or_skipped_under_all(tmp_path, monkeypatch, record, capsys):
    assert not recipes.RECIPES["momentum"].shipped  # its grid of runs does not ship
    with pytest.raises(UserError, match="no models for 'momentum' ship with iclab, and --pretrained trains nothing"):
        recipes.reproduce("momentum", tmp_path, pretrained=True)
    use(monkeypatch, recipes.RECIPES["momentum"], fake_recipe("known", (True, False)))
    summaries = recipes.reproduce("all", tmp_path, pretrained=True, progress=False)
    assert [s["recipe"] for s in summaries] == ["known"]
    assert "skipping momentum: no shipped models" in capsys.readouterr().out
    assert not (tmp_path / "momentum").exists()


@pytest.mark.parametrize(
    "recipe, passes, strict, status",
    [
        ("known", (True, False), False, 0),  # the recorded FAIL: a known miss
        ("known", (True, False), True, 1),  # --strict: any FAIL
        ("known", (True, True), False, 1),  # it passes where the record says FAIL: the record is stale
        ("flipped", (True, False), False, 1),  # recorded PASS, now FAIL: a regression
        ("unrecorded", (True, False), False, 1),  # no record: a FAIL is a regression
        ("unrecorded", (True, True), False, 0),
    ],
)
def test_exit_status_separates_known_fails_from_regressions(
    tmp_path, monkeypatch, record, capsys, recipe, passes, strict, status
):
    use(monkeypatch, fake_recipe(recipe, passes))
    args = ["reproduce", recipe, "--pretrained", "--quiet", "--out", str(tmp_path)] + (["--strict"] if strict else [])
    assert main(args) == status
    out = capsys.readouterr().out
    if recipe == "known" and passes == (True, False):
        assert f"FAIL (known)  {CLAIMS[1]}" in out and "1 known FAIL, 0 regression" in out
    if recipe == "flipped":
        assert f"FAIL (regression)  {CLAIMS[1]}" in out and "exit 1 (1 outcome(s) differ from the record)" in out
    stored = json.loads((tmp_path / recipe / "checks.json").read_text())
    assert [c["expected"] for c in stored["checks"]] == [
        record["checks"].get(recipe, {}).get(claim) for claim in CLAIMS
    ]


def test_report_opens_with_a_summary_table_and_summary_json_has_every_check(tmp_path, monkeypatch, record):
    use(monkeypatch, fake_recipe("known", (True, False)), fake_recipe("flipped", (True, False)))
    recipes.reproduce("known,flipped", tmp_path, pretrained=True, progress=False)
    report = (tmp_path / "report.md").read_text()
    table = report[report.index("## Summary") : report.index("## known title")]
    assert "| recipe | check | outcome | recorded | numbers |" in table
    assert f"| known | {CLAIMS[1]} | FAIL (known) | FAIL | loss 1.500 |" in table
    assert f"| flipped | {CLAIMS[1]} | FAIL (regression) | PASS | loss 1.500 |" in table
    assert f"| known | {CLAIMS[0]} | PASS | PASS | loss 0.500 |" in table
    assert "4 checks: 2 PASS, 1 known FAIL, 1 regression" in table
    assert f"- **FAIL** (known) {CLAIMS[1]}: loss 1.500" in report  # the sections say it too
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["provenance"]["commit"] and summary["recipes"]["known"]["provenance"]["seeds"] == {"pool2": 0}
    rows = {(r["recipe"], r["check"]): r for r in summary["checks"]}
    assert len(rows) == 4
    assert rows[("known", CLAIMS[1])] | {"mode": None} == {
        "recipe": "known",
        "mode": None,
        "check": CLAIMS[1],
        "passed": False,
        "expected": "FAIL",
        "outcome": "known",
        "detail": "loss 1.500",
    }
    assert rows[("flipped", CLAIMS[1])]["outcome"] == "regression"
    for name in ("known", "flipped"):  # the recipe's own results JSON and its checks.json carry provenance
        for file in ("results.json", "checks.json"):
            stamped = json.loads((tmp_path / name / file).read_text())["provenance"]
            assert stamped["seeds"] == {"pool2": 0} and "load_average" in stamped["machine"], (name, file)
    assert json.loads((tmp_path / "known" / "results.json").read_text())["loss"] == 0.5


def test_progress_names_each_recipe_with_an_estimate_of_the_time_left():
    names = ["a", "b", "c"]
    assert progress_line(0, names, 0.0, {}) == "recipe 1/3 a"  # nothing to estimate from yet
    assert progress_line(1, names, 10.0, {}) == "recipe 2/3 b (10 s so far, about 20 s left at this pace)"
    recorded = {"a": 100, "b": 50, "c": 50}
    first = progress_line(0, names, 0.0, recorded)
    assert first == "recipe 1/3 a (3.3 min in all when recorded; the estimate then follows this machine's pace)"
    # a ran in 50 s where 100 were recorded: the rest (100 recorded) at twice the speed
    assert progress_line(1, names, 50.0, recorded) == "recipe 2/3 b (50 s so far, about 50 s left at this pace)"


def test_outcome_labels_and_old_results_without_a_record():
    assert outcomes.label({"passed": False}) == "FAIL"  # stored before outcomes were recorded
    assert outcomes.label({"passed": True, "expected": "FAIL"}) == "PASS (unexpected: recorded FAIL)"
    assert outcomes.label({"passed": False, "expected": None}) == "FAIL (regression: no record)"
    assert outcomes.exit_status([{"checks": [{"passed": False, "expected": "FAIL"}]}]) == 0
    assert outcomes.exit_status([{"checks": [{"passed": False, "expected": "FAIL"}]}], strict=True) == 1


def test_the_recorded_outcomes_are_well_formed():
    """Each recorded recipe exists and ships (the record is of the shipped models), its outcomes are PASS or FAIL,
    and its time is recorded for the progress estimate."""
    data = outcomes.record("full")
    assert data["checks"], "the full scale's outcomes are recorded"
    for name, checks in data["checks"].items():
        assert name in recipes.RECIPES and recipes.RECIPES[name].shipped, name
        assert set(checks.values()) <= {"PASS", "FAIL"}, name
    assert set(data["pretrained_seconds"]) == set(data["checks"])


def test_all_leaves_out_recipes_without_the_scale_and_a_named_one_is_refused(monkeypatch):
    """`iclab reproduce all --scale paper` (and its --dry-run) runs the recipes that have a paper size; naming one
    without it is a one-line error."""
    quick_only = Recipe(
        name="quick-only", title="t", claim="c", differences="d", modes=("quick",), run=None, check=None,
        draw=None, section=None,
    )
    monkeypatch.setitem(recipes.RECIPES, "quick-only", quick_only)
    paper = recipes.names_at("all", "paper")
    assert "quick-only" not in paper and paper == [n for n in recipes.RECIPES if "paper" in recipes.RECIPES[n].modes]
    assert "quick-only" in recipes.names_at("all", "quick")
    with pytest.raises(UserError, match=r"recipe 'quick-only' has no paper size \(it has: quick\)"):
        recipes.names_at("quick-only", "paper")
