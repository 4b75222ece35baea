"""``fedstock-node join``: check this site locally, then run its SuperNode in the foreground.

Everything that can be checked without the SuperLink is checked first (configuration, raw data
prepared and de-identified, keys against the federation's fingerprint, certificates), so a site
never joins a round it would fail. The SuperNode's output is kept whole in NODE/logs/supernode.log;
the terminal shows the node's own ``fedstock-node |`` lines and Flower's warnings and errors.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from common import crypto
from common.config import ConfigError, NodeConfig, load_node_config, with_site_files
from common.processes import flower_env, flower_tool, stop_group
from common.site_keys import SITE_KEY_FILE
from common.training import training_device
from warehouse_node import journal
from warehouse_node.client_app import LOG_PREFIX
from warehouse_node.pipeline import QUARANTINE_FILE, prepare_node

SHOWN_FLOWER_LEVELS = ("ERROR", "WARNING", "CRITICAL")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class JoinError(ValueError):
    """A local check failed: the SuperNode is not started."""


class _Stop(Exception):
    """Ctrl-C (SIGINT) or SIGTERM: leave the federation cleanly."""


@dataclass(frozen=True)
class JoinSettings:
    superlink: str
    config: Path
    data: Path | None = None
    keys: Path | None = None
    tls_ca: Path | None = None
    auth_key: Path | None = None
    insecure: bool = False
    fingerprint: str | None = None
    port: int | None = None  # this SuperNode's ClientAppIo port (loopback); None: the first free one
    torch_threads: int = 0
    verbose: bool = False


def _private_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise JoinError(f"{what} not found: {path}")
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise JoinError(f"{what} {path} is readable by others: chmod 600 it")


def _fingerprints(s: JoinSettings, cfg: NodeConfig) -> dict[str, str]:
    """Where the federation's fingerprint is written down, besides the key itself."""
    found = {}
    if s.fingerprint:
        found["--fingerprint"] = s.fingerprint
    if cfg.key_fingerprint:
        found["node.toml key_fingerprint"] = cfg.key_fingerprint
    manifest = cfg.secret_context.parent / crypto.MANIFEST_FILE
    if manifest.is_file():
        found[str(manifest)] = json.loads(manifest.read_text()).get("fingerprint", "")
    return found


def check_keys(s: JoinSettings, cfg: NodeConfig) -> str:
    _private_file(cfg.secret_context, "secret context")
    key = crypto.load_context(cfg.secret_context)
    if not key.has_secret_key:
        raise JoinError(f"{cfg.secret_context} holds no secret key: a node needs the federation's secret.ctx")
    expected = _fingerprints(s, cfg)
    if not expected:
        raise JoinError("no federation fingerprint to check the key against: pass --fingerprint")
    for source, value in expected.items():
        if value != key.fingerprint:
            raise JoinError(
                f"the key {cfg.secret_context} has fingerprint {key.fingerprint}, but {source} says "
                f"{value}: the federation's fingerprint is the one in the key steward's keys.json; "
                f"correct {source} or use the federation's secret.ctx"
            )
    return f"key {key.fingerprint} matches the federation's ({', '.join(expected)})"


def check_transport(s: JoinSettings) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if bool(s.tls_ca) == s.insecure:
        raise JoinError("pass --tls-ca FILE, or --insecure for a test network (not both)")
    if s.auth_key and not s.tls_ca:
        raise JoinError("--auth-key needs TLS (--tls-ca)")
    line = "insecure transport (test network only)"
    if s.tls_ca:
        if not s.tls_ca.is_file():
            raise JoinError(f"CA certificate not found: {s.tls_ca}")
        try:
            cert = x509.load_pem_x509_certificate(s.tls_ca.read_bytes())
        except ValueError:
            raise JoinError(f"{s.tls_ca} is not a PEM certificate") from None
        if cert.not_valid_after_utc.timestamp() < time.time():
            raise JoinError(f"CA certificate {s.tls_ca} expired on {cert.not_valid_after_utc:%Y-%m-%d}")
        line = f"TLS with CA {cert.subject.rfc4514_string()}, valid until {cert.not_valid_after_utc:%Y-%m-%d}"
    if s.auth_key:
        _private_file(s.auth_key, "SuperNode auth key")
        try:
            serialization.load_ssh_private_key(s.auth_key.read_bytes(), password=None)
        except (ValueError, TypeError):
            raise JoinError(f"{s.auth_key} is not an unencrypted OpenSSH private key") from None
        line += f"; SuperNode key {s.auth_key.name}"
    return line


