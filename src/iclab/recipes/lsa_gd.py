"""von Oswald et al. (2023): a linear self-attention layer trained on in-context linear regression converges to
one step of gradient descent on the in-context least-squares loss.

The layer trains through iclab's Trainer (LSATrainer) into an ordinary run folder, DIR/models/MODE/lsa_gd/, which
later calls reuse or resume; the full-size layer ships with iclab, so `--pretrained` only compares it with GD.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..analysis.dual import LSARegressor, best_gd_step, gd_step
from ..config import TrainConfig
from ..errors import UserError
from ..files import atomic_write_json
from ..plotting import finish, fit_y, plt, reference_line, save_figure
from ..training.checkpoint import latest_checkpoint, load_model_weights
from ..training.flops import step_flops
from ..training.runs import RunDir, read_metrics
from ..training.trainer import Trainer
from .common import check, section_lines
from .dryrun import Planned, trainer_run
from .models import export_pretrained, pretrained_dir
from .own_runs import OwnRunConfig, ensure_own_run, read_own_config
from .recipe import Recipe
from .sizes import SCALES, Sizes
from .trained import train_info

NAME = "lsa-gd"


@dataclass
class LSASize:
    steps: int = field(metadata={"min": 1})
    dims: int = field(default=5, metadata={"min": 1})
    points: int = field(default=10, metadata={"min": 1})  # in-context examples N before the query
    batch_size: int = field(default=2048, metadata={"min": 1})  # fresh prompts per Adam step
    lr: float = field(default=1e-3, metadata={"gt": 0.0})


SIZES = Sizes(NAME, LSASize)  # scales/lsa-gd/SCALE.yaml


MODEL_NAME = "lsa_gd"  # its run folder under DIR/models/MODE/ and in the package's pretrained/
EVAL_SEED = 1234  # the prompts on which the layer meets GD; EVAL_SEED + 1: those that fit GD's step size


@dataclass
class LSAConfig(OwnRunConfig):
    """An LSA layer's config.json: its prompts (x ~ N(0, I) in `dims` dimensions, w ~ N(0, I), `points` examples
    and a query, no noise) and (OwnRunConfig) its training."""

    seed: int = 0
    dims: int = field(default=5, metadata={"min": 1})
    points: int = field(default=10, metadata={"min": 1})


def model_config(size: dict) -> LSAConfig:
    """Adam (AdamW without weight decay) at a constant rate on fresh batches, unclipped; the loss every 50 steps."""
    train = TrainConfig(
        steps=size["steps"], batch_size=size["batch_size"], lr=size["lr"], schedule="constant", warmup=0,
        weight_decay=0.0, grad_clip=0.0, log_every=50, eval_every=0,
    )  # fmt: skip
    return LSAConfig(dims=size["dims"], points=size["points"], train=train)


def read_model_config(run_dir: Path) -> LSAConfig:
    return read_own_config(LSAConfig, run_dir, "LSA layer")


def sample(dims: int, points: int, batch: int, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Examples xs (batch, points, dims), ys (batch, points), queries xq (batch, dims) and their yq (batch,)."""
    xs = torch.randn(batch, points + 1, dims, generator=g)
    w = torch.randn(batch, dims, generator=g)
    ys = torch.einsum("bnd,bd->bn", xs, w)
    return xs[:, :-1], ys[:, :-1], xs[:, -1], ys[:, -1]


class LSATrainer(Trainer):
    """train.Trainer for one linear self-attention layer, the loss the squared error of the query's prediction."""

    read_config = staticmethod(read_model_config)
    resume_command = "iclab reproduce lsa-gd with the same --out and scale; it resumes"

    def build_model(self) -> LSARegressor:
        return LSARegressor(self.config.dims)  # drawn from the run's seed (the Trainer seeds torch)

    def batch_loss(self) -> Tensor:
        c = self.config
        xs, ys, xq, yq = (t[self.rows] for t in sample(c.dims, c.points, c.train.batch_size, self.generator))
        with self.autocast():
            return (self.forward(xs, ys, xq) - yq).square().mean()

    def step_flops(self, step: int) -> int:
        e, n = self.config.dims + 1, self.config.points
        forward = 2 * e * e * (2 * n + 2) + 2 * 2 * n * e  # keys and values of n tokens, query, projection; q.k, .v
        return step_flops(forward, self.config.train.batch_size)

    def describe(self) -> str:
        return f"model: one linear self-attention layer, d = {self.config.dims}, {self.model.num_parameters()} weights"


def plan(mode: str) -> list[Planned]:
    config = model_config(SIZES[mode])
    parameters = LSARegressor(config.dims).num_parameters()
    return [trainer_run(f"models/{mode}/{MODEL_NAME}", LSATrainer, config, config.points, parameters)]


def ensure_layer(run_dir: Path, config: LSAConfig, progress: bool) -> Path:
    """Train the layer of `config` into `run_dir`, resume it there, or reuse it when finished."""
    ensure_own_run(run_dir, config, LSATrainer, MODEL_NAME, progress)
    return run_dir


def export_layer(run_dir: Path, dest_root: Path) -> Path:
    """Ship the finished layer in `run_dir` (scripts/ship_pretrained.py): config and final weights, as every
    shipped model, and its training log, which the recipe's figure plots."""
    dest = export_pretrained(run_dir, MODEL_NAME, dest_root)
    shutil.copy2(run_dir / "metrics.jsonl", dest / "metrics.jsonl")
    return dest


