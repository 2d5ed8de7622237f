"""The cost of momentum attention: milliseconds per training step of standard attention, fixed-eta momentum and the
learned EMA (`attention: ema`) at the sizes of `iclab reproduce momentum` (a text TokenLM and the ICL transformer),
timed in alternation within one run so that load on the machine hits all alike; the ratios are the result. Also the
terms alone against the attention they are added to, at longer sequences: fixed eta's blocked matmul, and the
EMA's two paths (a matmul with its Toeplitz matrix, and an FFT convolution), forward and backward, which decide
where `ema_term` switches from one to the other (model.EMA_DIRECT). Writes benchmarks/results/momentum.json.

    python benchmarks/momentum.py [--threads 1] [--rounds 5] [--steps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import _common
import torch
import torch.nn.functional as F

from iclab.models import transformer as model_module
from iclab.models.transformer import ICLTransformer, MovingAverage, TokenLM, TransformerConfig, momentum_term

VOCAB, CONTEXT = 1024, 128
DIRECT = model_module.EMA_DIRECT


def lm_case(attention: dict):
    model = TokenLM(TransformerConfig(layers=3, width=96, heads=3, **attention), VOCAB, CONTEXT)
    ids = torch.randint(0, VOCAB, (32, CONTEXT + 1))

    def loss():
        logits = model(ids[:, :-1])
        return F.cross_entropy(logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1))

    return model, loss


def icl_case(attention: dict):
    model = ICLTransformer(TransformerConfig(layers=3, width=64, heads=2, **attention), dims=5, max_points=11)
    xs, ys = torch.randn(128, 11, 5), torch.randn(128, 11)
    return model, lambda: F.mse_loss(model(xs, ys), ys)


CASES = [("text LM 3/96/3, 32 x 128 tokens", lm_case), ("ICL 3/64/2, d=5, batch 128", icl_case)]
ATTENTIONS = {"softmax": {}, "momentum": {"attention": "momentum", "momentum": 0.5}, "ema": {"attention": "ema"}}


def step_ms(model, loss, optimizer, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        value = loss()
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
    return 1000 * (time.perf_counter() - start) / steps


def timed(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return 1000 * (time.perf_counter() - start) / repeats


def term_ms(tokens: int, repeats: int = 5) -> dict:
    """Forward + backward milliseconds of each term and of causal softmax attention on 4,096 tokens (batch 4096 /
    tokens) of 4 heads x 32 channels: the EMA on the merged 128 channels, 8 components each, by its matrix path
    (up to 512 tokens: the matrix has channels x tokens^2 entries) and by its FFT path."""
    batch = max(1, 4096 // tokens)
    q, k, v = (torch.randn(batch, 4, tokens, 32, requires_grad=True) for _ in range(3))
    merged = v.detach().transpose(1, 2).reshape(batch, tokens, 128).requires_grad_()
    torch.manual_seed(0)
    ema = MovingAverage(128)
    ema.reset_parameters()
    fns = {
        "softmax_attention_ms": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward(),
        "momentum_term_ms": lambda: momentum_term(v, 0.9).sum().backward(),
    }
    row = {"tokens": tokens, "batch": batch} | {name: timed(fn, repeats) for name, fn in fns.items()}
    for path, limit in (("matrix", tokens), ("fft", 0)):  # EMA_DIRECT = tokens: the matrix; 0: the FFT
        model_module.EMA_DIRECT = limit
        skip = path == "matrix" and tokens > 512
        row[f"ema_{path}_ms"] = None if skip else timed(lambda: ema(merged).sum().backward(), repeats)
    model_module.EMA_DIRECT = DIRECT
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name, make in CASES:
        runs = {}
        for label, attention in ATTENTIONS.items():
            torch.manual_seed(0)
            model, loss = make(attention)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
            step_ms(model, loss, optimizer, 2)  # warm-up
            runs[label] = (model, loss, optimizer)
        times = {label: [] for label in runs}
        for _ in range(args.rounds):  # alternate, so that load on the machine hits both alike
            for label, (model, loss, optimizer) in runs.items():
                times[label].append(step_ms(model, loss, optimizer, args.steps))
        softmax, momentum, ema = (statistics.median(times[label]) for label in ATTENTIONS)
        rows.append(
            {"case": name, "softmax_ms": softmax, "momentum_ms": momentum, "ema_ms": ema}
            | {"ratio": momentum / softmax, "ema_ratio": ema / softmax, "ema_vs_momentum": ema / momentum}
        )
    _common.print_table(rows)
    terms = [term_ms(tokens) for tokens in (22, 64, 128, 512, 2048)]
    _common.print_table(terms)
    _common.write_result(
        "momentum",
        {
            "momentum_step_ratio": {r["case"]: round(r["ratio"], 3) for r in rows},
            "ema_step_ratio": {r["case"]: round(r["ema_ratio"], 3) for r in rows},
            "ema_vs_momentum_step_ratio": {r["case"]: round(r["ema_vs_momentum"], 3) for r in rows},
            "ema_direct_up_to_tokens": DIRECT,
            "steps": rows,
            "term_vs_attention": terms,
            "settings": vars(args),
            "scale": _common.scale(parser, args, "rounds", "steps"),
        },
        seeds={"torch": 0},
    )


if __name__ == "__main__":
    main()
