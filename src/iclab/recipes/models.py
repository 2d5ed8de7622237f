"""The models the paper recipes train: specialists and mixtures, in a quick (CI) and a full size.

The linear family uses d = 5 with 11 points (k up to 2d); the sinusoid family uses scalar inputs (d = 1), where a
frequency is a plain property of the curve. Everything else is the demo's model and optimiser.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from ..checkpoint import checkpoint_dirs
from ..config import Config, load_config, packaged_config
from ..errors import UserError
from ..runs import read_config, run_status
from ..spec import unknown_key_error
from ..train import resume, train

SINE = {"name": "sinusoid", "freq_min": 0.5, "freq_max": 2.0}
MODELS: dict[str, dict] = {
    "dense": {"dims": 5, "task": {"name": "linear"}},
    "sparse": {"dims": 5, "task": {"name": "sparse_linear", "nnz": 2}},
    "dense_sparse": {
        "dims": 5,
        "task": {
            "name": "mixture",
            "components": [{"name": "linear", "weight": 0.5}, {"name": "sparse_linear", "nnz": 2, "weight": 0.5}],
        },
    },
    "line": {"dims": 1, "task": {"name": "linear"}},
    "sine": {"dims": 1, "task": SINE},
    "line_sine": {
        "dims": 1,
        "task": {"name": "mixture", "components": [{"name": "linear", "weight": 0.5}, SINE | {"weight": 0.5}]},
    },
}
STEPS = {"quick": 1500, "full": 6000}
PRETRAINED = "full"  # the mode whose models ship with the package


def model_config(name: str, mode: str) -> Config:
    if name not in MODELS:
        raise unknown_key_error(name, MODELS, "recipe model")
    base = load_config(packaged_config("demo")).to_dict()
    spec = MODELS[name]
    base |= {"dims": spec["dims"], "task": spec["task"]}
    base["train"] |= {"steps": STEPS[mode], "checkpoint_every": 1000}
    base["eval"]["baselines"] = ["least_squares"]
    base["threads"] = 0  # the caller's torch thread count (`iclab reproduce --threads N`)
    return load_config(base=base)


def same_settings(a: Config, b: Config) -> bool:
    """Whether two configs train the same model: execution settings (threads, device) may differ."""
    ignore = {"threads", "device"}
    return {k: v for k, v in a.to_dict().items() if k not in ignore} == {
        k: v for k, v in b.to_dict().items() if k not in ignore
    }


def pretrained_dir(name: str) -> Path:
    return Path(str(resources.files("iclab") / "pretrained" / name))


def ensure_model(name: str, root: Path, mode: str, pretrained: bool, progress: bool) -> Path:
    """The run folder of model `name`: shipped with iclab (--pretrained), or trained into root/models/MODE/NAME,
    resuming a partial run and reusing a finished one."""
    if pretrained:
        path = pretrained_dir(name)
        if not (path / "config.json").is_file():
            raise UserError(f"no pretrained checkpoint ships for '{name}'; run without --pretrained to train it")
        return path
    run_dir = root / "models" / mode / name
    wanted = model_config(name, mode)
    status = run_status(run_dir)
    if status is not None and not same_settings(read_config(run_dir), wanted):
        raise UserError(f"{run_dir} was trained with other settings; remove it or choose another --out")
    if status is None:
        if run_dir.exists():
            shutil.rmtree(run_dir)  # an attempt that never reached its first checkpoint
        print(f"training {name} ({STEPS[mode]} steps) into {run_dir}", flush=True)
        train(wanted, run_dir, progress=progress)
    elif status[0] < status[1]:
        print(f"resuming {name} in {run_dir} from step {status[0]}", flush=True)
        resume(run_dir, progress=progress)
    return run_dir


def export_pretrained(run_dir: Path, name: str, dest_root: Path) -> Path:
    """Copy a finished model's config, final weights and stored curves into the package (no optimizer state)."""
    dest = dest_root / name
    shutil.rmtree(dest, ignore_errors=True)
    last = checkpoint_dirs(run_dir)[-1]
    (dest / "checkpoints" / last.name).mkdir(parents=True)
    for f in ("model.safetensors", "state.json"):
        shutil.copy2(last / f, dest / "checkpoints" / last.name / f)
    shutil.copy2(run_dir / "config.json", dest / "config.json")
    (dest / "eval").mkdir()
    shutil.copy2(run_dir / "eval" / "curves.csv", dest / "eval" / "curves.csv")
    return dest
