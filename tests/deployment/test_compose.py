"""docker-compose.yml under a real container engine: scripts/compose_check.sh builds the image,
brings the deployment up, runs two rounds of three sites and tears it down. It needs root, Podman,
runc, debootstrap and podman-compose 1.1 or newer (PODMAN_COMPOSE may name it); it says why it
skips where those are missing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def _compose() -> tuple[str | None, str]:
    """(the podman-compose to use, or None; why not)."""
    if os.geteuid() != 0:
        return None, "the container check runs as root"
    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    if missing:
        return None, f"{', '.join(missing)} not installed (apt-get install podman runc debootstrap)"
    beside = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # .venv's first
    tool = os.environ.get("PODMAN_COMPOSE") or shutil.which("podman-compose", path=beside)
    if tool is None:
        return None, "podman-compose not installed (pip install 'podman-compose>=1.1')"
    said = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout
    found = re.search(r"podman-compose version (\d+)\.(\d+)", said)
    if not found or (int(found[1]), int(found[2])) < (1, 1):
        return None, f"{tool} is older than 1.1, which cannot use host networking"
    return tool, ""


PROJECT = "io.podman.compose.project=fedstock-check"  # compose_check.sh's project


def _containers_of_the_check() -> list[str]:
    listed = ["podman", "ps", "-a", "-q", "--filter", f"label={PROJECT}"]
    return subprocess.run(listed, capture_output=True, text=True).stdout.split()


def test_the_compose_deployment_runs_under_podman_and_leaves_nothing_behind(capsys):
    tool, why = _compose()
    if tool is None:
        pytest.skip(why)
    try:
        done = subprocess.run(
            ["bash", str(ROOT / "scripts" / "compose_check.sh")],
            env={**os.environ, "PODMAN_COMPOSE": tool},
            capture_output=True,
            text=True,
            timeout=1800,
        )
    finally:  # a timeout kills the script before its own teardown: remove what it left, and say so
        left = _containers_of_the_check()
        if left:
            subprocess.run(["podman", "rm", "-f", "-t", "5", *left], capture_output=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "2 rounds of 3 sites, network forecast and report written" in done.stdout
    assert "no site secret at the planner's" in done.stdout
    assert "each site decided in its own container" in done.stdout
    assert "no container, network or volume left behind" in done.stdout
    assert not left, f"containers left behind: {left}"
    with capsys.disabled():  # how long the image and the run took, in CI's log
        print(f"\ncompose check: {done.stdout.strip().splitlines()[-1]}")
