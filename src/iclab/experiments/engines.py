"""Where the runs of a sweep execute: existing engines, each behind the same `submit(job) -> future` call.

    local           a pool of local worker processes (--jobs N), the default
    slurm           a SLURM cluster through submitit: one job array, requeued from its last checkpoint when
                    SLURM pre-empts it or its time runs out
    submitit-local  submitit's local executor: the SLURM code path on this machine, to try a setup before a cluster
    dask            a Dask cluster (--scheduler ADDRESS, e.g. one started by dask-jobqueue on PBS, SGE, LSF or
                    HTCondor), or a local Dask cluster of --jobs workers

A job is a JSON-able dict naming one run (see `run_job`); whatever runs it, the run directory is the only
record, so running a job twice never duplicates a result: RunDir.ensure leaves a complete run alone, resumes a
half-finished one from its checkpoint, and reports one that another process is training (its log, or the run
itself, locked) as busy.

Ctrl-C or SIGTERM on the local engine reaches the workers (a terminal sends Ctrl-C to them too; this process
passes either signal on): each running run stops after its current step with a checkpoint, jobs not started are
dropped, and `execute` raises `Interrupted`; running the grid again resumes them.

submitit and Dask are optional and imported only by the engines that need them.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import multiprocessing
import os
import shutil
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import CancelledError, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..config import load_config
from ..errors import UserError
from ..evaluation.curves import evaluate, merge_curves
from ..evaluation.report import render_report
from ..files import atomic_write_json
from ..interrupts import Interrupted, deferred, received, record_signals, signal_name
from ..plugins import load_plugins
from ..spec import unknown_key_error
from ..training.checkpoint import latest_checkpoint
from ..training.runs import RunBusy, RunDir, load_model, read_config
from ..training.trainer import resume, train

ENGINES = ["local", "slurm", "submitit-local", "dask"]
SUBMITIT_CLUSTERS = {"slurm": "slurm", "submitit-local": "local"}


def needs_evaluation(run_dir: Path) -> bool:
    """True unless eval/curves.csv is newer than the run's latest checkpoint."""
    curves = Path(run_dir) / "eval" / "curves.csv"
    if not curves.is_file():
        return True
    return curves.stat().st_mtime < (latest_checkpoint(run_dir) / "state.json").stat().st_mtime


def evaluate_run(run_dir: Path) -> None:
    """What `iclab eval RUN_DIR` does with the run's own task and baselines: curves.csv, plots, report.md."""
    config = read_config(run_dir)
    model, _ = load_model(run_dir, config)
    merge_curves(Path(run_dir) / "eval" / "curves.csv", evaluate(model, config))
    render_report(run_dir)


@contextlib.contextmanager
def _held(log: Path) -> Iterator[Any]:
    """The run's log file, opened for appending and locked; None if another process holds it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released by the OS even if this process dies
        except BlockingIOError:
            yield None
            return
        yield f


def make_job(name: str, run_dir: Path, config: dict, log: Path, evaluate: bool = False, threads: int = 0) -> dict:
    """A job for `run_job`: bring run `name` in `run_dir` (trained from `config`) to completion, logging to `log`;
    `threads` > 0 sets the worker's torch threads first (what a config with threads: 0 then keeps)."""
    return {
        "name": name,
        "run_dir": str(Path(run_dir).resolve()),
        "config": config,
        "evaluate": evaluate,
        "log": str(Path(log).resolve()),
        "threads": threads,
    }