def layer(run_dir: Path, config: LSAConfig) -> LSARegressor:
    """The trained layer in `run_dir` (a finished run of `config`)."""
    model = LSARegressor(config.dims)
    load_model_weights(model, latest_checkpoint(run_dir))
    return model.eval()


def compare(model: LSARegressor, config: LSAConfig) -> dict:
    """The layer against one GD step at the best step size on fresh prompts: losses, prediction difference, and
    the cosine between the weight vector each implies."""
    eta = best_gd_step(*sample(config.dims, config.points, 100_000, torch.Generator().manual_seed(EVAL_SEED + 1)))
    xs, ys, xq, yq = sample(config.dims, config.points, 20_000, torch.Generator().manual_seed(EVAL_SEED))
    xq = xq.clone().requires_grad_(True)
    lsa = model(xs, ys, xq)
    implied = torch.autograd.grad(lsa.sum(), xq)[0]  # d y / d x_q per prompt (the layer is linear in x_q)
    gd_w = gd_step(xs, ys, eta)
    gd = (gd_w * xq).sum(-1)
    lsa, gd = lsa.detach(), gd.detach()
    return {
        "eta": eta,
        "loss_lsa": float((lsa - yq).square().mean()),
        "loss_gd": float((gd - yq).square().mean()),
        "loss_zero": float(yq.square().mean()),
        "spd": float((lsa - gd).square().mean()),
        "cosine": float(torch.nn.functional.cosine_similarity(implied, gd_w, dim=-1).mean()),
    }


def run(out: Path, mode: str, pretrained: bool, progress: bool) -> dict:
    """Train the layer into DIR/models/MODE/lsa_gd (or load the shipped one), compare it with GD."""
    config = model_config(SIZES["full" if pretrained else mode])
    started = time.perf_counter()
    run_dir = pretrained_dir(MODEL_NAME) if pretrained else out / "models" / mode / MODEL_NAME
    if pretrained and RunDir(run_dir, read_model_config).decide(config) != "reuse":  # and refuses other settings
        raise UserError("no finished LSA layer ships with this iclab; run lsa-gd without --pretrained")
    if not pretrained:
        ensure_layer(run_dir, config, progress)
    history = [(r["step"], r["loss"]) for r in read_metrics(run_dir) if "loss" in r]
    results = train_info(run_dir) | {"history": history} | compare(layer(run_dir, config), config)
    results["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_json(out / NAME / "results.json", results)
    return {"checks": check_results(results), "seconds": results["seconds"]}


def check_results(r: dict) -> list[dict]:
    return [
        check(
            "the trained layer's loss is within 5 % of GD's at the best step size",
            abs(r["loss_lsa"] - r["loss_gd"]) <= 0.05 * r["loss_gd"],
            f"LSA {r['loss_lsa']:.4f}, GD {r['loss_gd']:.4f} (eta* = {r['eta']:.3f}; "
            f"predicting 0: {r['loss_zero']:.3f})",
        ),
        check(
            "its predictions match GD's: squared prediction difference below 5 % of GD's loss",
            r["spd"] <= 0.05 * r["loss_gd"],
            f"SPD {r['spd']:.5f}",
        ),
        check(
            "the weight vectors they imply point the same way: mean cosine of d y / d x_q >= 0.99",
            r["cosine"] >= 0.99,
            f"{r['cosine']:.4f}",
        ),
    ]


def draw(r: dict, folder: Path) -> list[Path]:
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=120)
    steps, losses = zip(*r["history"], strict=True)
    ax.plot(steps, losses, label="trained linear self-attention")
    reference_line(ax, y=r["loss_gd"], label=f"one GD step, eta* = {r['eta']:.2f}", color="black", ls="--")
    reference_line(ax, y=r["loss_zero"], label="predict 0")
    ax.set_yscale("log")
    fit_y(ax)
    finish(ax, "training step", "squared error of the query prediction")
    fig.tight_layout()
    return [save_figure(fig, folder / "lsa_gd.png")]


def section(folder: Path, stored: dict) -> list[str]:
    r = json.loads((folder / "results.json").read_text())
    footer = (
        f"{r['steps']} training steps ({r.get('train_seconds', r['seconds']):.0f} s), compared with GD in "
        f"{r['seconds']:.0f} s. Numbers: `{folder.name}/results.json`."
    )
    return section_lines(RECIPE, folder, draw(r, folder), check_results(r), stored, footer)


RECIPE = Recipe(
    name=NAME,
    title="The dual form in practice: a trained linear-attention layer against one step of gradient descent",
    claim=(
        "Trained on in-context linear regression, a single linear self-attention layer implements one step of "
        "gradient descent on the in-context least-squares loss: its loss matches GD's at the best step size, "
        "its predictions match GD's, and so does the weight vector it implies, d y / d x_q (von Oswald et al. "
        "2023; the dual form that Dai et al. 2023 build on)."
    ),
    differences=(
        "d = 5 and N = 10 examples (von Oswald et al. show d = 10); x ~ N(0, I), w ~ N(0, I), no noise; "
        "Adam on fresh batches; the exact construction itself is a unit test (equal to GD to 1e-10)."
    ),
    modes=SCALES,
    plan=plan,
    run=run,
    check=check_results,
    draw=draw,
    section=section,
    shipped=True,  # its full-size layer ships with iclab: --pretrained loads it and trains nothing
)
