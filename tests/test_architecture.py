"""How liteq's modules depend on each other (issue 17): imports run one way, so each
module can be read, tested and replaced on its own. Read from the source with ``ast``:
imports under ``if TYPE_CHECKING:`` and inside functions count too."""

from __future__ import annotations

import ast
import re
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


# -- what each module may reach ---------------------------------------------------------

def _trees() -> dict[str, ast.Module]:
    return {name: ast.parse(path.read_text()) for name, path in _modules().items()}


def _imported_names(tree: ast.Module) -> list[tuple[int, str, str]]:
    """``(line, module, name)`` of every ``from X import name`` and ``import X``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            dots = "." * node.level
            found += [(node.lineno, dots + (node.module or ""), a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, "") for a in node.names]
    return found


def test_no_private_name_is_imported_from_another_liteq_module() -> None:
    # A name another module needs is public in a small module (liteq.validate,
    # liteq.counters ...), so that its owner can change its privates freely.
    bad = [f"{name}:{line} from {module} import {imported}"
           for name, tree in _trees().items()
           for line, module, imported in _imported_names(tree)
           if (module.startswith(".") or module.startswith("liteq"))
           and imported.startswith("_") and not imported.startswith("__")]
    assert bad == []


def test_each_database_driver_is_imported_only_inside_its_engine() -> None:
    engine_of = {"apsw": "liteq.backends.sqlite", "psycopg": "liteq.backends.postgres",
                 "psycopg_pool": "liteq.backends.postgres"}
    bad = []
    for name, tree in _trees().items():
        for line, module, _ in _imported_names(tree):
            engine = engine_of.get(module.split(".")[0])
            if engine and name != engine and not name.startswith(engine + "."):
                bad.append(f"{name}:{line} imports {module}")
    assert bad == []


_ROW = re.compile(r"(\w*_)?(row|rows|rec|record|res|result|qrow)")


def test_no_code_above_the_backends_reads_a_row_by_position() -> None:
    # Records cross the boundary; above it fields are read by name (row.qid, not
    # row[1]), so a column added or moved in an engine breaks nothing silently.
    bad = [f"{name}:{node.lineno} {ast.unparse(node)}"
           for name, tree in _trees().items() if not name.startswith("liteq.backends")
           for node in ast.walk(tree)
           if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
           and _ROW.fullmatch(node.value.id)
           and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, int)]
    assert bad == []


def test_the_rules_above_see_what_they_forbid() -> None:
    code = ast.parse("from .base import _hidden\nimport apsw\nx = row[11]\n")
    assert (1, ".base", "_hidden") in _imported_names(code)
    assert (2, "apsw", "") in _imported_names(code)
    subscript = next(n for n in ast.walk(code) if isinstance(n, ast.Subscript))
    assert isinstance(subscript.value, ast.Name) and _ROW.fullmatch(subscript.value.id)