def run_job(job: dict) -> dict:
    """Bring one run to completion: train it (or resume it), then evaluate it if asked. Output goes to the job's
    log file. Returns {"name", "status": done|busy|failed|interrupted, "error"}; a failure is reported, not raised,
    so one bad run does not stop the others. A worker that received SIGINT or SIGTERM starts no job."""
    run_dir, name = Path(job["run_dir"]), job["name"]
    if received():
        return {"name": name, "status": "interrupted", "error": f"not started: {signal_name(received())}"}
    with _held(Path(job["log"])) as log:
        if log is None:
            return {"name": name, "status": "busy", "error": "another process is training this run"}
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            print(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {name}", flush=True)
            try:
                if job.get("threads"):
                    torch.set_num_threads(job["threads"])
                load_plugins()  # the --import modules of the command that started this worker (ICLAB_IMPORT)
                config = load_config(base=job["config"])
                run = RunDir(run_dir)
                with run.lock():  # evaluating too: a run another process is writing is not read half-way
                    run.ensure(config, lambda: train(config, run_dir, progress=True), lambda: resume(run_dir))
                    if job["evaluate"] and needs_evaluation(run_dir):
                        evaluate_run(run_dir)
            except Interrupted as e:  # training stopped at a step boundary and saved it
                print(f"iclab: {e}", flush=True)
                return {"name": name, "status": "interrupted", "error": str(e)}
            except RunBusy as e:
                print(f"iclab: busy: {e}", flush=True)
                return {"name": name, "status": "busy", "error": str(e)}
            except UserError as e:
                print(f"iclab: error: {e}", flush=True)
                return {"name": name, "status": "failed", "error": str(e)}
            except Exception as e:  # a bug or a crash: keep the traceback in the log, report one line
                traceback.print_exc()
                return {"name": name, "status": "failed", "error": f"{type(e).__name__}: {e} (see {job['log']})"}
    return {"name": name, "status": "done", "error": ""}


class RequeueableJob:
    """`run_job` for submitit: when SLURM pre-empts the job or its time limit nears, submitit calls `checkpoint`,
    which requeues the same job; it resumes from the run's last checkpoint."""

    def __call__(self, job: dict) -> dict:
        return run_job(job)

    def checkpoint(self, job: dict) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, job)


def submitit_parameters(settings: dict) -> dict:
    """The grid file's `slurm:` section as AutoExecutor parameters: shared ones (timeout_min, gpus_per_node, ...)
    as they are, SLURM-specific ones (partition, account, qos, ...) prefixed with `slurm_`."""
    from submitit import AutoExecutor, SlurmExecutor

    shared = AutoExecutor._valid_parameters()
    allowed = shared | SlurmExecutor._valid_parameters()
    for key in settings:
        if key not in allowed:
            raise unknown_key_error(f"slurm.{key}", allowed, "submitit parameter")
    for key in ("nodes", "tasks_per_node", "ntasks_per_node"):
        if settings.get(key, 1) != 1:
            raise UserError(
                f"slurm.{key}: each sweep run is one process (one GPU); train a data-parallel run with torchrun instead"
            )
    return {(k if k in shared else f"slurm_{k}"): v for k, v in settings.items()}


def check_engine(engine: str, slurm: dict) -> None:
    """Everything about the engine that can be wrong, checked before any run starts."""
    if engine not in ENGINES:
        raise unknown_key_error(engine, ENGINES, "engine")
    if engine in SUBMITIT_CLUSTERS:
        if importlib.util.find_spec("submitit") is None:
            raise UserError(f"--engine {engine} needs submitit: pip install submitit (or iclab[scale])")
        submitit_parameters(slurm)
    if engine == "slurm" and shutil.which("srun") is None:
        raise UserError(
            "--engine slurm: no SLURM here (srun not found); run on a cluster's login node, "
            "or try the same setup on this machine with --engine submitit-local"
        )
    if engine == "dask" and importlib.util.find_spec("distributed") is None:
        raise UserError("--engine dask needs Dask's scheduler: pip install distributed")


def _submitit_executor(engine: str, out: Path, settings: dict) -> Any:
    import submitit

    executor = submitit.AutoExecutor(folder=out / "submitit" / "%j", cluster=SUBMITIT_CLUSTERS[engine])
    params = {"name": f"iclab-{out.name}", "timeout_min": 240} | submitit_parameters(settings)
    try:
        executor.update_parameters(**params)
    except (NameError, AssertionError, ValueError) as e:
        raise UserError(f"slurm settings: {str(e).splitlines()[0]}") from None
    return executor


def _dask_client(scheduler: str | None, workers: int) -> Any:
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="30s")
        except OSError as e:
            raise UserError(f"cannot reach the Dask scheduler at {scheduler}: {e}") from None
    # one single-threaded worker process per job, like the local engine; the runs set their own torch threads
    return Client(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None))


