import json
import os
import shutil
import signal

import pytest
import torch
from conftest import TINY

from iclab.config import load_config
from iclab.errors import UserError
from iclab.interrupts import Interrupted
from iclab.tasks import sample_prompts
from iclab.training.checkpoint import checkpoint_dirs, latest_checkpoint
from iclab.training.runs import load_model, read_metrics
from iclab.training.trainer import Trainer, learning_rate, resume, train


def losses(run_dir):
    return [(m["step"], m["loss"]) for m in read_metrics(run_dir) if "loss" in m]


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_ctrl_c_mid_step_then_resume_reproduces_the_uninterrupted_loss_sequence(tmp_path, monkeypatch, optimizer):
    overrides = TINY + [
        "train.steps=20",
        "curriculum.dims={start: 2, end: 3, inc: 1, every: 8}",
        f"train.optimizer={optimizer}",
    ]
    train(load_config(None, overrides), tmp_path / "straight", progress=False)

    batch_loss = Trainer.batch_loss

    def signalled_in_step_13(self):  # Ctrl-C once the data generator has advanced: step 13 still completes
        loss = batch_loss(self)
        if self.step == 12:
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    monkeypatch.setattr(Trainer, "batch_loss", signalled_in_step_13)
    with pytest.raises(
        Interrupted, match=r"by Ctrl-C \(SIGINT\) at step 13; checkpoint saved, continue with: iclab train --resume"
    ):
        train(load_config(None, overrides), tmp_path / "resumed", progress=False)
    assert latest_checkpoint(tmp_path / "resumed").name == "step-0000013"
    monkeypatch.undo()
    resume(tmp_path / "resumed", progress=False)

    straight, resumed = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert [s for s, _ in straight] == list(range(1, 21))
    assert resumed == straight  # bit-identical on the CPU
    flops = [[m["flops"] for m in read_metrics(tmp_path / run)] for run in ("straight", "resumed")]
    assert flops[0] == flops[1]
    a, _ = load_model(tmp_path / "straight")
    b, _ = load_model(tmp_path / "resumed")
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_resume_drops_log_lines_written_after_the_checkpoint(tmp_path):
    config = load_config(None, TINY + ["train.steps=7"])
    run = tmp_path / "run"
    train(config, run, progress=False)
    shutil.rmtree(latest_checkpoint(run))  # as if the process died after logging step 7 but before saving it
    resume(run, progress=False)
    steps = [m["step"] for m in read_metrics(run) if "loss" in m]
    assert steps == list(range(1, 8))


def test_checkpoints_are_pruned_and_complete(tmp_path):
    config = load_config(None, TINY + ["train.steps=20", "train.keep_checkpoints=2"])
    train(config, tmp_path / "run", progress=False)
    names = [p.name for p in checkpoint_dirs(tmp_path / "run")]
    assert names == ["step-0000015", "step-0000020"]
    for p in checkpoint_dirs(tmp_path / "run"):
        assert {f.name for f in p.iterdir()} == {"model.safetensors", "optimizer.safetensors", "state.json"}
    assert not list((tmp_path / "run" / "checkpoints").glob(".tmp*"))


@pytest.mark.parametrize("victim, damage", [("model.safetensors", b"\x00garbage"), ("state.json", b"{not json")])
def test_corrupt_checkpoint_is_named_and_the_previous_one_survives(tmp_path, victim, damage):
    config = load_config(None, TINY + ["train.steps=10"])
    run = tmp_path / "run"
    train(config, run, progress=False)
    latest = latest_checkpoint(run)
    previous = checkpoint_dirs(run)[-2]
    before = {f.name: f.read_bytes() for f in previous.iterdir()}
    path = latest / victim
    path.write_bytes(path.read_bytes()[:40] + damage)
    with pytest.raises(UserError) as info:
        resume(run, progress=False, steps=15)
    assert str(path) in str(info.value) and "corrupt" in str(info.value)
    assert {f.name: f.read_bytes() for f in previous.iterdir()} == before
    shutil.rmtree(latest)  # the error says to do this; the run then continues from the previous checkpoint
    resume(run, progress=False, steps=15)
    assert [m["step"] for m in read_metrics(run) if "loss" in m] == list(range(1, 16))


