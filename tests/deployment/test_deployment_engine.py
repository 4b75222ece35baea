"""Flower's Deployment Engine: SuperLink + 3 SuperNodes on free loopback ports: TLS, node auth, failures.

The documented path (sites joining with `fedstock-node join`, a run from `fedstock-planner run`) is
tests/deployment/test_journey.py."""

import contextlib
import json
import os
import stat
import time

import numpy as np
import psutil
import pytest
import torch

from common import crypto
from common.config import load_node_config
from common.processes import still_running, write_run_config
from coordinator.planner.deployment import LocalDeployment
from coordinator.planner.runs import progress
from tests.conftest import node_round
from warehouse_node.node import Node

pytestmark = pytest.mark.slow


def test_tls_and_node_auth_refuse_an_unregistered_node_and_run_with_the_registered(
    nodes, keys, secret_key, tmp_path
):
    from tests.conftest import run_config

    rc = run_config(keys, tmp_path / "ckpt", rounds=1)
    rc_file = tmp_path / "run_config.toml"
    write_run_config(rc_file, rc)
    dep = LocalDeployment(tmp_path / "deployment", nodes[0], tls=True, auth=True)
    try:
        dep.start()
        intruder = dep.start_supernode("intruder", nodes[0][0], register=False)
        assert intruder.wait(timeout=120) != 0  # refused by the SuperLink: its key is not registered
        dep.run(rc_file, timeout=480)
        _a_site_added_joins_and_once_removed_is_refused(dep, nodes[0][0], tmp_path / "planner-runs")
    finally:
        dep.stop()
    log_dir = tmp_path / "deployment" / "logs"
    logs = "\n".join(p.read_text(errors="replace") for p in log_dir.glob("*.log"))
    done = progress(tmp_path / "ckpt")
    assert done.get("last_round") == 1, logs[-3000:]
    assert [(h["phase"], h["replies"]) for h in done["history"]] == [
        ("train", 3),
        ("evaluate", 3),
        ("publish", 3),  # the round's summed metrics, opened by the sites for the planner
        ("decide", 3),  # the sites' decision arrives through the real SuperLink too
        ("stop", 0),
    ]
    assert done["outcome"]["best_round"] == 1 and done["outcome"]["reason"].startswith("round cap")
    assert "--insecure" not in " ".join(" ".join(map(str, p.args)) for p in dep.procs.values())
    config = (tmp_path / "deployment" / "flwr-home" / "config.toml").read_text()
    assert "root-certificates" in config and "insecure" not in config
    intruder_log = (log_dir / "intruder.log").read_text(errors="replace")
    assert "Exit Code: 305" in intruder_log and "[code: 2004] Failed to activate SuperNode" in intruder_log
    certs = tmp_path / "deployment" / "certs"
    site_key = nodes[0][0] / "keys" / "supernode-0.key"  # made in the site's own folder
    for private in (certs / "ca.key", certs / "server.key", site_key):
        assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert not list(certs.rglob("*.key.pub"))  # the planner's side holds no site's key pair


def _a_site_added_joins_and_once_removed_is_refused(dep: LocalDeployment, node_dir, runs) -> None:
    """`fedstock-planner site add / list / remove` against the deployment's SuperLink."""
    from click.testing import CliRunner

    from common.site_keys import make_node_key
    from coordinator.planner.cli import cli as planner

    def planner_says(*args: str):
        return CliRunner().invoke(planner, ["site", *args, "--runs", str(runs)])

    link = ["--superlink", f"127.0.0.1:{dep.superlink_port}", "--tls-ca", str(dep.certs_dir / "ca.crt")]
    late = make_node_key(node_dir / "late-keys", "late")  # made at the site; the planner gets the .pub
    added = planner_says("add", str(late), "--name", "late", *link)
    assert added.exit_code == 0 and "site late registered" in added.output, added.output
    again = planner_says("add", str(late), "--name", "late")
    assert again.exit_code != 0 and "registered already" in again.output
    node_id = json.loads((runs / ".flwr" / "sites.json").read_text())["late"]
    proc = dep.start_supernode("late", node_dir, key=late)

    def late_entry() -> dict:
        listed = planner_says("list", "--json")
        assert listed.exit_code == 0, listed.output
        return next(s for s in json.loads(listed.output) if int(s["node-id"]) == node_id)

    deadline = time.monotonic() + 90
    while late_entry()["status"] != "online":
        assert time.monotonic() < deadline and proc.poll() is None, "the registered site never came online"
        time.sleep(1)
    assert late_entry()["site"] == "late"
    removed = planner_says("remove", "late")
    assert removed.exit_code == 0 and "refuses it now" in removed.output, removed.output
    proc.wait(timeout=120)  # refused from its next request on, the SuperNode stops
    gone = late_entry()
    assert gone["status"] != "online" and gone["deleted-at"] != "N/A" and gone["site"] == "", gone
    unknown = planner_says("remove", "late")
    assert unknown.exit_code != 0 and "no site named late" in unknown.output


