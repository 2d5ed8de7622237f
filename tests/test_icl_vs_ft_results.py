"""The study's one reporting module (icl_vs_ft/results.py) on hand-built results: the statistics against plain
formulas, and the recipe's tables and `iclab lm run`'s results.md built by the same functions."""

import math
import statistics

import pytest

from iclab.icl_vs_ft.conditions import StudyResult
from iclab.icl_vs_ft.results import as_dict, measures_tables, summarise
from iclab.lm.study import markdown
from iclab.recipes import icl_vs_ft as recipe

KEYS = ["rec2ftp", "simaou", "simam_icl_ft", "simam_icl_zsl", "simam_delta", "kendall", "update_cos", "update_norm"]


def _result(i: int, ft_lr: float | None = 0.1) -> dict:
    """A dual-variant result whose numbers are simple functions of i; Rec2FTP undefined for i = 2."""
    measures = {k: 0.1 * i + j / 100 for j, k in enumerate(KEYS)} | ({"rec2ftp": None} if i == 2 else {})
    baselines = {b: {k: -0.01 * i for k in KEYS} for b in ("random uniform", "random centred")}
    scoring = {c: {"plain": {"accuracy": 0.5 + 0.1 * i, "top_label_share": 0.75}} for c in ("zsl", "icl", "ft")}
    scoring["icl"]["calibrated"] = {"accuracy": 0.25 * i, "top_label_share": 1.0}
    return as_dict(StudyResult(
        accuracy={"zsl": 0.5, "icl": 0.5 + 0.1 * i, "ft": 0.6}, ft_lr=ft_lr, ft_grid={}, measures=measures,
        random=baselines["random centred"], scoring=scoring, variant="dual", baselines=baselines,
        linear_gap=[0.1 * i, 0.2 * i][: 1 if i == 2 else 2],  # a result with one layer fewer
    ))


PARTS = [_result(0), _result(1, ft_lr=None), _result(2)]


def _stats(values):
    return statistics.fmean(values), statistics.stdev(values), statistics.stdev(values) / math.sqrt(len(values))


def test_summarise_gives_mean_sd_and_se_of_every_number():
    s = summarise(PARTS)
    for entry, values in (
        (s["accuracy"]["icl"], [0.5, 0.6, 0.7]),
        (s["measures"]["kendall"], [0.05, 0.15, 0.25]),
        (s["measures"]["rec2ftp"], [0.0, 0.1]),  # the undefined one left out
        (s["baselines"]["random uniform"]["simaou"], [0, -0.01, -0.02]),
        (s["linear_gap"][1], [0.0, 0.2]),
        (s["scoring"]["icl.calibrated.accuracy"], [0.0, 0.25, 0.5]),
    ):
        mean, sd, se = _stats(values)
        assert entry == pytest.approx({"mean": mean, "sd": sd, "se": se, "n": len(values)})
    assert s["scoring"]["zsl.pmi.accuracy"] is None and s["ft_lr"] == [0.1, None, 0.1] and s["ft_failed"] == 1


def test_recipe_tables_and_lm_results_md_share_their_builders():
    by_model = {m: {f: summarise(PARTS) for f in ("kv-sgd", "lcgd", "full")} for m in ("trained", "untrained",
                                                                                        "untrained-deutch")}
    summary = {m: by_model[m]["kv-sgd"] for m in by_model} | {"variants": {"dual": by_model}}
    info = {"instances": 3, "demos": 8, "lrs": [0.1]}
    from_recipe = "\n".join(recipe.tables(summary, info))
    results = {
        "model": "m", "task": "t", "task_description": "d", "k": 8, "k_used": [8], "test_queries": 64,
        "seeds": [0, 1, 2], "scoring": "plain", "measures": "dual", "ft": ["kv-sgd", "lcgd", "full"],
        "spread": {m: by_model[m]["kv-sgd"] | {"by_ft": by_model[m]} for m in by_model},
        "per_seed": {"0": {"trained": {"ft_lr": 0.1}}}, "settings": {"lrs": [0.1]},
    }
    from_lm = "\n".join(markdown(results))
    table = measures_tables(by_model, "dual", ["kv-sgd", "lcgd", "full"], "N")
    body = [line for line in table if line.startswith("| ") and "(N)" not in line]
    assert len(body) == 2 * (len(KEYS) + 1) - 1  # the measures, then FT accuracy and the measures per method
    assert all(f"\n{line}\n" in from_recipe and f"\n{line}\n" in from_lm for line in body)
    # the spread is the standard error, said in every table's first header cell
    mean, _, se = _stats([0.05, 0.15, 0.25])
    assert f"| Kendall | {mean:.3f} ± {se:.3f} |" in from_lm
    assert "| model (accuracy %, mean ± s.e. over 3 task instances) | scoring |" in from_recipe
    assert "| model (accuracy %, mean ± s.e. over 3 seeds) | scoring |" in from_lm
    assert "| untrained | calibrated | n/a | 25.0 ± 14.4 | n/a |" in from_lm  # every scoring that was computed


