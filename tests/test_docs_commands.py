"""Docs that cannot go stale.

* Every line of every ``bash``/``sh`` block of docs/*.md runs as written, in order, from a
  folder laid out like a checkout (``.venv/bin/...``, ``sql/``, ``seeds/``, ``yoyo.ini``), on a
  fresh migrated database per block, with a real server up when the block talks to
  ``127.0.0.1:8080``; a line fails the test when it exits non-zero.  Three kinds are checked
  otherwise, each said in ``ELSEWHERE``: the README's ``./dev`` commands (their own tests and
  CI), machine set-up (``apt-get install``), and the benchmarks, which take minutes to hours
  (their command lines are parsed by the benchmark's own parser: the module exists and takes
  those flags).
* Every metric name, environment variable and exit code the docs and the README mention is one
  the code has.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from cli.common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_REFUSED, EXIT_TERMINATED
from dal.db.settings import Settings
from dal.migrations.files import file_ids
from tests.commands import ROOT, cli_env
from tests.factories import make_settings
from tests.pg import PgServer
from tests.test_web_process import web_process
from web.app import create_app

BIN = Path(sys.executable).parent
PAGES = tuple(sorted(p.name for p in (ROOT / "docs").glob("*.md")))
BLOCK = re.compile(r"^```(?:bash|sh)\n(.*?)^```", re.M | re.S)
# Lines checked otherwise, by what they contain.
ELSEWHERE = {
    "./dev run": "tests/test_readme.py::test_the_main_command_runs_as_written",
    "./dev test": ".ci/run runs it on every submission",
    "apt-get install": "machine set-up (.ci/run installs what the suite needs)",
    "bench": "test_every_benchmark_command_parses (a benchmark takes minutes to hours)",
}
BENCH = re.compile(r"\.venv/bin/python (?:-m bench\.(\w+)|bench/(\w+)\.py)(.*)$")


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
    if BENCH.search(line):
        return True
    return any(marker in line for marker in ELSEWHERE if marker != "bench")


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


def bench_lines() -> list[str]:
    return [
        line for page in PAGES for _, lines in blocks(page) for line in lines if BENCH.search(line)
    ]


@pytest.mark.parametrize("line", bench_lines())
def test_every_benchmark_command_parses(line: str) -> None:
    match = BENCH.search(line)
    assert match is not None
    module = importlib.import_module(f"bench.{match.group(1) or match.group(2)}")
    module.build_parser().parse_args(shlex.split(match.group(3)))


def doc_texts() -> dict[str, str]:
    pages = {f"docs/{p}": (ROOT / "docs" / p).read_text(encoding="utf-8") for p in PAGES}
    return {**pages, "README.md": (ROOT / "README.md").read_text(encoding="utf-8")}


# Variables of the tooling, not of the service (dev, the test suite, CI).
TOOL_VARIABLES = {"DEFEAH_TEST_CLOCK", "DEFEAH_EXPECT_MONTH_END", "DEFEAH_REQUIRE_SCALE"}


def test_every_environment_variable_the_docs_name_exists() -> None:
    settings = {info.validation_alias for info in Settings.model_fields.values()}
    named = {
        (page, name)
        for page, text in doc_texts().items()
        for name in re.findall(r"\b(?:DEFEAH_[A-Z_]+|DATABASE_[A-Z_]+)\b", text)
    }
    # a name ending in _ is a prefix ("DEFEAH_MIGRATION_*"), not a variable
    unknown = {
        (page, n) for page, n in named if n not in settings | TOOL_VARIABLES and not n.endswith("_")
    }
    assert unknown == set()


# defeah_ names that are databases or tables, not metrics.
NOT_METRICS = {"defeah_migration_checksum", "defeah_dev", "defeah_ci", "defeah_test"}


async def test_every_metric_the_docs_name_is_exposed(fresh_dsn: str) -> None:
    async with TestClient(TestServer(create_app(make_settings(fresh_dsn)))) as client:
        response = await client.get("/metrics")
        exposition = await response.text()
    exposed = set(re.findall(r"^(defeah_\w+)", exposition, re.M))
    exposed |= set(re.findall(r"^# TYPE (defeah_\w+)", exposition, re.M))
    named = {
        (page, name)
        for page, text in doc_texts().items()
        for name in re.findall(r"\bdefeah_[a-z_]+\b", text)
        if name not in NOT_METRICS and not name.endswith("_")
    }
    assert {(page, n) for page, n in named if n not in exposed} == set()


def test_the_exit_code_table_is_the_cli_s() -> None:
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    table = text.split("| Exit code | Meaning |", 1)[1].split("\n\n", 1)[0]
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", table, re.M)}
    assert documented == {EXIT_OK, EXIT_ERROR, EXIT_REFUSED, EXIT_INTERRUPTED, EXIT_TERMINATED}
