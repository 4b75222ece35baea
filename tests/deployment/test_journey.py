"""The deployment journey of docs/journey.md, run exactly as the docs write it: a planner's site and
three warehouse sites on one machine, TLS and SuperNode authentication, each site with its own key
pair, `status` during round 1, two rounds, the network forecast and both reports.

Then what the journey must leave true: the planner's site holds no secret key and no site's private
key, in a file or in the SuperLink's memory; each site's private files are its own (0700/0600); the
network sums are exact; the planner's report names no sku or pseudonym. Every process the script
started is stopped by its PID (and their descendants), as its stop block does."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from common.processes import still_running
from coordinator.planner.deployment import free_port
from tests.conftest import ROOT, process_memory_holds, secret_only_slices
from warehouse_node.pipeline import MAP_FILE

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
SITES = [f"warehouse-0{n}" for n in range(3)]


def doc_block(tag: str) -> str:
    """The fenced block of docs/journey.md whose info string is ``bash TAG``."""
    text = (ROOT / "docs" / "journey.md").read_text()
    found = re.findall(rf"^```bash {tag}\n(.*?)^```$", text, flags=re.S | re.M)
    assert len(found) == 1, f"docs/journey.md has {len(found)} blocks tagged {tag}"
    return found[0]


def _shell(script: str, work: Path, timeout: float) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEDSTOCK_", "FLWR_"))}
    env.update(PATH=f"{BIN}:/usr/bin:/bin", PORT=str(free_port()), HOME=str(work / "home"))  # activated
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _started(work: Path) -> list[psutil.Process]:
    """Every process the script started, with all their descendants (the SuperLink's SuperExec
    runs in a session of its own)."""
    pids = [int(p) for p in (work / "pids").read_text().split()] if (work / "pids").is_file() else []
    found = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            found += [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    return found


def _planner(work: Path, *args: str) -> str:
    env = {
        **os.environ,
        "FEDSTOCK_KEYS": str(work / "planner" / "keys"),
        "FEDSTOCK_RUNS": str(work / "planner" / "runs"),
    }
    done = subprocess.run(
        [str(BIN / "fedstock-planner"), *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_documented_journey_runs_as_written_and_keeps_every_secret_where_it_belongs(tmp_path):
    work = tmp_path
    (work / "home").mkdir()
    try:
        walked = _shell(doc_block("journey"), work, timeout=1500)
        said = walked.stdout + walked.stderr
        (work / "journey.out").write_text(said)  # kept with the test's folder, for a failure's reader
        tails = "\n".join(
            (work / s / "join.log").read_text()[-1500:] for s in SITES if (work / s / "join.log").is_file()
        )
        assert walked.returncode == 0, said[-4000:] + tails
        assert "round 1 in progress" in said  # `status` right after `run --detach`
        assert re.search(r"round 2: 3 nodes trained, loss \d", said)  # `status --follow`, to the end
        assert "sites that trained: round 1: warehouse-00, warehouse-01, warehouse-02" in said
        run_id = next(p.name for p in (work / "planner" / "runs").iterdir() if p.name.isdigit())
        body = json.loads(_planner(work, "status", run_id, "--json"))
        assert body["rounds_done"] == 2 and body["flower"]["status"] == "finished:completed"
        assert [len(r["trained"]) for r in body["rounds"]] == [3, 3]
        assert all(r["opened_by"] == 3 for r in body["rounds"])
        assert body["network_forecast"] == {"status": "opened", "sites": 3}

        node_status = [
            json.loads(
                subprocess.run(
                    [str(BIN / "fedstock-node"), "status", "--node", str(work / s), "--json"],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
            for s in SITES
        ]
        assert all(n["rounds_answered"] == 2 and n["supernode"].startswith("running") for n in node_status)
        assert len({n["last_model"]["model"] for n in node_status}) == 1  # one global model, everywhere
        ports = {
            re.search(r"SuperNode port (\d+)", (work / s / "join.log").read_text()).group(1) for s in SITES
        }
        assert len(ports) == 3  # three SuperNodes on one machine, each on its own local port
        steward_keys = work / "warehouse-00" / "keys"
        secret = secret_only_slices(steward_keys)
        superlink = psutil.Process(int((work / "pids").read_text().split()[0]))  # the first started
        alive = [p for p in (superlink, *superlink.children(recursive=True)) if still_running(p)]
        assert len(alive) >= 2  # the supervising command and the SuperLink at least
        for proc in alive:  # the SuperLink and what it runs (a finished ServerApp is a zombie)
            assert process_memory_holds(proc.pid, secret) is False, proc.name()

        network = pd.read_csv(work / "planner" / "network.csv")
        own = pd.concat([pd.read_parquet(work / s / "out" / "network_totals.parquet") for s in SITES])
        expected = own[own["group"] == "total"].groupby("date")["mean"].sum().to_numpy()
        got = network[network["group"] == "total"].sort_values("date")["mean"].to_numpy()
        assert np.allclose(got, expected, rtol=1e-6, atol=0)

        page = (work / "planner" / "runs" / run_id / "report.html").read_text()
        for s in SITES:
            names = pd.read_parquet(work / s / "private" / MAP_FILE)
            assert not [v for v in (*names["series"], *names["sku"]) if str(v) in page], s
            assert "Act today" in (work / s / "out" / "report.html").read_text()
    finally:
        running = _started(work)
        stopped = _shell(doc_block("journey-stop"), work, timeout=60)
        _, alive = psutil.wait_procs(running, timeout=60)
        for proc in alive:  # what the stop block did not end: killed, and the test fails below
            proc.kill()
    assert stopped.returncode == 0, stopped.stderr
    assert not alive, f"still running after the stop block: {[p.pid for p in alive]}"
    assert all("stopped cleanly" in (work / s / "join.log").read_text() for s in SITES)

    planner_files = [p for p in (work / "planner").rglob("*") if p.is_file()]
    assert not [p for p in planner_files if p.name in ("secret.ctx", "supernode.key")]
    for path in planner_files:  # the planner's keys, certificates, runs and logs
        assert not any(piece in path.read_bytes() for piece in secret), f"secret key bytes in {path}"
    for s in SITES:
        site_keys = [p for p in work.rglob("supernode.key")]
        assert [p for p in site_keys if p.parent.parent.name == s] == [work / s / "keys" / "supernode.key"]
        private = work / s / "private"
        modes = [stat.S_IMODE(p.stat().st_mode) for p in private.rglob("*")]
        assert stat.S_IMODE(private.stat().st_mode) == 0o700 and modes and not [m for m in modes if m & 0o077]
    others = [p for p in work.rglob("*.key") if p.parent.parent.name not in SITES]
    assert sorted(p.name for p in others) == ["ca.key", "server.key"]  # the planner's own, in certs/
