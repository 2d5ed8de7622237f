"""The GPU check (scripts/gpu_check.sh): its dry run on a machine without a GPU, and the tests that need CUDA.

The tests named test_cuda_* skip without a CUDA GPU; scripts/gpu_check.sh runs them (`-k cuda`) on one. One GPU
cannot hold two nccl ranks, so the data-parallel test runs iclab's DDP path as a job of one process.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import TINY
from torch.nn.parallel import DistributedDataParallel

import iclab.training.trainer as trainer_module
from iclab.cli import main
from iclab.config import load_config
from iclab.recipes import RECIPES, plan, recipe_names
from iclab.recipes.sizes import on_device
from iclab.training import distributed
from iclab.training.checkpoint import checkpoint_dirs, read_state
from iclab.training.runs import load_model, read_config, read_metrics
from iclab.training.trainer import Trainer, resume, train

ROOT = Path(__file__).resolve().parents[1]
GPU_JSON = ROOT / "benchmarks" / "results" / "gpu.json"
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: bash scripts/gpu_check.sh")
GPU = "cuda"
CUDA_TESTS = 6  # the test_cuda_* tests below, as pytest collects them (one is parametrised twice)


def test_without_a_gpu_the_check_is_a_dry_run_that_builds_every_paper_run_and_writes_nothing(tmp_path):
    out = tmp_path / "gpu.json"
    committed = GPU_JSON.read_bytes() if GPU_JSON.exists() else None
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # a GPU machine runs the dry run here too
    result = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    said = [line for line in lines if "no CUDA GPU" in line]
    assert said == lines[-1:], lines[-3:]  # one line, the last, says so
    assert f"{CUDA_TESTS} CUDA tests listed" in said[0] and "nothing written" in said[0]
    tests = [line.strip() for line in lines if line.strip().startswith("tests/test_gpu_check.py::test_cuda_")]
    assert len(tests) == CUDA_TESTS
    with on_device("cpu"):
        names = [name for name in recipe_names("all") if "paper" in RECIPES[name].modes]
        runs = {run.name: run for name in names for run in plan(RECIPES[name], "paper")}
    rows = {line.split()[1]: line.split() for line in lines if len(line.split()) > 8 and line.split()[1] in runs}
    assert set(rows) == set(runs)  # every paper run listed once ...
    built = {name for name, row in rows.items() if row[8] in ("built", "stepped")}
    assert {runs[name].shape for name in built} == {run.shape for run in runs.values()}  # ... each shape built
    for name, row in rows.items():  # ... and every other run shares a built run's shape
        shared = row[8:10] == ["shape", "of"] and row[10] in built and runs[row[10]].shape == runs[name].shape
        assert row[4] == "cpu" and (name in built or shared), row
    stepped = {name for name, row in rows.items() if row[8] == "stepped"}
    assert stepped and all(runs[name].parameters < 50_000 for name in stepped)  # small ones only: seconds on a CPU
    assert all(rows[name][6] == "2" and float(rows[name][5]) > 0 for name in stepped)
    assert all(rows[name][5:8] == ["-", "0", "-"] for name in built - stepped)  # built, not stepped: no time
    assert f"{len(runs)} paper runs listed, {len(built)} built on the CPU ({len(stepped)} stepped)" in said[0]
    assert not out.exists() and (GPU_JSON.read_bytes() if GPU_JSON.exists() else None) == committed


def tiny(device: str, *more: str):
    return load_config(None, TINY + [f"device={device}", "train.steps=6", *more])


def losses(run_dir: Path) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in read_metrics(run_dir) if "loss" in m}


@CUDA
def test_cuda_training_keeps_model_optimizer_state_and_data_on_the_gpu(tmp_path):
    trainer = Trainer(tiny(GPU), tmp_path / "run")
    trainer.train_step()
    assert all(p.device.type == "cuda" for p in trainer.model.parameters())
    moments = [t for s in trainer.optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim()]
    assert moments and all(t.device.type == "cuda" for t in moments)
    assert trainer.generator.device.type == "cuda"


@CUDA
def test_cuda_bf16_autocast_trains_in_bfloat16_close_to_float32(tmp_path):
    train(tiny(GPU), tmp_path / "fp32", progress=False)
    train(tiny(GPU, "train.autocast=bf16"), tmp_path / "bf16", progress=False)
    fp32, bf16 = losses(tmp_path / "fp32"), losses(tmp_path / "bf16")
    assert list(fp32) == list(bf16) and fp32 != bf16  # autocast really ran the matmuls in bfloat16 ...
    assert all(abs(fp32[s] - bf16[s]) / fp32[s] < 0.01 for s in fp32)  # ... whose rounding moves the loss < 1 %
    trainer = Trainer(tiny(GPU, "train.autocast=bf16"), tmp_path / "t")
    with trainer.autocast():  # on the CUDA device type, not the CPU's
        assert torch.ones(2, 2, device=GPU).matmul(torch.ones(2, 2, device=GPU)).dtype == torch.bfloat16
    model, _ = load_model(tmp_path / "bf16")
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # weights and checkpoints stay float32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@CUDA
def test_cuda_ddp_over_nccl_in_one_process_follows_the_plain_run(tmp_path, monkeypatch):
    """iclab's data-parallel path (nccl process group, DDP wrapper on cuda:LOCAL_RANK, collectives on CUDA tensors,
    rank 0's decisions broadcast) as a job of one process, told that it is distributed. DDP's average over one rank
    is the gradient itself, so the losses are the plain run's up to summation order."""
    train(tiny(GPU), tmp_path / "plain", progress=False)
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0", "WORLD_SIZE": "1"}
    for key, value in (env | {"LOCAL_RANK": "0"}).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(distributed.Context, "distributed", property(lambda self: True))
    backends, wrapped = [], []
    init = dist.init_process_group

    def recorded(backend, **kwargs):
        backends.append(backend)
        return init(backend, **kwargs)

    monkeypatch.setattr(dist, "init_process_group", recorded)

    class Recording(DistributedDataParallel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            wrapped.append(self.device_ids)

    monkeypatch.setattr(trainer_module, "DistributedDataParallel", Recording)
    try:
        train(tiny(GPU), tmp_path / "ddp", progress=False)
        assert not dist.is_initialized()  # the finished run left the group
        monkeypatch.setenv("MASTER_PORT", str(free_port()))  # a fresh rendezvous, whatever became of the first
        ctx = trainer_module.join(tiny(GPU))  # the collectives themselves, over nccl
        assert dist.get_backend() == "nccl"
        assert distributed.on_main(lambda: {"step": 3, "text": "é"}, ctx) == {"step": 3, "text": "é"}
        assert distributed.maximum(7, ctx) == 7 and distributed.mean(torch.tensor(2.5, device=GPU), ctx) == 2.5
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    assert backends == ["nccl", "nccl"] and wrapped == [[0]]
    plain, ddp = losses(tmp_path / "plain"), losses(tmp_path / "ddp")
    assert list(ddp) == list(plain) and all(abs(ddp[s] - plain[s]) <= 1e-5 * abs(plain[s]) for s in plain)


def set_device(run_dir: Path, device: str) -> None:
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps(config | {"device": device}))


