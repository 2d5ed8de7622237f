"""`iclab lm ...`: the language-model study commands. Only argparse at import time: the CLI must start fast."""

from __future__ import annotations

import argparse

from .shared import OVERRIDES


def _numbers(text: str, kind=float) -> list:
    from ..errors import UserError

    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise UserError(f"expected comma-separated numbers, got {text!r}") from e


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()  # padding and generation hints do not apply to scoring


FLAGS = {  # flag -> StudyConfig key; a flag given on the command line overrides --config and --set
    "model": "model",
    "task": "task",
    "limit": "limit",
    "val": "val",
    "separator": "separator",
    "max_tokens": "max_tokens",
    "batch": "batch",
    "device": "device",
    "dtype": "dtype",
    "threads": "threads",
    "train": "train_file",
    "test": "test_file",
    "revision": "revision",
    "measures": "measures",
    "scoring": "scoring",
}


def _cmd_run(args: argparse.Namespace) -> int:
    from ..config import apply_overrides, read_yaml
    from ..errors import UserError
    from ..lm.study import StudyConfig, run_study, run_sweep
    from ..spec import build

    _quiet_transformers()
    values = read_yaml(args.config) if args.config else {}
    values = apply_overrides(values, args.set)
    values |= {key: getattr(args, flag) for flag, key in FLAGS.items() if getattr(args, flag) is not None}
    if args.trust_remote_code:
        values["trust_remote_code"] = True
    shortcuts = [mode for flag, mode in (("calibrate", "calibrated"), ("pmi", "pmi")) if getattr(args, flag)]
    if len(shortcuts) > 1 or (shortcuts and args.scoring and args.scoring != shortcuts[0]):
        raise UserError("--calibrate and --pmi each choose the headline scoring (every scoring is reported anyway): "
                        "give one, or --scoring plain|calibrated|pmi")
    if shortcuts:
        values["scoring"] = shortcuts[0]
    if args.no_untrained:
        values["untrained"] = False
    if args.seed is not None:
        values["seeds"] = _numbers(args.seed, int)
    if args.k is not None:
        values["k"] = _numbers(args.k, int)
    if args.ft is not None:
        values["ft"] = [f.strip() for f in args.ft.split(",") if f.strip()]
    if args.lrs:
        values["lrs"] = _numbers(args.lrs)
    if args.momentum is not None:
        eta = _numbers(args.momentum)
        if len(eta) != 1:
            raise UserError(f"--momentum takes one eta in [0, 1), got {args.momentum!r}")
        values["momentum"] = eta[0]
    for key in ("model", "task"):
        if key not in values:
            raise UserError(f"give --{key} (or '{key}:' in --config)")
    if not args.out:
        raise UserError("give --out, the output folder")
    ks = values.get("k")
    sweep = isinstance(ks, list) and len(ks) > 1
    if isinstance(ks, list):
        if not ks or any(not isinstance(k, int) or k < 0 for k in ks):
            raise UserError(f"k must be numbers >= 0 (0: zero-shot only), got {ks}")
        values["k"] = max(ks) if sweep else ks[0]
    config = build(StudyConfig, values, prefix="lm run")
    if sweep:
        results = run_sweep(config, ks, args.out, progress=not args.quiet)
        print("\n".join(results["table"]))
        print(f"wrote {args.out}/sweep.json, sweep.md and accuracy_vs_k.png ({results['seconds']:.0f} s)")
        return 0
    results = run_study(config, args.out, progress=not args.quiet)
    print("\n".join(results_lines(results)))
    print(f"wrote {args.out}/results.json and results.md ({results['seconds']:.0f} s)")
    return 0


def results_lines(results: dict) -> list[str]:
    from ..icl_vs_ft.engine import SCORINGS
    from ..icl_vs_ft.results import value

    spread = results["spread"]["trained"]["scoring"]
    momentum = f", momentum eta {results['momentum']:g}" if results.get("momentum") is not None else ""
    lines = []
    for mode in SCORINGS:
        cells = {c: value(spread.get(f"{c}.{mode}.accuracy"), True) for c in ("zsl", "icl", "ft")}
        text = ", ".join(f"{c.upper()} {v}" for c, v in cells.items())
        headline = " (headline)" if mode == results["scoring"] else ""
        lines.append(f"accuracy % {mode}{headline}{momentum}: {text}")
    for key in ("rec2ftp", "simaou", "simam_icl_ft", "simam_icl_zsl", "kendall"):
        value, base = results[key], results["random"].get(key)
        text = f"  {key:<14} {'n/a' if value is None else f'{value:.3f}'}"
        if base is not None:
            text += f"  (random update {base:.3f})"
        if "untrained" in results and results["untrained"].get(key) is not None:
            text += f"  (untrained {results['untrained'][key]:.3f})"
        lines.append(text)
    return lines


def _cmd_convert(args: argparse.Namespace) -> int:
    import time

    from ..lm.loading import convert

    _quiet_transformers()
    started = time.perf_counter()
    folder = convert(args.source, args.out, args.dtype)
    print(f"wrote {folder} in {time.perf_counter() - started:.0f} s; use it with --model {folder}")
    return 0


