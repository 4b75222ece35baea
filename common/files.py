"""Writing files safely: secrets readable by their owner only (mode 0600), from the first byte;
JSON state replaced atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_private(path: Path, data: bytes) -> None:
    """Create or replace ``path`` with mode 0600 (set at creation, so it is never world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)  # an existing file keeps its old mode through O_CREAT: set it again


def write_json_atomic(path: Path, data: object) -> None:
    """Replace ``path`` with ``data`` as JSON in one rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)
