"""`iclab reproduce architectures` (Park et al. 2024): the d-dimensional read-out vector MQAR trains with, the outlier
tasks scored on their clean points, the recipe's checks on hand-made results, the quick recipe end to end at a
tiny size, and two steps of every paper-scale config."""

import json
import subprocess
import sys

import pytest
import torch

from iclab import recipes
from iclab.config import load_config
from iclab.errors import UserError
from iclab.models import MODELS, interleave
from iclab.recipes import architectures as arch
from iclab.recipes import trained
from iclab.recipes.dryrun import make_trainer
from iclab.recipes.sizes import read_scale
from iclab.scoring import make_eval_set, prompt_errors
from iclab.tasks import make_task
from iclab.training.runs import build_model


def tiny_size() -> dict:
    """The quick scale with two-step models of width about 16 on short prompts."""
    size = read_scale(arch.NAME, "quick", arch.ArchitecturesSize)
    size["set"] |= {"train.steps": 2, "train.warmup": 1, "eval.prompts": 16}
    tasks = size["tasks"]
    for name in tasks:
        tasks[name]["set"] = tasks[name]["set"] | {"points": 8}
    tasks["linear"]["set"]["dims"] = 3
    return size | {"parameters": 3000, "widths": [8, 12, 16], "validation_prompts": 8}


TINY = tiny_size()


# --- the read-out and the scoring the recipe needs ------------------------------------------------------------


def test_vector_tokens_fill_their_first_entries_and_scalar_tokens_are_unchanged():
    xs, ys = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    tokens = interleave(xs, ys[..., :2])
    assert torch.equal(tokens[:, 0::2], xs) and torch.equal(tokens[:, 1::2, :2], ys[..., :2])
    assert (tokens[:, 1::2, 2:] == 0).all()
    scalar = interleave(xs, ys[..., 0])
    assert torch.equal(scalar[:, 1::2, 0], ys[..., 0]) and (scalar[:, 1::2, 1:] == 0).all()


@pytest.mark.parametrize("name", ["transformer", "mamba", "mambaformer", "lstm"])
def test_vector_mqar_models_read_out_d_numbers_and_other_models_are_unchanged(name):
    base = {"dims": 4, "points": 6, "model": {"name": name, "layers": 1, "width": 16}, "train": {"eval_every": 0}}
    torch.manual_seed(0)
    plain = build_model(load_config(base=base))
    torch.manual_seed(0)
    again = build_model(load_config(base=base))
    for (k, a), (_, b) in zip(plain.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), k  # set_outputs(1) draws nothing: every weight as before
    assert plain.read_out.out_features == 1
    torch.manual_seed(0)
    mqar = {"task": {"name": "vector_mqar", "queries": 2}, "eval": {"baselines": []}}
    vector = build_model(load_config(base=base | mqar))
    assert vector.read_out.out_features == 4
    for (k, a), (_, b) in zip(plain.state_dict().items(), vector.state_dict().items(), strict=True):
        if not k.startswith("read_out"):
            assert torch.equal(a, b), k  # the backbone is the one the seed draws without the vector read-out
    xs, ys = torch.randn(3, 6, 4), torch.randn(3, 6, 4)
    assert vector(xs, ys).shape == (3, 6, 4)


