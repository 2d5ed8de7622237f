"""The length recipe (`iclab reproduce length`): its windows, longest factor and checks on hand-made results, what a
learned table does with rows it never trained, the matched widths, one-line errors for bad length factors, the
recipe end to end on two-step models, and every paper-scale config for two steps on the CPU."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import TINY

from iclab import recipes
from iclab.cli import main
from iclab.config import build_config, load_config
from iclab.errors import UserError
from iclab.recipes import length, sizes
from iclab.recipes.dryrun import make_trainer
from iclab.recipes.sizes import read_scale
from iclab.training.runs import build_model, load_model
from iclab.training.trainer import train

N = 4  # training points of the hand-made results


def curve(windows: dict[int, float], top: int = 8) -> list[float]:
    """Errors per k = 0 .. top N - 1, constant within each factor's window (k = f N / 2 .. f N - 1) and 9.0 below
    the 1x window, where no factor looks."""
    errors = [9.0] * (top * N)
    for factor, value in windows.items():
        errors[factor * N // 2 : factor * N] = [value] * (factor * N - factor * N // 2)
    return errors


def entry(name: str, windows: dict[int, float], model: dict | None = None, refusal: str | None = None) -> dict:
    return {
        "name": name,
        "model": model or {"name": "lstm", "layers": 1, "width": 8},
        "parameters": 100,
        "refusal": refusal,
        "errors": curve(windows),
        "steps": 2,
        "train_seconds": 1.0,
    }


def results(*models: dict, ls: float = 0.01) -> dict:
    return {
        "mode": "quick",
        "dims": 2,
        "points": N,
        "factors": [1, 2, 4, 8],
        "tolerance": 0.05,
        "least_squares": curve({1: ls, 2: ls, 4: ls, 8: ls}),
        "models": list(models),
        "scoring_seconds": 1.0,
        "seconds": 2.0,
    }


LEARNED = {"name": "transformer", "layers": 1, "width": 8, "heads": 2, "positions": "learned"}


def test_each_factor_reads_the_positions_its_doubling_added():
    errors = list(range(32))
    assert length.factor_error(errors, 1, N) == (2 + 3) / 2  # k = 2, 3: the second half of the training length
    assert length.factor_error(errors, 2, N) == (4 + 5 + 6 + 7) / 4
    assert length.factor_error(errors, 8, N) == sum(range(16, 32)) / 16


def test_the_longest_factor_stops_at_the_first_factor_past_the_tolerance():
    r = results(
        entry("steady", {1: 0.02, 2: 0.03, 4: 0.06, 8: 0.05}),  # 0.05 above least squares' 0.01 at 4x and 8x
        entry("dip", {1: 0.02, 2: 0.2, 4: 0.03, 8: 0.03}),  # back within at 4x, but it left at 2x
        entry("never", {1: 0.07, 2: 0.02, 4: 0.02, 8: 0.02}),
        entry("edge", {1: 0.061, 2: 0.059, 4: 0.0, 8: 0.06}),  # 0.051 above at 1x: out
    )
    assert [length.longest(r, m) for m in r["models"]] == [8, 1, 0, 0]
    assert length.excess(r, r["models"][0], 4) == pytest.approx(0.05)
    r["tolerance"] = 0.04
    assert length.longest(r, r["models"][0]) == 2


def test_the_checks_on_hand_made_results():
    learned = entry("learned", {1: 0.02, 2: 0.5, 4: 0.9, 8: 1.2}, LEARNED, "config key 'eval.points': must be ...")
    good = entry("lstm", {1: 0.03, 2: 0.03, 4: 0.04, 8: 0.05})
    rising = entry("rope", {1: 0.02, 2: 0.1, 4: 0.3, 8: 0.6})
    improving = entry("mamba", {1: 0.3, 2: 0.2, 4: 0.1, 8: 0.05})  # 0.25 below its 1x error at 8x: improves
    checks = length.check_results(results(learned, good, rising, improving))
    assert [c["passed"] for c in checks] == [False, True, True, True]
    assert "mamba +0.290" in checks[0]["detail"] and "3 of 4 do" in checks[1]["detail"]
    assert checks[3]["detail"].startswith("lstm (lstm +0.040 at 8x)")
    # most models improving past the training length and nobody at least squares' level at 8x (the learned table
    # left out: nothing shows it fail): each check fails
    better = entry("gru", {1: 0.3, 2: 0.2, 4: 0.1, 8: 0.15})
    checks = length.check_results(results(rising, improving, better))
    assert [c["passed"] for c in checks] == [False, False, False, False]
    assert checks[3]["detail"] == "none; closest mamba +0.040 at 8x"  # within at 8x, but not at 1x
    assert checks[2]["detail"] == "no learned-position model in this scale"
    # a learned table within tolerance up to 8x fails its check (and meets the goal)
    fine_learned = entry("learned", {1: 0.02, 2: 0.03, 4: 0.06, 8: 0.05}, LEARNED, "refused")
    checks = length.check_results(results(fine_learned, rising, improving, better))
    assert [c["passed"] for c in checks] == [False, False, False, True]
    silent = entry("learned", {1: 0.02, 2: 0.5, 4: 0.9, 8: 1.2}, LEARNED, None)
    assert not length.check_results(results(silent, good))[2]["passed"]
    late = entry("learned", {1: 0.02, 2: 0.03, 4: 0.9, 8: 1.2}, LEARNED, "refused")  # within at 2x, out at 4x
    check = length.check_results(results(late, good))[2]
    assert check["passed"] and check["detail"].endswith("+0.020 at 2x, +1.190 at 8x (longest 2x)")
    assert not length.check_results(results(good, rising))[2]["passed"]  # no learned table: nothing shown


def test_a_plateau_counts_as_not_improving():
    flat = entry("flat", {1: 0.1, 8: 0.095})  # 0.005 below: within PLATEAU
    better = entry("better", {1: 0.1, 8: 0.085})
    assert length.check_results(results(flat, flat, better))[1]["passed"]
    assert not length.check_results(results(flat, better, better))[1]["passed"]


def test_a_learned_table_keeps_the_rows_past_its_training_length_untrained(tmp_path):
    size = tiny(models={"learned": {"name": "transformer", "positions": "learned", "init": "gpt2"}})
    config = length.model_config(size, "learned", 16)
    config.train.weight_decay = 0.0  # with AdamW's decay they would only shrink
    assert (config.points, config.eval.points) == (24, 24) and config.curriculum.points.at(10**6) == 3
    torch.manual_seed(0)
    initial = build_model(config).pos.detach().clone()
    train(config, tmp_path / "run", progress=False)
    trained = load_model(tmp_path / "run", config)[0].pos.detach()
    assert not torch.equal(trained[:6], initial[:6])  # the 2 n = 6 tokens it trained on
    assert torch.equal(trained[6:], initial[6:]) and initial[6:].abs().sum() > 0
    message = length.refusal(config, 3)
    assert "must be <= points (3) for a model with a learned position table" in message and "\n" not in message
    size["models"]["nope"] = {"name": "transformer", "positions": "none"}
    assert length.refusal(length.model_config(size, "nope", 16), 3) is None


def test_every_model_gets_the_width_closest_to_the_first_ones_parameters():
    size = tiny(width=32)
    widths = length.matched_widths(size)
    dims, n = 3, 3

    def count(name, width):
        return length.trained_parameters(length.model_spec(size, name, width), dims, n)

    target = count("learned", size["width"])
    assert widths["learned"] == size["width"]
    for name, width in widths.items():
        gap = abs(count(name, width) - target)
        for other in (width - length.WIDTH_STEP, width + length.WIDTH_STEP):
            assert other <= 0 or count(name, other) is None or abs(count(name, other) - target) >= gap, name
    assert widths["lstm"] > widths["learned"]  # an LSTM layer has fewer weights than a transformer block
    assert length.matched_widths(size | {"match": False}) == dict.fromkeys(widths, size["width"])


@pytest.mark.parametrize(
    "factors, message",
    [
        ([1, 0, 4], r"'factors\[1\]': a length factor is a positive whole multiple .* got 0"),
        ([1, -2], r"'factors\[1\]'.* got -2"),
        ([1, 1.5], r"'factors\[1\]'.* got 1.5"),
        ([2, 4], "must start at 1"),
        ([1, 4, 2], "must start at 1 .* and rise"),
        ([], "must start at 1"),
    ],
)
def test_a_bad_length_factor_in_a_scale_file_is_one_line(tmp_path, monkeypatch, factors, message):
    text = (sizes.FOLDER / "length" / "quick.yaml").read_text()
    (tmp_path / "length").mkdir()
    (tmp_path / "length" / "quick.yaml").write_text(text.replace("factors: [1, 2, 4, 8]", f"factors: {factors}"))
    monkeypatch.setattr(sizes, "FOLDER", tmp_path)
    with pytest.raises(UserError, match=message) as info:
        read_scale("length", "quick", length.LengthSize)
    assert "\n" not in str(info.value) and "quick.yaml" in str(info.value)


def test_a_model_section_with_its_own_width_is_one_line(tmp_path, monkeypatch):
    text = (sizes.FOLDER / "length" / "quick.yaml").read_text()
    (tmp_path / "length").mkdir()
    (tmp_path / "length" / "quick.yaml").write_text(text.replace("{name: lstm}", "{name: lstm, width: 8}"))
    monkeypatch.setattr(sizes, "FOLDER", tmp_path)
    with pytest.raises(UserError, match="models.lstm.* takes no layers or width"):
        read_scale("length", "quick", length.LengthSize)


@pytest.mark.parametrize("points", ["0", "-8"])
def test_a_zero_or_negative_length_on_the_command_line_is_one_line(tmp_path, capsys, points):
    train(load_config(None, TINY + ["train.steps=1", "model.positions=none"]), tmp_path / "run", progress=False)
    assert main(["eval", str(tmp_path / "run"), "--points", points]) == 2
    err = capsys.readouterr().err.strip()
    assert "positive number" in err and len(err.splitlines()) == 1


def tiny(**keys) -> dict:
    """The quick scale read from its file, with two-step models in d = 3 on 3 training points (and `keys`)."""
    size = read_scale("length", "quick", length.LengthSize)
    size["set"] |= {"dims": 3, "points": 3, "train.steps": 2, "eval.prompts": 16}
    models = {"learned": size["models"]["learned"], "nope": size["models"]["nope"], "lstm": size["models"]["lstm"]}
    return size | {"models": models, "width": 16} | keys


def test_the_recipe_end_to_end_on_two_step_models(tmp_path, monkeypatch):
    monkeypatch.setitem(length.SIZES, "quick", tiny())
    [summary] = recipes.reproduce("length", tmp_path, quick=True, progress=False)
    r = json.loads((tmp_path / "length" / "results.json").read_text())
    assert [m["name"] for m in r["models"]] == ["learned", "nope", "lstm"] and r["points"] == 3
    assert all(len(m["errors"]) == 24 for m in r["models"]) and len(r["least_squares"]) == 24
    assert max(r["least_squares"][3:]) < 1e-6  # exact from k = d on, far past the training length
    assert [bool(m["refusal"]) for m in r["models"]] == [True, False, False]
    assert len(summary["checks"]) == 4 and (tmp_path / "length" / "length.png").stat().st_size > 1000
    report = (tmp_path / "report.md").read_text()
    assert length.RECIPE.title in report and "| 8x (24 pts) |" in report and "must be <= points (3)" in report
    (tmp_path / "report.md").unlink()
    done = subprocess.run([sys.executable, "-m", "iclab.cli", "report", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0 and (tmp_path / "report.md").read_text() == report  # from the stored files alone
    lines = recipes.dry_run("length", "quick")
    assert sum(line.startswith("length ") and "models/quick/length-" in line for line in lines) == 3


def test_every_paper_config_trains_two_steps_on_the_cpu(tmp_path):
    """Lee et al.'s sizes (d = 20, 8 layers of width 64, 32 training points in a model built for 1,024), two steps
    each on batches of 2 prompts."""
    configs = length.configs("paper")
    assert {c.points for c in configs.values()} == {1024} and {c.dims for c in configs.values()} == {20}
    assert {c.model.width for c in configs.values()} == {64} and {c.model.layers for c in configs.values()} == {8}
    torch.manual_seed(0)
    for name, config in configs.items():
        data = config.to_dict()
        data["train"] |= {"batch_size": 2}
        trainer = make_trainer(build_config(data), tmp_path)
        losses = [trainer.train_step() for _ in range(2)]
        assert all(torch.isfinite(torch.tensor(losses))), name
    assert not any(tmp_path.iterdir())
