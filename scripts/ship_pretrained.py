"""Train the recipes' full-size models (or reuse them from --out) and copy them into the package, so that
`iclab reproduce NAME --pretrained` renders every figure in seconds.

    python scripts/ship_pretrained.py --out runs/reproduce-full
"""

from __future__ import annotations

import argparse
from pathlib import Path

from iclab.evaluate import evaluate, write_curves
from iclab.recipes.models import MODELS, ensure_model, export_pretrained
from iclab.runs import load_model, read_config

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "iclab" / "pretrained"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    for name in MODELS:
        run = ensure_model(name, args.out, "full", pretrained=False, progress=True)
        config = read_config(run)
        model, _ = load_model(run, config)
        write_curves(run / "eval" / "curves.csv", evaluate(model, config, baselines=["least_squares"]))
        print(f"shipped {export_pretrained(run, name, PACKAGE)}")


if __name__ == "__main__":
    main()