def transformer_curve(run_dir: Path) -> list[float]:
    lines = (run_dir / "eval" / "curves.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]
    return [float(r["mean"]) for r in rows if r["estimator"] == "transformer"]


@CUDA
@pytest.mark.parametrize("trained_on", ["cpu", GPU])
def test_cuda_a_checkpoint_loads_and_evaluates_alike_on_cpu_and_gpu(trained_on, tmp_path):
    run, other = tmp_path / trained_on, tmp_path / "moved"
    train(tiny(trained_on), run, progress=False)
    shutil.copytree(run, other)
    set_device(other, "cpu" if trained_on == GPU else GPU)
    (a, _), (b, _) = load_model(run), load_model(other)
    assert {p.device.type for p in a.parameters()} != {p.device.type for p in b.parameters()}
    weights = zip(a.state_dict().items(), b.state_dict().items(), strict=True)
    assert all(m == n and torch.equal(x.cpu(), y.cpu()) for (m, x), (n, y) in weights)  # the checkpoint's, exactly
    for folder in (run, other):
        assert main(["eval", str(folder), "--baselines", "zero", "--quiet"]) == 0
    mine, moved = transformer_curve(run), transformer_curve(other)
    assert len(mine) == len(moved) == read_config(run).points
    assert all(abs(x - y) <= 1e-4 * abs(x) + 1e-6 for x, y in zip(mine, moved, strict=True))


@CUDA
def test_cuda_resume_from_a_checkpoint_continues_the_uninterrupted_run(tmp_path):
    """The data generator lives on the GPU; its state goes through the checkpoint and back."""
    run = tmp_path / "run"
    train(tiny(GPU), run, progress=False)
    full = losses(run)
    assert read_state(checkpoint_dirs(run)[-1])["generator_device"].startswith("cuda")
    shutil.rmtree(checkpoint_dirs(run)[-1])  # as if the run had died after step 5
    resume(run, progress=False)
    again = losses(run)
    assert list(again) == list(full) and abs(again[6] - full[6]) <= 1e-5 * abs(full[6])
