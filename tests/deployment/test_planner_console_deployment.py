"""Three sites `fedstock-node join` a SuperLink; the keyless planner runs, watches and reads the network.

Flower's Deployment Engine on loopback: every process is started here and stopped by its PID. The
planner's site (its keys, the runs folder, the SuperLink's state and log) is one folder, the sites
others; the key pair is made at a site (`fedstock-node keygen`) and the planner's site never holds
its secret half, in a file or in the SuperLink's memory."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common.processes import flower_env, stop_group, write_run_config
from coordinator.planner.deployment import free_port, wait_for_port
from tests.conftest import FAST_RUN, make_nodes, process_memory_holds, secret_only_slices
from warehouse_node.node import NETWORK_TOTALS_FILE
from warehouse_node.pipeline import MAP_FILE

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _start(name: str, args: list[str], logs: Path, env: dict, procs: dict) -> subprocess.Popen:
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "wb") as log:
        procs[name] = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    return procs[name]


def _planner(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "fedstock-planner"), *args], capture_output=True, text=True, timeout=timeout
    )


def _logs(folder: Path) -> str:
    return "\n".join(p.read_text(errors="replace")[-2000:] for p in sorted(folder.glob("*.log")))


def test_three_sites_join_and_the_keyless_planner_runs_watches_and_reads_the_network(tmp_path):
    planner_site, sites = tmp_path / "planner", tmp_path / "sites"
    steward = sites / "warehouse-00" / "keys"  # the key steward: the first site
    made = subprocess.run(
        [
            str(BIN / "fedstock-node"),
            "keygen",
            "--out",
            str(steward),
            "--publish",
            str(planner_site / "keys"),
        ],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    dirs, _ = make_nodes(sites, steward)  # the steward hands secret.ctx to the other sites
    logs, runs, procs = planner_site / "logs", planner_site / "runs", {}
    env = flower_env(planner_site / "superlink-home")
    port = free_port()
    address = f"127.0.0.1:{port}"
    rc_file = write_run_config(tmp_path / "model.toml", FAST_RUN)
    common = ["--insecure", "--keys", str(planner_site / "keys"), "--runs", str(runs)]
    try:
        superlink = [
            "superlink",
            "--insecure",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--runs",
            str(runs),
        ]
        bare = {k: v for k, v in env.items() if k != "PATH"} | {"PATH": "/usr/bin:/bin"}  # not activated
        link = _start("superlink", [str(BIN / "fedstock-planner"), *superlink], logs, bare, procs)
        wait_for_port(port, proc=link)
        for i, d in enumerate(dirs):
            join = [
                str(BIN / "fedstock-node"),
                "join",
                "--superlink",
                address,
                "--config",
                str(d / "node.toml"),
            ]
            join += [
                "--keys",
                str(d / "keys"),
                "--insecure",
                "--port",
                str(free_port()),
                "--torch-threads",
                "1",
            ]
            _start(f"join-{i}", join, sites / "logs", dict(os.environ), procs)

        first = _planner(
            "run",
            "--superlink",
            address,
            *common,
            "--rounds",
            "2",
            "--min-nodes",
            "3",
            "--run-config",
            str(rc_file),
            "--network-group",
            "sku",
            "--network-groups",
            "SKU-0000,SKU-0001",
        )
        assert first.returncode == 0, first.stderr[-3000:] + _logs(logs) + _logs(sites / "logs")
        run_id = first.stdout.split()[0]
        assert "round 2: 3 nodes trained" in first.stderr
        for r in (1, 2):  # each round is shown with the losses the sites opened, not "-"
            assert re.search(rf"round {r}: 3 nodes trained, loss \d", first.stderr), first.stderr

        status = _planner("status", run_id, *common[1:], "--json")
        assert status.returncode == 0, status.stderr
        body = json.loads(status.stdout)
        assert body["rounds_done"] == 2 and body["rounds_planned"] == 2
        assert body["flower"]["status"] == "finished:completed"
        assert [len(r["trained"]) for r in body["rounds"]] == [3, 3]
        assert [len(r["evaluated"]) for r in body["rounds"]] == [3, 3]
        assert all(r["train_loss"] > 0 and r["validation_loss"] > 0 for r in body["rounds"])
        assert all(r["opened_by"] == 3 for r in body["rounds"])  # the sites opened each round's sums
        assert body["network_forecast"] == {"status": "opened", "sites": 3}

        out = tmp_path / "network.parquet"
        network = _planner("network-forecast", run_id, *common[1:], "--out", str(out))
        assert network.returncode == 0, network.stderr
        frame = pd.read_parquet(out)
        own = pd.concat([pd.read_parquet(d / "out" / NETWORK_TOTALS_FILE) for d in dirs])
        expected = own.groupby(["group", "date"])["mean"].sum()
        got = frame.set_index(["group", "date"])["mean"].loc[expected.index]
        assert np.allclose(got, expected, rtol=1e-6, atol=0)
        assert out.with_suffix(".png").is_file()

        dc_stock = tmp_path / "dc_stock.csv"
        dc_stock.write_text("sku,on_hand,lead_time\ntotal,0,2\n")
        dc = _planner(
            "dc-replenish", run_id, *common[1:], "--stock", str(dc_stock), "--out", str(runs / run_id / "dc")
        )
        assert dc.returncode == 0, dc.stderr
        report = _planner("report", run_id, *common[1:])
        assert report.returncode == 0, report.stderr
        page = (runs / run_id / "report.html").read_text()
        assert "Distribution center" in page and "REPLENISH_NOW" in page and "Network forecast" in page
        chosen = {"SKU-0000", "SKU-0001"}  # the network groups the planner itself named in its run config
        for d in dirs:  # no other sku and no pseudonym of any site reaches the planner's report
            names = pd.read_parquet(d / "private" / MAP_FILE)
            shown = [v for v in (*names["series"], *set(names["sku"]) - chosen) if str(v) in page]
            assert not shown, f"{d.name}'s {shown[:3]} in the planner's report"

        node_status = [
            json.loads(
                subprocess.run(
                    [str(BIN / "fedstock-node"), "status", "--config", str(d), "--json"],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
            for d in dirs
        ]
        assert all(s["rounds_answered"] == 2 and s["supernode"].startswith("running") for s in node_status)
        assert len({s["last_model"]["model"] for s in node_status}) == 1  # one global model, everywhere
        assert all(s["last_forecast"]["periods"] == FAST_RUN["horizon"] for s in node_status)
        site_report = subprocess.run(  # before replenish: the report says so, and shows the rest
            [str(BIN / "fedstock-node"), "report", "--node", str(dirs[0])], capture_output=True, text=True
        )
        assert site_report.returncode == 0, site_report.stderr
        assert "No decisions.csv yet" in (dirs[0] / "out" / "report.html").read_text()

        secret = secret_only_slices(steward)
        assert process_memory_holds(procs["superlink"].pid, secret) is False  # after the whole run
        leaving = procs["join-2"]
        os.kill(leaving.pid, signal.SIGINT)  # the operator's Ctrl-C
        assert leaving.wait(timeout=60) == 0
        join_log = (sites / "logs" / "join-2.log").read_text()
        assert "stopped cleanly" in join_log and "round 2: update sent" in join_log
    finally:
        for proc in procs.values():
            stop_group(proc)
    assert all(p.poll() is not None for p in procs.values())  # every process we started is gone
    assert "secret.ctx" not in (logs / "superlink.log").read_text(errors="replace")
    held = [p for p in planner_site.rglob("*") if p.is_file()]
    assert len(held) > 10 and not any(p.name == "secret.ctx" for p in held)
    for path in held:  # the planner's keys, the runs folder, the SuperLink's state and log
        data = path.read_bytes()
        assert not any(piece in data for piece in secret), f"secret key bytes in {path}"
