"""How liteq's modules depend on each other (issue 17): imports run one way, so each
module can be read, tested and replaced on its own. Read from the source with ``ast``:
imports under ``if TYPE_CHECKING:`` and inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

import liteq

PACKAGE = Path(liteq.__file__).parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("liteq", *path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The liteq modules *name* imports (a package's ``__init__`` when only it matches)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                if f"{target}.{alias.name}" in modules:
                    out.add(f"{target}.{alias.name}")  # a module imported by name
                elif target in modules:
                    out.add(target)
    out.discard(name)
    return out


def import_cycles() -> list[list[str]]:
    """Groups of modules that import each other, directly or through others."""
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    # Tarjan's strongly connected components.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_import_graph_is_read_from_the_source() -> None:
    modules = _modules()
    assert "liteq.backends.sqlite" in modules
    imported = _imports("liteq.worker", modules["liteq.worker"], modules)
    assert {"liteq.hooks", "liteq.pool", "liteq.backends.records"} <= imported


def test_the_worker_its_hooks_and_its_pool_import_one_way() -> None:
    worker = {"liteq.worker", "liteq.hooks", "liteq.pool"}
    assert [c for c in import_cycles() if worker & set(c)] == []


def test_no_liteq_module_imports_itself_back_through_others() -> None:
    # database -> queue/topic/task/scheduler/shell, never back: those annotate
    # liteq.context.Context, a protocol that Database satisfies.
    assert import_cycles() == []
