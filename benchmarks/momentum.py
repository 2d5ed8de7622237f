"""The cost of momentum attention: milliseconds per training step of standard and momentum attention at the sizes
of `iclab reproduce momentum` (a text TokenLM and the ICL transformer), timed in alternation within one run so
that load on the machine hits both alike; the ratio is the result. Also the momentum term alone (one matmul with
the decay matrix) against the attention it is added to, at longer sequences. Writes
benchmarks/results/momentum.json.

    python benchmarks/momentum.py [--threads 1] [--rounds 5] [--steps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import _common
import torch
import torch.nn.functional as F

from iclab.model import ICLTransformer, ModelConfig, TokenLM, momentum_term

VOCAB, CONTEXT = 1024, 128


def lm_case(attention: dict):
    model = TokenLM(ModelConfig(layers=3, width=96, heads=3, **attention), VOCAB, CONTEXT)
    ids = torch.randint(0, VOCAB, (32, CONTEXT + 1))

    def loss():
        logits = model(ids[:, :-1])
        return F.cross_entropy(logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1))

    return model, loss


def icl_case(attention: dict):
    model = ICLTransformer(ModelConfig(layers=3, width=64, heads=2, **attention), dims=5, max_points=11)
    xs, ys = torch.randn(128, 11, 5), torch.randn(128, 11)
    return model, lambda: F.mse_loss(model(xs, ys), ys)


CASES = [("text LM 3/96/3, 32 x 128 tokens", lm_case), ("ICL 3/64/2, d=5, batch 128", icl_case)]
ATTENTIONS = {"softmax": {}, "momentum": {"attention": "momentum", "momentum": 0.5}}


def step_ms(model, loss, optimizer, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        value = loss()
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
    return 1000 * (time.perf_counter() - start) / steps


def term_ms(tokens: int, repeats: int = 5) -> tuple[float, float]:
    """Forward milliseconds of the momentum term and of causal softmax attention, (8, 4, tokens, 32) tensors."""
    q, k, v = (torch.randn(8, 4, tokens, 32) for _ in range(3))
    out = []
    for fn in (lambda: momentum_term(v, 0.9), lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)):
        fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        out.append(1000 * (time.perf_counter() - start) / repeats)
    return out[0], out[1]


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
        softmax, momentum = (statistics.median(times[label]) for label in ATTENTIONS)
        rows.append({"case": name, "softmax_ms": softmax, "momentum_ms": momentum, "ratio": momentum / softmax})
    _common.print_table(rows)
    terms = []
    for tokens in (128, 512, 2048):
        term, attention = term_ms(tokens)
        terms.append({"tokens": tokens, "momentum_term_ms": term, "softmax_attention_ms": attention})
    _common.print_table(terms)
    _common.write_result(
        "momentum",
        {
            "momentum_step_ratio": {r["case"]: round(r["ratio"], 3) for r in rows},
            "steps": rows,
            "term_vs_attention": terms,
            "settings": vars(args),
        },
    )


if __name__ == "__main__":
    main()
