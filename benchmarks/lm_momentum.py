"""Momentum attention patched into SmolLM2-135M: its cost in shared-prefix scoring, and its exactness on a real model.

Scores the ICL prompts of fortunes-topics (k = 16, demonstration seed 0) with the shared-prefix (KV cache) scorer:
unpatched, patched with eta = 0, and patched with eta (0.3), timed in alternation so that load on the machine hits
all alike; the ratio patched / unpatched is the cost. Then checks, on the first queries, that the patched model
scored with the prefix cache (the prefix's momentum carry kept beside its keys and values) gives the scores of the
patched model run on every prompt in full, and that eta = 0 gives the unpatched scores bit for bit.
Writes benchmarks/results/lm_momentum.json.

    python benchmarks/lm_momentum.py [--model smollm2] [--eta 0.3] [--queries 24] [--full 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics

import _common
import torch
from lm_prefix_cache import timed

from iclab.lm.adapters import HFAdapter
from iclab.lm.loading import load
from iclab.lm.momentum import patch_momentum
from iclab.lm.prompts import build_layout
from iclab.lm.tasks import load_data, load_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--task", default="fortunes-topics")
    parser.add_argument("--eta", type=float, default=0.3)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--queries", type=int, default=24)
    parser.add_argument("--full", type=int, default=8, help="queries also scored in full, for the exactness check")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load(args.model, progress=False)
    model = loaded.model
    task = load_task(args.task)
    layout = build_layout(loaded.tokenizer, task, load_data(task), args.k, 0, args.queries, 1, budget=2048)
    data = layout.data

    def score(eta: float | None, prompts=data.icl, reuse_prefix: bool = True) -> tuple[float, torch.Tensor]:
        adapter = HFAdapter(model, reuse_prefix)  # a fresh adapter: every timing encodes the prefix itself
        if eta is None:
            return timed(adapter, prompts, data.candidates, args.batch)
        with patch_momentum(model, eta):
            return timed(adapter, prompts, data.candidates, args.batch)

    score(None, data.icl.rows(slice(0, 2)))  # warm-up (allocator, first calls)
    settings = {"unpatched": None, "eta = 0": 0.0, f"eta = {args.eta:g}": args.eta}
    seconds: dict[str, list[float]] = {name: [] for name in settings}
    scores = {}
    for _ in range(args.rounds):
        for name, eta in settings.items():
            t, scores[name] = score(eta)
            seconds[name].append(t)
    best = {name: min(ts) for name, ts in seconds.items()}
    patched = f"eta = {args.eta:g}"
    first = data.icl.rows(slice(0, args.full))
    _, cached = score(args.eta, first)
    _, full = score(args.eta, first, reuse_prefix=False)
    rows = [
        {"scoring": name, "seconds": best[name], "ms_per_query": 1000 * best[name] / len(data.gold)}
        for name in settings
    ]
    _common.print_table(rows)
    result = {
        "overhead_vs_unpatched": round(best[patched] / best["unpatched"], 3),
        "eta0_bit_identical": bool(torch.equal(scores["eta = 0"], scores["unpatched"])),
        "cached_equals_full_max_abs_diff": float((cached - full).abs().max()),
        "cached_equals_full_predictions": bool(torch.equal(cached.argmax(-1), full.argmax(-1))),
        "patched_vs_unpatched_max_abs_diff": float((scores[patched] - scores["unpatched"]).abs().max()),
        "predictions_changed": int((scores[patched].argmax(-1) != scores["unpatched"].argmax(-1)).sum()),
        "eta": args.eta,
        "k": layout.k,
        "prefix_tokens": int(data.icl.prefix.shape[1]),
        "queries": len(data.gold),
        "full_queries": args.full,
        "rounds": args.rounds,
        "seconds_spread": {name: statistics.pstdev(ts) for name, ts in seconds.items()},
        "model": args.model,
        "task": args.task,
        "rows": rows,
        "goals": {"eta0_bit_identical": "true", "cached_equals_full_max_abs_diff": "<= 1e-4"},
        "scale": _common.scale(parser, args, "queries", "full", "rounds"),
    }
    print(
        f"overhead_vs_unpatched {result['overhead_vs_unpatched']}, eta = 0 bit-identical: "
        f"{result['eta0_bit_identical']}, prefix-cached vs full max |score diff| "
        f"{result['cached_equals_full_max_abs_diff']:.2e} (same predictions: "
        f"{result['cached_equals_full_predictions']}), {result['predictions_changed']} of {len(data.gold)} "
        f"predictions changed by eta = {args.eta:g}"
    )
    _common.write_result("lm_momentum", result, seeds={"demonstrations": 0})


if __name__ == "__main__":
    main()