def port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now (a port left in TIME_WAIT by a SuperNode that
    just stopped counts as free: the servers set SO_REUSEADDR too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def check_port(s: JoinSettings) -> tuple[int, str]:
    """This SuperNode's local port: the one asked for if it is free, else one the system gives
    (several sites on one machine, even started at the same moment, never pick the same)."""
    if s.port is not None:
        if not port_free(s.port):
            raise JoinError(
                f"port {s.port} on 127.0.0.1 is in use (another SuperNode on this machine?): pass a free "
                "--port, or leave --port out to take one the system gives"
            )
        return s.port, f"SuperNode port {s.port} on 127.0.0.1 is free"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return port, f"SuperNode port {port} on 127.0.0.1 (free, given by the system)"


def check_training_device(cfg: NodeConfig) -> str:
    """node.toml's ``[training] device`` is on this machine: a missing GPU fails here, not in round 1."""
    try:
        device = training_device(cfg.training_device)
    except ValueError as exc:
        raise JoinError(f"node.toml: {exc}") from None
    if device.type == "cpu":
        return "training on the CPU"
    return f"training on {device} ({torch.cuda.get_device_name(device)})"


def check_site(s: JoinSettings) -> tuple[JoinSettings, NodeConfig, list[str]]:
    """Run every local check; return the settings with this SuperNode's port, the node's
    configuration and one line per check passed."""
    host, _, port = s.superlink.rpartition(":")
    if not host or not port.isdigit():
        raise JoinError(f"--superlink must be HOST:PORT, got {s.superlink!r}")
    try:
        cfg = load_node_config(s.config)
    except ConfigError as exc:
        raise JoinError(str(exc)) from None
    secret = s.keys / crypto.SECRET_CONTEXT_FILE if s.keys else None
    cfg = with_site_files(cfg, s.data, secret)
    if "'" in "".join(str(p) for p in (cfg.folder, cfg.data.path, cfg.secret_context)):
        raise JoinError("paths with a single quote cannot be passed to the SuperNode")
    lines = [f"config {s.config}: node {cfg.name}, data {cfg.data.path}", check_keys(s, cfg)]
    site_key = cfg.folder / "keys" / SITE_KEY_FILE
    if s.auth_key is None and s.tls_ca and site_key.is_file():  # the key pair `authkey` made here
        s = replace(s, auth_key=site_key)
    lines += [check_transport(s), check_training_device(cfg)]
    counts = prepare_node(cfg)
    quarantined = sum(v for k, v in counts.items() if k not in ("series", "periods", "dropped_columns"))
    lines.append(
        f"data de-identified: {counts.get('series', 0)} series, {counts.get('periods', 0)} series-periods; "
        f"{quarantined} rows quarantined or repaired ({cfg.private_dir / QUARANTINE_FILE})"
    )
    port, port_line = check_port(s)  # last: the SuperNode starts right after, on this port
    lines.append(port_line)
    return replace(s, port=port), cfg, lines


def superlink_reachable(address: str, timeout: float = 3.0) -> bool:
    host, _, port = address.rpartition(":")
    with (
        contextlib.suppress(OSError),
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout),
    ):
        return True
    return False


def supernode_args(s: JoinSettings, cfg: NodeConfig) -> list[str]:
    node_config = f"node-dir='{cfg.folder}' data='{cfg.data.path}' keys='{cfg.secret_context.parent}'"
    if s.torch_threads:
        node_config += f" torch-threads={s.torch_threads}"
    security = ["--root-certificates", str(s.tls_ca.resolve())] if s.tls_ca else ["--insecure"]
    if s.auth_key:
        security += ["--auth-supernode-private-key", str(s.auth_key.resolve())]
    return [
        flower_tool("flower-supernode"),
        *security,
        *("--superlink", s.superlink),
        *("--host", "127.0.0.1", "--port", str(s.port)),
        *("--node-config", node_config),
    ]


def _lines(proc: subprocess.Popen, log_path: Path) -> Iterator[str]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        for raw in proc.stdout:  # type: ignore[union-attr]
            line = raw.decode("utf-8", errors="replace").rstrip()
            log.write(line + "\n")
            log.flush()
            yield line


def shown(line: str, verbose: bool) -> str | None:
    """What the operator sees of one SuperNode output line (None: only in the log file)."""
    line = ANSI.sub("", line)
    if LOG_PREFIX in line:
        return line.split(LOG_PREFIX, 1)[1]
    if verbose or any(level in line for level in SHOWN_FLOWER_LEVELS) or "Exit Code" in line:
        return line
    return None


EXIT_SESSION_ENDED = 4  # the SuperNode stopped by itself without an error: the site is out
EXIT_SUPERNODE_FAILED = 5  # Flower's SuperNode stopped with an error; Flower's own code is said
FLOWER_EXIT = re.compile(r"Exit Code: (\d+)")  # Flower logs its code; its process exits 1


