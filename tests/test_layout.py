"""Where things live: the import rules of the packages and SQL only in ``.sql`` files.

These are the project's architecture, checked on every run so a change that breaks them fails
the suite instead of a later review: ``cli -> web -> dal``, never back; no import cycles inside
a package, hidden or not (an import inside a function still counts); and no SQL statement text
in the Python code of ``dal`` or ``web``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.commands import ROOT

PACKAGES = ("cli", "web", "dal")
# Which top-level package may import which (transitively the graph stays one-way).
ALLOWED = {"cli": {"cli", "web", "dal"}, "web": {"web", "dal"}, "dal": {"dal"}}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every project module ``path`` imports, at any depth of the file."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        out.update(n for n in names if n in known)
    return out


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    edges = {name: imports_of(path, known) - {name} for name, path in found.items()}
    for name in edges:  # a package's __init__ is not an edge back to itself from its children
        edges[name] = {d for d in edges[name] if not name.startswith(d + ".")}
    return edges


def test_packages_import_one_way() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in graph().items()
        for target in targets
        if target.split(".")[0] not in ALLOWED[module.split(".")[0]]
    ]
    assert wrong == []


def test_no_import_cycles() -> None:
    edges = graph()
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


# Keywords in capitals, as every statement of this project is written; prose in messages
# ("cannot create database x") is lower case and is not SQL.
SQL_TEXT = re.compile(
    r"\b(SELECT\s+(?!1\b)\S+.*\bFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|"
    r"CREATE\s+(TABLE|INDEX|DATABASE)|ALTER\s+(TABLE|DATABASE)|DROP\s+(TABLE|INDEX)|TRUNCATE)\b"
)


def test_no_sql_statement_text_in_python() -> None:
    found = []
    for package in ("dal", "web"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            docstrings = _docstrings(tree)
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and id(node) not in docstrings
                    and SQL_TEXT.search(node.value)
                ):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []


def _docstrings(tree: ast.Module) -> set[int]:
    """Docstrings may talk about SQL; they are never sent to the server."""
    ids = set()
    for owner in ast.walk(tree):
        body = getattr(owner, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            ids.add(id(first.value))
    return ids
