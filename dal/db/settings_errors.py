"""A malformed setting as one line naming its variable, in our words rather than pydantic's
multi-line report (``DEFEAH_POOL_MAX_SIZE: expected an integer, got 'lots'``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from annotated_types import Ge, Le
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from dal.db.setting_types import ENVIRONMENTS
from dal.errors import ConfigError

Fields = Mapping[str, FieldInfo]


def variable(fields: Fields, field: str) -> str:
    """The environment variable of ``field`` (its alias)."""
    alias = fields[field].validation_alias
    return alias if isinstance(alias, str) else field


def _bounds(fields: Fields, field: str) -> tuple[Any, Any]:
    lo = hi = None
    for meta in fields[field].metadata:
        if isinstance(meta, Ge):
            lo = meta.ge
        elif isinstance(meta, Le):
            hi = meta.le
    return lo, hi


def _message(fields: Fields, field: str | None, error: Mapping[str, Any]) -> str:
    """Our wording of one pydantic error: what was expected, and what was given."""
    kind, given = error["type"], error.get("input")
    if kind in ("int_parsing", "int_from_float", "int_type"):
        return f"expected an integer, got {given!r}"
    if kind in ("float_parsing", "float_type"):
        return f"expected a number of seconds, got {given!r}"
    if kind in ("bool_parsing", "bool_type"):
        return f"expected true/false, got {given!r}"
    if kind == "literal_error":
        return f"expected one of {', '.join(ENVIRONMENTS)}, got {given!r}"
    if kind in ("greater_than_equal", "less_than_equal") and field is not None:
        lo, hi = _bounds(fields, field)
        return f"must be between {lo:g} and {hi:g}, got {given}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "value_error":
        return str(error["ctx"]["error"])
    return str(error["msg"])


def config_error(fields: Fields, exc: ValidationError) -> ConfigError:
    """The first problem of ``exc`` as one line naming the variable."""
    error = exc.errors(include_url=False)[0]
    loc = error["loc"]
    if not loc:  # a rule across variables; its message names them itself
        return ConfigError(_message(fields, None, error))
    by_env = {variable(fields, name): name for name in fields}
    field = by_env.get(str(loc[0]), str(loc[0]))
    return ConfigError(f"{variable(fields, field)}: {_message(fields, field, error)}")
