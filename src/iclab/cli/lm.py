"""`iclab lm ...`: the language-model study commands. Only argparse at import time: the CLI must start fast."""

from __future__ import annotations

import argparse


def _numbers(text: str, kind=float) -> list:
    from ..errors import UserError

    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise UserError(f"expected comma-separated numbers, got {text!r}") from e


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()  # padding and generation hints do not apply to scoring


def _cmd_run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..lm.study import StudyConfig, run_study
    from ..spec import build

    _quiet_transformers()
    values = {
        "model": args.model,
        "task": args.task,
        "k": args.k,
        "seeds": _numbers(args.seed, int),
        "limit": args.limit,
        "val": args.val,
        "calibrate": args.calibrate,
        "separator": args.separator,
        "max_tokens": args.max_tokens,
        "batch": args.batch,
        "untrained": not args.no_untrained,
        "device": args.device,
        "dtype": args.dtype,
        "threads": args.threads,
        "train_file": args.train,
        "test_file": args.test,
        "trust_remote_code": args.trust_remote_code,
        "revision": args.revision,
    }
    if args.lrs:
        values["lrs"] = _numbers(args.lrs)
    if args.momentum is not None:
        eta = _numbers(args.momentum)
        if len(eta) != 1:
            raise UserError(f"--momentum takes one eta in [0, 1), got {args.momentum!r}")
        values["momentum"] = eta[0]
    config = build(StudyConfig, values, prefix="lm run")
    results = run_study(config, args.out, progress=not args.quiet)
    print("\n".join(results_lines(results)))
    print(f"wrote {args.out}/results.json and results.md ({results['seconds']:.0f} s)")
    return 0


def results_lines(results: dict) -> list[str]:
    acc = results["accuracy"]
    fmt = {k: "n/a" if v is None else f"{100 * v:.1f}" for k, v in acc.items()}
    scoring = results["scoring"]
    if results.get("momentum") is not None:
        scoring += f", momentum eta {results['momentum']:g}"
    lines = [f"accuracy % ({scoring}): ZSL {fmt['zsl']}, ICL {fmt['icl']}, FT {fmt['ft']}"]
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
    from ..lm.study import summary_table

    results = []
    for folder in args.runs:
        path = Path(folder) / "results.json"
        if not path.is_file():
            raise UserError(f"{path} does not exist: run `iclab lm run --out {folder}` first")
        results.append(json.loads(path.read_text()))
    lines = summary_table(results)
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
    p.add_argument("--model", required=True, help="alias (smollm2), model folder, .gguf file or hub id")
    p.add_argument("--task", required=True, help="packaged task name (`iclab lm tasks`) or a task .yaml file")
    p.add_argument("--out", required=True, help="output folder (results are cached here: a re-run resumes)")
    p.add_argument("--k", type=int, default=16, help="demonstrations (default 16; cut to fit --max-tokens)")
    p.add_argument("--seed", default="0", help="demonstration seed, or several: 0,1,2 (default 0)")
    p.add_argument("--limit", type=int, default=64, help="test queries (default 64; Dai et al. used up to 2000)")
    p.add_argument("--val", type=int, default=16, help="validation queries that pick FT's learning rate (16)")
    p.add_argument("--lrs", help="FT learning-rate grid, comma-separated (default 1e-3,1e-2,0.1)")
    p.add_argument(
        "--calibrate", action="store_true", help="contextual calibration: subtract a content-free input's label scores"
    )
    p.add_argument("--separator", default="eos", help="after each demonstration: eos (default, Dai et al.) or a text")
    p.add_argument("--max-tokens", type=int, default=2048, help="token budget of a prompt (default 2048)")
    p.add_argument("--batch", type=int, default=8, help="queries per forward pass (default 8)")
    p.add_argument(
        "--momentum",
        metavar="ETA",
        help="patch momentum attention into the model at inference: + sum_{i<t} ETA^(t-i) v_i, ETA in [0, 1) (off)",
    )
    p.add_argument("--no-untrained", action="store_true", help="skip the untrained-model baseline (halves the time)")
    p.add_argument("--train", help="local train file (CSV/JSONL/JSON/parquet) in place of the task's data")
    p.add_argument("--test", help="local test file in place of the task's data")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 0 keeps torch's default)")
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