def test_vector_mqar_trains_on_its_queries_and_is_scored_by_recall():
    config = load_config(
        base={"dims": 4, "points": 7, "task": {"name": "vector_mqar", "queries": 3}, "train": {"eval_every": 0},
              "model": {"name": "transformer", "layers": 1, "width": 16, "heads": 2},
              "eval": {"prompts": 32, "baselines": []}}
    )  # fmt: skip
    task = make_task(config.task, 4)
    preds, ys = torch.randn(2, 7, 4), torch.randn(2, 7, 4)
    loss = task.training_loss(preds, ys, {})
    assert (loss[:, :4] == 0).all()
    expected = (preds - ys)[:, 4:].square().mean()  # mean squared error over the queries' coordinates
    assert loss.mean().item() == pytest.approx(expected.item(), rel=1e-6)
    evalset = make_eval_set(config)
    assert evalset.metric == "recall" and evalset.ys.shape == (32, 7, 4)
    truth = evalset.ys
    assert (prompt_errors(truth, evalset) == 0).all()  # predicting every point's own value recalls it
    wrong = truth[:, [1, 2, 3, 0, 1, 2, 3]]  # another key's value at every position
    errors = prompt_errors(wrong, evalset)
    values = truth[:, :4]
    for i in range(32):
        for p in range(7):
            want = int((truth[i, p] @ values[i].T).argmax())
            got = int((wrong[i, p] @ values[i].T).argmax())
            assert errors[i, p].item() == float(want != got)
    trainer = make_trainer(config, "unused")
    assert torch.isfinite(torch.tensor(trainer.train_step()))
    with pytest.raises(UserError, match="'eval.baselines': vector_mqar's outputs are vectors") as info:
        load_config(base=config.to_dict() | {"eval": {"baselines": ["zero"]}})
    assert "\n" not in str(info.value)


def test_outlier_tasks_are_scored_on_their_clean_points_only():
    config = load_config(base={"dims": 3, "points": 6, "task": {"name": "many_outlier_regression", "prob": 0.5},
                               "eval": {"prompts": 40}, "train": {"eval_every": 0}})  # fmt: skip
    evalset = make_eval_set(config)
    preds = torch.randn(evalset.ys.shape, generator=torch.Generator().manual_seed(0))
    errors = prompt_errors(preds, evalset)
    clean = evalset.clean
    assert clean is not None and 0 < clean.sum() < clean.numel()
    for k in range(6):  # by hand: the mean over the clean points at k of (prediction - y)^2 / d
        kept = [((preds[i, k].double() - evalset.ys[i, k].double()) ** 2 / 3).item() for i in range(40) if clean[i, k]]
        assert errors[:, k].mean().item() == pytest.approx(sum(kept) / len(kept), rel=1e-9)
    plain = load_config(base={"dims": 3, "points": 6, "eval": {"prompts": 40}, "train": {"eval_every": 0}})
    assert make_eval_set(plain).clean is None


def test_parity_chance_is_the_majority_sign_over_supports_from_x_alone():
    task = {"name": "sparse_parity", "k": 2}
    base = {"dims": 4, "points": 5, "task": task, "inputs": {"name": "signs"}, "eval": {"prompts": 30}}
    config = load_config(base=base | {"train": {"eval_every": 0}})
    evalset = make_eval_set(config)
    wrong = 0
    for i in range(30):
        for p in range(5):
            x = evalset.xs[i, p].tolist()
            vote = sum(x[a] * x[b] for a in range(4) for b in range(a + 1, 4))  # the 6 supports' characters
            wrong += (1.0 if vote >= 0 else -1.0) != evalset.ys[i, p].item()
    assert arch.chance(evalset) == pytest.approx(wrong / 150) and arch.chance(evalset) < 0.5


def test_a_wrong_task_parameter_is_one_line():
    with pytest.raises(UserError) as info:
        make_task({"name": "sparse_parity", "k": 7}, 5)
    assert "\n" not in str(info.value) and "k" in str(info.value) and "<= dims (5)" in str(info.value)


# --- the recipe's checks on hand-made results -----------------------------------------------------------------


def results(numbers: dict, ls: float = 0.01) -> dict:
    """Results with each task's numbers per architecture {task: {arch: window}}; chance as the metrics' own."""
    chances = {"linear": 1.0, "sparse_linear": 1.0, "decision_tree": 1.0, "sparse_parity": 0.5, "vector_mqar": 0.75}
    tasks = {}
    for task, per_arch in numbers.items():
        runs = {a: {"window": v, "se": 0.01, "lr": 1e-3, "curve": [v], "flops": 10} for a, v in per_arch.items()}
        baselines = {"least_squares": {"window": ls, "se": 0.0, "curve": [ls]}} if task == "linear" else {}
        metric = {"sparse_parity": "sign", "vector_mqar": "recall"}.get(task, "squared")
        tasks[task] = {"metric": metric, "chance": chances[task], "runs": runs, "baselines": baselines,
                       "window_start": 0}  # fmt: skip
    archs = {a: {"model": {"name": a, "width": 16}, "parameters": 1000} for a in next(iter(numbers.values()))}
    return {"mode": "quick", "parameters": 1000, "lrs": [1, 2, 3], "architectures": archs, "tasks": tasks}


