"""ICLRegressor's predictions per second, batched (every test row one prompt of one forward pass) against the same
predictions made one row at a time (a `predict` call per row), for 1, 8 and 32 ensemble members.

The table is synthetic: `--train` rows of `--features` features (a noisy linear function), wider than the default
model's d and longer than its context, so the projections and subsampling are part of what is timed. Each timing is
the best of `--repeats` after one warm-up call (the model is loaded once); the one-row-at-a-time path predicts
`--single-rows` of the test rows, and the largest difference between the two paths' predictions on those rows is
reported (both run the same prompts, so it is float32 rounding). Goal: batched >= 20x. For reference, the batched
path is also timed with every prompt run whole (`full_prompts`, on `--full-rows` of the test rows), as for a model
whose context cannot be run once.
Writes benchmarks/results/tabular.json.

    python benchmarks/tabular.py [--threads 2] [--test 1000] [--single-rows 30] [--repeats 2]
"""

from __future__ import annotations

import argparse
import time

import _common
import numpy as np
import torch

from iclab.models import ICLModel
from iclab.models.transformer import ICLTransformer
from iclab.sklearn import DEFAULT_MODEL, ICLRegressor

GOAL = 20.0


def best_seconds(fn, repeats: int) -> tuple[float, object]:
    """(the fastest of `repeats` calls of fn, in seconds; what the last call returned)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--members", default="1,8,32", help="ensemble sizes, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--single-rows", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--full-rows", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.train + args.test, args.features))
    y = X @ rng.normal(size=args.features) + 0.5 * rng.normal(size=len(X))
    train, test = slice(0, args.train), slice(args.train, None)
    single = X[test][: args.single_rows]

    rows, cached = [], ICLTransformer.query_predictor
    for members in (int(m) for m in args.members.split(",")):
        est = ICLRegressor(model=args.model, n_estimators=members, random_state=0).fit(X[train], y[train])
        est.predict(single[:1])  # warm-up: the model's load and the first forward pass
        batched, predictions = best_seconds(lambda est=est: est.predict(X[test]), args.repeats)
        one_by_one, singles = best_seconds(lambda est=est: [est.predict(row[None]) for row in single], args.repeats)
        ICLTransformer.query_predictor = ICLModel.query_predictor  # every prompt whole
        full, _ = best_seconds(lambda est=est: est.predict(X[test][: args.full_rows]), args.repeats)
        ICLTransformer.query_predictor = cached
        batched_rate, single_rate = args.test / batched, len(single) / one_by_one
        row = {
            "members": members,
            "batched_rows_per_second": batched_rate,
            "one_at_a_time_rows_per_second": single_rate,
            "speedup": batched_rate / single_rate,
            "batched_full_prompts_rows_per_second": min(args.full_rows, args.test) / full,
            "max_abs_diff": float(np.abs(predictions[: len(single)] - np.concatenate(singles)).max()),
        }
        rows.append(row)
        print(", ".join(f"{k} {v:.4g}" for k, v in row.items()), flush=True)
    _common.print_table(rows)
    worst = min(r["speedup"] for r in rows)
    print(f"batched is at least {worst:.0f}x one row at a time (goal >= {GOAL:.0f}x)")
    _common.write_result(
        "tabular",
        {
            "min_speedup": worst,
            "goal": f"speedup >= {GOAL:.0f} for every ensemble size",
            "goal_met": bool(worst >= GOAL),
            "model": args.model,
            "rows": rows,
            "setting": vars(args),
            "scale": _common.scale(parser, args, "test", "single_rows", "full_rows", "repeats", "members"),
        },
        seeds={"data": 0, "estimator": 0},
    )


if __name__ == "__main__":
    main()
