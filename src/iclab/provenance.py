"""Where a result came from: the command, the code's commit, the date and the machine, stored inside the result.

Every results file iclab writes for the docs (recipe checks, benchmarks, shipped models' evaluations) carries
`provenance()`, so a number in the docs can be traced to the command line and the code that produced it.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_PACKAGE = Path(__file__).resolve().parent


# outputs, not code: a results file being rewritten does not make the code that writes it "dirty"
_OUTPUTS = ("results", "benchmarks/results", "docs")


def git_commit(folder: Path = _PACKAGE) -> str:
    """The checkout's commit, with `-dirty` when tracked files other than outputs (results, docs) differ from it;
    'unknown' outside a git checkout."""
    try:
        commit = _git(folder, "rev-parse", "HEAD")
        outside = [f":(top,exclude){path}" for path in _OUTPUTS]
        dirty = _git(folder, "status", "--porcelain", "--untracked-files=no", "--", ":(top)", *outside)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def _git(folder: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=10, check=True)
    return out.stdout.strip()


def machine(device: str = "cpu") -> dict[str, Any]:
    """The facts that make a timing comparable: cores, threads, load at start, device, versions."""
    import torch  # here, so that reading provenance of a file needs no torch

    facts: dict[str, Any] = {
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_average": round(os.getloadavg()[0], 2),
        "device": device,
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if str(device).startswith("cuda") and torch.cuda.is_available():
        facts["device_name"] = torch.cuda.get_device_name(torch.device(device))
    return facts


def command_line(argv: list[str] | None = None) -> str:
    """The command as a user would type it again: `iclab …` for the console script, else the interpreter's argv."""
    argv = list(sys.argv if argv is None else argv)
    if argv and Path(argv[0]).name in ("iclab", "__main__.py"):
        argv[0] = "iclab"
    elif argv and argv[0].endswith(".py"):
        argv = ["python", argv[0], *argv[1:]]
    return shlex.join(argv)


def provenance(*, seeds: Any = None, device: str = "cpu", command: str | None = None) -> dict[str, Any]:
    """A dict to store under a results file's `provenance` key."""
    record: dict[str, Any] = {
        "command": command if command is not None else command_line(),
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(device),
    }
    if seeds is not None:
        record["seeds"] = seeds
    return record