PAPER_LIKE = {
    "linear": {"transformer": 0.05, "mamba": 0.06, "mambaformer": 0.04},
    "sparse_linear": {"transformer": 0.05, "mamba": 0.06, "mambaformer": 0.05},
    "decision_tree": {"transformer": 0.2, "mamba": 0.4, "mambaformer": 0.22},
    "sparse_parity": {"transformer": 0.48, "mamba": 0.05, "mambaformer": 0.05},
    "vector_mqar": {"transformer": 0.1, "mamba": 0.6, "mambaformer": 0.12},
}


def test_the_checks_pass_on_the_papers_shapes():
    checks = arch.check_results(results(PAPER_LIKE))
    assert len(checks) == 5 and all(c["passed"] for c in checks), checks
    assert "mamba 0.050 ± 0.010, transformer 0.480 ± 0.010 (needs a gap above 0.028)" in checks[1]["detail"]
    lines = "\n".join(arch.tables(results(PAPER_LIKE)))
    assert "0.480 ✗ (paper ✗ =)" in lines and "0.600 ✗ (paper ✗ =)" in lines and "0.050 ✓ (paper ✓ =)" in lines


@pytest.mark.parametrize(
    "task, who, value, failing",
    [
        ("linear", "mamba", 0.12, 0),  # 0.11 above least squares: not near it
        ("sparse_parity", "mamba", 0.49, 1),  # Mamba behind the transformer on parity
        ("sparse_parity", "mamba", 0.47, 1),  # ahead by 0.01, within 2 standard errors (0.028): a tie
        ("vector_mqar", "transformer", 0.61, 2),  # the transformer behind Mamba on MQAR
        ("decision_tree", "mamba", 0.19, 3),  # Mamba ahead on trees
        ("vector_mqar", "mambaformer", 0.3, 4),  # MambaFormer 0.2 behind the best
        ("sparse_parity", "mambaformer", 0.42, 4),  # within 0.05 of no one and too close to chance
    ],
)
def test_each_check_fails_on_its_own_counterexample(task, who, value, failing):
    numbers = json.loads(json.dumps(PAPER_LIKE))
    numbers[task][who] = value
    passed = [c["passed"] for c in arch.check_results(results(numbers))]
    assert passed == [i != failing for i in range(5)], passed


def test_passing_wants_both_closeness_to_the_best_and_distance_from_chance():
    r = results(PAPER_LIKE)
    assert arch.passes(r, "decision_tree", "mambaformer")  # 0.22 within 0.05 of 0.2
    assert not arch.passes(r, "decision_tree", "mamba")
    r["tasks"]["sparse_parity"]["runs"] = {"transformer": {"window": 0.45}, "mamba": {"window": 0.46}}
    assert not arch.passes(r, "sparse_parity", "transformer")  # the best, yet only 0.05 below chance


def test_a_missing_task_or_architecture_fails_its_check_saying_so():
    numbers = {t: {a: v for a, v in row.items() if a != "mamba"} for t, row in PAPER_LIKE.items() if t != "linear"}
    checks = arch.check_results(results(numbers))
    assert not checks[0]["passed"] and "task 'linear' is not in this scale" in checks[0]["detail"]
    assert "architecture 'mamba' is not in this scale" in checks[1]["detail"]


# --- the scales ----------------------------------------------------------------------------------------------


