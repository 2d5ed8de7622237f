"""Muon against AdamW on the demo config (d = 5, 6 layers, 3,000 steps): the validation error at k = d and k = 2d
at equal steps (the end of training) and at equal seconds (the shorter run's training time), for each seed.
The two optimizers of a seed train at the same time, one thread each, so that load on the machine hits both
alike. Writes benchmarks/results/optimizers.json.

    python benchmarks/optimizers.py [--seeds 0,1] [--set key=value ...]
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor

import _common
import torch
from time_to_quality import train_metrics

from iclab.config import load_config, packaged_config

OPTIMIZERS = ("adamw", "muon")


def evaluations(metrics: list[dict]) -> list[dict]:
    return [m for m in metrics if "val_error" in m]


def errors_at(metrics: list[dict], seconds: float, dims: int) -> dict:
    """The validation errors at k = d and 2d of the last evaluation within `seconds` of training."""
    row = [m for m in evaluations(metrics) if m["seconds"] <= seconds][-1]
    return {"step": row["step"], "error_at_d": row["val_error"][dims], "error_at_2d": row["val_error"][2 * dims]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as each training process runs (and so the machine record says)
    dims = load_config(packaged_config("demo"), args.overrides).dims
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [(seed, opt) for seed in seeds for opt in OPTIMIZERS]
    with ProcessPoolExecutor(max_workers=2) as pool:  # the two optimizers of a seed side by side
        runs = dict(
            zip(
                jobs,
                pool.map(train_metrics, [[f"seed={s}", f"train.optimizer={o}"] + args.overrides for s, o in jobs]),
                strict=True,
            )
        )
    rows = []
    for seed in seeds:
        final = {o: evaluations(runs[seed, o])[-1] for o in OPTIMIZERS}
        common = min(final[o]["seconds"] for o in OPTIMIZERS)
        for o in OPTIMIZERS:
            at_steps = errors_at(runs[seed, o], final[o]["seconds"], dims)
            at_seconds = errors_at(runs[seed, o], common, dims)
            rows.append(
                {
                    "seed": seed,
                    "optimizer": o,
                    "steps": at_steps["step"],
                    "seconds": final[o]["seconds"],
                    "error_at_d": at_steps["error_at_d"],
                    "error_at_2d": at_steps["error_at_2d"],
                    "equal_seconds": common,
                    "step_at_equal_seconds": at_seconds["step"],
                    "error_at_d_equal_seconds": at_seconds["error_at_d"],
                    "error_at_2d_equal_seconds": at_seconds["error_at_2d"],
                }
            )
    _common.print_table(rows)
    _common.write_result(
        "optimizers",
        {
            "runs": rows,
            "overrides": args.overrides,
            "note": "demo config, validation error (train.eval_prompts fixed prompts, every train.eval_every steps); "
            "the two optimizers of a seed trained concurrently, 1 thread each, on a machine shared with other jobs",
            "scale": _common.scale(parser, args, "seeds", "overrides"),
        },
        seeds=seeds,
    )


if __name__ == "__main__":
    main()
