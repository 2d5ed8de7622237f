"""The package's shape: no import cycles (function-local imports count too), and old module paths still import."""

import ast
import importlib
import warnings
from pathlib import Path

import pytest

import iclab
from iclab._aliases import OLD_TO_NEW

ROOT = Path(iclab.__file__).parent


def module_imports() -> dict[str, set[str]]:
    """Each iclab module -> the iclab modules it imports anywhere in its file (parsed, not executed)."""
    files = {}
    for f in ROOT.rglob("*.py"):
        parts = list(f.relative_to(ROOT.parent).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    edges = {}
    for name, f in files.items():
        package = name if f.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                targets = [target] + [f"{target}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in files:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    found.add(t)
        edges[name] = found
    return edges


def test_no_import_cycles():
    edges = module_imports()
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            cycle = path[path.index(node):] + [node]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if node in done:
            return
        for nxt in sorted(edges[node]):
            visit(nxt, path + [node])
        done.add(node)

    for name in sorted(edges):
        visit(name, [])


@pytest.mark.parametrize("old", sorted(OLD_TO_NEW))
def test_old_module_paths_still_import(old):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is importlib.import_module(OLD_TO_NEW[old])
    assert any(issubclass(w.category, DeprecationWarning) and OLD_TO_NEW[old] in str(w.message) for w in caught)
