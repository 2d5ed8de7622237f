"""Training throughput (tokens/s) of iclab's transformer against transformers.GPT2Model (the Garg release's
backbone) with the same read-in/read-out, sizes and batches. The two are timed in alternation within one run, so
load on the machine hits both alike; the ratio is the result. Also the achieved training GFLOP/s (iclab's FLOPs
count, training/flops.py, for both models: the same useful work) and its share of this machine's fp32 matmul
peak, measured in the same run as the best time of a 2048 x 2048 matmul. Writes
benchmarks/results/train_throughput.json.

    python benchmarks/train_throughput.py [--threads 1] [--rounds 5] [--steps 5]
"""

from __future__ import annotations

import argparse
import time

import _common
import torch
from torch import nn

from iclab.models.transformer import ICLTransformer, TransformerConfig, icl_forward_flops
from iclab.training.flops import step_flops

# (name, layers, width, heads, dims, points, batch): the demo default, Garg's small and standard sizes
SIZES = [
    ("demo 6/64/2 d5", 6, 64, 2, 5, 11, 256),
    ("garg-small 6/128/4 d20", 6, 128, 4, 20, 41, 64),
    ("garg 12/256/8 d20", 12, 256, 8, 20, 41, 16),
]


class HFGPT2Regressor(nn.Module):
    """Garg et al.'s model: read-in, transformers.GPT2Model on input embeddings, read-out at x positions."""

    def __init__(self, layers, width, heads, dims, points):
        super().__init__()
        from transformers import GPT2Config, GPT2Model

        config = GPT2Config(
            n_positions=2 * points,
            n_embd=width,
            n_layer=layers,
            n_head=heads,
            vocab_size=1,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            use_cache=False,
        )
        self.read_in = nn.Linear(dims, width)
        self.backbone = GPT2Model(config)
        self.read_out = nn.Linear(width, 1)

    def forward(self, xs, ys):
        b, n, d = xs.shape
        tokens = torch.stack((xs, nn.functional.pad(ys.unsqueeze(-1), (0, d - 1))), dim=2).view(b, 2 * n, d)
        hidden = self.backbone(inputs_embeds=self.read_in(tokens)).last_hidden_state
        return self.read_out(hidden[:, 0::2]).squeeze(-1)


def time_steps(model, optimizer, batches) -> float:
    start = time.perf_counter()
    for xs, ys in batches:
        loss = nn.functional.mse_loss(model(xs, ys), ys)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def matmul_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """The fp32 matmul rate of this machine at the current thread count: the best of `repeats` timings."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4, help="steps per model per round")
    parser.add_argument("--sizes", default=",".join(str(i) for i in range(len(SIZES))))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    peak = matmul_peak_gflops()
    print(f"fp32 matmul peak (2048^2, {args.threads} thread(s)): {peak:.1f} GFLOP/s")
    for i in map(int, args.sizes.split(",")):
        name, layers, width, heads, dims, points, batch = SIZES[i]
        torch.manual_seed(0)
        ours = ICLTransformer(TransformerConfig(layers=layers, width=width, heads=heads), dims, points)
        theirs = HFGPT2Regressor(layers, width, heads, dims, points)
        models = {"iclab": ours, "hf_gpt2": theirs}
        optims = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}
        g = torch.Generator().manual_seed(1)
        batches = [
            (torch.randn(batch, points, dims, generator=g), torch.randn(batch, points, generator=g))
            for _ in range(args.steps)
        ]
        for k in models:  # warm-up
            time_steps(models[k], optims[k], batches[:1])
        seconds = {k: [] for k in models}
        for _ in range(args.rounds):
            for k in models:
                seconds[k].append(time_steps(models[k], optims[k], batches))
        tokens = args.steps * batch * 2 * points
        flops = args.steps * step_flops(icl_forward_flops(ours.config, dims, points), batch)
        best = {k: min(v) for k, v in seconds.items()}  # least disturbed round
        rows.append(
            {
                "size": name,
                "iclab_params": ours.num_parameters(),
                "hf_params": sum(p.numel() for p in theirs.parameters()),
                "iclab_tokens_per_s": tokens / best["iclab"],
                "hf_tokens_per_s": tokens / best["hf_gpt2"],
                "iclab_gflops_per_s": flops / best["iclab"] / 1e9,
                "hf_gflops_per_s": flops / best["hf_gpt2"] / 1e9,
                "iclab_share_of_peak": flops / best["iclab"] / 1e9 / peak,
                "speedup": best["hf_gpt2"] / best["iclab"],
                "speedup_median": sorted(seconds["hf_gpt2"])[len(seconds["hf_gpt2"]) // 2]
                / sorted(seconds["iclab"])[len(seconds["iclab"]) // 2],
            }
        )
        _common.print_table(rows[-1:])
    _common.print_table(rows)
    _common.write_result(
        "train_throughput",
        {
            "speedup_vs_hf_gpt2": rows[0]["speedup"],
            "goal": ">= 2 (demo size)",
            "sizes": rows,
            "threads": args.threads,
            "matmul_peak_gflops": peak,
            "scale": _common.scale(parser, args, "rounds", "steps", "sizes"),
            "note": "forward + backward + AdamW step; best of rounds, models alternated within each round; "
            "GFLOP/s from iclab's FLOPs count (training/flops.py) for both models; peak: best 2048^2 fp32 matmul "
            "in the same run; measured on a 2-core machine shared with other jobs",
        },
        seeds={"model": 0, "batches": 1},
    )


if __name__ == "__main__":
    main()
