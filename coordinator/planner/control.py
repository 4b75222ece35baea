"""The planner's handle on a running federation, through Flower's own ``flwr`` CLI.

A run is started with ``flwr run APP CONNECTION --run-config FILE --format json`` and watched with
``flwr ls CONNECTION --run-id ID --format json``; the connection (SuperLink address and its CA) is
kept in RUNS/.flwr/config.toml, so every planner command talks to the same SuperLink. The ServerApp
writes each run's encrypted checkpoints to RUNS/RUN_ID (run config ``runs-dir``).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from common.files import write_json_atomic
from common.processes import flower_env, flower_tool, write_connection, write_run_config
from common.settings import APP_DIR, SettingsError, app_defaults

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
    try:
        return set(app_defaults(Path(app).resolve()))
    except SettingsError:
        pyproject = Path(app) / "pyproject.toml"
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


# ---- the sites allowed to join: SuperNode keys registered with the SuperLink -------------------
SITES_FILE = "sites.json"  # RUNS/.flwr: the node id Flower gave each site's key, by site name


def _site_ids(runs: Path) -> dict[str, int]:
    path = flwr_home(runs) / SITES_FILE
    if not path.is_file():
        return {}
    try:
        return {str(k): int(v) for k, v in json.loads(path.read_text()).items()}
    except (json.JSONDecodeError, TypeError, ValueError, AttributeError):
        raise ControlError(f"{path} is damaged: it should map site names to node ids") from None


def site_names(runs: Path) -> dict[int, str]:
    """Node id -> site name, for the sites registered from this runs folder (``site add``)."""
    return {v: k for k, v in _site_ids(Path(runs).resolve()).items()}


def _save_site_ids(runs: Path, ids: dict[str, int]) -> None:
    write_json_atomic(flwr_home(runs) / SITES_FILE, dict(sorted(ids.items())))


def _known_ids(runs: Path) -> set[int]:
    """The node ids the SuperLink holds registered (an unregistered one stays listed, deleted)."""
    nodes = _flwr(runs, "supernode", "list", CONNECTION).get("nodes", [])
    return {int(n["node-id"]) for n in nodes if n.get("deleted-at", "N/A") in ("N/A", "", None)}


def register_site(runs: Path, public_key: Path, name: str) -> int:
    """Register a site's SuperNode public key with the SuperLink; return the node id Flower gave it.
    Only registered keys may join (the SuperLink runs with --enable-supernode-auth). A name is
    refused while the SuperLink still knows its node; one it forgot may be added again."""
    runs = Path(runs).resolve()
    ids = _site_ids(runs)
    if name in ids and ids[name] in _known_ids(runs):
        raise ControlError(f"a site named {name} is registered already (node {ids[name]}): remove it first")
    reply = _flwr(runs, "supernode", "register", str(Path(public_key).resolve()), CONNECTION, "--name", name)
    ids[name] = int(reply["node-id"])
    _save_site_ids(runs, ids)
    return ids[name]


def unregister_site(runs: Path, name: str) -> int:
    """Unregister a site's key: the SuperLink refuses its SuperNode from its next request on, and
    the SuperNode stops. Return the node id it had. A node the SuperLink has forgotten is only
    dropped from the names kept here."""
    runs = Path(runs).resolve()
    ids = _site_ids(runs)
    if name not in ids:
        known = ", ".join(sorted(ids)) or "none"
        raise ControlError(f"no site named {name} was registered from {runs} (registered: {known})")
    if ids[name] in _known_ids(runs):
        _flwr(runs, "supernode", "unregister", str(ids[name]), CONNECTION)
    node = ids.pop(name)
    _save_site_ids(runs, ids)
    return node


def list_sites(runs: Path) -> list[dict]:
    """Flower's list of SuperNodes (node id, status, times), each with the site name it was
    registered under here ("" for a key registered otherwise); then the sites registered here that
    the SuperLink does not know (status "unknown to the SuperLink": one restarted without its
    database forgets its registrations, and those sites cannot join until added again)."""
    runs = Path(runs).resolve()
    ids = _site_ids(runs)
    names = {v: k for k, v in ids.items()}
    nodes = _flwr(runs, "supernode", "list", CONNECTION).get("nodes", [])
    listed = [{"site": names.get(int(n["node-id"]), ""), **n} for n in nodes]
    known = {int(n["node-id"]) for n in nodes}
    missing = {k: v for k, v in ids.items() if v not in known}
    lost = [{"site": k, "node-id": v, "status": "unknown to the SuperLink"} for k, v in missing.items()]
    return listed + lost
