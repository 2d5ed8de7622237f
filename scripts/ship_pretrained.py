"""Train the recipes' full-size models (or reuse them from --out) and copy them into the package, so that
`iclab reproduce NAME --pretrained` renders every figure in seconds.

    python scripts/ship_pretrained.py --out runs/reproduce-full
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from iclab.evaluation.curves import evaluate, write_curves
from iclab.recipes import icl_vs_ft, study_models
from iclab.recipes.models import PRETRAINED, ensure_model, export_pretrained, model_names
from iclab.recipes.trained import ensure_study_model
from iclab.training.runs import load_model, read_config

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "iclab" / "pretrained"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in model_names(PRETRAINED):
        run = ensure_model(name, args.out, PRETRAINED, pretrained=False, progress=True)
        config = read_config(run)
        model, _ = load_model(run, config)
        write_curves(run / "eval" / "curves.csv", evaluate(model, config, baselines=["least_squares"]))
        print(f"shipped {export_pretrained(run, name, PACKAGE)}")
    for name, config in study_models().items():
        run = ensure_study_model(name, config, args.out, PRETRAINED, pretrained=False, progress=True)
        print(f"shipped {export_pretrained(run, name, PACKAGE)}")
    # the ICL-vs-finetuning recipe's token model: weights and settings only (its study runs in minutes)
    folder = args.out / "models" / "full" / icl_vs_ft.MODEL_NAME
    icl_vs_ft.ensure_model(folder, icl_vs_ft.SIZES["full"]["steps"], progress=True)
    print(f"shipped {icl_vs_ft.export_model(folder, PACKAGE / icl_vs_ft.MODEL_NAME)}")


if __name__ == "__main__":
    main()
