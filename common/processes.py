"""Starting and stopping Flower's own programs (flwr, flower-superlink, flower-supernode).

Each is started in its own session, so stopping its process group by the PID we started also stops
what it spawned (SuperExec, ServerApp and ClientApp processes), and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path


def flower_env(flwr_home: Path) -> dict[str, str]:
    """Environment for Flower's programs: our FLWR_HOME, no telemetry, no downloads at run time."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(
        {
            "FLWR_HOME": str(flwr_home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def flower_tool(name: str) -> str:
    """A Flower program from the environment we run in (not whatever is first on PATH)."""
    return str(Path(sys.executable).parent / name)


def write_run_config(path: Path, values: dict) -> Path:
    """A flat TOML file of run-config values, for ``flwr run --run-config FILE``."""

    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        return json.dumps(v) if isinstance(v, str) else repr(v)

    path.write_text("".join(f"{k} = {value(v)}\n" for k, v in values.items()))
    return path


def write_connection(flwr_home: Path, name: str, address: str, root_ca: Path | None) -> Path:
    """The ``flwr`` CLI's connection to a SuperLink: TLS with ``root_ca``, or insecure without."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    security = f'root-certificates = "{Path(root_ca).resolve()}"' if root_ca else "insecure = true"
    path = flwr_home / "config.toml"
    path.write_text(f'[superlink.{name}]\naddress = "{address}"\n{security}\n')
    return path


def stop_group(proc: subprocess.Popen, grace: float = 10.0) -> int:
    """TERM the process group, KILL it after ``grace`` seconds; reap leftovers; return the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # children the group leader left behind
    return proc.returncode
