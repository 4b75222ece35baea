"""The planner's handle on a running federation, through Flower's own ``flwr`` CLI.

A run is started with ``flwr run APP CONNECTION --run-config FILE --format json`` and watched with
``flwr ls CONNECTION --run-id ID --format json``; the connection (SuperLink address and its CA) is
kept in RUNS/.flwr/config.toml, so every planner command talks to the same SuperLink. The ServerApp
writes each run's encrypted checkpoints to RUNS/RUN_ID (run config ``runs-dir``).
"""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path

from common.processes import flower_env, flower_tool, write_connection, write_run_config
from coordinator.deployment import APP_DIR

CONNECTION = "fedstock"


class ControlError(ValueError):
    """The SuperLink refused the request or could not be reached (shown as a one-line error)."""


def flwr_home(runs: Path) -> Path:
    return Path(runs).resolve() / ".flwr"


def connect(runs: Path, superlink: str, root_ca: Path | None) -> None:
    host, _, port = superlink.rpartition(":")
    if not host or not port.isdigit():
        raise ControlError(f"--superlink must be HOST:PORT, got {superlink!r}")
    write_connection(flwr_home(runs), CONNECTION, superlink, root_ca)


def _flwr(runs: Path, *args: str, timeout: float = 120.0) -> dict:
    """Run one ``flwr`` command with JSON output; return its JSON, or raise with Flower's message."""
    home = flwr_home(runs)
    if not (home / "config.toml").is_file():
        raise ControlError(f"no SuperLink connection in {home}: start a run with --superlink first")
    done = subprocess.run(
        [flower_tool("flwr"), *args, "--format", "json"],
        env=flower_env(home),
        cwd=runs,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    out = done.stdout
    try:
        reply = json.loads(out[out.index("{") :]) if "{" in out else {}
    except json.JSONDecodeError:
        reply = {}
    if done.returncode != 0 or not reply.get("success"):
        message = reply.get("error-message") or (done.stderr or done.stdout).strip().splitlines()[-1:]
        raise ControlError(f"flwr {args[0]} failed: {message}")
    return reply


def app_config_keys(app: Path) -> set[str]:
    """The run-config keys the Flower app declares (``flwr run`` refuses any other)."""
    pyproject = Path(app) / "pyproject.toml"
    try:
        return set(tomllib.loads(pyproject.read_text())["tool"]["flwr"]["app"]["config"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        raise ControlError(
            f"{app} is not the fedstock Flower app (no [tool.flwr.app.config] in {pyproject})"
        ) from None


def start_run(runs: Path, run_config: dict, app: Path = APP_DIR) -> int:
    """Submit a run of the Flower app in ``app`` to the SuperLink; return its run id."""
    runs = Path(runs).resolve()
    config = write_run_config(flwr_home(runs) / "run_config.toml", run_config)
    reply = _flwr(runs, "run", str(Path(app).resolve()), CONNECTION, "--run-config", str(config))
    return int(reply["run-id"])


def run_info(runs: Path, run_id: int) -> dict:
    """Flower's view of a run: status ("running", "finished:completed", ...), times, traffic."""
    reply = _flwr(Path(runs).resolve(), "ls", CONNECTION, "--run-id", str(run_id))
    if not reply.get("runs"):
        raise ControlError(f"the SuperLink knows no run {run_id}")
    return reply["runs"][0]


def stop_run(runs: Path, run_id: int) -> None:
    _flwr(Path(runs).resolve(), "stop", str(run_id), CONNECTION)
