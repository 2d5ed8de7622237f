"""Render the docs' tables from committed results files, so that no number in docs/ is typed by hand.

A page marks a rendered block with two HTML comments; everything between them is this script's output:

    <!-- render: KIND ARG ... -->
    (generated)
    <!-- /render -->

Kinds:
    config                      every key of the run config (and the text-LM config) with default and meaning,
                                read from the config dataclasses and the comments beside their fields
    models                      one row per registered architecture (`model.name`): what it is, its own keys, its
                                weights at the default size
    recipes DIR                 one row per recipe check stored under DIR (DIR/NAME/checks.json)
    claims DIR[,DIR] PAGES      one row per recipe: its title linked to PAGES/NAME.md, and how many checks pass
    recipe DIR NAME             the recipe's report section, rendered from DIR/NAME by the recipe itself
    benchmark FILE              a benchmarks/results JSON: its scalar fields and its `rows` as tables
    json FILE KEY[,KEY...]      chosen fields of a JSON file (dotted keys) as a two-column table
    provenance FILE_OR_DIR      where a result came from: command, commit, date, machine

Figures that a rendered block shows are copied under docs/figures/ (mkdocs serves only docs/).

    python scripts/render_docs.py           # rewrite the blocks in place
    python scripts/render_docs.py --check   # exit 1, naming the pages, when a page disagrees with its files
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import json
import re
import shutil
import sys
import tokenize
import types
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FIGURES = DOCS / "figures"
BLOCK = re.compile(r"(<!-- render: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- /render -->)", re.S)


# ---------------------------------------------------------------------------------------------- config reference


def field_comments(cls: type) -> dict[str, str]:
    """The comment of each field of a dataclass: the `#` lines just above it and the one at the end of its line."""
    source = inspect.getsource(cls)
    comments: dict[str, str] = {}
    above: list[str] = []
    pending: tuple[str, int] | None = None  # a field whose line may still end with a comment
    indent = None
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            if pending and tok.start[0] == pending[1]:
                comments[pending[0]] = " ".join([*above, text]).strip() if above else text
                above, pending = [], None
            else:
                above.append(text)
        elif tok.type == tokenize.NAME and tok.start[1] == indent and pending is None:
            pending = (tok.string, tok.start[0])
        elif tok.type == tokenize.INDENT and indent is None:
            indent = len(tok.string)
        elif tok.type == tokenize.NEWLINE and pending:
            if above:
                comments[pending[0]] = " ".join(above)
            above, pending = [], None
        elif tok.type == tokenize.NL and not pending:
            continue
    return {k: v for k, v in comments.items() if not k.startswith("_")}


def config_rows(cls: type, prefix: str = "", default: object = None) -> list[tuple[str, str, str, str]]:
    """(key, type, default, meaning) for every leaf key of a config dataclass, nested sections flattened."""
    hints = typing.get_type_hints(cls)
    comments = {}  # the comments beside each field, inherited ones (a model's name, layers, width) included
    for base in reversed([c for c in cls.__mro__ if dataclasses.is_dataclass(c)]):
        comments |= field_comments(base)
    instance = default if default is not None else _default_instance(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.name.startswith("_"):
            continue
        key, hint = prefix + f.name, hints[f.name]
        value = getattr(instance, f.name) if instance is not None else _field_default(f)
        # a section whose value is a subclass (model: the default architecture's config) shows that class's keys
        nested = type(value) if dataclasses.is_dataclass(value) else _dataclass_of(hint)
        if nested is not None and value is not None:
            rows += config_rows(nested, key + ".", value)
            continue
        meaning = comments.get(f.name, (nested.__doc__ or "").strip() if nested else "")
        limits = _limits(f.metadata)
        rows.append((key, _type_name(hint), _value(value), " ".join(x for x in (meaning, limits) if x)))
    return rows


def _default_instance(cls: type):
    try:
        return cls()
    except TypeError:  # a section with required fields (a curriculum ramp) has no default instance
        return None


def _field_default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return "required"


def _dataclass_of(hint) -> type | None:
    for candidate in (hint, *typing.get_args(hint)):
        if dataclasses.is_dataclass(candidate):
            return candidate
    return None


def _type_name(hint) -> str:
    """`int`, `list[str]`, `int or null`, `ramp or null` (a section written as a mapping)."""
    args = typing.get_args(hint)
    if type(hint) is types.UnionType:
        return " or ".join(_type_name(a) for a in args)
    if hint is type(None):
        return "null"
    if dataclasses.is_dataclass(hint):
        return hint.__name__.lower()
    return hint.__name__ if not args else str(hint).replace("typing.", "")


def _limits(meta) -> str:
    parts = []
    if "choices" in meta:
        parts.append("one of " + ", ".join(f"`{c}`" for c in meta["choices"]))
    for key, sign in (("min", "≥"), ("gt", ">"), ("max", "≤"), ("lt", "<")):
        if key in meta:
            parts.append(f"{sign} {meta[key]}")
    return f"({'; '.join(parts)})" if parts else ""


def _value(value) -> str:
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    return "`" + json.dumps(value) + "`" if value != "required" else "required"


def render_config() -> list[str]:
    from iclab.config import Config, Ramp
    from iclab.text.config import TextConfig

    lines = []
    for title, cls in (("Run config (`iclab train`, `iclab demo`, recipes)", Config),
                       ("Curriculum ramp (`curriculum.dims`, `curriculum.points`)", Ramp),
                       ("Text LM config (`iclab text train`)", TextConfig)):
        lines += [f"**{title}**", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for key, kind, default, meaning in config_rows(cls):
            lines.append(f"| `{key}` | {kind} | {default} | {meaning.replace('|', '/')} |")
        lines.append("")
    return lines[:-1]


def render_models() -> list[str]:
    """One row per registered architecture: what it is, its own keys beyond name / layers / width with their
    defaults, and its weights at the default size (d = 5, 11 points), counted on the meta device."""
    import torch

    from iclab.models import MODELS, ModelConfig

    common = {f.name for f in dataclasses.fields(ModelConfig)}
    lines = ["| `model.name` | architecture | its own keys (defaults) | weights at defaults, d = 5 |"]
    lines.append("|---|---|---|---|")
    for name in MODELS.names():
        cls = MODELS.get(name)
        with torch.device("meta"):
            config = cls()
            weights = config.build(5, 11).num_parameters()
        own = [f"`{f.name}: {json.dumps(getattr(config, f.name))}`" for f in dataclasses.fields(cls)
               if f.init and f.name not in common and not f.name.startswith("_")]
        about = " ".join(inspect.cleandoc(cls.__doc__ or "").split()).replace("|", "/")
        lines.append(f"| `{name}` | {about} | {', '.join(own) or '—'} | {weights:,} |")
    return lines


# ------------------------------------------------------------------------------------------------------- results


def render_recipes(folder: str) -> list[str]:
    base = ROOT / folder
    lines = ["| recipe (seconds) | check | result | numbers |", "|---|---|---|---|"]
    total = 0.0
    for path in sorted(base.glob("*/checks.json")):
        stored = json.loads(path.read_text())
        total += stored.get("seconds") or 0.0
        for i, check in enumerate(stored["checks"]):
            name = f"[{path.parent.name}]({path.parent.name}.md) ({stored.get('seconds', '—')})" if i == 0 else ""
            verdict = "PASS" if check["passed"] else "**FAIL**"
            lines.append(f"| {name} | {check['claim']} | {verdict} | {check['detail']} |")
    return lines + ["", f"{total:.0f} s in all, each recipe's time as its checks.json records it.", "",
                    *render_provenance(folder + "/" + path.parent.name)]


def render_claims(folder: str, pages: str) -> list[str]:
    """One row per recipe: its title linked to its page (under `pages`), and how many of its checks pass."""
    from iclab.recipes import RECIPES

    lines = ["| paper claim | recipe | checks passed |", "|---|---|---|"]
    for name, recipe in RECIPES.items():
        stored = _stored_checks(folder, name)
        if stored is None:
            continue
        passed = sum(c["passed"] for c in stored["checks"])
        lines.append(f"| {recipe.title} | [`{name}`]({pages}{name}.md) | {passed} of {len(stored['checks'])} |")
    return lines


def _stored_checks(folder: str, name: str) -> dict | None:
    """A recipe's checks.json from the first results folder (of several, comma-separated) that has it."""
    for base in folder.split(","):
        path = ROOT / base / name / "checks.json"
        if path.is_file():
            return json.loads(path.read_text())
    return None


