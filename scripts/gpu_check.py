"""The GPU check (`bash scripts/gpu_check.sh`): what this project can only verify on a CUDA GPU, in under 8 minutes.

On a machine with a CUDA GPU it runs, in this order:
1. the tests that need CUDA (tests/test_gpu_check.py -k cuda: device placement, bf16 autocast, DDP over nccl in
   one process, checkpoints round-tripping between CPU and GPU), in a pytest subprocess;
2. up to STEPS timed training steps of every run `iclab reproduce all --scale paper` would train, planned and built
   by the dry run's own code (iclab.recipes.dryrun), which times each model shape once: a warm-up step, then timed
   steps until STEPS or the shape's share of the timing budget is spent (never fewer than dryrun.TIMED_STEPS);
   a capped shape says so in the JSON;
3. the LM study's engine (`iclab lm run`) on a tiny offline Hugging Face model on the GPU, and on the CPU to compare;
then writes benchmarks/results/gpu.json atomically: the device, each run's seconds per step and projected hours
(paper steps x s/step), the tests' and the engine's outcome, and provenance (command, commit, date, machine).
It exits 1 when a test, a timing or the engine failed (the JSON still records what happened).

Without a GPU it does a dry run and exits 0: it lists the CUDA tests (collected, not run), every paper-scale run,
builds each shape's trainer on the CPU (model, optimizer, data stream) and steps only the small ones (a paper-scale
step takes seconds to minutes on a CPU); it ends with one line saying there is no GPU, and writes nothing.

The timing reuses dryrun.estimate by standing in for dryrun.per_step while each run builds (unittest.mock), so the
runs, their configs and their trainers are exactly the dry run's.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import io
import json
import math
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch

from iclab.files import atomic_write_json
from iclab.provenance import provenance
from iclab.recipes import RECIPES, dryrun, plan, recipe_names
from iclab.recipes.sizes import on_device

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "gpu.json"
STEPS = 200  # timed steps per model shape, at most
DEADLINE = 430  # seconds from the start by which the timings and the LM engine are done (the limit is 480)
TIMING_BUDGET = 300  # seconds for all timings, at most
LM_RESERVE = 90  # seconds kept for the LM engine after the timings
TESTS = [str(ROOT / "tests" / "test_gpu_check.py"), "-k", "cuda"]
TESTS_TIMEOUT = 180
DRY_STEPS = 2  # the dry run's steps on the CPU, for runs with fewer than DRY_PARAMETERS parameters
DRY_PARAMETERS = 50_000
LM_TASK = "shakespeare-genre-ab"
LM_MEASURES = ("rec2ftp", "simaou", "simam_icl_ft", "simam_icl_zsl", "kendall")  # compared with the CPU's
LM_ARGS = ["--k", "4", "--limit", "8", "--val", "4", "--lrs", "0.01,0.1", "--ft", "kv-sgd,lcgd,full", "--quiet"]


@dataclasses.dataclass
class Timing:
    seconds_per_step: float | None  # None: not stepped (dry run) or failed
    steps: int  # timed steps
    capped: bool  # stopped before the steps asked for, by the time budget
    device: str
    error: str | None = None


def measure(step: Callable[[], object], steps: int, budget: float) -> Timing:
    """A warm-up step, then `steps` timed steps, fewer when the next would end past `budget` seconds from now (at
    least dryrun.TIMED_STEPS). `step` is a Trainer's bound train_step; CUDA is synchronised before each clock reading
    (a training step syncs anyway: it returns the loss as a float)."""
    device = torch.device(getattr(getattr(step, "__self__", None), "device", "cpu"))
    if steps == 0:
        return Timing(None, 0, False, str(device))

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    started = time.perf_counter()
    step()
    sync()
    begun = time.perf_counter()
    done = 0
    while done < steps:
        step()
        sync()
        done += 1
        now = time.perf_counter()
        if done >= dryrun.TIMED_STEPS and now + (now - begun) / done > started + budget:
            break
    return Timing((time.perf_counter() - begun) / done, done, done < steps, str(device))


class Timings:
    """Times the planned runs through dryrun.estimate: each new shape gets an equal share of what is left of the
    budget (its build included), so a fast shape leaves time to the slower ones after it."""

    def __init__(self, planned: list, steps: int, budget: float, dry: bool):
        self.steps, self.dry = steps, dry
        self.deadline = time.perf_counter() + budget
        self.shapes_left = len({run.shape for _, run in planned})
        self.by_name = {run.name: run for _, run in planned}
        self.planned = planned
        self.timed: dict[tuple, tuple[str, Timing]] = {}  # shape -> (the run timed for it, its timing)

    def wrapped(self, run: dryrun.Planned) -> dryrun.Planned:
        def seconds() -> float:
            entered = time.perf_counter()
            share = max(0.0, self.deadline - entered) / self.shapes_left
            self.shapes_left -= 1
            steps = (DRY_STEPS if run.parameters < DRY_PARAMETERS else 0) if self.dry else self.steps
            timings, error = [], None

            def per_step(step: Callable[[], object]) -> float:
                timings.append(measure(step, steps, share - (time.perf_counter() - entered)))
                return timings[-1].seconds_per_step or math.nan

            print(f"{'building' if self.dry else 'timing'} {run.name} ...", file=sys.stderr, flush=True)
            try:
                with mock.patch.object(dryrun, "per_step", per_step):
                    per = run.seconds_per_step()
            except Exception as e:  # recorded in the row (out of memory, say); the other shapes still get timed
                error = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"
            if error:  # out of the except block, so that the failed trainer's memory can be freed
                timings.append(Timing(None, 0, False, "?", error))
                per = math.nan
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            self.timed[run.shape] = (run.name, timings[-1])
            return per

        return dataclasses.replace(run, seconds_per_step=seconds)

    def records(self) -> list[dict]:
        """Time (or, in a dry run, build) the runs: one record per run, dryrun.estimate's row with the timing
        behind it and the projected hours."""
        rows = dryrun.estimate([(recipe, self.wrapped(run)) for recipe, run in self.planned])
        records = []
        for row in rows:
            timed_as, timing = self.timed[self.by_name[row["run"]].shape]
            per = None if math.isnan(row["seconds_per_step"]) else row["seconds_per_step"]
            records.append(
                {k: row[k] for k in ("recipe", "run", "steps", "parameters")}
                | {"device": timing.device, "seconds_per_step": per, "steps_timed": timing.steps}
                | {"capped": timing.capped, "timed_as": timed_as}
                | {"projected_hours": None if per is None else per * row["steps"] / 3600, "error": timing.error}
            )
        return records


def line(r: dict) -> str:
    per = "-" if r["seconds_per_step"] is None else f"{r['seconds_per_step']:.4f}"
    hours = "-" if r["projected_hours"] is None else f"{r['projected_hours']:.1f}"
    if r["error"]:
        note = f"FAILED: {r['error']}"
    elif r["timed_as"] != r["run"]:
        note = f"shape of {r['timed_as']}"
    else:
        note = "built" if r["steps_timed"] == 0 else "stepped" + (" (capped by the budget)" if r["capped"] else "")
    return (
        f"{r['recipe']:<20} {r['run']:<44} {r['steps']:>8} {r['parameters']:>11} {r['device']:>7} {per:>8} "
        f"{r['steps_timed']:>5} {hours:>8}  {note}"
    )


def print_rows(records: list[dict]) -> None:
    print(
        f"{'recipe':<20} {'run':<44} {'steps':>8} {'parameters':>11} {'device':>7} {'s/step':>8} {'timed':>5} "
        f"{'hours':>8}  note"
    )
    for r in records:
        print(line(r))


def pytest_command(*extra: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra, *TESTS]


def collect_tests() -> list[str]:
    """The CUDA tests' ids as pytest collects them (nothing runs), in this process: a second interpreter would
    import torch and iclab again, which costs the dry run seconds."""
    import pytest

    class Collected:
        ids: list[str] = []

        def pytest_collection_finish(self, session: pytest.Session) -> None:
            self.ids = [item.nodeid for item in session.items]

    collected, threads, printed = Collected(), torch.get_num_threads(), io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", f"--rootdir={ROOT}", *TESTS], [collected])
    torch.set_num_threads(threads)  # tests/conftest.py sets one thread
    if code != 0 or not collected.ids:
        raise SystemExit(f"gpu_check: pytest collected no CUDA tests (exit status {code}):\n{printed.getvalue()}")
    return collected.ids


def run_tests(timeout: float) -> dict:
    """Run the CUDA tests; they pass only when none was skipped (a skip on a GPU machine means CUDA was not seen)."""
    command = pytest_command("-rs")
    started = time.perf_counter()
    try:
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"passed": False, "summary": f"timed out after {timeout:.0f} s", "command": shlex.join(command[2:])}
    print(result.stdout[-6000:] + result.stderr[-2000:])
    lines = [t for t in result.stdout.splitlines() if t.strip()]
    summary = lines[-1] if lines else "no output"
    passed = result.returncode == 0 and "skipped" not in summary and " passed" in summary
    seconds = round(time.perf_counter() - started, 1)
    return {"passed": passed, "summary": summary, "seconds": seconds, "command": shlex.join(command[2:])}


def lm_engine(device: str) -> dict:
    """`iclab lm run` on a tiny llama (lm/tiny.py, offline) on `device`, then on the CPU: the engine must run on
    the device and find the same accuracies there (the same fp32 model: only rounding differs)."""
    from iclab.cli import main
    from iclab.lm.tiny import save_tiny

    record: dict = {"model": "tiny llama (iclab.lm.tiny)", "task": LM_TASK, "args": shlex.join(LM_ARGS)}
    with tempfile.TemporaryDirectory() as scratch:
        model = save_tiny("llama", Path(scratch) / "tiny-llama")
        results = {}
        for where, name in ((device, "device"), ("cpu", "cpu")):
            out = Path(scratch) / name
            started = time.perf_counter()
            args = ["lm", "run", "--model", str(model), "--task", LM_TASK, *LM_ARGS, "--device", where]
            code = main([*args, "--out", str(out)])
            record[f"{name}_seconds"] = round(time.perf_counter() - started, 1)
            if code != 0:
                return record | {"ok": False, "error": f"iclab lm run --device {where} exited {code}"}
            results[name] = json.loads((out / "results.json").read_text())
    gpu, cpu = results["device"], results["cpu"]
    measures = [k for k in LM_MEASURES if isinstance(gpu.get(k), float) and isinstance(cpu.get(k), float)]
    record |= {"accuracy": gpu["accuracy"], "accuracy_on_cpu": cpu["accuracy"]}
    record["largest_difference_from_cpu"] = max((abs(gpu[k] - cpu[k]) for k in measures), default=0.0)
    return record | {"ok": gpu["accuracy"] == cpu["accuracy"]}


def planned_runs(device: str) -> list:
    """(recipe, run) for every run of every recipe that has a paper scale, on `device`, as the dry run plans them."""
    names = [name for name in recipe_names("all") if "paper" in RECIPES[name].modes]
    with on_device(device):
        return [(name, run) for name in names for run in plan(RECIPES[name], "paper")]


def dry_run() -> int:
    started = time.perf_counter()
    tests = collect_tests()
    print(f"the CUDA tests ({len(tests)}):", *tests, sep="\n  ")
    records = Timings(planned_runs("cpu"), 0, 0.0, dry=True).records()
    print_rows(records)
    lm = f"iclab lm run --model TINY_LLAMA --task {LM_TASK} {shlex.join(LM_ARGS)}"
    print(f"the LM engine: {lm} --device cuda, then --device cpu to compare")
    failed = [r["run"] for r in records if r["error"]]
    if failed:
        print(f"gpu_check: {len(failed)} paper runs failed to build: {', '.join(failed)}", file=sys.stderr)
        return 1
    built = sum(r["timed_as"] == r["run"] for r in records)
    stepped = sum(r["steps_timed"] > 0 for r in records)
    print(
        f"gpu_check: no CUDA GPU on this machine, so this was a dry run: {len(tests)} CUDA tests listed, "
        f"{len(records)} paper runs listed, {built} built on the CPU ({stepped} stepped) in "
        f"{time.perf_counter() - started:.0f} s; nothing timed on a GPU and nothing written"
    )
    return 0


def gpu_run(out: Path, device: str = "cuda") -> int:
    started, record = time.perf_counter(), provenance(device=device)  # the machine's load before the check
    name = torch.cuda.get_device_name(torch.device(device))
    print(f"gpu_check on {name}: the CUDA tests ...", flush=True)
    tests = run_tests(TESTS_TIMEOUT)
    budget = min(TIMING_BUDGET, DEADLINE - LM_RESERVE - (time.perf_counter() - started))
    print(f"timing every paper run: {STEPS} steps a shape at most, {budget:.0f} s in all", flush=True)
    records = Timings(planned_runs(device), STEPS, budget, dry=False).records()
    print_rows(records)
    try:
        engine = lm_engine(device)
    except Exception as e:  # recorded in the JSON with the rest
        engine = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    print(f"the LM engine on {device}: {'ok' if engine['ok'] else 'FAILED'} ({engine})")
    timed = [r for r in records if r["projected_hours"] is not None]
    result = {
        "device": name,
        "cuda": torch.version.cuda,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "steps_per_shape": STEPS,
        "timing_budget_s": round(budget, 1),
        "capped": sorted({r["timed_as"] for r in records if r["capped"]}),
        "total_projected_hours": sum(r["projected_hours"] for r in timed),
        "tests": tests,
        "lm_engine": engine,
        "seconds": round(time.perf_counter() - started, 1),
        "note": "seconds_per_step: the mean of up to steps_per_shape steps after a warm-up, one timing per model "
        "shape (timed_as); projected_hours = steps x seconds_per_step, training steps only, one run at a time",
        "rows": records,
    }
    ok = tests["passed"] and engine["ok"] and len(timed) == len(records)
    atomic_write_json(out, result | {"ok": ok, "provenance": record})
    print(
        f"gpu_check: {'ok' if ok else 'FAILED'}: tests {tests['summary']}; {len(timed)} of {len(records)} paper runs "
        f"timed ({len(result['capped'])} shapes capped), {result['total_projected_hours']:.0f} h projected; "
        f"LM engine {'ok' if engine['ok'] else 'FAILED'}; wrote {out} in {result['seconds']:.0f} s"
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"the JSON written after a GPU run (default {OUT})")
    args = parser.parse_args(argv)
    return gpu_run(args.out) if torch.cuda.is_available() else dry_run()


if __name__ == "__main__":
    sys.exit(main())
