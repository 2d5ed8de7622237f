"""The shortest path to quality on a CPU: training seconds and FLOPs until the demo task's validation error
reaches quality, for iclab's defaults (the packaged demo config) and for Garg et al.'s training settings (Adam
1e-4, batch 64, constant lr, GPT-2 init and GELU, no clipping or decay) on the same model, run through iclab.

Quality: error <= 0.1 at k = 2d (`seconds_to_quality`), and within 0.05 of least squares at every k >= d
(`seconds_to_least_squares_level`; least squares is exact there on noiseless data, error 0); also the demo's own
check, every k >= d + 1. Both settings train at the same time, one thread each, so load on the machine hits both
alike, under the same wall-clock budget; Garg's settings may also stop at the demo's number of training prompts
(3,000 x 256 = 12,000 x 64). Errors are the logged validation curve (train.eval_prompts fixed prompts),
evaluated every 25,600 training prompts for both. Writes benchmarks/results/time_to_quality.json.

    python benchmarks/time_to_quality.py [--budget 900]
"""

from __future__ import annotations

import argparse
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import _common
import torch

from iclab.config import load_config, packaged_config
from iclab.training.runs import read_metrics
from iclab.training.trainer import Trainer, train_in

QUALITY, GAP = 0.1, 0.05
SETTINGS = {
    "iclab": [],
    "garg": [
        "model.init=gpt2",
        "model.activation=gelu_new",
        "train.lr=1e-4",
        "train.batch_size=64",
        "train.schedule=constant",
        "train.warmup=0",
        "train.weight_decay=0",
        "train.grad_clip=0",
        "train.steps=12000",  # the demo's 768,000 training prompts
        "train.eval_every=400",  # every 25,600 prompts, as the demo's 100 steps of 256
    ],
}


class Budgeted(Trainer):
    """Ends the run after the first step that finishes past `budget` seconds of training, as if that step had
    been the last one planned: it logs its validation curve and saves its checkpoint."""

    def __init__(self, config, run_dir: Path, budget: float):
        super().__init__(config, run_dir)
        self.budget = budget

    def train_step(self) -> float:
        loss = super().train_step()
        if self.seconds >= self.budget:  # the time of the steps before this one
            self.config.train.steps = self.step
        return loss


def train_metrics(overrides: list[str], budget: float = float("inf")) -> list[dict]:
    """Train the demo config with `overrides` (one thread) in a temporary folder, within `budget` seconds; the
    rows of its metrics.jsonl."""
    config = load_config(packaged_config("demo"), ["threads=1"] + overrides)
    with tempfile.TemporaryDirectory() as tmp:
        train_in(config, Path(tmp), progress=False, kind=Budgeted, budget=budget)
        return read_metrics(Path(tmp))


def first(rows: list[dict], reached) -> dict:
    """Seconds and FLOPs of the first evaluation where `reached(val_error)` holds (None for both if none did)."""
    row = next((r for r in rows if reached(r["val_error"])), {})
    return {"seconds": row.get("seconds"), "flops": row.get("flops"), "step": row.get("step")}


def summary(metrics: list[dict], dims: int) -> dict:
    rows = [m for m in metrics if "val_error" in m]
    last = rows[-1]
    return {
        "to_quality": first(rows, lambda e: e[2 * dims] <= QUALITY),
        "to_least_squares_level": first(rows, lambda e: max(e[dims:]) <= GAP),
        "to_least_squares_level_above_d": first(rows, lambda e: max(e[dims + 1 :]) <= GAP),
        "error_at_d": last["val_error"][dims],
        "error_at_2d": last["val_error"][2 * dims],
        "steps": last["step"],
        "seconds": last["seconds"],
        "flops": last["flops"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=900.0, help="training seconds per setting")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as each training process runs (and so the machine record says)
    demo = load_config(packaged_config("demo"))
    dims = demo.dims
    with ProcessPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(train_metrics, overrides, args.budget) for name, overrides in SETTINGS.items()}
        runs = {name: summary(f.result(), dims) for name, f in futures.items()}
    ours, garg = runs["iclab"]["to_quality"]["seconds"], runs["garg"]["to_quality"]["seconds"]
    rows = [
        {
            "settings": name,
            "steps": r["steps"],
            "seconds": r["seconds"],
            "s_to_quality": r["to_quality"]["seconds"],
            "s_to_ls_level": r["to_least_squares_level"]["seconds"],
            "s_to_ls_level_k>d": r["to_least_squares_level_above_d"]["seconds"],
            "error_at_d": r["error_at_d"],
            "error_at_2d": r["error_at_2d"],
        }
        for name, r in runs.items()
    ]
    _common.print_table(rows)
    _common.write_result(
        "time_to_quality",
        {
            "seconds_to_quality": ours,
            "flops_to_quality": runs["iclab"]["to_quality"]["flops"],
            "seconds_to_least_squares_level": runs["iclab"]["to_least_squares_level"]["seconds"],
            "flops_to_least_squares_level": runs["iclab"]["to_least_squares_level"]["flops"],
            "error_at_d": runs["iclab"]["error_at_d"],
            "error_at_2d": runs["iclab"]["error_at_2d"],
            # null: Garg's settings did not reach quality within the budget; then their whole run's seconds over
            # ours bound the speedup from below
            "speedup_vs_garg_settings": garg / ours if ours and garg else None,
            "speedup_vs_garg_settings_at_least": (garg or runs["garg"]["seconds"]) / ours if ours else None,
            "budget_seconds": args.budget,
            "quality": f"validation error <= {QUALITY} at k = 2d; least-squares level: within {GAP} of least "
            "squares (0) at every k >= d",
            "settings": {name: {"overrides": SETTINGS[name]} | r for name, r in runs.items()},
            "note": "both settings trained concurrently, 1 thread each, on a 2-core machine shared with other jobs; "
            "seconds include the periodic validation passes",
            "scale": _common.scale(parser, args, "budget"),
        },
        seeds=[demo.seed],
    )


if __name__ == "__main__":
    main()
