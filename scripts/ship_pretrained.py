"""Train the recipes' full-size models (or reuse them from --out) and copy them into the package, so that
`iclab reproduce NAME --pretrained` renders every figure in seconds.

    python scripts/ship_pretrained.py --out runs/reproduce-full
    python scripts/ship_pretrained.py --out runs/reproduce-full --only lsa_gd   # one model (its folder's name)
    python scripts/ship_pretrained.py --out runs/reproduce-full --only architectures,length  # a recipe's models
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from iclab.evaluation.curves import evaluate, write_curves
from iclab.files import atomic_write_json
from iclab.provenance import provenance
from iclab.recipes import architectures, icl_vs_ft, length, lsa_gd, study_models
from iclab.recipes.models import PRETRAINED, ensure_model, export_pretrained, model_names
from iclab.recipes.trained import ensure_study_model
from iclab.training.runs import load_model, read_config

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "iclab" / "pretrained"


def stamp(dest: Path) -> Path:
    """Record beside the shipped weights the command, commit, date and machine that made them; the settings are
    the config.json beside it (and, for a recipe's model, its full-scale file in recipes/scales/)."""
    seed = json.loads((dest / "config.json").read_text()).get("seed") if (dest / "config.json").is_file() else None
    atomic_write_json(dest / "provenance.json", {"provenance": provenance(seeds=[seed]), "settings": "config.json"})
    print(f"shipped {dest}")
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--only", default="", help="ship only these models, by folder name, comma-separated")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    only = set(filter(None, args.only.split(",")))
    lengths = {length.run_name(name): config for name, config in length.configs(PRETRAINED).items()}
    # one model per architecture and task ships: the rate its sweep picked
    sweeps = list(dict.fromkeys(architectures.shipped_name(a, t) for a, t, _, _ in architectures.runs(PRETRAINED)))
    everything = [*model_names(PRETRAINED), *study_models(), icl_vs_ft.MODEL_NAME, lsa_gd.MODEL_NAME, *lengths]
    everything += sweeps
    groups = {architectures.NAME: sweeps, length.NAME: list(lengths)}  # a recipe's name: every model it ships
    only = {m for name in only for m in groups.get(name, [name])}
    if only - set(everything):
        parser.error(f"--only: no shipped model named {', '.join(sorted(only - set(everything)))}; "
                     f"choose from {', '.join(everything)}")
    wanted = only or set(everything)
    for name in [n for n in model_names(PRETRAINED) if n in wanted]:
        run = ensure_model(name, args.out, PRETRAINED, pretrained=False, progress=True)
        config = read_config(run)
        model, _ = load_model(run, config)
        write_curves(run / "eval" / "curves.csv", evaluate(model, config, baselines=["least_squares"]))
        stamp(export_pretrained(run, name, PACKAGE))
    for name, config in [(n, c) for n, c in study_models().items() if n in wanted]:
        run = ensure_study_model(name, config, args.out, PRETRAINED, pretrained=False, progress=True)
        stamp(export_pretrained(run, name, PACKAGE))
    if icl_vs_ft.MODEL_NAME in wanted:  # the keywords LM, with its pretraining checkpoints
        folder = args.out / "models" / "full" / icl_vs_ft.MODEL_NAME
        icl_vs_ft.ensure_model(folder, icl_vs_ft.SIZES["full"]["steps"], progress=True)
        stamp(icl_vs_ft.export_model(folder, PACKAGE))
    if lsa_gd.MODEL_NAME in wanted:  # the linear self-attention layer, with its training log (the figure plots it)
        folder = args.out / "models" / "full" / lsa_gd.MODEL_NAME
        lsa_gd.ensure_layer(folder, lsa_gd.model_config(lsa_gd.SIZES["full"]), progress=True)
        stamp(lsa_gd.export_layer(folder, PACKAGE))
    for name, config in [(n, c) for n, c in lengths.items() if n in wanted]:
        run = ensure_study_model(name, config, args.out, PRETRAINED, pretrained=False, progress=True)
        stamp(export_pretrained(run, name, PACKAGE))
    if wanted & set(sweeps):  # the sweep trains and scores (a finished run of the recipe is reused); its picks ship
        if not (args.out / architectures.NAME / "results.json").is_file():
            architectures.run(args.out, PRETRAINED, pretrained=False, progress=True)
        for dest in architectures.ship(args.out, PACKAGE):
            if dest.name in wanted:
                stamp(dest)
            else:
                shutil.rmtree(dest)


if __name__ == "__main__":
    main()