def _cmd_tasks(args: argparse.Namespace) -> int:
    from ..lm.tasks import load_task, packaged_tasks

    for name in packaged_tasks():
        task = load_task(name)
        where = f"hub {task.hub}{'/' + task.hub_config if task.hub_config else ''}" if task.hub else "offline"
        print(f"{name:<22} {where:<22} {task.description}")
        print(f"{'':<22} template {task.template!r}, labels {task.words}")
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ..errors import UserError
    from ..files import atomic_write_text
    from ..icl_vs_ft.results import measures_summary_table, summary_table

    results = []
    for folder in args.runs:
        path = Path(folder) / "results.json"
        if not path.is_file():
            raise UserError(f"{path} does not exist: run `iclab lm run --out {folder}` first")
        results.append(json.loads(path.read_text()))
    lines = summary_table(results) + ["", "Every measure beside every baseline and FT method:", ""]
    lines += measures_summary_table(results)
    print("\n".join(lines))
    if args.out:
        atomic_write_text(Path(args.out), "\n".join(lines) + "\n")
        print(f"wrote {args.out}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `iclab lm` and its subcommands."""
    lm = sub.add_parser("lm", help="ICL vs finetuning on pretrained causal LMs (Hugging Face, GGUF)")
    cmds = lm.add_subparsers(dest="lm_command", required=True, metavar="LM_COMMAND")

    p = cmds.add_parser("run", help="ZSL, ICL and K/V finetuning on a text task -> OUT/results.json, results.md")
    p.add_argument("--config", help="a study YAML (keys of StudyConfig: model, task, k, seeds, ft, measures, ...)")
    p.add_argument("--set", **OVERRIDES | {"help": "override a key of --config"})
    p.add_argument("--model", help="alias (smollm2), model folder, .gguf file or hub id")
    p.add_argument("--task", help="packaged task name (`iclab lm tasks`) or a task .yaml file")
    p.add_argument("--out", help="output folder (results are cached here: a re-run resumes)")
    p.add_argument(
        "--k", help="demonstrations (default 16; cut to fit --max-tokens), or a sweep: 0,1,2,4,8,16,32 (0: zero-shot)"
    )
    p.add_argument("--seed", help="demonstration seed, or several: 0,1,2 (default 0)")
    p.add_argument("--limit", type=int, help="test queries (default 64; Dai et al. used up to 2000)")
    p.add_argument("--val", type=int, help="validation queries that pick FT's learning rate (16)")
    p.add_argument("--lrs", help="FT learning-rate grid, comma-separated (default 1e-3,1e-2,0.1)")
    p.add_argument(
        "--measures", choices=["dai", "dual"], help="dai (default: as the authors' code computes them) or dual"
    )
    p.add_argument("--ft", help="finetuning methods, comma-separated: kv-sgd (default, Dai), lcgd (Deutch), full")
    p.add_argument(
        "--scoring",
        choices=["plain", "calibrated", "pmi"],
        help="the headline scoring, which also picks FT's learning rate (default plain); every scoring is reported: "
        "plain, calibrated (minus a content-free input's label scores), pmi (minus the label scores after the "
        "template's tail alone, lm-evaluation-harness's acc_mutual_info)",
    )
    p.add_argument("--calibrate", action="store_true", help="shortcut for --scoring calibrated")
    p.add_argument("--pmi", action="store_true", help="shortcut for --scoring pmi")
    p.add_argument("--separator", help="after each demonstration: eos (default, Dai et al.) or a text")
    p.add_argument("--max-tokens", type=int, help="token budget of a prompt (default 2048)")
    p.add_argument("--batch", type=int, help="queries per forward pass (default 8)")
    p.add_argument(
        "--momentum",
        metavar="ETA",
        help="patch momentum attention into the model at inference: + sum_{i<t} ETA^(t-i) v_i, ETA in [0, 1) (off)",
    )
    p.add_argument("--no-untrained", action="store_true", help="skip the untrained-model baseline (halves the time)")
    p.add_argument("--train", help="local train file (CSV/JSONL/JSON/parquet) in place of the task's data")
    p.add_argument("--test", help="local test file in place of the task's data")
    p.add_argument("--device", help="cpu (default), cuda, cuda:1, mps")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--threads", type=int, help="torch threads (default 1; 0 keeps torch's default)")
    p.add_argument("--revision", help="a hub model's branch, tag or commit (e.g. a safetensors conversion)")
    p.add_argument("--trust-remote-code", action="store_true", help="run a hub model's own code (off by default)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_run)

    p = cmds.add_parser("convert", help="dequantise a GGUF model once into a safetensors folder that loads fast")
    p.add_argument("source", help="a .gguf file, or an alias (smollm2)")
    p.add_argument("--out", help="folder to create (default for an alias: ~/.cache/iclab/models/ALIAS)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.set_defaults(func=_cmd_convert)

    p = cmds.add_parser("tasks", help="list the packaged tasks with their templates and label words")
    p.set_defaults(func=_cmd_tasks)

    p = cmds.add_parser("summary", help="one Markdown table of several `lm run` folders")
    p.add_argument("runs", nargs="+", metavar="OUT")
    p.add_argument("--out", help="also write the table to this file")
    p.set_defaults(func=_cmd_summary)
