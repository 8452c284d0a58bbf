"""The package's import graph, read from the source: no cycle among fhir_adapter modules and
no module using another's private names.

Every import statement counts, at module level, inside a function or under TYPE_CHECKING: an
import deferred to a function to dodge a cycle is still a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "fhir_adapter"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[int, str, str | None]]:
    """(line, module imported, name taken from it or None) for every import in a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in MODULES:
                    yield node.lineno, full, None
                else:
                    yield node.lineno, base, alias.name


def _module_aliases(tree: ast.AST) -> dict[str, str]:
    """Local names bound to a fhir_adapter module (`from x import mod`, `import x.y as m`)."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name in MODULES:
                    out[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in MODULES:
                    out[alias.asname or alias.name] = full
    return out


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for _, target, _ in _imports(name, path):
            if target in MODULES and target != name:
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path) per strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_path_in(graph, sorted(c)) for c in components]


def _path_in(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A concrete cycle through the component's first module, for the failure message."""
    members = set(component)
    start = component[0]
    seen = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    return [*seen[v], start]
                if w not in seen:
                    seen[w] = [*seen[v], w]
                    nxt.append(w)
        frontier = nxt
    return component


def test_graph_reader_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def f():\n    from fhir_adapter.case import Case\n    from . import errors\n"
        "if True:\n    import fhir_adapter.findings\n",
        encoding="utf-8",
    )
    found = [(target, taken) for _, target, taken in _imports("fhir_adapter.probe", probe)]
    expected = {
        ("fhir_adapter.findings", None),
        ("fhir_adapter.case", "Case"),
        ("fhir_adapter.errors", None),
    }
    assert set(found) == expected


def test_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]


def test_no_import_cycle_among_fhir_adapter_modules() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_module_imports_another_modules_private_names() -> None:
    problems = []
    for name, path in MODULES.items():
        for line, target, taken in _imports(name, path):
            if (
                target.startswith("fhir_adapter")
                and target != name
                and taken is not None
                and taken.startswith("_")
                and not taken.startswith("__")
            ):
                problems.append(f"{path.relative_to(ROOT.parent)}:{line}: {target}.{taken}")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = _module_aliases(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and aliases[node.value.id] != name
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                where = f"{path.relative_to(ROOT.parent)}:{node.lineno}"
                problems.append(f"{where}: {aliases[node.value.id]}.{node.attr}")
    assert not problems, "private names used across modules: " + ", ".join(problems)
