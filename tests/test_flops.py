"""FLOPs of training, against torch's own count of the matrix products (torch.utils.flop_counter)."""

import json

import pytest
import torch
from conftest import TINY
from torch.utils.flop_counter import FlopCounterMode

from iclab.config import load_config
from iclab.models.transformer import ICLTransformer, TokenLM, TransformerConfig, icl_forward_flops, lm_forward_flops
from iclab.training.checkpoint import latest_checkpoint
from iclab.training.runs import read_metrics
from iclab.training.trainer import resume, train


def counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_forward_flops_equal_torchs_count_of_every_product():
    # linear attention computes q.k and weights.v as plain matmuls, which torch counts; it leaves the CPU's fused
    # softmax kernel uncounted, but softmax attention computes the same two products
    config = TransformerConfig(layers=3, width=32, heads=2, attention="linear")
    xs, ys = torch.randn(4, 11, 5), torch.randn(4, 11)
    assert icl_forward_flops(config, 5, 11) * 4 == counted(lambda: ICLTransformer(config, 5, 11)(xs, ys))
    assert icl_forward_flops(TransformerConfig(layers=3, width=32, heads=2), 5, 11) == icl_forward_flops(config, 5, 11)
    ids = torch.randint(0, 100, (3, 40))
    assert lm_forward_flops(config, 100, 40) * 3 == counted(lambda: TokenLM(config, 100, 40)(ids))
    # the momentum term's matmul with the decay matrix, on top of softmax attention
    softmax, momentum = TransformerConfig(layers=2, width=32, heads=2), TransformerConfig(
        layers=2, width=32, heads=2, attention="momentum", momentum=0.5
    )
    extra = counted(lambda: ICLTransformer(momentum, 5, 11)(xs, ys)) - counted(
        lambda: ICLTransformer(softmax, 5, 11)(xs, ys)
    )
    assert (icl_forward_flops(momentum, 5, 11) - icl_forward_flops(softmax, 5, 11)) * 4 == extra


def test_a_backward_pass_costs_about_two_forward_passes():
    config = TransformerConfig(layers=3, width=32, heads=2, attention="linear")
    model = ICLTransformer(config, 5, 11)
    out = model(torch.randn(4, 11, 5), torch.randn(4, 11))
    assert counted(lambda: out.sum().backward()) / (icl_forward_flops(config, 5, 11) * 4) == pytest.approx(2, abs=0.05)


def test_every_logged_row_carries_the_flops_so_far_and_resume_continues_them(tmp_path):
    # a points curriculum: steps 0-3 train on 4 points, 4-7 on 5, 8-9 on 6 (batch 8, 3 passes a step)
    overrides = TINY + ["train.steps=10", "curriculum.points={start: 4, end: 6, inc: 1, every: 4}"]
    config = load_config(None, overrides)
    per_step = [3 * 8 * icl_forward_flops(config.model, 3, points) for points in [4] * 4 + [5] * 4 + [6] * 2]
    train(config, tmp_path / "run", progress=False)
    rows = read_metrics(tmp_path / "run")
    assert [r["flops"] for r in rows if "loss" in r] == [sum(per_step[:s]) for s in range(1, 11)]
    # a checkpoint written before FLOPs were logged: resuming recomputes them from the config and the step
    state = latest_checkpoint(tmp_path / "run") / "state.json"
    state.write_text(json.dumps({k: v for k, v in json.loads(state.read_text()).items() if k != "flops"}))
    resume(tmp_path / "run", progress=False, steps=12)
    rows = [r for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert rows[-1]["flops"] == sum(per_step) + 2 * per_step[-1]


def test_the_report_plots_validation_error_against_seconds_and_flops(tmp_path, monkeypatch):
    from iclab.evaluation import report

    run = tmp_path / "run"
    train(load_config(None, TINY + ["train.steps=10"]), run, progress=False)
    figures = []
    save = report.save_figure
    monkeypatch.setattr(report, "save_figure", lambda fig, path: figures.append(fig) or save(fig, path))
    (run / "eval").mkdir()
    (run / "eval" / "curves.csv").write_text("task,estimator,k,mean,lo,hi\n")
    text = report.render_report(run).read_text()
    assert "![training loss and validation error](training.png)" in text and (run / "training.png").is_file()
    rows = [r for r in read_metrics(run) if "val_error" in r]  # steps 5 and 10; d = 3: k = 3 and 6
    _, seconds, flops = figures[0].axes  # the first panel is the training loss (tests/test_figures.py)
    assert [line.get_label() for line in seconds.lines] == ["k = 3", "k = 6"]
    assert list(seconds.lines[1].get_xdata()) == [r["seconds"] for r in rows]
    assert list(flops.lines[1].get_xdata()) == [r["flops"] for r in rows]
    assert list(flops.lines[1].get_ydata()) == [r["val_error"][6] for r in rows]
