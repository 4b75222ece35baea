"""``fedstock-node init``: a site's folder from data at hand, for a trial deployment: one store of
the public datasets, or a generated synthetic warehouse. It writes raw/ and a node.toml that the
operator then reads and edits; keys come from the federation (keys/) and ``fedstock-node authkey``.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

from common import crypto
from common.config import ConfigError
from common.public_data import WRITERS
from common.synthetic import SyntheticSpec, write_warehouse


def init_site(
    out: Path,
    dataset: str | None = None,
    data: Path | None = None,
    store: int | None = None,
    synthetic: int | None = None,
    seed: int = 7,
    name: str | None = None,
    keys: Path | None = None,
    spec: SyntheticSpec | None = None,
) -> Path:
    """Write the site folder ``out`` (new or empty); return its node.toml."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty: choose a new folder for the site")
    if (dataset is None) == (synthetic is None):
        raise ConfigError("choose one: --dataset NAME --data FOLDER --store N, or --synthetic N")
    fingerprint = _fingerprint(Path(keys)) if keys is not None else None  # before anything is written
    if synthetic is not None:
        write_warehouse(out, synthetic, spec or SyntheticSpec(), seed=seed)
    else:
        if data is None or store is None:
            raise ConfigError(f"--dataset {dataset} needs --data FOLDER and --store N")
        with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
            made = WRITERS[dataset](Path(data), Path(tmp), only=[store])
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(made[0], out, dirs_exist_ok=True)
    toml = out / "node.toml"
    text = re.sub(r'^name = ".*"$', f'name = "{name or out.name}"', toml.read_text(), count=1, flags=re.M)
    if fingerprint is not None:
        manifest = Path(keys) / crypto.MANIFEST_FILE
        line = f'key_fingerprint = "{fingerprint}"  # from {manifest}'
        text = text.replace("\n\n[data]", f"\n{line}\n\n[data]", 1)
    toml.write_text(text)
    return toml


def _fingerprint(keys: Path) -> str:
    manifest = keys / crypto.MANIFEST_FILE
    try:
        value = json.loads(manifest.read_text())["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"{manifest} is not the federation's keys.json (with its fingerprint)") from None
    return str(value)