def execute(
    jobs: list[dict],
    engine: str,
    out: Path,
    workers: int = 1,
    slurm: dict | None = None,
    scheduler: str | None = None,
    wait: bool = True,
    progress: bool = True,
) -> dict[str, dict]:
    """Run `jobs` on `engine`; return each job's outcome by name (jobs still queued when `wait` is False are
    reported as "submitted", with their job id)."""
    check_engine(engine, slurm or {})
    if not jobs:
        return {}
    with contextlib.ExitStack() as stack:
        if engine == "local":
            stack.enter_context(deferred())  # a signal is passed on to the workers (_stop_workers)
            context = multiprocessing.get_context("spawn")
            pool = ProcessPoolExecutor(workers, mp_context=context, initializer=record_signals)
            stack.callback(pool.shutdown, cancel_futures=True)
            futures = {job["name"]: pool.submit(run_job, job) for job in jobs}
            outcomes = _wait(futures, progress, _stop_workers)
            if received():
                stopped = [n for n, o in outcomes.items() if o["status"] == "interrupted"]
                raise Interrupted(received(), f"interrupted by {signal_name(received())}; stopped {len(stopped)} runs")
            return outcomes
        elif engine == "dask":
            client = _dask_client(scheduler, workers)
            stack.callback(_close_dask, client, owned=scheduler is None)
            futures = {job["name"]: client.submit(run_job, job, pure=False, key=f"iclab-{job['name']}") for job in jobs}
        else:
            executor = _submitit_executor(engine, out, slurm or {})
            with executor.batch():  # one job array: one scheduler request for the whole sweep
                submitted = [executor.submit(RequeueableJob(), job) for job in jobs]
            futures = {job["name"]: sub for job, sub in zip(jobs, submitted, strict=True)}
            _record_job_ids(out, futures)
            if not wait:
                return {
                    name: {"name": name, "status": "submitted", "error": f"job {f.job_id}"}
                    for name, f in futures.items()
                }
        return _wait(futures, progress)


def _close_dask(client: Any, owned: bool) -> None:
    cluster = client.cluster if owned else None
    client.close()
    if cluster is not None:
        cluster.close()


def _stop_workers(futures: dict[str, Any], signum: int) -> None:
    """Drop the jobs not started and pass the signal on to the worker processes, whose runs then stop after their
    current step with a checkpoint (SIGTERM sent to this process alone would not reach them)."""
    for future in futures.values():
        future.cancel()
    for worker in multiprocessing.active_children():
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signum)


def _wait(futures: dict[str, Any], progress: bool, on_signal: Any = None) -> dict[str, dict]:
    """Poll the engine's futures (all of them have done() and result()) until every job has finished; inside
    a deferred block, `on_signal(futures, signum)` is called once a SIGINT or SIGTERM has been received."""
    outcomes: dict[str, dict] = {}
    pending = dict(futures)
    signalled = False
    with tqdm(total=len(futures), desc="sweep", unit="run", disable=not progress, dynamic_ncols=True) as bar:
        while pending:
            if on_signal is not None and received() and not signalled:
                on_signal(pending, received())
                signalled = True
            for name, future in list(pending.items()):
                if future.done():
                    outcomes[name] = _outcome(name, future)
                    del pending[name]
                    bar.update(1)
                    if outcomes[name]["status"] not in ("done", "interrupted"):
                        tqdm.write(f"{name}: {outcomes[name]['status']}: {outcomes[name]['error']}")
            if pending:
                time.sleep(0.5)
    return outcomes


def _outcome(name: str, future: Any) -> dict:
    """A job's result, or its crash (killed worker, SLURM failure) as a failed outcome."""
    try:
        return future.result()
    except CancelledError:  # dropped by _stop_workers
        return {"name": name, "status": "interrupted", "error": "not started"}
    except Exception as e:
        return {"name": name, "status": "failed", "error": f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"}


def _record_job_ids(out: Path, futures: dict[str, Any]) -> None:
    """Keep the scheduler's job ids beside the sweep, so that a user can find a run's job (squeue, sacct)."""
    path = out / "jobs.json"
    known = json.loads(path.read_text()) if path.is_file() else {}
    atomic_write_json(path, known | {name: str(f.job_id) for name, f in futures.items()})
