"""PostgreSQL URLs: parsing, and the two safe ways to show one (redacted, or host/database).

A DSN can carry a password in three places (``user:password@``, ``?password=``,
``?sslpassword=``); everything that prints a DSN goes through ``redact_dsn`` or
``describe_dsn`` so none of them reaches a log line, an error or a health document.
"""

from __future__ import annotations

from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

DSN_SCHEMES = ("postgresql", "postgres")


def split_dsn(dsn: str) -> SplitResult:
    """``urlsplit`` that also checks the port (``ValueError`` on a malformed one)."""
    parts = urlsplit(dsn)
    parts.port  # noqa: B018 - raises ValueError on a bad port
    return parts


def redact_dsn(dsn: str) -> str:
    """Return ``dsn`` with its password replaced by ``***`` (safe for logs and errors)."""
    try:
        parts = urlsplit(dsn)
        if parts.password is None:
            return dsn
        userinfo = f"{parts.username or ''}:***"
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        netloc = f"{userinfo}@{host}{port}"
        return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, parts.query, ""))
    except ValueError:
        return "<unparseable DSN>"


def describe_dsn(dsn: str) -> str:
    """Short ``host/database`` label for start-up lines and health output (no credentials)."""
    parts = urlsplit(dsn)
    query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
    host = parts.hostname or query.get("host", "localhost")
    port = f":{parts.port}" if parts.port else ""
    database = parts.path.lstrip("/") or parts.username or "postgres"
    return f"{host}{port}/{database}"


def maintenance_dsn(dsn: str) -> str:
    """The same server and credentials, pointed at the ``postgres`` maintenance database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/postgres"))


def database_name(dsn: str) -> str:
    return unquote(urlsplit(dsn).path.lstrip("/"))
