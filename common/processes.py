"""Starting and stopping Flower's own programs (flwr, flower-superlink, flower-supernode).

Each is started in its own session. Stopping it stops its process group and, by PID, every process
it spawned: flower-superlink starts SuperExec in a session of its own, so SuperExec and the ServerApp
it runs are outside the group. Descendants seen earlier are remembered (``remember_descendants``),
so they are stopped even after the parent that would have led to them has died.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import psutil


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


def still_running(process: psutil.Process) -> bool:
    """Running and not a zombie: an orphan's zombie stays until PID 1 reaps it, which a container's
    PID 1 may never do, and it holds nothing."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def remember_descendants(procs: Iterable[subprocess.Popen], seen: dict[int, psutil.Process]) -> None:
    """Add every live descendant of ``procs`` to ``seen`` (psutil's Process guards against PID reuse)."""
    for proc in procs:
        if proc.poll() is not None:
            continue
        with contextlib.suppress(psutil.Error):
            seen.update({child.pid: child for child in psutil.Process(proc.pid).children(recursive=True)})


def stop_processes(
    procs: Iterable[subprocess.Popen], seen: dict[int, psutil.Process] | None = None, grace: float = 10.0
) -> None:
    """TERM each started program's group and every descendant by PID; KILL what is left after ``grace``."""
    procs = list(procs)
    tree = dict(seen or {})
    remember_descendants(procs, tree)
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
    for child in tree.values():
        with contextlib.suppress(psutil.Error):
            child.terminate()  # psutil refuses when the PID now belongs to another process
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    running = [child for child in tree.values() if still_running(child)]
    _, alive = psutil.wait_procs(running, timeout=max(0.1, deadline - time.monotonic()))
    alive = [child for child in alive if still_running(child)]
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(alive, timeout=5)
    for proc in procs:  # children the group leaders left behind
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def kill_now(proc: subprocess.Popen, seen: dict[int, psutil.Process]) -> None:
    """SIGKILL a started program's group at once (a crash), remembering its descendants first so that
    ``stop_processes`` can still stop the ones outside the group."""
    remember_descendants([proc], seen)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=5)


def stop_group(proc: subprocess.Popen, grace: float = 10.0) -> int:
    """Stop one started program and everything it spawned; return its exit code."""
    stop_processes([proc], grace=grace)
    return proc.returncode
