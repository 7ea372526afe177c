"""DEFEAH_EVENT_LOOP: the setting, the one runner every process starts through, what the server
says it runs on, and a clear error where uvloop is asked for and missing (a shadow ``uvloop``
package that fails to import stands in for a platform without it)."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest

from dal.db import event_loop
from dal.db.settings import Settings
from dal.errors import ConfigError
from tests.commands import run_cli
from tests.test_web_process import base_env, web_process

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("dal", "cli", "web")


@pytest.fixture
def no_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import uvloop`` fails in this process, as on a platform without a build."""
    monkeypatch.setitem(sys.modules, "uvloop", None)


@pytest.fixture
def shadow_path(tmp_path: Path) -> str:
    """A PYTHONPATH on which ``import uvloop`` fails, for the subprocesses."""
    package = tmp_path / "shadow" / "uvloop"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('raise ImportError("no uvloop on this platform")\n')
    return str(package.parent)


def test_default_is_auto_and_resolves_to_uvloop_where_installed() -> None:
    settings = Settings.from_env({})
    assert settings.event_loop == "auto"
    assert event_loop.resolved_name(settings.event_loop) == "uvloop"


@pytest.mark.parametrize("raw", ["asyncio", " UVLOOP ", "Auto"])
def test_values_are_trimmed_and_case_insensitive(raw: str) -> None:
    assert Settings.from_env({"DEFEAH_EVENT_LOOP": raw}).event_loop == raw.strip().lower()


def test_unknown_loop_is_one_line_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"DEFEAH_EVENT_LOOP": "trio"})
    assert str(caught.value) == (
        "DEFEAH_EVENT_LOOP: expected one of auto, uvloop, asyncio, got 'trio'"
    )


@pytest.mark.usefixtures("no_uvloop")
def test_uvloop_asked_for_but_missing_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"^DEFEAH_EVENT_LOOP: uvloop is not installed"):
        Settings.from_env({"DEFEAH_EVENT_LOOP": "uvloop"})
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        event_loop.run(asyncio.sleep(0), "uvloop")  # the choice passed directly, unvalidated


@pytest.mark.usefixtures("no_uvloop")
def test_auto_without_uvloop_runs_on_asyncio() -> None:
    assert Settings.from_env({}).event_loop == "auto"
    assert event_loop.run(_loop_name(), "auto") == "asyncio"


@pytest.mark.parametrize(
    ("choice", "expected"), [("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")]
)
def test_run_starts_the_chosen_loop(choice: event_loop.EventLoopChoice, expected: str) -> None:
    assert event_loop.run(_loop_name(), choice) == expected


async def _loop_name() -> str:
    name = event_loop.running_loop_name()
    loop = type(asyncio.get_running_loop())
    assert (loop.__module__.split(".")[0] == "uvloop") == (name == "uvloop"), loop
    return name


async def test_loop_sensitive_tests_run_on_both_loops(request: pytest.FixtureRequest) -> None:
    """This module is loop-sensitive: each async test here runs once per loop (the id says
    which), and the loop it runs on is the one named."""
    expected = request.node.callspec.id
    assert expected in ("asyncio", "uvloop")
    assert event_loop.running_loop_name() == expected


def test_every_loop_is_started_through_the_one_runner() -> None:
    """No ``asyncio.run`` left in the code that runs the DAL: each would ignore the setting."""
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in SOURCES
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path.name != "event_loop.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\basyncio\.run\(|\brun_until_complete\(|\bnew_event_loop\(", line)
    ]
    assert offenders == []


@pytest.mark.parametrize("choice", ["asyncio", "uvloop"])
def test_server_names_its_loop_in_the_log_and_on_detailed(
    tmp_path: Path, fresh_dsn: str, choice: str
) -> None:
    env = base_env(DATABASE_URL=fresh_dsn, DEFEAH_EVENT_LOOP=choice)
    with web_process(tmp_path, env) as server:
        detailed = server.request("/api/v1/health/detailed").json()
        server.stop()
    (check,) = detailed["checks"]["eventLoop"]  # type: ignore[index]
    assert check["observedValue"] == choice and check["status"] == "pass"
    (line,) = [ln for ln in server.output().splitlines() if "serving http://" in ln]
    assert f"event loop {choice})" in line


def test_server_without_uvloop_refuses_to_start_on_it(shadow_path: str, fresh_dsn: str) -> None:
    import subprocess

    env = base_env(DATABASE_URL=fresh_dsn, DEFEAH_EVENT_LOOP="uvloop", PYTHONPATH=shadow_path)
    done = subprocess.run(
        [sys.executable, "-m", "web", "--port", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "DEFEAH_EVENT_LOOP: uvloop is not installed" in lines[0], lines


def test_cli_verb_without_uvloop(shadow_path: str, fresh_dsn: str) -> None:
    """``auto`` falls back to asyncio and the verb works; ``uvloop`` is one line on stderr."""
    fell_back = run_cli(fresh_dsn, "seed", PYTHONPATH=shadow_path)
    assert fell_back.returncode == 0, fell_back.stderr
    refused = run_cli(fresh_dsn, "seed", PYTHONPATH=shadow_path, DEFEAH_EVENT_LOOP="uvloop")
    assert refused.returncode == 1
    (line,) = refused.stderr.strip().splitlines()
    assert "DEFEAH_EVENT_LOOP: uvloop is not installed" in line


def test_uvloop_dependency_is_left_out_where_it_has_no_build() -> None:
    """The marker keeps the package installable on Windows and PyPy (``auto`` runs asyncio)."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (uvloop,) = [Requirement(d) for d in project["dependencies"] if Requirement(d).name == "uvloop"]
    assert uvloop.marker is not None
    linux = {"sys_platform": "linux", "platform_python_implementation": "CPython"}
    assert uvloop.marker.evaluate(linux)
    assert not uvloop.marker.evaluate({**linux, "sys_platform": "win32"})
    assert not uvloop.marker.evaluate({**linux, "platform_python_implementation": "PyPy"})
