"""von Oswald et al. (2023): a linear self-attention layer trained on in-context linear regression converges to
one step of gradient descent on the in-context least-squares loss."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from ..analysis.dual import LSARegressor, best_gd_step, gd_step
from ..files import atomic_write_json
from ..plotting import finish, fit_y, plt, reference_line, save_figure
from .common import check, section_lines
from .dryrun import Planned, per_step
from .recipe import Recipe
from .sizes import SCALES, Sizes

NAME = "lsa-gd"


@dataclass
class LSASize:
    steps: int = field(metadata={"min": 1})
    dims: int = field(default=5, metadata={"min": 1})
    points: int = field(default=10, metadata={"min": 1})  # in-context examples N before the query
    batch_size: int = field(default=2048, metadata={"min": 1})  # fresh prompts per Adam step
    lr: float = field(default=1e-3, metadata={"gt": 0.0})


SIZES = Sizes(NAME, LSASize)  # scales/lsa-gd/SCALE.yaml


def sample(size: dict, batch: int, g: torch.Generator):
    xs = torch.randn(batch, size["points"] + 1, size["dims"], generator=g)
    w = torch.randn(batch, size["dims"], generator=g)
    ys = torch.einsum("bnd,bd->bn", xs, w)
    return xs[:, :-1], ys[:, :-1], xs[:, -1], ys[:, -1]


def trainer(size: dict, g: torch.Generator) -> tuple[LSARegressor, Callable[[], float]]:
    """A fresh linear self-attention layer and its training step (Adam on a fresh batch), which returns the loss."""
    model = LSARegressor(size["dims"], generator=g)
    optimizer = torch.optim.Adam(model.parameters(), lr=size["lr"])

    def step() -> float:
        xs, ys, xq, yq = sample(size, size["batch_size"], g)
        loss = (model(xs, ys, xq) - yq).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return model, step


def plan(mode: str) -> list[Planned]:
    """Its one layer trains in memory (no run folder), on the CPU."""
    size = SIZES[mode]
    model, step = trainer(size, torch.Generator().manual_seed(0))
    parameters = sum(p.numel() for p in model.parameters())
    shape = ("lsa", size["dims"], size["points"], size["batch_size"])
    return [Planned(f"{NAME} (in memory)", size["steps"], size["points"], parameters, shape, lambda: per_step(step))]


def run(out: Path, mode: str, pretrained: bool, progress: bool) -> dict:
    size = SIZES["full" if pretrained else mode]
    steps = size["steps"]
    started = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    model, step = trainer(size, g)
    history = []
    for i in tqdm(range(steps), desc="train LSA", disable=not progress, mininterval=1):
        loss = step()
        if i % 50 == 0 or i == steps - 1:
            history.append((i + 1, loss))
    eta = best_gd_step(*sample(size, 100_000, g))
    xs, ys, xq, yq = sample(size, 20_000, torch.Generator().manual_seed(1))
    xq = xq.clone().requires_grad_(True)
    lsa = model(xs, ys, xq)
    implied = torch.autograd.grad(lsa.sum(), xq)[0]  # d y / d x_q per prompt (the layer is linear in x_q)
    gd_w = gd_step(xs, ys, eta)
    gd = (gd_w * xq).sum(-1)
    lsa, gd = lsa.detach(), gd.detach()
    results = {
        "steps": steps,
        "eta": eta,
        "history": history,
        "loss_lsa": float((lsa - yq).square().mean()),
        "loss_gd": float((gd - yq).square().mean()),
        "loss_zero": float(yq.square().mean()),
        "spd": float((lsa - gd).square().mean()),
        "cosine": float(torch.nn.functional.cosine_similarity(implied, gd_w, dim=-1).mean()),
        "seconds": round(time.perf_counter() - started, 1),
    }
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
    footer = f"{r['steps']} training steps, {r['seconds']:.0f} s. Numbers: `{folder.name}/results.json`."
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
    shipped=True,  # trains in seconds, nothing to ship
)