def render_recipe(folder: str, name: str) -> list[str]:
    from iclab.recipes import RECIPES

    base = ROOT / folder / name
    stored = json.loads((base / "checks.json").read_text())
    lines = RECIPES[name].section(base, stored)
    if lines and lines[0].startswith("## "):  # the page has its own title
        lines = lines[1:]
    image = re.compile(r"!\[(?P<alt>[^\]]*)\]\((?P<path>[^)]+\.png)\)")
    out = [image.sub(lambda m: _figure(m["alt"], base.parent / m["path"]), line) for line in lines]
    return [line for line in _strip_blank_runs(out)] + ["", *render_provenance(f"{folder}/{name}")]


def _figure(alt: str, source: Path) -> str:
    target = FIGURES / source.relative_to(ROOT / "results")
    if not target.is_file() or target.read_bytes() != source.read_bytes():
        if _state["check"]:
            _state["stale"].append(target.relative_to(ROOT).as_posix())
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    return f"![{alt}]({_link(target)})"


def _link(target: Path) -> str:
    """A path relative to the page being rendered (README.md sits above docs/: depth -1)."""
    depth = _state["depth"]
    prefix = "docs/" if depth < 0 else "../" * depth
    return prefix + target.relative_to(DOCS).as_posix()


# the page being rendered: how many folders below docs/ it is (for relative links); whether only checking
_state: dict = {"depth": 0, "check": False, "stale": []}


