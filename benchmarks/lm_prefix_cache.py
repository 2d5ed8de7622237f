"""Shared-prefix scoring against naive full-prompt scoring on SmolLM2-135M with k = 16 demonstrations.

Both score the same ICL prompts of the offline task fortunes-topics (demonstration seed 0) through the same code
and batch size, hooks recording the internals included; the only difference is that the cached scorer encodes the
demonstration prefix once and reuses its key/value cache for every batch of queries, while the naive one runs
every prompt in full (as lm-evaluation-harness and OpenICL do). Reports the speedup, whether every prediction is
identical, the largest score difference, and the peak resident memory of the process.
Writes benchmarks/results/lm_prefix_cache.json.

    python benchmarks/lm_prefix_cache.py [--model smollm2] [--k 16] [--queries 24] [--batch 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import resource
import time

import _common
import torch

from iclab.lm.adapters import HFAdapter
from iclab.lm.loading import load
from iclab.lm.prompts import build_layout
from iclab.lm.tasks import load_data, load_task


def timed(adapter: HFAdapter, prompts, labels, batch: int) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    scores, _ = adapter.score(prompts, labels, batch)
    return time.perf_counter() - start, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--task", default="fortunes-topics")
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--queries", type=int, default=24)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load(args.model, progress=False)
    task = load_task(args.task)
    layout = build_layout(loaded.tokenizer, task, load_data(task), args.k, 0, args.queries, 1, budget=2048)
    data = layout.data
    cached, naive = HFAdapter(loaded.model), HFAdapter(loaded.model, reuse_prefix=False)
    timed(cached, data.icl.rows(slice(0, 2)), data.candidates, args.batch)  # warm-up (allocator, first calls)
    cached._memo = None  # the timed run encodes the prefix itself
    t_cached, s_cached = timed(cached, data.icl, data.candidates, args.batch)
    t_naive, s_naive = timed(naive, data.icl, data.candidates, args.batch)
    same = bool(torch.equal(s_cached.argmax(-1), s_naive.argmax(-1)))
    rows = [
        {"scorer": "naive (every prompt in full)", "seconds": t_naive, "ms_per_query": 1000 * t_naive / len(data.gold)},
        {"scorer": "shared prefix (KV cache)", "seconds": t_cached, "ms_per_query": 1000 * t_cached / len(data.gold)},
    ]
    _common.print_table(rows)
    result = {
        "speedup_vs_naive": round(t_naive / t_cached, 2),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "identical_predictions": same,
        "max_abs_score_diff": float((s_cached - s_naive).abs().max()),
        "k": layout.k,
        "prefix_tokens": int(data.icl.prefix.shape[1]),
        "queries": len(data.gold),
        "longest_query_tokens": int(data.icl.queries.shape[1]),
        "batch": args.batch,
        "model": args.model,
        "task": args.task,
        "rows": rows,
        "goals": {"speedup_vs_naive": ">= 5", "peak_rss_gb": "<= 4"},
        "scale": _common.scale(parser, args, "queries"),
    }
    print(
        f"speedup_vs_naive {result['speedup_vs_naive']}, peak_rss_gb {result['peak_rss_gb']}, "
        f"identical predictions: {same} (max |score diff| {result['max_abs_score_diff']:.2e})"
    )
    _common.write_result("lm_prefix_cache", result, seeds={"demonstrations": 0})


if __name__ == "__main__":
    main()