def run_supernode(s: JoinSettings, cfg: NodeConfig, say: Callable[[str], None]) -> int:
    """Start the SuperNode, relay its output until it exits or we are stopped; return the exit
    code: 0 when stopped here (Ctrl-C, SIGTERM), EXIT_SUPERNODE_FAILED when it failed (Flower's
    own code, e.g. 305, is said and journaled: a process exits 1 for all of them), and
    EXIT_SESSION_ENDED when it ended by itself without an error."""
    log_path = cfg.folder / "logs" / "supernode.log"
    proc = subprocess.Popen(
        supernode_args(s, cfg),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=flower_env(cfg.folder / ".flwr"),
        cwd=cfg.folder,
        start_new_session=True,  # Ctrl-C reaches us only; we stop the SuperNode's whole group
    )
    journal.record(cfg, "joined", superlink=s.superlink, pid=proc.pid)
    say(f"SuperNode started (pid {proc.pid}), connecting to {s.superlink}; full log {log_path}")

    def on_stop(*_: object) -> None:
        raise _Stop

    # Both set here: a process started in the background may inherit SIGINT as ignored.
    previous = {sig: signal.signal(sig, on_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    flower_code = None
    try:
        for line in _lines(proc, log_path):
            if found := FLOWER_EXIT.search(line):
                flower_code = int(found[1])
            if (text := shown(line, s.verbose)) is not None:
                say(text)
        code = proc.wait()
        told = f", Flower's exit code {flower_code}" if flower_code is not None else ""
        say(f"SuperNode exited with code {code}{told}; see {log_path}")
        if code != 0:
            code = EXIT_SUPERNODE_FAILED
        else:  # it ends by itself, without an error, when the SuperLink drops its key
            say(
                "the SuperNode stopped by itself without an error: the SuperLink no longer accepts "
                "this site's key (the planner removed it with fedstock-planner site remove), or "
                "something else stopped its process; ask the planner before joining again"
            )
            code = EXIT_SESSION_ENDED
    except _Stop:
        say("stopping: the SuperNode leaves the federation")
        stop_group(proc, grace=15.0)
        code = 0
        say("stopped cleanly")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None:
            stop_group(proc)
    journal.record(cfg, "left", superlink=s.superlink, exit_code=code, flower_exit_code=flower_code)
    return code


def status_lines(status: dict, holdout: dict | None = None) -> Iterator[tuple[str, str]]:
    """(what, value) rows of ``fedstock-node status``; ``holdout``: the last scores of
    ``journal.record_holdout``."""
    yield "node", str(status.get("node", "?"))
    yield "rounds answered", str(status.get("rounds_answered", 0))
    last = status.get("last_round")
    yield "last round", f"run {last['run']} round {last['round']} at {last['time']}" if last else "-"
    model = status.get("last_model")
    yield "last model", f"{model['model']} (run {model['run']} round {model['round']})" if model else "-"
    yield "forecast model", _decision_line(status.get("last_decision"))
    fc = status.get("last_forecast")
    yield (
        "last forecast",
        f"{fc['start']}..{fc['end']} ({fc['periods']} periods, {fc['series']} series) at {fc['time']}"
        + (f" with model {fc['forecast_model']}" if fc.get("forecast_model") else "")
        if fc
        else "-",
    )
    if fc and fc.get("source"):
        yield (
            "forecast source",
            ("the global model" if fc["source"] == "model" else f"FALLBACK baseline: {fc['source_reason']}"),
        )
    yield "hold-out here", _holdout_line(holdout) if holdout else "-"
    yield "supernode", supernode_state(status)


def _decision_line(d: dict | None) -> str:
    """The model this site forecasts with, as the federation's summed validation chose it."""
    if not d:
        return "-"
    state = "the federation stopped" if d["decision"] == "stop" else "training goes on"
    return (
        f"{d['kept_model']}, the best of run {d['run']} (round {d['best-round']}); after round "
        f"{d['round']} {state}: {d['stop-reason']}"
    )


def _holdout_line(h: dict) -> str:
    if "error" in h:
        return h["error"]
    if not h["points"]:
        return f"no hold-out window here: no series is long enough (run {h['run']} round {h['round']})"
    ratio = f" ({h['mae'] / h['naive_mae']:.2f} ×)" if h["naive_mae"] > 0 else ""
    return (
        f"MAE {h['mae']:.4g}, seasonal naive {h['naive_mae']:.4g}{ratio}; 80% interval covers "
        f"{h['coverage_80']:.1%} of {h['points']} points (run {h['run']} round {h['round']})"
    )


def supernode_state(status: dict) -> str:
    joins = [e for e in status.get("events", []) if e["kind"] in ("joined", "left")]
    if not joins:
        return "never joined"
    last = joins[-1]
    if last["kind"] == "left":
        flower = f", Flower's {last['flower_exit_code']}" if last.get("flower_exit_code") is not None else ""
        return f"left {last['superlink']} at {last['time']} (exit code {last.get('exit_code')}{flower})"
    if _alive(int(last.get("pid", 0))):
        return f"running (pid {last['pid']}), joined {last['superlink']} at {last['time']}"
    return f"gone without a clean stop (pid {last.get('pid')}), joined {last['superlink']} at {last['time']}"


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
