"""fedstock-planner site: which sites' SuperNodes the SuperLink lets join.

The SuperLink runs with SuperNode authentication: only a registered public key joins. ``site add``
registers a site's key (from ``fedstock-planner certs``) and keeps the node id Flower gives it under
the site's name (RUNS/.flwr/sites.json), so that ``site remove NAME`` can unregister it later.
Unregistering refuses the site from its next request on; its SuperNode stops. A site that leaves
for good still holds the federation's CKKS secret key: docs/planner.md (Recovery) says how to
move the others to a new key.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from common.cli_errors import one_line_errors
from coordinator.planner import control
from coordinator.planner.console import runs_option

console = Console(stderr=True)


def _connect(runs: Path, superlink: str | None, tls_ca: str | None, insecure: bool) -> None:
    """Write the SuperLink connection when one is given; else the one a previous command wrote."""
    if superlink is None:
        if tls_ca or insecure:
            raise click.ClickException("--tls-ca and --insecure go with --superlink HOST:PORT")
        if not (control.flwr_home(runs) / "config.toml").is_file():
            raise click.ClickException(
                f"no SuperLink connection in {control.flwr_home(runs)}: pass --superlink HOST:PORT "
                "with --tls-ca FILE"
            )
        return
    if bool(tls_ca) == insecure:
        raise click.ClickException("pass --tls-ca FILE, or --insecure for a test network (not both)")
    control.connect(runs, superlink, Path(tls_ca) if tls_ca else None)


def connection_options(fn: Callable) -> Callable:
    """--superlink, --tls-ca, --insecure and --runs, as on ``fedstock-planner run``."""
    fn = click.option("--insecure", is_flag=True, help="No TLS: for a test network on one machine only.")(fn)
    fn = click.option(
        "--tls-ca", type=click.Path(exists=True, dir_okay=False), help="CA of the SuperLink's certificate."
    )(fn)
    fn = click.option(
        "--superlink", default=None, help="HOST:PORT of the SuperLink [default: the last one used]."
    )(fn)
    return runs_option(fn)


@click.group()
def site() -> None:
    """Register, list and remove the sites whose SuperNodes may join."""


@site.command("add")
@click.argument("public_key", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", required=True, help="The site's name, e.g. warehouse-03.")
@connection_options
@one_line_errors
def add(
    public_key: str, name: str, superlink: str | None, tls_ca: str | None, insecure: bool, runs_dir: str
) -> None:
    """Register a site's SuperNode public key (its keys/supernode.key.pub, from `fedstock-node authkey`)."""
    runs = Path(runs_dir).resolve()
    _connect(runs, superlink, tls_ca, insecure)
    node = control.register_site(runs, Path(public_key), name)
    console.print(f"site {name} registered: node {node}; it may join now")


@site.command("remove")
@click.argument("name")
@connection_options
@one_line_errors
def remove(name: str, superlink: str | None, tls_ca: str | None, insecure: bool, runs_dir: str) -> None:
    """Unregister a site: the SuperLink refuses its SuperNode from its next request on."""
    runs = Path(runs_dir).resolve()
    _connect(runs, superlink, tls_ca, insecure)
    node = control.unregister_site(runs, name)
    console.print(
        f"site {name} (node {node}) removed: the SuperLink refuses it now. It still holds the "
        "federation's CKKS key: move the other sites to a new key (docs/planner.md, Recovery)"
    )


@site.command("list")
@connection_options
@click.option("--json", "as_json", is_flag=True, help="One JSON array on stdout.")
@one_line_errors
def list_(superlink: str | None, tls_ca: str | None, insecure: bool, runs_dir: str, as_json: bool) -> None:
    """The SuperNodes the SuperLink knows, with the site names registered from here."""
    runs = Path(runs_dir).resolve()
    _connect(runs, superlink, tls_ca, insecure)
    sites = control.list_sites(runs)
    if as_json:
        print(json.dumps(sites, indent=2))
        return
    table = Table(title=f"SuperNodes ({len(sites)})")
    for col in ("site", "node-id", "status", "online-at", "deleted-at"):
        table.add_column(col, overflow="fold", min_width=20 if col == "node-id" else None)  # ids whole
    for s in sites:
        table.add_row(
            *(str(s.get(col, "")) or "-" for col in ("site", "node-id", "status", "online-at", "deleted-at"))
        )
    console.print(table)