def test_widths_are_matched_from_counted_parameters():
    size = read_scale(arch.NAME, "quick", arch.ArchitecturesSize)
    for name in size["architectures"]:
        width, count = arch.matched_width(size, name)
        config = arch.run_config(size, "linear", size["architectures"][name] | {"width": width}, 1e-3)
        assert build_model(config).num_parameters() == count
        others = [arch.parameter_count(size, "linear", size["architectures"][name] | {"width": w})
                  for w in size["widths"]]  # fmt: skip
        assert abs(count - size["parameters"]) == min(abs(n - size["parameters"]) for n in others)
    assert set(size["tasks"]) >= set(arch.PAPER["mamba"]) and len(size["lrs"]) >= 3
    odd = size | {"widths": [9, 10], "architectures": {"t": {"name": "transformer", "heads": 2}}}
    assert arch.matched_width(odd, "t")[0] == 10  # 9 is refused (2 heads do not divide it), not fatal
    wrong = odd | {"architectures": {"t": {"name": "transformer", "layer": 2}}}
    with pytest.raises(UserError, match="none of the widths \\[9, 10\\] builds a model \\(width 9: .*layer") as info:
        arch.matched_width(wrong, "t")
    assert "\n" not in str(info.value)


def test_a_scale_file_with_too_few_rates_is_one_line(tmp_path, monkeypatch):
    from iclab.recipes import sizes

    (tmp_path / arch.NAME).mkdir()
    (tmp_path / arch.NAME / "quick.yaml").write_text(
        "architectures: {t: {name: transformer}}\ntasks: {linear: {set: {dims: 3}}}\nlrs: [0.001, 0.01]\n"
    )
    monkeypatch.setattr(sizes, "FOLDER", tmp_path)
    with pytest.raises(UserError, match="needs at least 3 rates") as info:
        read_scale(arch.NAME, "quick", arch.ArchitecturesSize)
    assert "\n" not in str(info.value)


def test_every_paper_config_trains_two_steps_on_the_cpu(tmp_path):
    """Two steps of each architecture on each paper task, on batches of 2 prompts (sizes as configured)."""
    torch.manual_seed(0)
    seen = 0
    for name, task, lr, config in arch.runs("paper"):
        if lr != arch.SIZES["paper"]["lrs"][0]:
            continue  # the rates share one config otherwise
        data = config.to_dict()
        data["train"] |= {"batch_size": 2}
        trainer = make_trainer(load_config(base=data), tmp_path)
        losses = [trainer.train_step() for _ in range(2)]
        assert all(torch.isfinite(torch.tensor(losses))), (name, task)
        seen += 1
    assert seen == 3 * 7 and not any(tmp_path.iterdir())


def test_the_paper_scale_holds_park_et_al_s_settings():
    by = {(a, t): c for a, t, lr, c in arch.runs("paper") if lr == 1e-4}
    lin = by["transformer", "linear"]
    assert (lin.dims, lin.points, lin.model.width, lin.model.layers, lin.model.heads) == (20, 41, 128, 2, 8)
    assert by["mamba", "linear"].model.layers == 4 and by["mambaformer", "linear"].model.width == 128
    parity = by["transformer", "sparse_parity"]
    assert (parity.dims, parity.points, parity.model.layers, parity.model.width) == (10, 140, 12, 256)
    assert by["mamba", "sparse_parity"].model.layers == 4  # only the transformer has its own parity size
    mqar = by["transformer", "vector_mqar"]
    assert (mqar.points, mqar.task["queries"], mqar.train.grad_clip) == (65, 1, 100.0)
    assert by["transformer", "many_outlier_regression"].train.steps == 1_000_000
    assert set(MODELS.names()) >= {"transformer", "mamba", "mambaformer"}


# --- end to end ----------------------------------------------------------------------------------------------