def test_recipe_tables_read_a_results_json_of_an_older_run():
    """Stored before scorings and sd were kept: {mean, se, n} accuracies, no variants."""
    old = {"mean": 0.5, "se": 0.1, "n": 4}
    part = {"accuracy": {"zsl": old, "icl": old, "ft": old}, "measures": dict.fromkeys(KEYS, old),
            "random": dict.fromkeys(KEYS, old), "ft_failed": 0}
    summary = {"trained": part, "untrained": part}
    lines = recipe.tables(summary, {"instances": 4, "demos": 8, "lrs": [0.1]})
    assert "| trained | plain | 50.0 ± 10.0 | 50.0 ± 10.0 | 50.0 ± 10.0 |" in lines
    assert len(recipe.check_summary(summary)) == 9


def _emergence(gains: list[float], kendall: list[float]) -> dict:
    def at(mean):
        return {"mean": mean, "se": 0.0, "n": 4}

    return {"emergence": {
        str(step): {"accuracy": {"zsl": at(0.5), "icl": at(0.5 + g)},
                    "measures": {"simaou": at(g), "kendall": at(k), "simam_icl_ft": at(2 * g)}}
        for step, g, k in zip((0, 10, 20, 40), gains, kendall, strict=True)
    }}


def test_emergence_check_asks_whether_the_measures_rise_with_icl_ability():
    from scipy.stats import kendalltau

    gains = [0.0, 0.1, 0.3, 0.2]
    rising = recipe.emergence_check(_emergence(gains, [0.0, 0.1, 0.3, 0.2]))[0]
    assert rising["passed"] and "Kendall τ = 1.00" in rising["detail"] and "steps 0, 10, 20, 40" in rising["detail"]
    kendall = [0.3, 0.1, 0.2, 0.0]
    mixed = recipe.emergence_check(_emergence(gains, kendall))[0]
    assert not mixed["passed"] and f"Kendall τ = {kendalltau(gains, kendall).statistic:.2f}" in mixed["detail"]
    assert recipe.emergence_check({"trained": {}}) == []  # no checkpoints: no check


def test_recipe_measures_every_checkpoint_of_pretraining(tmp_path, monkeypatch):
    import json

    import torch
    from safetensors.torch import load_file

    from iclab.models.transformer import TokenLM

    monkeypatch.setitem(recipe.SIZES, "quick", {"steps": 8, "instances": 1})
    out = recipe.run(tmp_path, "quick", pretrained=False, progress=False)
    folder = tmp_path / "models" / "quick" / recipe.MODEL_NAME
    torch.manual_seed(0)  # the keywords LM's seed: step 0 is the initial model
    initial = TokenLM(recipe.MODEL, recipe.TASK.vocab, recipe.max_tokens()).state_dict()
    saved = load_file(folder / "checkpoints" / "step-0000000" / "model.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in initial.items())
    results = json.loads((tmp_path / recipe.NAME / "results.json").read_text())
    assert sorted(map(int, results["emergence"])) == [0, 1, 2, 4, 8]
    assert results["emergence"]["8"] == results["trained"]  # the end point is the study's own model
    assert out["checks"][-1]["claim"].startswith("the similarity measures rise with ICL ability")
    assert (tmp_path / recipe.NAME / "emergence.png").stat().st_size > 1000


def test_measures_summary_table_puts_every_baseline_and_method_beside_each_measure():
    from iclab.icl_vs_ft.results import measures_summary_table

    by_ft = {f: summarise(PARTS) for f in ("kv-sgd", "lcgd")}
    run = {"task": "t", "ft": ["kv-sgd", "lcgd"], "measures": "dual",
           "spread": {"trained": {"by_ft": by_ft}, "untrained": {"by_ft": by_ft}}}
    lines = measures_summary_table([run])
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {r.split("|")[3].strip(): [c.strip() for c in r.strip("|").split("|")] for r in lines[2:]}
    col = {name: header.index(name) for name in header}
    kendall = rows["Kendall"]
    # Kendall is 0.1 i + 0.05 over i = 0, 1, 2: mean 0.150, s.e. 0.1 / sqrt(3)
    assert kendall[col["trained, FT kv-sgd"]] == f"0.150 ± {0.1 / math.sqrt(3):.3f}"
    assert kendall[col["random centred"]] == "-0.010 ± 0.006"
    assert kendall[col["trained, FT full"]] == "n/a"  # a method this run did not use
    assert kendall[col["untrained (Deutch: embeddings, norms, unembedding kept)"]] == "n/a"
    ft = rows["FT accuracy %"]
    assert ft[col["trained, FT lcgd"]] == "60.0 ± 0.0" and ft[col["random uniform"]] == "—"
