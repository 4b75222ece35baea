"""``fedstock-planner superlink``: start Flower's SuperLink with fedstock's flags, after checking
what it needs, and keep it in the foreground; Ctrl-C or SIGTERM stops it and everything it started.

Started by its absolute path from an environment that is not activated, ``flower-superlink``
fails later with Flower's raw traceback: it starts ``flower-superexec`` from PATH. This command
puts its own environment's programs first on PATH and checks, before anything starts, that both
programs are there, the port is free and the certificates (``fedstock-planner certs``) are usable.
"""

from __future__ import annotations

import datetime as dt
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import click

from common.cli_errors import one_line_errors
from common.processes import flower_env, flower_tool, remember_descendants, stop_processes
from coordinator.planner.console import runs_option

PROGRAMS = ("flower-superlink", "flower-superexec")


def check_programs() -> None:
    missing = [name for name in PROGRAMS if not Path(flower_tool(name)).is_file()]
    if missing:
        raise click.ClickException(
            f"{', '.join(missing)} not found beside {Path(flower_tool('x')).parent}: install fedstock "
            "with scripts/setup.sh and run this environment's fedstock-planner"
        )


def check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT after a restart: free
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise click.ClickException(
                f"{host}:{port} cannot be used ({exc.strerror}): is a SuperLink running already? "
                "Choose another --port"
            ) from None


def check_certs(certs: Path) -> list[str]:
    """The SuperLink's TLS flags from ``fedstock-planner certs``'s folder; its files checked."""
    from cryptography import x509

    files = {name: certs / name for name in ("server.pem", "server.key", "ca.crt")}
    for path in files.values():
        if not path.is_file():
            raise click.ClickException(f"{path} not found: make it with fedstock-planner certs --out {certs}")
    try:
        cert = x509.load_pem_x509_certificate(files["server.pem"].read_bytes())
    except ValueError:
        raise click.ClickException(f"{files['server.pem']} is not a PEM certificate") from None
    if cert.not_valid_after_utc < dt.datetime.now(dt.UTC):
        raise click.ClickException(f"{files['server.pem']} expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    return [
        *("--ssl-certfile", str(files["server.pem"])),
        *("--ssl-keyfile", str(files["server.key"])),
        *("--ssl-ca-certfile", str(files["ca.crt"])),
        "--enable-supernode-auth",
    ]


@click.command("superlink")
@click.option(
    "--certs",
    "certs_dir",
    type=click.Path(file_okay=False),
    help="Folder of `fedstock-planner certs` (server.pem, server.key, ca.crt): TLS and SuperNode "
    "authentication.",
)
@click.option("--insecure", is_flag=True, help="No TLS, no node authentication: a test network only.")
@click.option("--host", default="0.0.0.0", show_default=True, help="Address the SuperNodes reach it at.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--database",
    type=click.Path(dir_okay=False),
    default=None,
    help="SQLite file: registrations and runs survive a restart [default: in memory].",
)
@runs_option
@click.option("--dry-run", is_flag=True, help="Check, print the command, and start nothing.")
@one_line_errors
def superlink_cmd(
    certs_dir: str | None,
    insecure: bool,
    host: str,
    port: int,
    database: str | None,
    runs_dir: str,
    dry_run: bool,
) -> None:
    """Check, then start the SuperLink in the foreground (Ctrl-C stops it)."""
    if bool(certs_dir) == insecure:
        raise click.ClickException("pass --certs FOLDER, or --insecure for a test network (not both)")
    check_programs()
    security = check_certs(Path(certs_dir)) if certs_dir else ["--insecure"]
    check_port(host, port)
    args = [
        flower_tool("flower-superlink"),
        *security,
        "--disable-runtime-dependency-installation",
        *(("--database", str(Path(database).resolve())) if database else ()),
        *("--host", host, "--port", str(port)),
    ]
    click.echo(" ".join(args), err=True)
    if dry_run:
        return
    env = flower_env(Path(runs_dir).resolve() / ".flwr")  # this environment's programs first on PATH
    sys.exit(supervise(args, env))


class _Stop(Exception):
    """Ctrl-C or SIGTERM: stop the SuperLink and what it started."""


def supervise(args: list[str], env: dict[str, str]) -> int:
    """Run the SuperLink until it exits or we are stopped; then stop it and every process it
    started: SuperExec runs in a session of its own and would outlive a SuperLink stopped alone."""
    proc = subprocess.Popen(args, env=env, start_new_session=True)
    seen: dict = {}

    def on_stop(*_: object) -> None:
        raise _Stop

    previous = {sig: signal.signal(sig, on_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while proc.poll() is None:
            remember_descendants([proc], seen)
            time.sleep(1.0)
    except _Stop:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop_processes([proc], seen, grace=15.0)
    return 0 if proc.returncode in (0, -signal.SIGTERM) else proc.returncode
