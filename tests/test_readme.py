"""The README's promises that code can check: its DAL example runs as written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.commands import ROOT, cli_env


def readme_block(after_heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split(after_heading, 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_dal_example_runs_as_written(fresh_dsn: str, tmp_path: Path) -> None:
    example = tmp_path / "example.py"
    example.write_text(readme_block("## Data access layer (`dal`)"))
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
