"""The package layout keeps the data flow readable: imports point down the flow, never up,
there are no import cycles, and modules stay small enough to read (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "probes"

# Who may import whom. Science packages never reach up to the writers and the front ends;
# figures and pages read results, never the pipeline; the pipeline never reaches the CLI.
FORBIDDEN: dict[str, set[str]] = {
    "science": {"cli", "pipeline", "viz", "report"},
    "viz": {"cli", "pipeline", "report"},
    "report": {"cli", "pipeline"},
    "pipeline": {"cli"},
    "cli": set(),
}
WRITERS_AND_FRONT_ENDS = {"cli", "pipeline", "viz", "report"}

MAX_LINES = 450
# Modules allowed past MAX_LINES because they are one cohesive thing, with the reason.
LONG_BUT_COHESIVE: dict[str, str] = {}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """The ``probes.*`` modules ``path`` imports (``top_level_only``: at import time)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "probes":
                found.update(f"probes.{alias.name}" for alias in node.names)
            elif node.module.startswith("probes."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("probes."))
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    return top if top in WRITERS_AND_FRONT_ENDS else "science"


def test_imports_point_down_the_data_flow():
    wrong = []
    for path in _modules():
        module = _name(path)
        layer = _layer(module)
        for target in _imports(path, top_level_only=False):
            target_top = target.split(".")[1]
            if target_top in FORBIDDEN[layer] and _layer(target) != layer:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "imports against the flow:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    graph = {_name(p): _imports(p, top_level_only=True) for p in _modules()}
    known = set(graph)
    # an import of a package also runs its __init__: the edge goes to the package module
    edges = {m: {t for t in targets if t in known and t != m} for m, targets in graph.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            # a module importing its own package's __init__ during that __init__ is how
            # packages re-export; only cycles through other modules count
            if nxt == node.rsplit(".", 1)[0]:
                continue
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_readable(path):
    rel = str(path.relative_to(PACKAGE))
    lines = len(path.read_text().splitlines())
    if rel in LONG_BUT_COHESIVE:
        return
    assert lines <= MAX_LINES, f"{rel} has {lines} lines: split it by concept"


def test_every_subpackage_curates_its_exports():
    for init in PACKAGE.glob("*/__init__.py"):
        tree = ast.parse(init.read_text())
        names = [
            t.id
            for node in tree.body
            if isinstance(node, ast.Assign)
            for t in node.targets
            if isinstance(t, ast.Name)
        ]
        assert "__all__" in names, f"{init.relative_to(PACKAGE)} has no __all__"
