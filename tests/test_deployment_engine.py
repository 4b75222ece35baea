"""Smoke test on Flower's Deployment Engine: SuperLink + 3 SuperNodes on free loopback ports."""

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
