"""The README's promises that code can check: it stays short, its DAL example runs as written,
every command it shows runs, and its command table names every verb (and only those)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from cli.main import build_parser
from tests.commands import ROOT, cli_env
from tests.test_web_process import web_process
from tests.test_web_routes import free_port

README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent


def readme_block(after_heading: str, language: str) -> str:
    section = README.split(after_heading, 1)[1]
    return section.split(f"```{language}\n", 1)[1].split("```", 1)[0]


def test_the_readme_is_a_front_door() -> None:
    assert len(README.splitlines()) <= 250


def test_dal_example_runs_as_written(fresh_dsn: str, tmp_path: Path) -> None:
    example = tmp_path / "example.py"
    example.write_text(readme_block("## The data access layer", "python"))
    done = subprocess.run(
        [sys.executable, str(example)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=cli_env(fresh_dsn),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "duplicate: " in done.stdout
    assert "invalid: email" in done.stdout
    assert "refused: invalid email or password" in done.stdout
    assert "tokens to refresh" in done.stdout
    assert "$2b$" not in done.stdout  # the printed User shows no hash


def test_every_command_of_what_you_get_runs(fresh_dsn: str, tmp_path: Path) -> None:
    """Each line of the block, as a shell would run it from the checkout, while a server runs
    (the README's port 8080 becomes the test server's free port)."""
    env = {**cli_env(fresh_dsn), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    lines = [line for line in readme_block("## What you get", "bash").splitlines() if line]
    assert lines
    with web_process(tmp_path, env, "serve", module="cli") as server:
        for line in lines:
            command = line.replace("127.0.0.1:8080", f"127.0.0.1:{server.port}")
            command = command.replace(".venv/bin/", f"{BIN}/")
            done = subprocess.run(
                ["bash", "-c", command],
                capture_output=True,
                text=True,
                timeout=120,
                cwd=ROOT,
                env=env,
                check=False,
            )
            assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
            assert done.stdout.strip(), line


def test_the_command_table_names_every_verb() -> None:
    table = README.split("## Commands", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z-]+)|, `([a-z-]+)", table, re.M))
    named = {word for pair in documented for word in pair if word}
    sub = next(a for a in build_parser()._actions if a.dest == "verb")
    assert named == set(sub.choices), shlex.join(sorted(named ^ set(sub.choices)))  # type: ignore[attr-defined]


def test_the_main_command_runs_as_written(fresh_dsn: str, tmp_path: Path) -> None:
    """``./dev run`` (the first of the two commands): migrated, seeded, serving; Ctrl-C stops."""
    assert "./dev run " in readme_block("## Two commands", "bash")
    port = free_port()
    log = tmp_path / "dev-run.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            ["bash", str(ROOT / "dev"), "run", "--port", str(port)],
            cwd=ROOT,
            env=cli_env(fresh_dsn),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while not _answers(port):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text()
    assert "seeds: 3 inserted" in output and "0 pending" in output


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False
