"""Where the checkout's folders are: the data folder of the embedded server, ``sql/`` and
``seeds/`` (in a checkout, or shipped inside an installed wheel)."""

from __future__ import annotations

from pathlib import Path

# dal/, the package these paths are resolved from (dal/db/paths.py is two levels below it).
PACKAGE_DIR = Path(__file__).resolve().parent.parent


def project_root() -> Path:
    """The checkout this package runs from, or the current directory for an installed wheel.

    The embedded server's data folder hangs off it, so that running the CLI or an example from
    another directory of the same checkout finds the same database instead of silently starting
    a second, empty one.
    """
    checkout = PACKAGE_DIR.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "sql").is_dir():
        return checkout
    return Path.cwd()


def data_folder(name: str) -> Path:
    """``sql`` or ``seeds``: the checkout's own folder (what DBAs review and yoyo.ini reads), or
    the copy an installed wheel ships as ``dal/shipped/<name>``."""
    checkout = PACKAGE_DIR.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / name).is_dir():
        return checkout / name
    return PACKAGE_DIR / "shipped" / name


def default_data_dir() -> Path:
    return project_root() / ".defeah" / "pgdata"
