"""The layer contract: every import in the project points down the stack (function-level imports included).

    hymirec (CLI + demo)
    bench            measures every layer below; nothing imports it but the CLI
    devservices      real services on loopback for tests, benchmarks and the demo
    dags             wiring only: step functions named by import path (orchestration)
    orchestration    the pipeline step bodies (retrain, refresh)
    training  serving     (serving never imports training: it loads artifacts)
    features
    core             run layout, the interest merge, schemas

An AST walk, not an import: it sees imports inside functions, under ``if TYPE_CHECKING`` and in scripts too.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# layer -> the project layers it may import (its own layer is always allowed)
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "features": {"core"},
    "training": {"core", "features"},
    "serving": {"core", "features"},
    "orchestration": {"core", "features", "training", "serving"},
    "dags": {"core", "orchestration"},
    "devservices": {"core", "features", "training", "serving"},
    "bench": {"core", "features", "training", "serving", "orchestration", "devservices"},
    "hymirec": {"core", "features", "training", "serving", "orchestration", "bench", "devservices"},
}
PROJECT = set(ALLOWED) | {"tests", "hymirec_dag_support"}


def _layer_of_module(name: str) -> str | None:
    top = name.split(".")[0]
    if top == "hymirec_dag_support":  # dags/hymirec_dag_support, imported by the DAG files as a top-level module
        return "dags"
    return top if top in PROJECT else None


def _imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import statement in ``path``; relative imports resolved."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.append((node.lineno, module))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                out.append((node.lineno, node.args[0].value))
    return out


def violations(root: Path = ROOT) -> list[str]:
    found = []
    for layer, allowed in ALLOWED.items():
        for path in sorted((root / layer).rglob("*.py")):
            for line, module in _imports(path, root):
                target = _layer_of_module(module)
                if target is None or target == layer:
                    continue
                if target not in allowed:
                    found.append(f"{path.relative_to(root)}:{line}: {layer} imports {module} ({target} is not below it)")
    return found


def test_every_import_points_down_the_stack():
    assert violations() == []


def test_every_layer_folder_exists_and_has_code():
    for layer in ALLOWED:
        assert any((ROOT / layer).rglob("*.py")), f"layer folder {layer}/ is missing or empty"


def test_dag_steps_are_wired_to_orchestration_only():
    """The DAGs import their step bodies by string (lazily, inside tasks): check those strings too."""
    import sys

    sys.path.insert(0, str(ROOT / "dags"))
    try:
        from hymirec_dag_support import STEPS
    finally:
        sys.path.remove(str(ROOT / "dags"))
    assert STEPS
    for step, target in STEPS.items():
        assert target.split(":")[0].split(".")[0] == "orchestration", f"{step} -> {target}"


@pytest.mark.parametrize("source, expected", [
    ("def f():\n    from training.data import load_dataset\n", ["features/x.py:2: features imports training.data"]),
    ("from . import codebook\nfrom ..core import artifacts\n", []),
    ("import importlib\nimportlib.import_module('serving.app')\n", ["features/x.py:2: features imports serving.app"]),
    ("import numpy\nfrom core.retrieval import topn_rows\n", []),
])
def test_the_walk_catches_back_edges(tmp_path, source, expected):
    """The checker itself: function-level and import_module back-edges are found, legal ones are not."""
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "x.py").write_text(source)
    for layer in ALLOWED:
        (tmp_path / layer).mkdir(exist_ok=True)
    found = [v.split(" (")[0] for v in violations(tmp_path)]
    assert found == expected
