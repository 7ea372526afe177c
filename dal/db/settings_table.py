"""The README's configuration table, rendered from the ``Settings`` declarations.

``python -m dal.db.settings_table README.md`` rewrites the table between its markers; a test
fails when the README's copy is stale.
"""

from __future__ import annotations

from pathlib import Path

from dal.db.settings import Settings, env_name


def _default_text(field: str) -> str:
    info = Settings.model_fields[field]
    if info.default_factory is not None:
        return "(see meaning)"
    default = info.default
    if default is None or default == ():
        return "(unset)"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, float) and default.is_integer():
        return f"`{int(default)}`"
    return f"`{default}`"


def markdown_table() -> str:
    """The README's configuration table, one row per ``Settings`` field."""
    lines = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, info in Settings.model_fields.items():
        lines.append(f"| `{env_name(name)}` | {_default_text(name)} | {info.description} |")
    return "\n".join(lines)


TABLE_START = "<!-- settings-table:start -->\n"
TABLE_END = "\n<!-- settings-table:end -->"


def update_readme(path: Path) -> bool:
    """Rewrite the table between the markers in ``path``; True when it changed."""
    text = path.read_text(encoding="utf-8")
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    updated = f"{head}{TABLE_START}{markdown_table()}{TABLE_END}{tail}"
    path.write_text(updated, encoding="utf-8")
    return updated != text


if __name__ == "__main__":
    # python -m dal.db.settings_table [README.md]: print the table, or refresh it in place.
    import sys

    if len(sys.argv) > 1:
        print("updated" if update_readme(Path(sys.argv[1])) else "up to date")
    else:
        print(markdown_table())
