"""Time to quality of the main job: seconds of training until the demo model's validation error at k = 2d first
falls to 0.1, and the wall time of the whole demo (training + evaluation + report).
Writes benchmarks/results/demo.json.

    python benchmarks/demo.py                    # runs the demo afresh into a temporary folder
    python benchmarks/demo.py --run-dir runs/demo  # reads the checks.json of a demo already run
    python benchmarks/demo.py --set train.steps=500  # a reduced run (its `scale` says so)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import _common

from iclab.config import load_config, packaged_config
from iclab.demo import run_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, help="an existing demo run to read instead of running one")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    args = parser.parse_args()
    if args.run_dir:
        summary = json.loads((args.run_dir / "checks.json").read_text())
    else:
        with tempfile.TemporaryDirectory() as tmp:
            summary = run_demo(Path(tmp) / "demo", args.overrides, progress=True)
    rows = [
        {"check": c["claim"], "result": "PASS" if c["passed"] else "FAIL", "value": c["detail"]}
        for c in summary["checks"]
    ]
    _common.print_table(rows)
    print(f"seconds_to_quality {summary['seconds_to_quality']}, whole demo {summary['demo_seconds']} s")
    _common.write_result(
        "demo",
        {
            "seconds_to_quality": summary["seconds_to_quality"],
            "goal": "seconds_to_quality <= 300; whole demo <= 300 s; checks pass",
            "demo_seconds": summary["demo_seconds"],
            "checks": summary["checks"],
            "passed": summary["passed"],
            "run_dir": str(args.run_dir) if args.run_dir else None,
            "scale": _common.scale(parser, args, "overrides"),
        },
        seeds=None if args.run_dir else [load_config(packaged_config("demo"), args.overrides).seed],
    )


if __name__ == "__main__":
    main()
