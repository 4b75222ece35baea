"""Shared fixtures: small synthetic warehouses provisioned with one key pair."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common import crypto
from common.settings import ModelConfig, Settings, TrainConfig, with_defaults
from common.synthetic import SyntheticSpec, write_warehouse
from coordinator.planner.provision import provision_node

SMALL = SyntheticSpec(items=5, days=300, horizon_days=28, customers=40)
ROOT = Path(__file__).resolve().parents[1]  # the repository
SHARED = ROOT.parent / "shared" / "data"
FAST_RUN = {"local-epochs": 1, "max-batches": 8, "lookback": 21, "horizon": 14, "hidden": 16, "seed": 3}


def toy_panel(n_series: int = 4, periods: int = 200) -> pd.DataFrame:
    """Learnable: a weekly pattern times a per-series level, plus promotion uplift."""
    rows = []
    dates = pd.date_range("2024-01-01", periods=periods, freq="D")
    for s in range(n_series):
        promo = (np.arange(periods) % 17 < 3).astype(float)
        y = (10 * (s + 1)) * (1 + 0.5 * np.sin(2 * np.pi * np.arange(periods) / 7)) * (1 + 0.5 * promo)
        rows.append(
            pd.DataFrame(
                {
                    "series": f"s{s}",
                    "date": dates,
                    "demand": y,
                    "price": 1.0,
                    "promo": promo,
                    "holiday": 0.0,
                    "category": f"c{s % 2}",
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


@pytest.fixture(scope="session")
def keys(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("keys")
    crypto.keygen(out)
    return out


@pytest.fixture(scope="session")
def secret_key(keys) -> crypto.KeyContext:
    return crypto.load_context(keys / crypto.SECRET_CONTEXT_FILE)


@pytest.fixture(scope="session")
def public_key(keys) -> crypto.KeyContext:
    return crypto.load_context(keys / crypto.PUBLIC_CONTEXT_FILE)


@pytest.fixture(scope="session")
def published_keys(keys, tmp_path_factory) -> Path:
    """The planner's keys folder: the public half the key steward publishes (no secret.ctx)."""
    out = tmp_path_factory.mktemp("planner") / "keys"
    crypto.publish_keys(keys, out)
    return out


def make_nodes(root: Path, keys: Path, n: int = 3) -> tuple[list[Path], list[dict[str, list[str]]]]:
    fingerprint = crypto.load_context(keys / crypto.PUBLIC_CONTEXT_FILE).fingerprint
    dirs, canaries = [], []
    for i in range(n):
        d = root / f"warehouse-{i:02d}"
        canaries.append(write_warehouse(d, i, SMALL, seed=11))
        provision_node(d, keys, fingerprint)
        dirs.append(d)
    return dirs, canaries


@pytest.fixture
def nodes(tmp_path, keys) -> tuple[list[Path], list[dict[str, list[str]]]]:
    return make_nodes(tmp_path / "nodes", keys)


def secret_only_slices(keys: Path, width: int = 48, wanted: int = 40) -> list[bytes]:
    """Byte strings of secret.ctx that public.ctx does not contain: the secret key's own bytes."""
    secret = (keys / crypto.SECRET_CONTEXT_FILE).read_bytes()
    public = (keys / crypto.PUBLIC_CONTEXT_FILE).read_bytes()
    step = max(width, len(secret) // (wanted * 4))
    found = [secret[i : i + width] for i in range(0, len(secret) - width, step)]
    return [s for s in found if s not in public][:wanted]


def process_memory_holds(pid: int, pieces: list[bytes]) -> bool | None:
    """Whether any readable region of a running process's memory holds one of ``pieces``
    (Linux /proc; a child of this process may be read). None where this machine does not allow it."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
        mem = open(f"/proc/{pid}/mem", "rb", buffering=0)  # noqa: SIM115 (closed below)
    except OSError:
        return None
    with mem:
        for line in maps.splitlines():
            span, perms = line.split()[:2]
            if not perms.startswith("r"):
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            try:
                mem.seek(start)
                region = mem.read(end - start)
            except (OSError, OverflowError, ValueError):  # [vvar] and the like cannot be read
                continue
            if any(piece in region for piece in pieces):
                return True
    return False


MESSAGE_KEYS = ("server-round", "round-nodes", "global-round", "run-token", "denoise-id")


def model_config(**changes) -> ModelConfig:
    """The app's default model with ``changes`` (unit tests use small shapes)."""
    return replace(Settings.defaults().federation.model, **changes)


def train_config(**changes) -> TrainConfig:
    return replace(Settings.defaults().federation.train, **changes)


def node_round(config: dict):
    """What a node reads from a message carrying ``config`` (run-config keys over the app's
    defaults, and the message's own keys, e.g. ``server-round``)."""
    from warehouse_node.federated import RoundSettings

    run = with_defaults({k: v for k, v in config.items() if k not in MESSAGE_KEYS})
    return RoundSettings.of({**run, **{k: v for k, v in config.items() if k in MESSAGE_KEYS}})


def run_config(keys: Path, checkpoints: Path, rounds: int = 2, min_nodes: int = 3) -> dict:
    return {
        **FAST_RUN,
        "num-rounds": rounds,
        "min-nodes": min_nodes,
        "public-context": str(keys / crypto.PUBLIC_CONTEXT_FILE),
        "checkpoint-dir": str(checkpoints),
    }


@pytest.fixture(scope="session")
def walmart_slice(tmp_path_factory) -> Path:
    """Three stores of the shared Walmart files, written to a temporary folder (never the repo)."""
    src = SHARED / "walmart"
    if not (src / "sales.parquet").is_file():
        pytest.skip("../shared/data/walmart is not available")
    out = tmp_path_factory.mktemp("walmart")
    stores = [1, 2, 3]
    for name in ("sales", "features", "stores"):
        frame = pd.read_parquet(src / f"{name}.parquet")
        frame[frame["Store"].isin(stores)].to_parquet(out / f"{name}.parquet", index=False)
    return out


GROUPS = ("unit", "federation", "deployment")  # the folders: what a test needs to run


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by its folder, so that `pytest -m unit` (seconds) or `-m "not deployment"` selects."""
    for item in items:
        group = next((g for g in GROUPS if g in item.path.parts), None)
        if group:
            item.add_marker(group)
