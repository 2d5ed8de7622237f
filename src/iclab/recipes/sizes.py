"""Recipe sizes as data: each recipe's settings at each scale live in a YAML file of their own,
recipes/scales/NAME/SCALE.yaml (scales/models/ holds the models the four sweep recipes share).

Scales: quick (CI, minutes), full (the README's CPU numbers, the shipped checkpoints) and paper (the papers'
settings, for GPUs). A file that trains iclab configs gives them in the grid files' form, `base:` a packaged
config (demo, garg) and `set:` dotted overrides of it; beside them stand the recipe's own keys (steps, pools, ...).
Each recipe declares the keys it takes as a dataclass and reads its files through `Sizes(NAME, Schema)`, which
validates a scale's file on first use (spec.build: an unknown key is a one-line error with a did-you-mean).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterator, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..config import Config, load_config, packaged_config, read_yaml, set_key
from ..errors import UserError
from ..spec import build, unknown_key_error

SCALES = ("quick", "full", "paper")
FOLDER = Path(str(resources.files("iclab") / "recipes" / "scales"))
_DEVICE: ContextVar[str | None] = ContextVar("recipe_device", default=None)


@dataclass
class Trained:
    """The config of a trained run, as in a grid file: a packaged config (none: the config's defaults) and dotted
    overrides of it."""

    base: str | None = None
    set: dict = field(default_factory=dict)


def read_scale(recipe: str, scale: str, schema: type) -> dict:
    """The validated settings of `recipe` at `scale`, as plain dicts and lists."""
    path = FOLDER / recipe / f"{scale}.yaml"
    if not path.is_file():
        raise unknown_key_error(scale, [p.stem for p in (FOLDER / recipe).glob("*.yaml")], f"scale of '{recipe}'")
    try:
        return dataclasses.asdict(build(schema, read_yaml(path)))
    except UserError as e:
        raise UserError(f"{path}: {str(e).replace('config key', 'scale file key')}") from None


class Sizes(MutableMapping):
    """A recipe's settings by scale (`SIZES[mode]`), each read from its file when first asked for. Setting a scale
    replaces it in memory (tests give tiny sizes that way); deleting it reads the file again."""

    def __init__(self, recipe: str, schema: type):
        self.recipe, self.schema, self._read = recipe, schema, {}

    def __getitem__(self, scale: str) -> dict:
        if scale not in self._read:
            self._read[scale] = read_scale(self.recipe, scale, self.schema)
        return self._read[scale]

    def __setitem__(self, scale: str, value: dict) -> None:
        self._read[scale] = value

    def __delitem__(self, scale: str) -> None:
        del self._read[scale]

    def __contains__(self, scale: object) -> bool:
        return scale in self._read or (FOLDER / self.recipe / f"{scale}.yaml").is_file()

    def __iter__(self) -> Iterator[str]:
        return iter([s for s in SCALES if s in self])

    def __len__(self) -> int:
        return len(list(iter(self)))


@contextlib.contextmanager
def on_device(device: str | None) -> Iterator[None]:
    """Every config the recipes build inside this block trains on `device` (None: the scale file's own)."""
    token = _DEVICE.set(device)
    try:
        yield
    finally:
        _DEVICE.reset(token)


def config_data(part: dict, extra: dict | None = None) -> dict:
    """The raw config of a `base:` / `set:` part, then `extra` (dotted keys the recipe adds, e.g. its task), on the
    device of `on_device`."""
    data = read_yaml(packaged_config(part["base"])) if part.get("base") else {}
    device = _DEVICE.get()
    for key, value in (part["set"] | (extra or {}) | ({"device": device} if device else {})).items():
        set_key(data, key, copy.deepcopy(value))
    return data


def training_config(part: dict, extra: dict | None = None) -> Config:
    """The validated iclab config of a `base:` / `set:` part (see config_data)."""
    return load_config(base=config_data(part, extra))


@dataclass
class KeywordsLMSize:
    """icl-vs-ft's keys (here, so that its module keeps only its study): the keywords LM's pretraining steps and the
    task instances the study scores."""

    steps: int = field(metadata={"min": 1})
    instances: int = field(metadata={"min": 1})
