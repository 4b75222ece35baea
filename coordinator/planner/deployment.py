"""Start a real Flower deployment on loopback: SuperLink, SuperNodes, ``flwr run``; stop by PID.

Optionally with TLS (a CA made for the deployment) and SuperNode authentication (each node's key
registered through ``flwr supernode register``; an unregistered node is refused by the SuperLink).

Used by ``fedstock-planner demo`` and the Deployment Engine smoke test. Every process is started in
its own session; stopping stops its group and, by PID, every descendant seen while it ran (SuperExec
and its ServerApp run in a session of their own) — and nothing else.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from common.processes import (
    flower_env,
    flower_tool,
    kill_now,
    remember_descendants,
    stop_processes,
    write_connection,
)
from common.settings import APP_DIR
from common.site_keys import make_node_key
from coordinator.planner.certs import make_certificates

FEDERATION = "fedstock-local"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with code {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


@dataclass
class LocalDeployment:
    """A SuperLink and N SuperNodes on free loopback ports; use as a context manager."""

    workdir: Path
    node_dirs: list[Path]
    torch_threads: int = 1
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    superlink_port: int = 0
    tls: bool = False  # TLS with a self-signed CA made for this deployment (certs/)
    auth: bool = False  # SuperNode authentication (needs TLS): each node's key is registered
    _logs: list = field(default_factory=list)
    seen: dict[int, psutil.Process] = field(default_factory=dict)  # descendants, by PID

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.flwr_home = self.workdir / "flwr-home"
        self.log_dir = self.workdir / "logs"
        self.certs_dir = self.workdir / "certs"
        if self.auth and not self.tls:
            raise ValueError("SuperNode authentication needs TLS")

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=flower_env(self.flwr_home),
            cwd=self.workdir,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def start(self) -> LocalDeployment:
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        self.superlink_port = free_port()
        address = f"127.0.0.1:{self.superlink_port}"
        link_security = ["--insecure"]
        if self.tls:
            if not (self.certs_dir / "ca.crt").is_file():
                make_certificates(self.certs_dir, ["127.0.0.1", "localhost"])
            link_security = [
                *("--ssl-certfile", str(self.certs_dir / "server.pem")),
                *("--ssl-keyfile", str(self.certs_dir / "server.key")),
                *("--ssl-ca-certfile", str(self.certs_dir / "ca.crt")),
                *(["--enable-supernode-auth"] if self.auth else []),
            ]
        write_connection(self.flwr_home, FEDERATION, address, self.certs_dir / "ca.crt" if self.tls else None)
        link = self._spawn(
            "superlink",
            [
                flower_tool("flower-superlink"),
                *link_security,
                "--disable-runtime-dependency-installation",
                *("--host", "127.0.0.1", "--port", str(self.superlink_port)),
            ],
        )
        wait_for_port(self.superlink_port, proc=link)
        for i, node_dir in enumerate(self.node_dirs):
            self.start_supernode(f"supernode-{i}", node_dir)
        return self

    def start_supernode(
        self, name: str, node_dir: Path, register: bool = True, key: Path | None = None
    ) -> subprocess.Popen:
        """One SuperNode; with node auth it gets its own key pair, made in its node's folder as a
        site makes it (registered with the SuperLink or not), or ``key`` (a public key's path),
        registered by the caller."""
        security = ["--insecure"]
        if self.tls:
            security = ["--root-certificates", str(self.certs_dir / "ca.crt")]
        if self.auth:
            held = Path(node_dir) / "keys" / f"{name}.key.pub"  # a resumed deployment keeps its keys
            public = key or (held if held.is_file() else make_node_key(held.parent, name, stem=name))
            if register and key is None:
                self._register(public, name)
            security += ["--auth-supernode-private-key", str(public.with_suffix(""))]
        cfg = f"node-dir='{Path(node_dir).resolve()}' torch-threads={self.torch_threads}"
        return self._spawn(
            name,
            [
                flower_tool("flower-supernode"),
                *security,
                *("--superlink", f"127.0.0.1:{self.superlink_port}"),
                *("--host", "127.0.0.1", "--port", str(free_port())),
                *("--node-config", cfg),
            ],
        )

    def _register(self, public_key: Path, name: str) -> None:
        args = [flower_tool("flwr"), "supernode", "register", str(public_key), FEDERATION, "--name", name]
        done = subprocess.run(args, env=flower_env(self.flwr_home), cwd=self.workdir, capture_output=True)
        (self.log_dir / f"register-{name}.log").write_bytes(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"registering {name} with the SuperLink failed; see {self.log_dir}")

    def run(
        self, run_config: Path, timeout: float = 1200.0, on_poll: Callable[[], None] | None = None
    ) -> int:
        """``flwr run APP fedstock-local --stream`` with a run-config TOML file; return its exit code.

        Note: flwr run exits 0 even when the run failed; callers check what the ServerApp wrote."""
        args = [
            flower_tool("flwr"),
            "run",
            str(APP_DIR),
            FEDERATION,
            "--stream",
            "--run-config",
            str(run_config),
        ]
        with open(self.log_dir / "flwr-run.log", "wb") as log:
            proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=flower_env(self.flwr_home),
                cwd=self.workdir,
                start_new_session=True,
            )
            self.procs["flwr-run"] = proc
            deadline = time.monotonic() + timeout
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    kill_now(proc, self.seen)
                    raise TimeoutError(f"flwr run did not finish within {timeout:.0f}s")
                remember_descendants(self.procs.values(), self.seen)
                if on_poll:
                    on_poll()
                time.sleep(1.0)
        return proc.returncode

    def alive(self) -> dict[str, bool]:
        return {name: p.poll() is None for name, p in self.procs.items()}

    def stop(self, grace: float = 10.0) -> None:
        """Stop every process we started and every descendant seen: TERM by PID, then KILL."""
        stop_processes(self.procs.values(), self.seen, grace)
        for log in self._logs:
            log.close()

    def kill(self, name: str) -> None:
        """SIGKILL one started program and its group at once, as a crash would; ``stop`` reaps the rest."""
        kill_now(self.procs[name], self.seen)

    def __enter__(self) -> LocalDeployment:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
