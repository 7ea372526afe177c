"""Where things live: the import rules of the packages and SQL only in ``.sql`` files.

These are the project's architecture (docs/dal.md opens with the map), checked on every run so
a change that breaks them fails the suite instead of a later review: ``cli -> web -> dal``,
never back; inside ``dal``, the layers of ``DAL_LAYERS``; inside ``web``, the edge below
everything; no import cycles, hidden or not (an import inside a function still counts); no
module over 400 lines; and no SQL statement text in the Python code of ``dal`` or ``web``.
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


# Modules every part of dal may import; they import only each other.
FOUNDATION = frozenset(
    {"dal.errors", "dal.arguments", "dal.rules", "dal.inputs", "dal.telemetry", "dal.progress"}
    | {"dal.queries"}
)
# What each sub-package of dal may import besides itself and the foundation.
DAL_LAYERS = {
    "dal.db": frozenset(),
    "dal.users": frozenset({"dal.db"}),
    "dal.instagram": frozenset({"dal.db", "dal.users.models"}),  # a connection is a user's
    "dal.devdata": frozenset({"dal.db"}),
    "dal.migrations": frozenset({"dal.db", "dal.devdata.bulk"}),  # rehearsal fills a copy
}
# web: the edge (server, connection limits, edge layer, problems, headers, request counters,
# log) imports no other web module; the routes may import the edge.
WEB_EDGE = frozenset(
    {
        "web.http_server",
        "web.connection_limits",
        "web.rate_limited_log",
        "web.edge",
        "web.problems",
        "web.headers",
        "web.http_metrics",
        "web.timestamps",
        "web.log_sink",
        "web.access_log",
    }
)


def _part(module: str) -> str:
    if module in FOUNDATION or module == "dal":
        return module
    return ".".join(module.split(".")[:2])


def _allowed_in_dal(module: str, target: str) -> bool:
    if target in FOUNDATION:
        return True
    if module == "dal":  # the package's public names come from everywhere
        return True
    if module in FOUNDATION:
        return False
    part = _part(module)
    if _part(target) == part:
        return True
    rules = DAL_LAYERS[part]
    # ``from dal.devdata import bulk`` names the package on the way to an allowed module
    return any(
        target == r or target.startswith(r + ".") or r.startswith(target + ".") for r in rules
    )


def test_dal_layers_point_one_way() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in graph().items()
        if module.startswith("dal")
        for target in targets
        if target.startswith("dal") and not _allowed_in_dal(module, target)
    ]
    assert wrong == []


def test_every_dal_module_belongs_to_a_layer() -> None:
    unplaced = [
        m
        for m in modules()
        if m.startswith("dal.") and m not in FOUNDATION and _part(m) not in DAL_LAYERS
    ]
    assert unplaced == []


def test_the_web_edge_depends_on_nothing_above_it() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in graph().items()
        if module in WEB_EDGE
        for target in targets
        if target.startswith("web") and target not in WEB_EDGE
    ]
    assert wrong == []


MAX_LINES = 400


def test_no_production_module_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in modules().values()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


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