def test_quick_recipe_end_to_end_at_a_tiny_size(tmp_path, monkeypatch):
    monkeypatch.setitem(arch.SIZES, "quick", TINY)
    (summary,) = recipes.reproduce(arch.NAME, tmp_path, quick=True, progress=False)
    folder = tmp_path / arch.NAME
    stored = json.loads((folder / "results.json").read_text())
    assert set(stored["tasks"]) == set(TINY["tasks"]) and set(stored["architectures"]) == set(TINY["architectures"])
    for task, entry in stored["tasks"].items():
        for run in entry["runs"].values():
            assert set(run["validation"]) == {f"{lr:g}" for lr in TINY["lrs"]} and run["steps"] == 2
            assert run["lr"] == min(TINY["lrs"], key=lambda lr: run["validation"][f"{lr:g}"])  # the sweep's pick
            assert run["flops"] > 0 and len(run["curve"]) == 8
        assert entry["metric"] == {"sparse_parity": "sign", "vector_mqar": "recall"}.get(task, "squared")
    assert "least_squares" in stored["tasks"]["linear"]["baselines"]
    assert "parity" in stored["tasks"]["sparse_parity"]["baselines"]
    assert [c["passed"] for c in summary["checks"]] == [c["passed"] for c in arch.check_results(stored)]
    assert (folder / "architectures.png").stat().st_size > 1000
    assert len(list((tmp_path / "models" / "quick" / arch.NAME).iterdir())) == 3 * 5 * 3
    report = (tmp_path / "report.md").read_text()
    assert arch.RECIPE.title in report and "| architecture |" in report and "(paper ✓" in report
    (tmp_path / "report.md").unlink()
    result = subprocess.run([sys.executable, "-m", "iclab.cli", "report", str(tmp_path)], capture_output=True)
    assert result.returncode == 0 and (tmp_path / "report.md").read_text() == report  # from the stored files


def test_the_shipped_picks_render_the_same_numbers_as_the_trained_sweep(tmp_path, monkeypatch):
    """`ship` copies only each sweep's picked model, with the validation errors that picked it; --pretrained then
    scores those models and reproduces every number of the trained run (same model, same test prompts)."""
    monkeypatch.setitem(arch.SIZES, "quick", TINY)
    recipes.reproduce(arch.NAME, tmp_path / "trained", quick=True, progress=False)
    trained = json.loads((tmp_path / "trained" / arch.NAME / "results.json").read_text())
    shipped = arch.ship(tmp_path / "trained", tmp_path / "package", mode="quick")
    assert sorted(p.name for p in shipped) == sorted(
        arch.shipped_name(a, t) for t in TINY["tasks"] for a in TINY["architectures"]
    )  # one folder per architecture and task, not one per rate
    monkeypatch.setattr(arch, "pretrained_dir", lambda name: tmp_path / "package" / name)
    models = arch.models_of(TINY)
    for task, entry in trained["tasks"].items():
        for name, run in entry["runs"].items():
            assert arch.train_and_pick(name, task, models, tmp_path, "quick", True, False) == run


def test_jobs_train_the_sweep_in_workers_and_the_recipe_finds_it_finished(tmp_path, monkeypatch, capsys):
    """--jobs 2 trains every run of the recipe's plan in two worker processes first (each logs beside its run);
    the recipe then reuses them all, with the numbers of a run trained in this process."""
    small = TINY | {"tasks": {t: TINY["tasks"][t] for t in ("linear", "sparse_parity")}}
    monkeypatch.setitem(arch.SIZES, "quick", small)

    def refuse(*args, **kwargs):
        raise AssertionError("the recipe trained a run itself")

    with monkeypatch.context() as m:  # the workers are spawned processes: this reaches the recipe's own process only
        m.setattr(trained, "train", refuse)
        m.setattr(trained, "resume", refuse)
        recipes.reproduce(arch.NAME, tmp_path / "jobs", quick=True, progress=False, jobs=2)
    assert "2 at a time" in capsys.readouterr().out
    folder = tmp_path / "jobs" / "models" / "quick" / arch.NAME
    assert len(list((folder / "logs").glob("*.log"))) == 3 * 2 * 3
    recipes.reproduce(arch.NAME, tmp_path / "here", quick=True, progress=False)
    results = [json.loads((tmp_path / d / arch.NAME / "results.json").read_text()) for d in ("jobs", "here")]
    for entry in (run for r in results for t in r["tasks"].values() for run in t["runs"].values()):
        del entry["train_seconds"]  # the one number that is the machine's, not the model's
    assert results[0]["tasks"] == results[1]["tasks"]
