"""Data-parallel training under torchrun: which process this is, and the few collectives training needs.

`torchrun --nproc_per_node N -m iclab.cli train ...` starts N copies (ranks) with RANK, LOCAL_RANK and WORLD_SIZE
set. Every rank builds the same model from the run's seed and advances the same seeded data generator, so all of
them draw the same global batch of B prompts; rank r trains on rows r*B/N .. (r+1)*B/N only, and DDP averages the
gradients. N processes therefore take exactly the steps of one process at batch B (up to floating-point reduction
order), and a checkpoint (one generator state, saved by rank 0) resumes under any number of processes.

Rank 0 alone writes files; `on_main` runs a file-system decision there and hands the result, or the user error,
to every rank, so all ranks fail with the same one-line message instead of hanging in a collective.
"""

from __future__ import annotations

import atexit
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..errors import UserError


@dataclass(frozen=True)
class Context:
    """This process's place in a data-parallel job; rank 0 of 1 when torchrun did not start it."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def context() -> Context:
    """Read the launcher's environment (torchrun, or submitit/SLURM after `export`)."""
    values = {}
    for key, name in (("rank", "RANK"), ("world_size", "WORLD_SIZE"), ("local_rank", "LOCAL_RANK")):
        text = os.environ.get(name, "1" if name == "WORLD_SIZE" else "0")
        if not text.isdigit():
            raise UserError(f"environment variable {name}={text!r} is not a non-negative integer; launch with torchrun")
        values[key] = int(text)
    if values["world_size"] < 1 or values["rank"] >= values["world_size"]:
        raise UserError(f"RANK={values['rank']} must be below WORLD_SIZE={values['world_size']}; launch with torchrun")
    return Context(**values)


def batch_rows(batch_size: int, ctx: Context) -> slice:
    """The rows of each global batch that this rank trains on."""
    if batch_size % ctx.world_size:
        raise UserError(
            f"train.batch_size {batch_size} does not divide among {ctx.world_size} processes; use a multiple of "
            f"{ctx.world_size} (--set train.batch_size=...) or another --nproc_per_node"
        )
    share = batch_size // ctx.world_size
    return slice(ctx.rank * share, (ctx.rank + 1) * share)


def local_device(device: torch.device, ctx: Context) -> torch.device:
    """One GPU per process: `cuda` means cuda:LOCAL_RANK under torchrun; other devices are used as given."""
    if device.type == "cuda" and ctx.distributed:
        return torch.device("cuda", ctx.local_rank)
    return device


def join(ctx: Context, device: torch.device) -> None:
    """Join the process group (nccl for CUDA, gloo otherwise) once per process; a no-op for one process."""
    if not ctx.distributed or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=ctx.rank, world_size=ctx.world_size)
    atexit.register(_destroy)  # after an error; a finished run leaves through `leave`


def leave(ctx: Context) -> None:
    """End a finished run on every rank together: the other ranks wait here until rank 0 has written its last
    checkpoint, then all leave the group while the interpreter is fully alive. (A rank that ran off to exit
    while gloo's threads still held work could abort in C++ at interpreter shutdown under load.)"""
    if ctx.distributed and dist.is_initialized():
        dist.barrier()
        _destroy()


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _wire_device() -> torch.device:
    """Where collectives' tensors must live: nccl moves CUDA tensors only."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def mean(value: torch.Tensor, ctx: Context) -> float:
    """The mean of a scalar over all ranks (the scalar itself for one process)."""
    if not ctx.distributed:
        return value.item()
    total = value.detach().to(_wire_device(), torch.float64).reshape(1)
    dist.all_reduce(total)
    return total.item() / ctx.world_size


def maximum(value: int, ctx: Context) -> int:
    """The largest of an integer over all ranks (the integer itself for one process)."""
    if not ctx.distributed:
        return value
    largest = torch.tensor([value], dtype=torch.int64, device=_wire_device())
    dist.all_reduce(largest, op=dist.ReduceOp.MAX)
    return int(largest.item())


def _broadcast_text(text: str) -> str:
    """Rank 0's string on every rank, sent as bytes (no pickling)."""
    data = torch.tensor(bytearray(text.encode()), dtype=torch.uint8, device=_wire_device())
    size = torch.tensor([data.numel()], dtype=torch.int64, device=data.device)
    dist.broadcast(size, src=0)
    if dist.get_rank() != 0:
        data = torch.empty(int(size.item()), dtype=torch.uint8, device=data.device)
    dist.broadcast(data, src=0)
    return bytes(data.cpu().tolist()).decode()


def on_main(fn: Callable[[], Any], ctx: Context) -> Any:
    """Run `fn` on rank 0 only and return its (JSON-able) result on every rank; a UserError there is raised
    on every rank with the same message."""
    if not ctx.distributed:
        return fn()
    result, error = None, None
    if ctx.is_main:
        try:
            result = fn()
        except UserError as e:
            error = str(e)
    result, error = json.loads(_broadcast_text(json.dumps([result, error])))
    if error is not None:
        raise UserError(error)
    return result
