"""The project's import graph, read from the source (ast): which project modules each module imports, at the top
or inside functions, and what a module needs transitively."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("components", "model", "pipelines", "t2v")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files(root: Path = ROOT) -> dict[str, Path]:
    """Every project module by dotted name (tests, benchmarks and build outputs left out)."""
    return {module_name(p, root): p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `path` imports (`from a.b import c` counts a.b.c when that is a module, else a.b)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names
            ]
        else:
            continue
        for name in names:
            if name.split(".")[0] not in PACKAGES:
                continue
            while name and name not in known:  # `import a.b.c` of a package's attribute: the nearest module
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
    return out


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    known = source_files(root)
    return {name: imports_of(path, known) for name, path in known.items()}


def closure(entries: list[str], edges: dict[str, set[str]]) -> set[str]:
    """The entry modules, their packages' __init__ modules and everything they import, transitively."""
    seen: set[str] = set()
    todo = list(entries)
    while todo:
        name = todo.pop()
        if name in seen or name not in edges:
            continue
        seen.add(name)
        todo.extend(edges[name])
        parent = name.rpartition(".")[0]
        todo.extend([parent] if parent else [])
    return seen
