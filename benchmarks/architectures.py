"""Every architecture in the model zoo (iclab.models.MODELS, read at run time) at one common size: parameters,
FLOPs per training step, seconds per training step (forward + backward + AdamW, the median of the rounds),
tokens/s and achieved GFLOP/s, and the activation memory a step keeps for its backward pass. Then, for every
family with a choice of kernel (a `scan` key: iclab's own against the library's), both kernels at the same shape
and weights: the speed ratio and the largest difference of their outputs, for the whole model's training step and
for the module the kernel replaces alone (its first instance, on the arguments a real pass gives it).

The families are timed in alternation within each round, so the load on a shared machine hits all alike; the load
average is stored with the results. FLOPs are each model's own count (`forward_flops`: matrix products only), so a
scan's elementwise work is not in them. Activation memory is the bytes of the tensors autograd saves for the
backward pass (parameters excluded), deduplicated by storage: the part of peak memory that grows with the batch.
Writes benchmarks/results/architectures.json.

    python benchmarks/architectures.py [--layers 2] [--width 64] [--dims 5] [--points 11] [--batch 64]
        [--threads 2] [--rounds 3] [--kernel-rounds 5] [--long-points 41] [--long-batch 8] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

import _common
import torch
from torch import nn

from iclab.models import MODELS, ModelConfig
from iclab.training.flops import step_flops


def build(spec: dict, dims: int, points: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return ModelConfig.from_spec(spec).build(dims, points)


def batches(count: int, batch: int, points: int, dims: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(batch, points, dims, generator=g), torch.randn(batch, points, generator=g)) for _ in range(count)
    ]


def step(model: nn.Module, optimizer: torch.optim.Optimizer, xs: torch.Tensor, ys: torch.Tensor) -> float:
    """Seconds of one training step."""
    start = time.perf_counter()
    loss = nn.functional.mse_loss(model(xs, ys), ys)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def activation_bytes(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> int:
    """Bytes of the tensors autograd saves during one forward pass (not the parameters), each storage once."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        nn.functional.mse_loss(model(xs, ys), ys)
    return sum(saved.values())


def timed_rounds(models: dict[str, nn.Module], data: list, rounds: int) -> dict[str, list[float]]:
    """Seconds per step of each model: one warm-up step, then `rounds` rounds of one step each, in alternation."""
    optimizers = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}
    seconds: dict[str, list[float]] = {k: [] for k in models}
    for r in range(rounds + 1):
        xs, ys = data[r % len(data)]
        for k, model in models.items():
            t = step(model, optimizers[k], xs, ys)
            if r > 0:
                seconds[k].append(t)
    return seconds


def kernel_choices(name: str) -> list[str]:
    """The values of a family's `scan` key (its kernels), default first; none if it has no such key."""
    fields = {f.name: f for f in dataclasses.fields(MODELS.get(name))}
    if "scan" not in fields:
        return []
    default = fields["scan"].default
    return [default] + [c for c in fields["scan"].metadata.get("choices", []) if c != default]


def swapped_module(model: nn.Module) -> str | None:
    """The first module whose forward iclab replaced by its own kernel (an instance attribute), if any."""
    return next((n for n, m in model.named_modules() if "forward" in vars(m)), None)


def module_inputs(model: nn.Module, name: str, xs: torch.Tensor, ys: torch.Tensor) -> tuple[tuple, dict]:
    """The arguments module `name` receives in a forward pass of the model on (xs, ys)."""
    seen = []
    hook = model.get_submodule(name).register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((args, kwargs)) if not seen else None, with_kwargs=True
    )
    with torch.no_grad():
        model(xs, ys)
    hook.remove()
    return seen[0]


def run_module(module: nn.Module, args: tuple, kwargs: dict, backward: bool = True) -> tuple[float, torch.Tensor]:
    """Seconds of the module's forward (+ backward of the output's sum) on these arguments, and its output."""
    args = tuple(a.detach().requires_grad_(backward) if torch.is_tensor(a) else a for a in args)
    start = time.perf_counter()
    with torch.set_grad_enabled(backward):
        out = module(*args, **kwargs)
        out = out[0] if isinstance(out, tuple) else out
        if backward:
            out.sum().backward()
    return time.perf_counter() - start, out.detach()


def compare_modules(name: str, spec: dict, choices: list[str], data: tuple, rounds: int) -> dict:
    """The module a kernel replaces, alone (its first instance, on the arguments a real pass gives it): seconds of
    forward + backward per kernel, and the largest output difference in float64."""
    models = {c: build(spec | {"scan": c}, data[0].shape[2], data[0].shape[1]) for c in choices}
    where = next(filter(None, map(swapped_module, models.values())), None)
    if where is None:
        return {}
    args, kwargs = module_inputs(models[choices[0]], where, *data)
    seconds: dict[str, list[float]] = {c: [] for c in choices}
    for r in range(rounds + 1):
        for c, model in models.items():
            t, _ = run_module(model.get_submodule(where), args, kwargs)
            if r > 0:
                seconds[c].append(t)
    median = {c: statistics.median(v) for c, v in seconds.items()}
    wide = {c: m.double() for c, m in models.items()}
    args64, kwargs64 = module_inputs(wide[choices[0]], where, *(t.double() for t in data))
    outs = [run_module(wide[c].get_submodule(where), args64, kwargs64, backward=False)[1] for c in choices]
    return {
        "module": where,
        "module_default_s": median[choices[0]],
        "module_other_s": median[choices[-1]],
        "module_speedup": median[choices[-1]] / median[choices[0]],
        "module_speedup_best": min(seconds[choices[-1]]) / min(seconds[choices[0]]),
        "module_diff_f64": max(float((o - outs[0]).abs().max()) for o in outs),
    }