def _strip_blank_runs(lines: list[str]) -> list[str]:
    out: list[str] = []
    for line in lines:
        if line == "" and (not out or out[-1] == ""):
            continue
        out.append(line)
    return out[:-1] if out and out[-1] == "" else out


def render_benchmark(file: str) -> list[str]:
    data = json.loads((ROOT / file).read_text())
    scalars = {k: v for k, v in data.items() if not isinstance(v, (dict, list))}
    lines = ["| measure | value |", "|---|---:|"] + [f"| {k} | {_num(v)} |" for k, v in scalars.items()]
    for key, value in data.items():
        if key in ("provenance", "machine") or not isinstance(value, (dict, list)):
            continue
        lines += ["", *_nested_table(key, value)]
    return lines + ["", *render_provenance(file)]


def _nested_table(key: str, value) -> list[str]:
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        cols = list(dict.fromkeys(c for r in value for c in r if not isinstance(r[c], (dict, list))))
        rows = [f"| {' | '.join(_num(r.get(c, '')) for c in cols)} |" for r in value]
        return [f"*{key}*", "", f"| {' | '.join(cols)} |", "|" + "---|" * len(cols), *rows]
    if isinstance(value, dict):
        flat = {k: v for k, v in _flatten(value)}
        return [f"*{key}*", "", "| | value |", "|---|---:|", *(f"| {k} | {_num(v)} |" for k, v in flat.items())]
    return [f"*{key}*: {', '.join(_num(v) for v in value)}"]


def _flatten(value, prefix: str = ""):
    for k, v in value.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k} / ")
        elif isinstance(v, list):
            yield f"{prefix}{k}", ", ".join(_num(x) for x in v if not isinstance(x, (dict, list)))
        else:
            yield f"{prefix}{k}", v


def render_json(file: str, keys: str) -> list[str]:
    data = json.loads((ROOT / file).read_text())
    lines = ["| | value |", "|---|---:|"]
    for key in keys.split(","):
        node = data
        for part in key.split("."):
            node = node[int(part)] if isinstance(node, list) else node[part]
        lines.append(f"| {key} | {_num(node)} |")
    return lines + ["", *render_provenance(file)]


def _num(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v).lower() if v is not None else "—"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v).replace("|", "/")


def provenance_of(path: Path) -> dict | None:
    """The provenance stored in a results file, or beside it (a folder's provenance.json)."""
    folder = path if path.is_dir() else path.parent
    # the file itself, then a recipe folder's checks.json, then a provenance.json beside it or one folder up
    candidates = [folder / "checks.json", folder / "provenance.json", folder.parent / "provenance.json"]
    for candidate in ([path] if path.is_file() else []) + candidates:
        if candidate.is_file() and candidate.suffix == ".json":
            data = json.loads(candidate.read_text())
            if "provenance" in data:
                return data["provenance"]
            if "commit" in data and "command" in data:
                return data
    return None


def render_provenance(file: str) -> list[str]:
    prov = provenance_of(ROOT / file)
    if prov is None:
        raise SystemExit(f"render_docs: {file} has no provenance (command, commit, date, machine); re-run its command")
    m = prov.get("machine", {})
    machine = ", ".join(
        f"{k.replace('_', ' ')} {m[k]}" for k in ("cores", "threads", "load_average", "device", "device_name") if k in m
    )
    return [f"<small>Source: `{file}`, written by `{prov['command']}` at commit `{prov['commit'][:12]}` on "
            f"{prov['date']} ({machine}).</small>"]


RENDERERS = {
    "config": render_config,
    "models": render_models,
    "recipes": render_recipes,
    "claims": render_claims,
    "recipe": render_recipe,
    "benchmark": render_benchmark,
    "json": render_json,
    "provenance": render_provenance,
}


def render_page(text: str, depth: int) -> str:
    _state["depth"] = depth

    def replace(match: re.Match) -> str:
        kind, *args = match["spec"].split()
        if kind not in RENDERERS:
            raise SystemExit(f"render_docs: unknown block kind {kind!r}; known: {', '.join(RENDERERS)}")
        try:
            body = "\n".join(RENDERERS[kind](*args))
        except (FileNotFoundError, KeyError, TypeError) as e:  # a missing file, key or argument: name the block
            raise SystemExit(f"render_docs: cannot render <!-- render: {match['spec']} -->: {e!r}") from None
        return f"{match.group(1)}{body}\n{match.group(4)}"

    return BLOCK.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when a page is out of date")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    _state["check"] = args.check
    stale = _state["stale"]
    pages = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    for page in pages:
        text = page.read_text()
        new = render_page(text, len(page.relative_to(DOCS).parts) - 1 if page.is_relative_to(DOCS) else -1)
        if new != text:
            stale.append(page.relative_to(ROOT).as_posix())
            if not args.check:
                page.write_text(new)
    if args.check and stale:
        print(f"out of date with their results files: {', '.join(stale)}; run `python scripts/render_docs.py`")
        return 1
    print(f"{'checked' if args.check else 'rendered'} {len(pages)} pages"
          + (f"; updated {', '.join(stale)}" if stale and not args.check else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
