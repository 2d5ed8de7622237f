"""`iclab lm run` end to end on a tiny random model folder: results, Markdown, resume, and CLI errors."""

import dataclasses
import json

import pytest

from iclab.cli import main
from iclab.lm.tiny import save_tiny

FAST = ["--k", "4", "--limit", "8", "--val", "4", "--lrs", "0.01,0.1", "--quiet"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(save_tiny("llama", tmp_path_factory.mktemp("tiny") / "llama"))


def test_run_writes_every_measure_with_its_baselines_and_resumes(model_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    args = ["lm", "run", "--model", model_dir, "--task", "shakespeare-genre-ab", "--seed", "0,1", "--out", str(out)]
    assert main(args + FAST) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["accuracy"]) == {"zsl", "icl", "ft"}
    for key in ("rec2ftp", "simaou", "simam_icl_ft", "simam_icl_zsl", "kendall", "random", "untrained"):
        assert key in results
    assert results["seeds"] == [0, 1] and results["k_used"] == [4] and results["test_queries"] == 8
    for name in ("trained", "untrained"):
        assert (out / "seed-1" / f"{name}.json").is_file()
    sc = {c: [results["per_seed"][s]["trained"]["accuracy"][c] for s in ("0", "1")] for c in ("zsl", "icl")}
    acc = results["spread"]["trained"]["accuracy"]["icl"]
    per_seed = [results["per_seed"][s]["trained"]["accuracy"]["icl"] for s in ("0", "1")]
    assert acc["mean"] == pytest.approx(sum(per_seed) / 2) and acc["n"] == 2
    assert all(0 <= v <= 1 for v in per_seed)
    scoring = results["spread"]["trained"]["scoring"]
    assert all(scoring[f"{c}.{m}.accuracy"] for c in ("zsl", "icl", "ft") for m in ("plain", "calibrated", "pmi"))
    assert results["scoring"] == "plain" and results["accuracy"]["icl"] == scoring["icl.plain.accuracy"]["mean"]
    printed = capsys.readouterr().out
    assert "accuracy % plain (headline): ZSL" in printed and "accuracy % pmi: ZSL" in printed
    md = (out / "results.md").read_text()
    assert "| trained | plain |" in md and "| trained | calibrated |" in md and "| trained | pmi |" in md
    assert "| SimAOU |" in md and "| model (accuracy %, mean ± s.e. over 2 seeds) | scoring |" in md
    # the ZSL and ICL cells are the mean ± s.e. of the two seeds' accuracies, computed here from the per-seed ones
    row = next(line for line in md.splitlines() if line.startswith("| trained | plain |")).split("|")
    for c, text in zip(("zsl", "icl"), row[3:5], strict=True):
        mean, se = (float(x) for x in text.split("±"))
        a, b = (100 * v for v in sc[c])
        assert mean == pytest.approx((a + b) / 2, abs=0.051) and se == pytest.approx(abs(a - b) / 2, abs=0.051)

    # a re-run with the same settings reads the stored results back instead of recomputing
    import iclab.lm.study as lm_study

    def no_recompute(*a, **k):
        raise AssertionError("recomputed a cached result")

    monkeypatch.setattr(lm_study, "studies", no_recompute)
    assert main(args + FAST) == 0
    assert json.loads((out / "results.json").read_text())["accuracy"] == results["accuracy"]
    with pytest.raises(AssertionError, match="recomputed"):  # another headline scoring: computed anew
        main(args + FAST + ["--calibrate"])
    capsys.readouterr()
    assert main(["lm", "summary", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| shakespeare-genre-ab | llama | 2 |" in printed
    assert "| shakespeare-genre-ab | dai | Kendall per demo |" in printed  # the long table of every measure


def test_cli_errors_exit_2_with_one_line(model_dir, tmp_path, capsys):
    base = ["lm", "run", "--out", str(tmp_path / "x")]
    cases = [
        (base + ["--model", model_dir, "--task", "nope"], "unknown task 'nope'"),
        (base + ["--model", str(tmp_path / "missing"), "--task", "fortunes-topics"] + FAST, "cannot load model"),
        (base + ["--model", model_dir, "--task", "sst2"], "without hub access give local files, --train FILE"),
        (base + ["--model", model_dir, "--task", "cb", "--seed", "a,b"], "expected comma-separated numbers"),
        (base + ["--model", model_dir, "--task", "cb", "--k", "0"], "must be >= 1"),
        (base + ["--model", model_dir, "--task", "cb", "--lrs", "-1"], "must be positive"),
        (base + ["--model", model_dir, "--task", "cb", "--momentum", "1"], "momentum eta must be a number in [0, 1)"),
        (base + ["--model", model_dir, "--task", "cb", "--momentum", "x"], "expected comma-separated numbers"),
        (base + ["--model", model_dir, "--task", "cb", "--momentum", "0.1,0.2"], "--momentum takes one eta"),
        (base + ["--model", model_dir, "--task", "fortunes-topics", "--k", "400"] + FAST[2:], "has 320"),
        (base + ["--model", model_dir, "--task", "cb", "--calibrate", "--pmi"], "each choose the headline scoring"),
        (base + ["--model", model_dir, "--task", "cb", "--set", "scoring=cal"], "unknown scoring 'cal'"),
        (["lm", "convert", str(tmp_path / "model.bin"), "--out", str(tmp_path / "c")], "is not a .gguf file"),
        (["lm", "summary", str(tmp_path)], "results.json does not exist"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_momentum_runs_the_patched_model_and_never_reuses_a_plain_result(model_dir, tmp_path, monkeypatch):
    import iclab.lm.study as lm_study
    from iclab.lm.loading import load
    from iclab.lm.momentum import momentum_of

    out = tmp_path / "run"
    args = ["lm", "run", "--model", model_dir, "--task", "fortunes-topics-ab", "--out", str(out), "--no-untrained"]
    assert main(args + FAST) == 0
    plain = json.loads((out / "results.json").read_text())
    etas = []
    real_study = lm_study.studies

    def recording_study(adapter, *a, **k):
        etas.append(momentum_of(adapter.model).eta)
        return real_study(adapter, *a, **k)

    monkeypatch.setattr(lm_study, "studies", recording_study)
    config = lm_study.StudyConfig(
        model=model_dir, task="fortunes-topics-ab", k=4, limit=8, val=4, lrs=[0.01, 0.1], untrained=False, momentum=0.5
    )
    loaded = load(model_dir, progress=False)
    patched = lm_study.run_study(config, out, progress=False, loaded=loaded)
    assert etas == [0.5] and momentum_of(loaded.model) is None  # patched for the study, restored after it
    assert patched["momentum"] == 0.5 and plain["momentum"] is None
    trained, before = patched["per_seed"]["0"]["trained"], plain["per_seed"]["0"]["trained"]
    assert trained["measures"]["simaou"] != before["measures"]["simaou"]  # the attention outputs changed
    md = (out / "results.md").read_text()
    assert "momentum attention eta = 0.5" in md and "trained without this term" in md
    assert main(args + FAST + ["--momentum", "0.5"]) == 0  # the same eta again: read back
    assert etas == [0.5]
    # eta = 0 changes no output, so it shares the plain study's cache key
    keys = {eta: lm_study.StudyConfig(model=model_dir, task="cb", momentum=eta).key() for eta in (None, 0.0, 0.5)}
    assert keys[0.0] == keys[None] != keys[0.5]
    assert "momentum η = 0.5" in "\n".join(lm_study.summary_table([patched]))
    # with the untrained baselines too: each runs patched, once (Deutch's is a copy of the patched model)
    etas.clear()
    both = lm_study.run_study(
        dataclasses.replace(config, untrained=True, seeds=[1]), tmp_path / "both", progress=False, loaded=loaded
    )
    assert etas == [0.5, 0.5, 0.5] and momentum_of(loaded.model) is None
    assert set(both["per_seed"]["1"]) == {"trained", "untrained", "untrained-deutch"}


def test_tasks_lists_the_packaged_tasks(capsys):
    assert main(["lm", "tasks"]) == 0
    out = capsys.readouterr().out
    assert "sst2" in out and "hub glue/sst2" in out and "fortunes-topics-ab" in out and "' A'" in out


def test_every_baseline_and_ft_method_is_reported_and_a_task_edit_recomputes(model_dir, tmp_path, monkeypatch):
    import shutil

    import iclab.lm.study as lm_study
    from iclab.lm.tasks import DATA

    for name in ("fortunes-topics-ab.yaml", "fortunes-topics.train.jsonl", "fortunes-topics.test.jsonl"):
        shutil.copy(DATA / name, tmp_path / name)
    task = tmp_path / "fortunes-topics-ab.yaml"
    out = tmp_path / "run"
    args = ["lm", "run", "--model", model_dir, "--task", str(task), "--out", str(out), "--ft", "kv-sgd,lcgd,full"]
    assert main(args + FAST) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["spread"]) == {"trained", "untrained", "untrained-deutch"}
    trained = results["spread"]["trained"]
    assert set(trained["by_ft"]) == {"kv-sgd", "lcgd", "full"} and set(trained["baselines"]) == {
        "random uniform", "random centred"}
    assert results["measures"] == "dai" and trained["measures"]["kendall_demo"] is not None
    md = (out / "results.md").read_text()
    header = "| measure (demonstration seed 0) | trained (kv-sgd) | random uniform | random centred | untrained (all"
    assert header in md and "lcgd (trained)" in md and "lcgd (untrained-deutch)" in md
    assert "top-5 recall per demo" in md and "relaxed linear (dual) form" in md

    calls = []
    real = lm_study.studies
    monkeypatch.setattr(lm_study, "studies", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert main(args + FAST) == 0 and calls == []  # unchanged: read back
    data = tmp_path / "fortunes-topics.test.jsonl"
    data.write_text("\n".join(data.read_text().splitlines()[1:]) + "\n")  # an edited data file
    assert main(args + FAST) == 0 and len(calls) == 3  # every (seed, model) result recomputed
    task.write_text(task.read_text().replace("Topic:", "Subject:"))  # an edited template
    assert main(args + FAST) == 0 and len(calls) == 6


def test_a_k_sweep_reuses_the_prefix_cache_and_tables_accuracy_against_k(model_dir, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["lm", "run", "--model", model_dir, "--task", "fortunes-topics-ab", "--out", str(out), "--no-untrained"]
    assert main(args + FAST[2:] + ["--k", "0,1,2", "--pmi"]) == 0
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["ks"] == [0, 1, 2] and (out / "accuracy_vs_k.png").is_file()
    assert (out / "k-2" / "results.json").is_file()
    zero, two = sweep["accuracy"]["0"], sweep["accuracy"]["2"]
    assert zero["icl.plain"] == zero["zsl.plain"] and zero["ft.plain"] is None and two["ft.pmi"] is not None
    assert "| 0 |" in (out / "sweep.md").read_text()


def test_config_file_with_set_overrides_goes_through_the_validated_spec(model_dir, tmp_path, capsys):
    config = tmp_path / "study.yaml"
    config.write_text(f"model: {model_dir}\ntask: fortunes-topics-ab\nk: 2\nlimit: 4\nval: 2\nuntrained: false\n")
    out = tmp_path / "run"
    argv = ["lm", "run", "--config", str(config), "--out", str(out), "--quiet"]
    assert main(argv + ["--set", "measures=dual", "--set", "lrs=[0.1]"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["measures"] == "dual" and results["settings"]["lrs"] == [0.1] and results["k"] == 2
    capsys.readouterr()
    assert main(argv + ["--set", "measure=dual"]) == 2
    assert "unknown config key 'lm run.measure' (did you mean 'measures'?)" in capsys.readouterr().err
