"""Shared by the benchmark scripts: a table printer and the JSON writer, which stores where each result came from
(`iclab.provenance`: the command, the commit, the date, the machine with its load when the benchmark started)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from iclab.files import atomic_write_json  # noqa: E402
from iclab.provenance import provenance  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# every script imports this module first, so this is the load when the benchmark started; a timing is read against it
LOAD_AT_START = round(os.getloadavg()[0], 2)


def print_table(rows: list[dict]) -> None:
    if not rows:
        return
    cols = list(rows[0])
    width = {c: max(len(c), *(len(_fmt(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.rjust(width[c]) for c in cols))
    for r in rows:
        print("  ".join(_fmt(r[c]).rjust(width[c]) for c in cols))


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def scale(parser: argparse.ArgumentParser, args: argparse.Namespace, *sizes: str) -> str:
    """'full' when the options that size the run (`sizes`) are at the script's defaults, else what was reduced."""
    default = {n: parser.get_default(n) for n in sizes}
    changed = [f"{n}={getattr(args, n)!r} (full: {default[n]!r})" for n in sizes if getattr(args, n) != default[n]]
    return "full" if not changed else "reduced: " + ", ".join(changed)


def write_result(name: str, data: dict, *, seeds: Any = None) -> Path:
    """Write results/NAME.json: `data` and its `provenance`, the machine's load average taken at the start."""
    record = provenance(seeds=seeds)
    record["machine"] |= {"load_average": LOAD_AT_START, "load_average_at_end": round(os.getloadavg()[0], 2)}
    path = RESULTS / f"{name}.json"
    atomic_write_json(path, data | {"provenance": record})
    print(f"wrote {path}")
    return path
