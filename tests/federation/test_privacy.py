"""Privacy, shown: the coordinator is blind, and no PII leaves a warehouse node.

One in-process federation (the real ServerApp and ClientApp, every message round-tripped through
its wire bytes) is run with every message captured in both directions and the coordinator's log
written to a file, then each node forecasts and decides. The assertions then look at bytes only.
"""

from __future__ import annotations

import logging
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from common import crypto
from common.config import load_node_config
from coordinator.planner import inprocess
from coordinator.planner.inprocess import run_inprocess
from coordinator.server_app import app as server_app
from tests.conftest import make_nodes, process_memory_holds, run_config, secret_only_slices
from warehouse_node import client_app as client_module
from warehouse_node.pipeline import forecast
from warehouse_node.replenish import run_replenish

NODE_INPUTS = ("raw", "keys", "private", "stock.csv", "node.toml")  # given to the node, or private


@pytest.fixture(scope="module")
def federation(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("privacy")
    keys = root / "keys"
    crypto.keygen(keys)
    dirs, canaries = make_nodes(root / "nodes", keys)
    coordinator = root / "coordinator"
    coordinator.mkdir()
    (coordinator / crypto.PUBLIC_CONTEXT_FILE).write_bytes((keys / crypto.PUBLIC_CONTEXT_FILE).read_bytes())
    blobs: list[bytes] = []
    real_wire = inprocess.wire

    def capture(msg):
        copy, blob = real_wire(msg)
        blobs.append(blob)
        return copy, blob

    handler = logging.FileHandler(coordinator / "serverapp.log")
    flwr_log = logging.getLogger("flwr")
    flwr_log.addHandler(handler)
    rc = {
        **run_config(keys, coordinator / "checkpoints"),
        "public-context": str(coordinator / crypto.PUBLIC_CONTEXT_FILE),
        # the cross-site profile's messages and files are captured and probed too
        "network-group": "sku",
        "network-groups": ",".join(f"SKU-{i:04d}" for i in range(5)),
        "denoise-rank": 2,
        "denoise-periods": 60,
        "denoise-min-sites": 3,
    }
    mp = pytest.MonkeyPatch()
    mp.setattr(inprocess, "wire", capture)
    try:
        run_inprocess(server_app, client_module.app, dirs, rc)
    finally:
        mp.undo()
        flwr_log.removeHandler(handler)
        handler.close()
    for d in dirs:
        cfg = load_node_config(d)
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
        forecast(cfg).to_parquet(cfg.out_dir / "forecasts.parquet", index=False)
        run_replenish(cfg.out_dir / "forecasts.parquet", d / "stock.csv", cfg.out_dir)
    return {"keys": keys, "nodes": dirs, "canaries": canaries, "coordinator": coordinator, "blobs": blobs}


def _files(folder: Path, skip: tuple[str, ...] = ()) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).parts[0] not in skip]


def test_coordinator_holds_no_secret_key_and_cannot_decrypt_what_it_has(federation):
    coordinator, blobs = federation["coordinator"], federation["blobs"]
    artifacts = {str(p): p.read_bytes() for p in _files(coordinator)}
    assert any(name.endswith(".state.ckks") for name in artifacts)
    assert (coordinator / "serverapp.log").stat().st_size > 0
    secret_slices = secret_only_slices(federation["keys"])
    assert len(secret_slices) >= 20
    node_secret = (federation["nodes"][0] / "keys" / crypto.SECRET_CONTEXT_FILE).read_bytes()
    assert all(s in node_secret for s in secret_slices)  # the probe finds a secret key where one is
    for where, data in [*artifacts.items(), *((f"message {i}", b) for i, b in enumerate(blobs))]:
        assert not any(s in data for s in secret_slices), f"secret key bytes in {where}"
    public = crypto.load_context(coordinator / crypto.PUBLIC_CONTEXT_FILE)
    assert not public.has_secret_key
    for name in (n for n in artifacts if n.endswith(".ckks")):
        vec = crypto.EncryptedVector.from_bytes(artifacts[name])
        with pytest.raises(crypto.CryptoError, match="no secret key"):
            crypto.decrypt(public, vec)
        with pytest.raises(ValueError):
            crypto._deserialize(public, vec)[0].decrypt()  # TenSEAL itself refuses, past our guard


