"""The docs' shell commands run as written: every line of every ``bash``/``sh`` block of the pages
below, in order, from a folder laid out like a checkout (``.venv/bin/...``, ``sql/``,
``seeds/``, ``yoyo.ini``), on a fresh migrated database per block, with a real server up when
the block talks to ``127.0.0.1:8080``.  A line fails the test when it exits non-zero."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dal.migrations.files import file_ids
from tests.commands import ROOT, cli_env
from tests.pg import PgServer
from tests.test_web_process import web_process

BIN = Path(sys.executable).parent
PAGES = ("migrations.md", "operations.md")
BLOCK = re.compile(r"^```(?:bash|sh)\n(.*?)^```", re.M | re.S)
# Lines that another test runs as a whole (a session of its own): the README's two commands.
ELSEWHERE = {
    "./dev run": "tests/test_readme.py::test_the_main_command_runs_as_written",
    "./dev test": ".ci/run runs it on every submission",
}


def blocks(page: str) -> list[tuple[int, list[str]]]:
    """(line number, command lines) of each shell block of ``docs/<page>``."""
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    found = []
    for match in BLOCK.finditer(text):
        lines = [line for line in match.group(1).splitlines() if line.strip()]
        commands = [line for line in lines if not line.lstrip().startswith("#")]
        found.append((text[: match.start()].count("\n") + 1, commands))
    return found


def covered_elsewhere(line: str) -> bool:
    return any(line.startswith(prefix) for prefix in ELSEWHERE)


CASES = [
    pytest.param(page, number, lines, id=f"{page}:{number}")
    for page in PAGES
    for number, lines in blocks(page)
    if not all(covered_elsewhere(line) for line in lines)
]


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A folder that looks like a checkout to the commands: links to the real one's parts."""
    folder = tmp_path / "checkout"
    folder.mkdir()
    (folder / ".venv").symlink_to(BIN.parent)
    for name in ("sql", "seeds", "yoyo.ini", ".squawk.toml", "dal", "web", "cli"):
        (folder / name).symlink_to(ROOT / name)
    return folder


@contextmanager
def maybe_server(needed: bool, env: dict[str, str], logs: Path) -> Iterator[int | None]:
    if not needed:
        yield None
        return
    with web_process(logs, env, "serve", module="cli") as server:
        yield server.port


@pytest.mark.parametrize(("page", "number", "lines"), CASES)
def test_every_shell_line_of_the_docs_runs(
    pg: PgServer, template_db: str, checkout: Path, page: str, number: int, lines: list[str]
) -> None:
    dsn = pg.dsn(pg.create_database("defeah_doc", template=template_db))
    env = {**cli_env(dsn), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    serves = any("127.0.0.1:8080" in line for line in lines)
    with maybe_server(serves, env, checkout.parent) as port:
        for line in lines:
            if covered_elsewhere(line):
                continue
            command = line if port is None else line.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
            done = subprocess.run(
                ["bash", "-c", command],
                capture_output=True,
                text=True,
                timeout=300,
                cwd=checkout,
                env=env,
                stdin=subprocess.DEVNULL,
                check=False,
            )
            where = f"docs/{page} line {number}: {line}"
            assert done.returncode == 0, f"{where}\n{done.stdout}\n{done.stderr}"


def test_the_migration_table_names_every_migration() -> None:
    table = (ROOT / "docs" / "migrations.md").read_text(encoding="utf-8")
    table = table.split("## The migrations", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([0-9]{4}_[a-z0-9_]+)` \|", table, re.M)
    assert listed == list(file_ids())
