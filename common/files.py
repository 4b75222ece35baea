"""Writing files safely: secrets readable by their owner only (mode 0600), from the first byte, and
a site's private folder owner-only as a whole; state (checkpoints, JSON records, arrays) replaced
atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def owner_only(folder: Path) -> Iterator[Path]:
    """Write into ``folder`` readable by its owner only: the folder is made (or set) 0700 before
    anything is written, files created inside are 0600 from their first byte (umask 077), and on
    leaving everything in it is set 0700 / 0600 (files another tool made, or an older version)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    old = os.umask(0o077)
    try:
        yield folder
    finally:
        os.umask(old)
        for path in folder.rglob("*"):
            if not path.is_symlink():
                os.chmod(path, 0o700 if path.is_dir() else 0o600)


def write_private(path: Path, data: bytes) -> None:
    """Create or replace ``path`` with mode 0600 (set at creation, so it is never world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)  # an existing file keeps its old mode through O_CREAT: set it again


@contextmanager
def replaced_atomically(path: Path) -> Iterator[BinaryIO]:
    """Write ``path`` through a temporary file renamed over it once written: a reader (or a process
    that dies mid-write) never leaves half a file under the name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        yield out
    tmp.replace(path)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with replaced_atomically(path) as out:
        out.write(data)


def write_json_atomic(path: Path, data: object) -> None:
    """Replace ``path`` with ``data`` as JSON in one rename."""
    write_bytes_atomic(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def round_file(folder: Path, server_round: int, suffix: str) -> Path:
    """A round's file in ``folder``: ``round_0007`` + ``suffix`` (e.g. ``.state.ckks``, ``.npz``)."""
    return Path(folder) / f"round_{server_round:04d}{suffix}"


def round_files(folder: Path, suffix: str) -> dict[int, Path]:
    """The round files of ``folder`` with ``suffix``, by round (none when the folder is missing)."""
    found = Path(folder).glob(f"round_*{suffix}") if Path(folder).is_dir() else ()
    rounds = {}
    for path in found:
        number = path.name[len("round_") : -len(suffix)]
        if number.isdigit():
            rounds[int(number)] = path
    return rounds


class OutputError(ValueError):
    """An output that cannot be written: said before any work is done."""


def check_output(path: Path, folder: bool = False) -> Path:
    """``path`` (an output file, or with ``folder`` an output folder) if it can be written: it is
    not the other kind, and it or its nearest existing parent is a writable folder; else a one-line
    error, before anything is computed."""
    path = Path(path)
    what = "output folder" if folder else "output file"
    if path.exists() and path.is_dir() != folder:
        raise OutputError(f"{what} {path} is a {'file' if folder else 'folder'}")
    target = path if folder and path.exists() else path.parent
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not existing.is_dir():
        raise OutputError(f"{what} {path} cannot be made: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {path} cannot be written: {existing} is read-only for this user")
    return path
