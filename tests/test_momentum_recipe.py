"""`iclab reproduce momentum`: the pipeline on models trained for a few steps, reuse of finished runs, and the
paired checks on known numbers."""

import json
import subprocess
import sys

import pytest

from iclab import recipes
from iclab.errors import UserError
from iclab.recipes import momentum

TINY = {
    "etas": [0.0, 0.5],
    "seeds": 2,
    "lm": ["corpus.source=tempest", "corpus.vocab=300", "context=16", "eval.lengths=[4,16]", "eval.windows=20"]
    + ["model.layers=1", "model.width=16", "model.heads=2", "train.steps=3", "train.batch_size=4"]
    + ["train.checkpoint_every=2", "train.eval_every=0"],
    "icl": ["dims=3", "points=7", "model.layers=1", "model.width=16", "model.heads=2", "train.steps=3"]
    + ["train.batch_size=8", "eval.prompts=32", "eval.bootstrap=50"],
}


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(momentum.SIZES, "quick", TINY)


def test_reproduce_momentum_end_to_end(tiny, tmp_path):
    [summary] = recipes.reproduce("momentum", tmp_path, quick=True, progress=False)
    folder = tmp_path / "momentum"
    results = json.loads((folder / "results.json").read_text())
    assert len(results["lm"]["runs"]) == len(results["icl"]["runs"]) == 4
    assert all(len(r["perplexity"]) == 2 for r in results["lm"]["runs"])
    assert all(len(r["error"]) == 7 for r in results["icl"]["runs"])
    assert {(r["eta"], r["seed"]) for r in results["lm"]["runs"]} == {(0.0, 0), (0.0, 1), (0.5, 0), (0.5, 1)}
    assert len(summary["checks"]) == 3 and (folder / "momentum_lm.png").stat().st_size > 1000
    report = (tmp_path / "report.md").read_text()
    assert momentum.TITLE in report and momentum.CLAIM in report and "| momentum eta=0.5 |" in report
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


def test_same_seed_runs_start_alike_and_eta_zero_is_standard(tiny, tmp_path):
    recipes.reproduce("momentum", tmp_path, quick=True, progress=False)
    root = tmp_path / "models" / "quick" / "momentum" / "lm"
    first = {}
    for eta in ("0", "0.5"):
        rows = [json.loads(line) for line in (root / f"eta={eta}" / "seed=0" / "metrics.jsonl").open()]
        first[eta] = rows[0]["loss"]
    # the same initial weights and batch: the first loss differs only through the momentum term
    assert first["0"] != first["0.5"] and abs(first["0"] - first["0.5"]) < 0.5
    config = json.loads((root / "eta=0" / "seed=0" / "config.json").read_text())
    assert config["model"]["attention"] == "softmax" and config["model"]["momentum"] is None


def test_an_interrupted_run_is_resumed_and_other_settings_refused(tiny, tmp_path):
    size = momentum.SIZES["quick"]
    config = momentum.lm_config(size, 0.5, 0)
    from iclab.text import prepare_data, read_text_config, resume_text, train_text

    data = prepare_data(config.corpus)
    run_dir = tmp_path / "run"
    short = momentum.lm_config({**size, "lm": size["lm"] + ["train.steps=2"]}, 0.5, 0)
    train_text(short, run_dir, data, progress=False)
    (run_dir / "config.json").write_text(json.dumps(config.to_dict()))  # as if stopped at step 2 of 3
    momentum.ensure_run(
        run_dir,
        config,
        read_text_config,
        lambda: pytest.fail("must not start over"),
        lambda: resume_text(run_dir, data, progress=False),
    )
    assert momentum.progress_of(run_dir, read_text_config) == (3, 3)
    other = momentum.lm_config(size, 0.3, 0)
    with pytest.raises(UserError, match="was trained with other settings"):
        momentum.ensure_run(run_dir, other, read_text_config, None, None)


def results_with(lm: dict[float, list[float]], icl: dict[float, list[float]]) -> dict:
    """Results holding perplexity at lengths [8, 64] (the second value given) and flat error curves."""
    return {
        "etas": list(lm),
        "seeds": 3,
        "lm": {
            "lengths": [8, 64],
            "runs": [{"eta": e, "seed": s, "perplexity": [200.0, v]} for e, vs in lm.items() for s, v in enumerate(vs)],
        },
        "icl": {
            "points": 5,
            "runs": [
                {"eta": e, "seed": s, "error": [1.0] + [v] * 4} for e, vs in icl.items() for s, v in enumerate(vs)
            ],
        },
    }


def test_checks_pair_the_seeds():
    # seed effects are large (100 / 120 / 140) but every seed improves by 2: a clear paired gain
    clear = results_with({0.0: [100, 120, 140], 0.5: [98, 118, 138.1]}, {0.0: [0.3, 0.4, 0.5], 0.5: [0.3, 0.4, 0.5]})
    checks = momentum.check_results(clear)
    assert [c["passed"] for c in checks] == [True, True, False]
    assert "eta=0.5: 118 (-1.97 ± 0.033)" in checks[1]["detail"]
    # the same mean gain with differences of -8, +4, -2: within the noise
    noisy = results_with({0.0: [100, 120, 140], 0.5: [92, 124, 138.1]}, {0.0: [0.3, 0.4, 0.5], 0.5: [0.2, 0.3, 0.4]})
    assert [c["passed"] for c in momentum.check_results(noisy)] == [True, False, True]
