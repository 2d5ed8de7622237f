"""Training must teach the model to regress in context: a broken model, loss or optimiser fails here.

A 2-layer, width-32 transformer on dense linear regression in d = 2 with 9 points per prompt, 2,000 steps at
batch 128 (about 15 s on one thread). Measured with seeds 0 and 1: its error (divided by E[y²] = d) at every
k ≥ 2d = 4 was 0.036–0.091, where averaging scores 0.35–0.83 and least squares 0 — and the untrained model ≈ 1.
The bounds below leave 1.6× headroom over the worst measured value; with 512 evaluation prompts the standard
error of each mean is about 0.01."""

import torch

from iclab.config import load_config
from iclab.evaluation.curves import evaluate
from iclab.training.runs import build_model, load_model, read_config
from iclab.training.trainer import train

SETTING = [
    "dims=2",
    "points=9",
    "model.layers=2",
    "model.width=32",
    "model.heads=2",
    "train.batch_size=128",
    "train.steps=2000",
    "train.lr=3e-3",
    "train.warmup=20",
    "train.eval_every=100000",
    "train.checkpoint_every=100000",
    "eval.prompts=512",
    "eval.bootstrap=10",
    "threads=1",
]


def curves(model, config) -> dict[str, list[float]]:
    rows = evaluate(model, config, None, None, ["averaging", "least_squares"], progress=False)
    out: dict[str, list[float]] = {}
    for r in sorted(rows, key=lambda r: r["k"]):
        out.setdefault(r["estimator"], []).append(r["mean"])
    return out


def test_training_learns_least_squares_level_regression(tmp_path):
    config = load_config(None, SETTING)
    torch.manual_seed(0)
    with torch.no_grad():
        untrained = curves(build_model(config).eval(), config)
    train(config, tmp_path / "run", progress=False)
    model, _ = load_model(tmp_path / "run", read_config(tmp_path / "run"))
    with torch.no_grad():
        trained = curves(model, config)
    d = config.dims
    for k in range(2 * d, config.points):
        assert untrained["transformer"][k] > 0.5, f"the untrained model is already good at k={k}?"
        assert trained["transformer"][k] <= 0.15, f"k={k}: error {trained['transformer'][k]:.3f} > 0.15"
        assert trained["transformer"][k] < 0.5 * trained["averaging"][k], f"k={k}: not clearly better than averaging"
        assert trained["least_squares"][k] < 1e-6
