"""Smoke test on Flower's Deployment Engine: SuperLink + 3 SuperNodes on free loopback ports."""

import os
import stat

import pytest

from common import crypto
from coordinator.deployment import LocalDeployment
from coordinator.planner import progress, round_metrics

pytestmark = pytest.mark.slow


def test_superlink_and_three_supernodes_run_two_encrypted_rounds(nodes, keys, secret_key, tmp_path):
    from tests.conftest import run_config

    rc = run_config(keys, tmp_path / "ckpt")
    rc_file = tmp_path / "run_config.toml"
    rc_file.write_text("".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in rc.items()))
    dep = LocalDeployment(tmp_path / "deployment", nodes[0])
    try:
        dep.start()
        assert all(dep.alive().values())
        dep.run(rc_file, timeout=480)
    finally:
        dep.stop()
    logs = "\n".join(p.read_text(errors="replace") for p in (tmp_path / "deployment" / "logs").glob("*.log"))
    done = progress(tmp_path / "ckpt")
    assert done.get("last_round") == 2, logs[-3000:]
    assert [h["replies"] for h in done["history"]] == [3, 3, 3, 3]
    assert (round_metrics(tmp_path / "ckpt", secret_key)["nodes"] == 3).all()
    assert not any(dep.alive().values())  # every process we started is gone
    assert crypto.SECRET_CONTEXT_FILE not in logs


def test_tls_and_node_auth_refuse_an_unregistered_node_and_run_with_the_registered(
    nodes, keys, secret_key, tmp_path
):
    from tests.conftest import run_config

    rc = run_config(keys, tmp_path / "ckpt", rounds=1)
    rc_file = tmp_path / "run_config.toml"
    rc_file.write_text("".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in rc.items()))
    dep = LocalDeployment(tmp_path / "deployment", nodes[0], tls=True, auth=True)
    try:
        dep.start()
        intruder = dep.start_supernode("intruder", nodes[0][0], register=False)
        assert intruder.wait(timeout=120) != 0  # refused by the SuperLink: its key is not registered
        dep.run(rc_file, timeout=480)
    finally:
        dep.stop()
    log_dir = tmp_path / "deployment" / "logs"
    logs = "\n".join(p.read_text(errors="replace") for p in log_dir.glob("*.log"))
    done = progress(tmp_path / "ckpt")
    assert done.get("last_round") == 1, logs[-3000:]
    assert [h["replies"] for h in done["history"]] == [3, 3]
    assert "--insecure" not in " ".join(" ".join(map(str, p.args)) for p in dep.procs.values())
    config = (tmp_path / "deployment" / "flwr-home" / "config.toml").read_text()
    assert "root-certificates" in config and "insecure" not in config
    intruder_log = (log_dir / "intruder.log").read_text(errors="replace")
    assert "Exit Code: 305" in intruder_log and "[code: 2004] Failed to activate SuperNode" in intruder_log
    certs = tmp_path / "deployment" / "certs"
    for private in (certs / "ca.key", certs / "server.key", certs / "nodes" / "supernode-0.key"):
        assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