def compare_kernels(name: str, args, points: int, dims: int, batch: int) -> dict:
    """A family's kernels at one shape: the same weights, seconds per training step and output differences."""
    choices = kernel_choices(name)
    spec = {"name": name, "layers": args.layers, "width": args.width}
    models = {c: build(spec | {"scan": c}, dims, points) for c in choices}
    seconds = timed_rounds(models, batches(2, batch, points, dims), args.kernel_rounds)
    median = {c: statistics.median(s) for c, s in seconds.items()}
    memory = {c: activation_bytes(m, *batches(1, batch, points, dims)[0]) / 2**20 for c, m in models.items()}
    xs, ys = batches(1, 8, points, dims)[0]
    diff = {}
    for dtype in (torch.float32, torch.float64):
        fresh = {c: build(spec | {"scan": c}, dims, points).to(dtype) for c in choices}
        with torch.no_grad():
            outs = [fresh[c](xs.to(dtype), ys.to(dtype)) for c in choices]
        diff[str(dtype).removeprefix("torch.")] = max(float((o - outs[0]).abs().max()) for o in outs)
    default, other = choices[0], choices[-1]
    return {
        "model": name,
        "kernels": f"{default} vs {other}",
        "tokens": 2 * points,
        "batch": batch,
        "default_s": median[default],
        "other_s": median[other],
        "speedup": median[other] / median[default],
        "speedup_best": min(seconds[other]) / min(seconds[default]),
        "default_mb": memory[default],
        "other_mb": memory[other],
        "max_diff_f32": diff["float32"],
        "max_diff_f64": diff["float64"],
    } | compare_modules(name, spec, choices, batches(1, batch, points, dims)[0], args.kernel_rounds) | {
        "seconds": seconds
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--dims", type=int, default=5)
    parser.add_argument("--points", type=int, default=11)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kernel-rounds", type=int, default=5, help="rounds of each kernel comparison")
    parser.add_argument("--long-points", type=int, default=41, help="a longer prompt for the kernel comparison")
    parser.add_argument("--long-batch", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny sizes, one round, nothing written")
    args = parser.parse_args()
    if args.quick:
        args.width, args.batch, args.rounds, args.kernel_rounds, args.long_points, args.long_batch = 16, 4, 1, 1, 0, 0
    torch.set_num_threads(args.threads)
    names = MODELS.names()
    spec = {"layers": args.layers, "width": args.width}
    models, rows, failed = {}, {}, {}
    for name in names:
        try:
            models[name] = build(spec | {"name": name}, args.dims, args.points)
        except Exception as error:  # a family that cannot build at this size is reported, not fatal
            failed[name] = f"{type(error).__name__}: {error}"
    data = batches(2, args.batch, args.points, args.dims)
    seconds = timed_rounds(models, data, args.rounds)
    tokens = args.batch * 2 * args.points
    for name, model in models.items():
        flops = step_flops(model.forward_flops(args.points), args.batch)
        median = statistics.median(seconds[name])
        rows[name] = {
            "model": name,
            "params": model.num_parameters(),
            "gflop_per_step": flops / 1e9,
            "s_per_step": median,
            "best_s": min(seconds[name]),
            "tokens_per_s": tokens / median,
            "gflop_per_s": flops / median / 1e9,
            "activation_mb": activation_bytes(model, *data[0]) / 2**20,
        }
    _common.print_table(list(rows.values()))
    load = {"after_models": round(os.getloadavg()[0], 2)}
    for name, error in failed.items():
        print(f"{name}: not built ({error})")
    kernels = []
    for name in (n for n in names if kernel_choices(n) and n in models):
        kernels.append(compare_kernels(name, args, args.points, args.dims, args.batch))
        if args.long_points:
            kernels.append(compare_kernels(name, args, args.long_points, 20, args.long_batch))
    _common.print_table([{k: v for k, v in row.items() if k != "seconds"} for row in kernels])
    load["after_kernels"] = round(os.getloadavg()[0], 2)
    if args.quick:
        return
    _common.write_result(
        "architectures",
        {
            "size": {k: getattr(args, k) for k in ("layers", "width", "dims", "points", "batch", "threads")}
            | {"tokens": 2 * args.points},
            "models": list(rows.values()),
            "seconds": seconds,
            "load_average_during": load,
            "not_built": failed,
            "kernels": kernels,
            "rounds": args.rounds,
            "kernel_rounds": args.kernel_rounds,
            "scale": _common.scale(
                parser, args, *"layers width dims points batch rounds kernel_rounds long_points long_batch".split()
            ),
            "note": "every registered model at layers/width given, every other key at its default; seconds: median "
            "of the rounds of one forward + backward + AdamW step (best_s: the least disturbed round; every round in "
            "`seconds`), all models alternated within each round, on "
            "`threads` threads of a machine shared with other jobs (its load average is in provenance); FLOPs: "
            "each model's forward_flops (matrix products) x 3; activation_mb: tensors saved for backward. "
            "kernels: a family's `scan` choices at the same weights, kernel_rounds rounds, speedup = other_s / "
            "default_s of the medians (> 1: the default is faster), speedup_best of the least disturbed rounds ("
            "the steadier under load), at the common shape and at a long prompt (long_points, d = 20); module_*: the "
            "replaced module alone, forward + backward, and its float64 output difference; _mb: activation "
            "memory; max_diff: the largest output difference on one batch (transformers rounds Mamba's norms and "
            "scan inputs and RWKV's keys to float32, so float64 outputs agree to about float32 rounding)",
        },
        seeds={"model": 0, "batches": 1},
    )


if __name__ == "__main__":
    main()
