"""`iclab grid GRID.yaml`: a grid of config overrides (gridfile.py) expanded into runs, planned, executed on an
existing engine (engines.py: local processes, SLURM through submitit, Dask) and collected into one table
(results.py).

Every run is an ordinary run directory OUT/NAME, so every iclab command works on it. Running the same grid again
skips complete runs, resumes half-finished ones from their last checkpoint and starts the rest (RunDir decides,
here as a plan and again, under the run's lock, in the job); a folder trained with other settings stops the grid
before anything runs. Ctrl-C or SIGTERM stops the running runs after their current step, with a checkpoint
(engines.py), writes the results so far and raises `Interrupted`: running the grid again resumes them exactly.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from ..errors import UserError
from ..files import atomic_write_json
from ..interrupts import Interrupted, signal_name
from ..training.runs import RunDir
from .engines import check_engine, execute, make_job, needs_evaluation
from .gridfile import Run, expand, read_grid
from .results import default_ks, write_results


def plan(runs: list[Run], evaluate: bool) -> list[Run]:
    """Set each run's state from its folder; a folder that holds something else is an error before any work."""
    for run in runs:
        decision = RunDir(run.run_dir).decide(run.config)
        if decision == "reuse":
            decision = "evaluate" if evaluate and needs_evaluation(run.run_dir) else "complete"
        run.state = decision
    return runs


def run_grid(
    grid_path: str | Path,
    out: str | Path | None = None,
    engine: str = "local",
    jobs: int = 1,
    overrides: list[str] | None = None,
    scheduler: str | None = None,
    wait: bool = True,
    collect_only: bool = False,
    dry_run: bool = False,
    progress: bool = True,
) -> dict:
    """Expand, plan, execute and collect a grid; returns {"runs", "outcomes", "rows"}."""
    if jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {jobs}")
    grid = read_grid(grid_path)
    out = Path(out) if out else Path("runs") / grid.path.stem
    runs = plan(expand(grid, out, overrides), grid.collect.evaluate)
    if not collect_only:
        check_engine(engine, grid.slurm)  # e.g. an unknown SLURM setting fails now, not after jobs are queued
    ks = grid.collect.k or default_ks(runs[0].config)
    for k in ks:
        if not 0 <= k < runs[0].config["points"]:
            raise UserError(f"collect.k {k}: the prompts have k = 0 .. {runs[0].config['points'] - 1}")
    todo = [r for r in runs if r.state != "complete"]
    counts = {s: sum(r.state == s for r in runs) for s in ("complete", "resume", "evaluate", "new")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    if progress or dry_run:
        print(f"{len(runs)} runs in {out} ({summary})" + ("" if collect_only or dry_run else f"; engine {engine}"))
    if dry_run:
        for r in runs:
            print(f"  {r.state:<9} {r.name}")
        return {"runs": runs, "outcomes": {}, "rows": []}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "sweep.json", {"grid": str(grid.path.resolve()), "runs": {r.name: r.values for r in runs}})
    outcomes: dict[str, dict] = {}
    interrupted: KeyboardInterrupt | None = None
    if not collect_only and todo:
        job_list = [
            make_job(r.name, r.run_dir, r.config, out / "logs" / f"{r.name}.log", grid.collect.evaluate) for r in todo
        ]
        started = time.perf_counter()
        try:
            outcomes = execute(job_list, engine, out, jobs, grid.slurm, scheduler, wait, progress)
        except KeyboardInterrupt as e:  # the local engine's runs stopped at a checkpoint
            interrupted = e
        if progress:
            print(f"{len(todo)} jobs on {engine} in {time.perf_counter() - started:.0f} s")
    rows = write_results(out, runs, list(grid.grid), ks, outcomes)
    if interrupted is not None:
        signum = getattr(interrupted, "signum", signal.SIGINT)
        raise Interrupted(
            signum,
            f"interrupted by {signal_name(signum)}; finished runs are kept and the others stopped at a checkpoint: "
            f"rerun the same command to resume them ({out})",
        )
    return {"runs": runs, "outcomes": outcomes, "rows": rows}


sweep_run = run_grid  # the name before `iclab sweep-run` became `iclab grid`
