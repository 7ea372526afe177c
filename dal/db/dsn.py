"""PostgreSQL URLs: parsing, and the two safe ways to show one (redacted, or host/database).

A DSN can carry a password in three places (``user:password@``, ``?password=``,
``?sslpassword=``); everything that prints a DSN goes through ``redact_dsn`` or
``describe_dsn`` so none of them reaches a log line, an error or a health document.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import SplitResult, unquote, unquote_plus, urlsplit, urlunsplit

DSN_SCHEMES = ("postgresql", "postgres")


def split_dsn(dsn: str) -> SplitResult:
    """``urlsplit`` that also checks the port (``ValueError`` on a malformed one)."""
    parts = urlsplit(dsn)
    parts.port  # noqa: B018 - raises ValueError on a bad port
    return parts


# libpq URL parameters whose value is a secret (the password, and the client key's passphrase).
SECRET_PARAMETERS = frozenset({"password", "sslpassword"})
REDACTED = "***"


def _query_pairs(query: str) -> list[tuple[str, str]]:
    """``a=1&b=2`` as written (no decoding), so a redacted URL keeps every other byte."""
    return [(key, value) for key, _, value in (p.partition("=") for p in query.split("&") if p)]


def _is_secret_parameter(key: str) -> bool:
    return unquote(key).strip().lower() in SECRET_PARAMETERS


def dsn_secrets(dsn: str) -> frozenset[str]:
    """Every secret ``dsn`` carries (userinfo password, ``password``/``sslpassword`` parameters),
    both as written and percent-decoded: drivers quote either form back in their errors."""
    try:
        parts = urlsplit(dsn)
        written = [parts.password or ""]
    except ValueError:
        return frozenset()
    written += [value for key, value in _query_pairs(parts.query) if _is_secret_parameter(key)]
    return frozenset(v for w in written for v in (w, unquote(w), unquote_plus(w)) if v)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by ``***`` (longest first, so a
    secret that contains another is removed whole)."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def redact_dsn(dsn: str) -> str:
    """``dsn`` with every secret replaced by ``***`` (safe for logs and errors)."""
    try:
        parts = urlsplit(dsn)
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, hostport = netloc.rpartition("@")
            netloc = f"{userinfo.partition(':')[0]}:{REDACTED}@{hostport}"
        query = "&".join(
            f"{key}={REDACTED}" if _is_secret_parameter(key) else f"{key}={value}" if value else key
            for key, value in _query_pairs(parts.query)
        )
        return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, query, ""))
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


def with_database(dsn: str, database: str) -> str:
    """The same server and credentials, pointed at ``database``."""
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


def database_name(dsn: str) -> str:
    return unquote(urlsplit(dsn).path.lstrip("/"))