def test_no_pii_canary_in_any_message_coordinator_file_or_node_output(federation):
    canaries = [v.encode() for per_node in federation["canaries"] for vs in per_node.values() for v in vs]
    assert len(canaries) > 300
    raw = b"".join(p.read_bytes() for d in federation["nodes"] for p in _files(d / "raw"))
    assert sum(c in raw for c in canaries) == len(canaries)  # the probe finds them where they are
    places = {f"message {i}": b for i, b in enumerate(federation["blobs"])}
    places |= {str(p): p.read_bytes() for p in _files(federation["coordinator"])}
    outputs = [p for d in federation["nodes"] for p in _files(d, NODE_INPUTS)]
    assert {p.name for p in outputs} >= {"forecasts.parquet", "decisions.csv", "strategy.csv"}
    places |= {str(p): p.read_bytes() for p in outputs}
    hits = [(where, c.decode()) for where, data in places.items() for c in canaries if c in data]
    assert hits == []


def test_every_sites_private_folder_is_readable_by_its_owner_only(federation):
    """After rounds with the profile, hold-out scores, the network forecast and replenish: the
    folder 0700 and every file in it 0600 (the series map turns pseudonyms back into skus)."""
    for d in federation["nodes"]:
        private = d / "private"
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in private.rglob("*")}
        assert {"series_map.parquet", "demand.parquet", "quarantine.csv", "global_model.pt"} <= set(modes)
        assert {name: mode for name, mode in modes.items() if mode & 0o077} == {}


def test_the_memory_probe_finds_a_secret_key_in_a_process_that_holds_one(federation):
    """The probe the deployment test runs on the SuperLink, checked both ways on two children."""
    keys = federation["keys"]
    hold = "import sys, time; k = open(sys.argv[1], 'rb').read(); print('ready', flush=True); time.sleep(9)"
    pieces = secret_only_slices(keys)
    found = {}
    for name in (crypto.SECRET_CONTEXT_FILE, crypto.PUBLIC_CONTEXT_FILE):
        child = subprocess.Popen([sys.executable, "-c", hold, str(keys / name)], stdout=subprocess.PIPE)
        try:
            assert child.stdout is not None and child.stdout.readline() == b"ready\n"
            found[name] = process_memory_holds(child.pid, pieces)
        finally:
            child.kill()
            child.wait()
    if found[crypto.SECRET_CONTEXT_FILE] is None:
        pytest.skip("this machine does not let a process read its children's memory (/proc/PID/mem)")
    assert found == {crypto.SECRET_CONTEXT_FILE: True, crypto.PUBLIC_CONTEXT_FILE: False}


def test_an_error_at_a_site_reaches_the_coordinator_without_its_data(nodes, keys, tmp_path):
    """Flower sends the coordinator the message of whatever a ClientApp raises; a data error's
    message names the file and shows a header or cell, so the site sends only its kind and step."""
    dirs, _ = nodes
    orders = dirs[0] / "raw" / "orders.csv"
    orders.write_text("order_ts;sku;quantity\n2024-01-01;CANARY-CELL-42;3\n")  # refused by the reader
    seen = []
    rc = run_config(keys, tmp_path / "ckpt", rounds=1, min_nodes=2)
    run_inprocess(server_app, client_module.app, dirs, rc, observer=lambda msg, blob: seen.append(msg))
    errors = [m.error.reason for m in seen if m.has_error()]
    assert errors, "the damaged site answered every step"
    assert all("CANARY" not in e and "orders.csv" not in e and "order_ts" not in e for e in errors), errors
    assert "ConfigError at this site during training; the site's own log says why" in errors[0]
    assert (tmp_path / "ckpt" / "round_0001.state.ckks").is_file()  # the other sites' round went on