def _survivors_average(node_dirs, rc: dict, secret_key) -> tuple[np.ndarray, np.ndarray]:
    """Round 1 recomputed at each node (same seed, same start): (survivors' average, all nodes')."""
    torch.set_num_threads(1)
    settings = node_round({**rc, "server-round": 1})
    states = []
    for d in node_dirs:
        u = Node(load_node_config(d)).train(settings, None)
        states.append(np.append(u.weight * u.weights, [u.weight * u.loss, u.weight]))
    survivors = states[:2]
    return (
        sum(s[:-1] for s in survivors) / sum(s[-1] for s in survivors),
        sum(s[:-1] for s in states) / sum(s[-1] for s in states),
    )


def test_a_node_killed_mid_round_leaves_the_round_to_the_survivors(nodes, keys, secret_key, tmp_path):
    from tests.conftest import run_config

    rc = run_config(keys, tmp_path / "ckpt", rounds=2, min_nodes=2)
    rc_file = tmp_path / "run_config.toml"
    write_run_config(rc_file, rc)
    dep = LocalDeployment(tmp_path / "deployment", nodes[0])
    victim_log = tmp_path / "deployment" / "logs" / "supernode-2.log"
    killed = []

    def kill_when_training() -> None:
        if not killed and "Receiving: train message" in victim_log.read_text(errors="replace"):
            dep.kill("supernode-2")  # by PID, mid-round
            killed.append(time.monotonic())

    try:
        dep.start()
        dep.run(rc_file, timeout=480, on_poll=kill_when_training)
    finally:
        dep.stop()
    logs = "\n".join(p.read_text(errors="replace") for p in (tmp_path / "deployment" / "logs").glob("*.log"))
    done = progress(tmp_path / "ckpt")
    assert killed and done.get("last_round") == 2, logs[-3000:]
    train = [h for h in done["history"] if h["phase"] == "train"]
    assert [h["replies"] for h in train] == [2, 2]
    assert "Node Unavailable" in train[0]["refused"][0]
    survivors, everyone = _survivors_average(nodes[0], rc, secret_key)
    state = crypto.decrypt(
        secret_key,
        crypto.EncryptedVector.from_bytes((tmp_path / "ckpt" / "round_0001.state.ckks").read_bytes()),
    )
    aggregate = state[:-1] / state[-1]
    assert np.allclose(aggregate, survivors, rtol=1e-4, atol=1e-5)
    assert not np.allclose(aggregate, everyone, rtol=1e-4, atol=1e-5)


def test_coordinator_killed_by_pid_resumes_from_its_last_checkpoint(nodes, keys, secret_key, tmp_path):
    from tests.conftest import run_config

    ckpt = tmp_path / "ckpt"
    rc = run_config(keys, ckpt, rounds=2)
    rc_file = tmp_path / "run_config.toml"
    killed = []

    def write(config: dict) -> None:
        write_run_config(rc_file, config)

    first = LocalDeployment(tmp_path / "first", nodes[0])

    def kill_after_round_one() -> None:
        if not killed and (ckpt / "round_0001.state.ckks").is_file():
            commands = []
            for p in first.seen.values():
                with contextlib.suppress(psutil.Error):  # a process may end while we read it
                    commands += [" ".join(p.cmdline())] if still_running(p) else []
            killed.append(commands)
            first.kill("superlink")  # SuperLink, SuperExec, ServerApp

    write(rc)
    try:
        first.start()
        first.run(rc_file, timeout=480, on_poll=kill_after_round_one)
    finally:
        first.stop()
    orphans = [p.pid for p in first.seen.values() if still_running(p)]
    assert killed and any("flwr-serverapp" in cmd for cmd in killed[0]), killed  # outside the group
    assert not orphans, f"left running after stop(): {orphans}"
    assert killed and progress(ckpt)["last_round"] == 1 and not (ckpt / "round_0002.state.ckks").exists()
    round1 = (ckpt / "round_0001.state.ckks").read_bytes()
    write({**rc, "resume": True})
    second = LocalDeployment(tmp_path / "second", nodes[0])
    try:
        second.start()
        second.run(rc_file, timeout=480)
    finally:
        second.stop()
    logs = "\n".join(p.read_text(errors="replace") for p in (tmp_path / "second" / "logs").glob("*.log"))
    done = progress(ckpt)
    assert done["last_round"] == 2, logs[-3000:]
    assert [h["round"] for h in done["history"] if h["phase"] == "train"] == [1, 2]
    assert (ckpt / "round_0001.state.ckks").read_bytes() == round1  # not redone
    assert "resuming after round 1" in logs
    assert not any(first.alive().values()) and not any(second.alive().values())