def test_existing_run_is_not_overwritten(tmp_path):
    config = load_config(None, TINY + ["train.steps=3"])
    train(config, tmp_path / "run", progress=False)
    original = (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(UserError, match="already holds a run .*--resume"):
        train(config, tmp_path / "run", progress=False)
    diverging = load_config(None, TINY + ["train.steps=3", "train.lr=1e30", "train.warmup=0", "train.grad_clip=0"])
    with pytest.raises(UserError, match="diverged"):
        train(diverging, tmp_path / "run", overwrite=True, progress=False)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == original  # the failed run cost nothing


def test_overwrite_replaces_a_run_once_the_new_one_succeeds(tmp_path):
    train(load_config(None, TINY + ["train.steps=3"]), tmp_path / "run", progress=False)
    train(load_config(None, TINY + ["train.steps=5"]), tmp_path / "run", overwrite=True, progress=False)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["steps"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_learning_rate_schedule():
    cfg = load_config(None, ["train.steps=110", "train.warmup=10", "train.lr=1.0", "train.min_lr_ratio=0.1"]).train
    assert learning_rate(cfg, 0) == pytest.approx(0.1)
    assert learning_rate(cfg, 9) == pytest.approx(1.0)
    assert learning_rate(cfg, 10) == pytest.approx(1.0)
    assert learning_rate(cfg, 60) == pytest.approx(0.55)  # half-way down the cosine
    assert learning_rate(cfg, 110) == pytest.approx(0.1)


def test_validation_curve_is_logged(tmp_path):
    train(load_config(None, TINY + ["train.steps=10"]), tmp_path / "run", progress=False)
    rows = [m for m in read_metrics(tmp_path / "run") if "val_error" in m]
    assert [m["step"] for m in rows] == [5, 10] and len(rows[0]["val_error"]) == 7


def test_bf16_autocast_trains_in_bfloat16_close_to_float32(tmp_path):
    # on CUDA this is the fast path; on this CPU it is slow but runs the same code
    overrides = TINY + ["train.steps=6"]
    train(load_config(None, overrides), tmp_path / "fp32", progress=False)
    train(load_config(None, overrides + ["train.autocast=bf16"]), tmp_path / "bf16", progress=False)
    fp32, bf16 = [loss for _, loss in losses(tmp_path / "fp32")], [loss for _, loss in losses(tmp_path / "bf16")]
    assert fp32 != bf16  # autocast really ran the matmuls in bfloat16 ...
    # ... whose 8-bit mantissa (relative rounding 2^-9 = 0.002 per operation) moves a 6-step loss by well under 1 %
    assert all(abs(a - b) / a < 0.01 for a, b in zip(fp32, bf16, strict=True))
    model, _ = load_model(tmp_path / "bf16")
    assert next(model.parameters()).dtype == torch.float32  # weights and checkpoints stay float32


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path):
    # torch.compile takes ~30 s even for this tiny model on 2 CPU cores, hence slow
    overrides = TINY + ["train.steps=6"]
    train(load_config(None, overrides), tmp_path / "eager", progress=False)
    train(load_config(None, overrides + ["train.compile=true"]), tmp_path / "compiled", progress=False)
    eager, compiled = losses(tmp_path / "eager"), losses(tmp_path / "compiled")
    assert [s for s, _ in compiled] == [s for s, _ in eager]
    assert all(abs(a - b) <= 1e-5 * abs(a) for (_, a), (_, b) in zip(eager, compiled, strict=True))


def test_normalized_loss_weighs_each_prompt_by_its_class_scale(tmp_path):
    """loss: normalized divides each prompt's squared error by its class's E[y^2]: on a mixture of linear (d = 3)
    and sparse linear (nnz = 1) prompts it equals the mean of the per-prompt errors scaled by 1/3 and 1/1."""
    mix = "task={name: mixture, components: [{name: linear, weight: 1}, {name: sparse_linear, nnz: 1, weight: 1}]}"
    losses = {}
    for kind in ("mse", "normalized"):
        trainer = Trainer(load_config(None, TINY + [mix, f"train.loss={kind}"]), tmp_path / kind)
        losses[kind] = trainer.batch_loss().item()
    trainer.generator.manual_seed(trainer.config.seed + 1)  # the same first batch again, by hand
    xs, ys, params = sample_prompts(trainer.task, trainer.inputs, 8, trainer.config.points, trainer.generator)
    with torch.no_grad():
        errors = (trainer.model(xs, ys) - ys).square().mean(1)
    scale = torch.where(params["component"] == 0, 3.0, 1.0)
    assert losses["mse"] == pytest.approx(errors.mean().item(), rel=1e-5)
    assert losses["normalized"] == pytest.approx((errors / scale).mean().item(), rel=1e-5)


def test_muon_steps_the_blocks_matrices_by_their_orthogonalised_gradient_and_adamw_the_rest(tmp_path):
    lr = 1e-3
    overrides = ["train.optimizer=muon", f"train.lr={lr}", "train.weight_decay=0", "train.grad_clip=0"]
    trainer = Trainer(load_config(None, TINY + overrides + ["train.warmup=0", "train.schedule=constant"]), tmp_path)
    muon, adamw = trainer.optimizer.parts["muon"], trainer.optimizer.parts["adamw"]
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    in_muon = {names[id(p)] for g in muon.param_groups for p in g["params"]}
    in_adamw = {names[id(p)] for g in adamw.param_groups for p in g["params"]}
    hidden = {f"blocks.0.{m}.weight" for m in ("attn.qkv", "attn.proj", "fc", "fc_out")}
    assert in_muon == hidden and in_adamw == set(names.values()) - hidden  # embeddings, read-in/out, biases, norms
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train_step()
    params = dict(trainer.model.named_parameters())
    # AdamW's first step moves every element by lr * g / (|g| + eps): by lr wherever the gradient is not tiny
    moved = (params["read_in.weight"] - before["read_in.weight"]).abs()
    assert torch.allclose(moved, torch.full_like(moved, lr), rtol=1e-3)
    # Muon's moves a matrix by -0.2 sqrt(max(rows, cols)) lr times its gradient's orthogonalisation: in the basis of
    # the gradient's singular vectors (exact SVD), every direction with a singular value >= 1 % of the largest
    # moves by about 1 (Newton-Schulz leaves 0.5 .. 1.5), where a gradient step would move them by 1 .. 0.01
    fc, grad = params["blocks.0.fc.weight"], params["blocks.0.fc.weight"].grad
    u, s, vh = torch.linalg.svd(grad, full_matrices=False)
    step = (before["blocks.0.fc.weight"] - fc.detach()) / (0.2 * max(grad.shape) ** 0.5 * lr)
    moved = (u.T @ step @ vh.T).diag()[s >= 0.01 * s[0]]
    assert len(moved) >= 3 and ((0.5 < moved) & (moved < 1.5)).all()


def test_an_unknown_optimizer_is_a_one_line_error():
    with pytest.raises(UserError, match="train.optimizer") as info:
        load_config(None, ["train.optimizer=sgd"])
    assert "adamw" in str(info.value) and "muon" in str(info.value) and "\n" not in str(info.value)
