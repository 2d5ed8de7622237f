"""The docs site: it builds without a warning, every rendered table equals what its results file gives today, the
config reference covers every key with a meaning, and no page states a measured number outside a rendered block."""

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _render_docs():
    spec = importlib.util.spec_from_file_location("render_docs", ROOT / "scripts" / "render_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_rendered_block_matches_its_results_file():
    done = subprocess.run([sys.executable, "scripts/render_docs.py", "--check"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_changed_results_file_makes_the_check_fail(tmp_path):
    render = _render_docs()
    page = (DOCS / "benchmarks.md").read_text()
    block = re.search(r"<!-- render: benchmark (\S+) -->\n(.*?)<!-- /render -->", page, re.S)
    assert block, "benchmarks.md renders its tables from benchmarks/results"
    stale = page.replace(block.group(2), block.group(2).replace("|", "| 1", 1), 1)
    assert render.render_page(stale, 0) == page  # re-rendering repairs an edited table: the check compares these


def test_config_reference_gives_every_key_a_meaning():
    from iclab.config import Config, Ramp
    from iclab.text.config import TextConfig

    render = _render_docs()
    for cls in (Config, Ramp, TextConfig):
        rows = render.config_rows(cls)
        limits = r"\((one of|≥|>|≤|<)[^()]*\)$"  # what _limits appends; a meaning must say more than that
        missing = [key for key, _, _, meaning in rows if not re.sub(limits, "", meaning).strip()]
        assert not missing, f"config keys without a comment to document them: {missing}"
    keys = {row[0] for row in render.config_rows(Config)}
    assert {"train.steps", "model.layers", "eval.baselines", "curriculum.dims", "threads"} <= keys


def test_field_comments_read_the_comment_above_and_beside_a_field():
    render = _render_docs()

    namespace: dict = {}
    source = (
        "import dataclasses\n"
        "@dataclasses.dataclass\n"
        "class C:\n"
        "    # the first\n"
        "    # in two lines\n"
        "    a: int = 1\n"
        "    b: int = 2  # beside\n"
        "    c: int = 3\n"
    )
    path = ROOT / "build" / "doc_fixture.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("doc_fixture", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["doc_fixture"] = module
    try:
        spec.loader.exec_module(module)
        namespace = render.field_comments(module.C)
    finally:
        del sys.modules["doc_fixture"]
        path.unlink()
    assert namespace == {"a": "the first in two lines", "b": "beside"}


# A measured number: a duration, a percentage, or a value with two or more decimals. Definitions (the MLP's
# lr=0.005 in a table of defaults, N(0, 0.02)) are written in code spans or in the pages that define, not measure.
MEASURED = re.compile(r"(?<![\w.])(\d+(\.\d+)?\s?(s|ms|min|h|%)(?!\w)|\d+\.\d{3,})")
DEFINING_PAGES = {"fidelity.md", "architecture.md"}


def _prose(text: str) -> str:
    text = re.sub(r"<!-- render:.*?<!-- /render -->", "", text, flags=re.S)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"^    .*$", "", text, flags=re.M)  # indented code
    return re.sub(r"`[^`]*`", "", text)


def test_no_page_states_a_measured_number_outside_a_rendered_block():
    pages = [ROOT / "README.md", *(p for p in DOCS.rglob("*.md") if p.name not in DEFINING_PAGES)]
    found = {
        p.relative_to(ROOT).as_posix(): hits
        for p in pages
        if (hits := [m.group(0) for m in MEASURED.finditer(_prose(p.read_text()))])
    }
    assert not found, f"numbers typed by hand (render them from a results file): {found}"


def test_readme_first_experiment_and_python_example_run(tmp_path):
    """The README's config and its Python example, as written (training cut to a few steps)."""
    readme = (ROOT / "README.md").read_text()
    config = re.search(r"```yaml\n# sparse.yaml\n(.*?)```", readme, re.S).group(1)
    example = re.search(r"```python\n(import iclab\n.*?)```", readme, re.S).group(1)
    assert '"train.steps": 500' in example
    (tmp_path / "sparse.yaml").write_text(config)
    (tmp_path / "example.py").write_text(example.replace('"train.steps": 500', '"train.steps": 5'))
    done = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "runs" / "sparse-py" / "eval" / "curves.csv").is_file()


@pytest.mark.skipif(shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None,
                    reason="mkdocs is part of the dev extra")
def test_site_builds_strict(tmp_path):
    mkdocs = Path(sys.executable).parent / "mkdocs"
    done = subprocess.run([str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "recipes" / "model-selection" / "index.html").is_file()
