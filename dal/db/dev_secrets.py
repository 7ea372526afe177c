"""The development secret files: where ``development``/``test`` keep their generated token key
ring when ``DEFEAH_TOKEN_KEYS`` is unset (``<data folder's parent>/token-keys``) and their
erasure pepper when ``DEFEAH_ERASURE_PEPPER`` is (``erasure-pepper``).

Whoever controls such a file chooses the key every token is sealed with (or can match erasure
receipts), so it is trusted only when nobody else could have put it there or read it:

* the folder is opened without following a symbolic link (``O_NOFOLLOW``) and must belong to
  this user and not be writable by group or others -- in a world-writable folder another local
  user could plant the file first (or swap it);
* the file is opened relative to that folder's descriptor, again with ``O_NOFOLLOW`` (a
  symbolic link, dangling or not, is refused in one line, never followed and never a raw
  ``FileNotFoundError``), and must be a regular file of this user with no group or other
  permission bits (0600 or stricter);
* it is created only by ``O_CREAT | O_EXCL`` with mode 0600 inside the checked folder: the key
  is written to a private temporary name and hard-linked into place (``link`` never replaces),
  so of several processes starting at once exactly one key wins and nobody reads a
  half-written file.

Every refusal is a ``ConfigError`` naming the path and what to do; none contains key material.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Final

from dal.errors import ConfigError

DEV_KEY_FILE: Final = "token-keys"
MAX_KEY_FILE_BYTES: Final = 64 * 1024  # a ring of a hundred keys is under 6 KB
_NO_FOLLOW: Final = os.O_NOFOLLOW | os.O_CLOEXEC


def dev_key_path(data_dir: Path) -> Path:
    """Where development/test keep their generated key: next to the embedded data folder."""
    return data_dir.parent / DEV_KEY_FILE


def _refused(path: Path, why: str) -> ConfigError:
    return ConfigError(
        f"development secret file {path}: {why}; refused (fix it, or give its variable, "
        "DEFEAH_TOKEN_KEYS or DEFEAH_ERASURE_PEPPER, instead)"
    )


def _owned(path: Path, info: os.stat_result, what: str) -> None:
    if info.st_uid != os.geteuid():
        raise _refused(path, f"{what} belongs to uid {info.st_uid}, not to this user")


def _open_folder(path: Path) -> int:
    folder = path.parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | _NO_FOLLOW)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _refused(path, "its folder is a symbolic link or not a folder") from None
        raise _refused(path, f"its folder cannot be opened ({exc.strerror})") from None
    try:
        info = os.fstat(descriptor)
        _owned(path, info, "its folder")
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            mode = stat.S_IMODE(info.st_mode)
            raise _refused(
                path, f"its folder is writable by group or others (mode {mode:04o}; chmod go-w)"
            )
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def _read(folder: int, path: Path) -> str | None:
    """The file's text, or None when there is none; refused unless it passes every check."""
    try:
        # O_NONBLOCK: a planted FIFO must not hang the process (no effect on a regular file).
        descriptor = os.open(path.name, os.O_RDONLY | os.O_NONBLOCK | _NO_FOLLOW, dir_fd=folder)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refused(path, "is a symbolic link (remove it; a key is generated)") from None
        raise _refused(path, f"cannot be opened ({exc.strerror})") from None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise _refused(path, "is not a regular file")
        _owned(path, info, "it")
        if info.st_mode & 0o077:
            mode = stat.S_IMODE(info.st_mode)
            raise _refused(path, f"is open to group or others (mode {mode:04o}; chmod 600)")
        raw = os.read(descriptor, MAX_KEY_FILE_BYTES + 1)  # a regular file: all of it, to there
    finally:
        os.close(descriptor)
    if len(raw) > MAX_KEY_FILE_BYTES:
        raise _refused(path, f"is larger than {MAX_KEY_FILE_BYTES} bytes")
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise _refused(path, "is not ASCII text") from None


def _create(folder: int, path: Path, entry: str) -> None:
    temporary = f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_FOLLOW
    descriptor = os.open(temporary, flags, 0o600, dir_fd=folder)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as out:
            out.write(entry + "\n")
            out.flush()
            os.fsync(out.fileno())
        # link() never replaces: when it exists, another process created it first and its key
        # is the one everybody uses (read back below, with every check).
        with contextlib.suppress(FileExistsError):
            os.link(
                temporary, path.name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False
            )
    finally:
        os.unlink(temporary, dir_fd=folder)


def dev_key_text(path: Path, new_entry: Callable[[], str]) -> str:
    """The development ring stored at ``path``; created holding ``new_entry()`` when absent.
    ``ConfigError`` (one line) when the file or its folder could be someone else's."""
    folder = _open_folder(path)
    try:
        text = _read(folder, path)
        if text is None:
            _create(folder, path, new_entry())
            text = _read(folder, path)
        if text is None:
            raise _refused(path, "was removed while being created")
        return text.strip()
    finally:
        os.close(folder)
