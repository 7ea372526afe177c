"""The development key file is trusted only when nobody else could have planted or read it
(issue 20, item 15): no symbolic links, this user's, 0600, in a folder of this user that
group and others cannot write; every refusal one line, never a raw OSError."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dal.errors import ConfigError
from dal.instagram.keyring import cipher_for, dev_key_text, new_key_entry
from tests.commands import ROOT

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")


def keys_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "checkout" / ".defeah"
    folder.mkdir(parents=True, mode=0o700)
    return folder


def refused(path: Path, *words: str) -> str:
    with pytest.raises(ConfigError) as caught:
        dev_key_text(path)
    text = str(caught.value)
    assert "\n" not in text and str(path) in text, text
    for word in words:
        assert word in text, text
    return text


def test_created_with_mode_0600_by_exactly_one_of_many_processes(tmp_path: Path) -> None:
    path = keys_folder(tmp_path) / "token-keys"
    script = (
        "import sys; from pathlib import Path; from dal.instagram.keyring import dev_key_text;"
        " print(dev_key_text(Path(sys.argv[1])))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        for _ in range(8)
    ]
    keys = {proc.communicate(timeout=60)[0].strip() for proc in procs}
    assert all(proc.returncode == 0 for proc in procs)
    assert len(keys) == 1 and keys == {path.read_text().strip()}
    info = path.lstat()
    assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_nlink == 1 and sorted(os.listdir(path.parent)) == ["token-keys"]


def test_a_missing_folder_is_created_private(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / ".defeah" / "token-keys"
    dev_key_text(path)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_symlink_to_a_good_key_file_is_refused(tmp_path: Path) -> None:
    folder = keys_folder(tmp_path)
    target = folder / "elsewhere"
    target.write_text(new_key_entry("planted") + "\n")
    target.chmod(0o600)
    (folder / "token-keys").symlink_to(target)
    refused(folder / "token-keys", "symbolic link")


def test_a_dangling_symlink_is_one_line_not_file_not_found(tmp_path: Path) -> None:
    folder = keys_folder(tmp_path)
    (folder / "token-keys").symlink_to(tmp_path / "nowhere" / "token-keys")
    refused(folder / "token-keys", "symbolic link")
    assert not (tmp_path / "nowhere").exists()  # nothing was created through the link


def test_a_dangling_symlink_through_the_cli_is_one_line_exit_1(tmp_path: Path) -> None:
    folder = keys_folder(tmp_path)
    (folder / "token-keys").symlink_to(tmp_path / "nowhere")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEFEAH_")}
    env.update(DEFEAH_ENV="development", DEFEAH_DATA_DIR=str(folder / "pgdata"))
    env.pop("DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "cli", "reencrypt"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("defeah-db: error: development secret file")
    assert "symbolic link" in lines[0] and "Traceback" not in done.stderr


@pytest.mark.parametrize("mode", [0o666, 0o644, 0o640, 0o604, 0o620, 0o602, 0o610])
def test_a_key_file_open_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = keys_folder(tmp_path) / "token-keys"
    path.write_text(new_key_entry("dev") + "\n")
    path.chmod(mode)
    refused(path, f"mode {mode:04o}")


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o775, 0o757])
def test_a_folder_others_can_write_is_refused_before_anything_is_created(
    tmp_path: Path, mode: int
) -> None:
    folder = keys_folder(tmp_path)
    folder.chmod(mode)
    refused(folder / "token-keys", "writable by group or others")
    assert os.listdir(folder) == []  # no key written where someone else could swap it


def test_a_folder_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    real = keys_folder(tmp_path)
    link = tmp_path / "linked"
    link.symlink_to(real, target_is_directory=True)
    refused(link / "token-keys", "symbolic link")


@as_root
@pytest.mark.parametrize("give_away", ["file", "folder"])
def test_a_key_file_or_folder_of_another_user_is_refused(tmp_path: Path, give_away: str) -> None:
    folder = keys_folder(tmp_path)
    path = folder / "token-keys"
    path.write_text(new_key_entry("planted") + "\n")
    path.chmod(0o600)
    os.chown(path if give_away == "file" else folder, NOBODY, -1)
    refused(path, f"uid {NOBODY}", "not to this user")


@pytest.mark.parametrize(
    ("plant", "words"),
    [
        (lambda p: os.mkfifo(p, 0o600), "not a regular file"),  # must not hang either
        (lambda p: p.mkdir(mode=0o700), "not a regular file"),
        (lambda p: p.write_bytes(b"x" * 70_000), "larger than"),
    ],
)
def test_other_things_in_place_of_the_file_are_refused(
    tmp_path: Path, plant: Callable[[Path], object], words: str
) -> None:
    path = keys_folder(tmp_path) / "token-keys"
    plant(path)
    if path.is_file():
        path.chmod(0o600)
    refused(path, words)


def test_cipher_for_uses_the_checked_file(tmp_path: Path) -> None:
    folder = keys_folder(tmp_path)
    cipher = cipher_for(None, folder / "pgdata")
    assert cipher.active == "dev"
    (folder / "token-keys").chmod(0o644)
    with pytest.raises(ConfigError, match="mode 0644"):
        cipher_for(None, folder / "pgdata")
