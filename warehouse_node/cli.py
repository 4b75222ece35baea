"""fedstock-node: what a warehouse operator runs on the node."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from common import crypto
from common.cli_errors import one_line_errors
from common.config import load_node_config
from common.files import check_output
from common.policies import POLICIES
from common.site_keys import make_node_key
from common.tables import output_table, write_table
from warehouse_node import journal
from warehouse_node.join import JoinSettings, check_site, run_supernode, status_lines, superlink_reachable
from warehouse_node.node import Node
from warehouse_node.pipeline import QUARANTINE_FILE
from warehouse_node.replenish import run_replenish

console = Console(stderr=True)
EXIT_PARTIAL = 3  # some input rows could not be used: see the rejected / quarantine file


# every command that reads node.toml takes the node's folder or the file, under either name
node_option = click.option(
    "--node",
    "--config",
    "node_dir",
    required=True,
    type=click.Path(exists=True),
    help="The node's folder, or its node.toml.",
)


@click.group()
def cli() -> None:
    """Warehouse node: prepare data, forecast with the global model, decide replenishment."""


@cli.command()
@node_option
@one_line_errors
def prepare(node_dir: str) -> None:
    """De-identify and clean the raw data into NODE/private (quarantine counts printed)."""
    cfg = load_node_config(node_dir)
    counts = Node(cfg).prepare()
    table = Table(title=f"{cfg.name}: prepared")
    table.add_column("item")
    table.add_column("count", justify="right")
    for key, value in counts.items():
        table.add_row(key, str(value))
    console.print(table)
    console.print(f"quarantine: {cfg.private_dir / QUARANTINE_FILE}")


@cli.command(name="forecast")
@node_option
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Output file, .parquet or .csv (default NODE/out/forecasts.parquet).",
)
@one_line_errors
def forecast_cmd(node_dir: str, out_path: str | None) -> None:
    """Forecast the next H periods of every live series with the last global model, or with the
    fallback baseline when that model cannot be trusted (each row says which, and why)."""
    cfg = load_node_config(node_dir)
    path = output_table(Path(out_path)) if out_path else cfg.out_dir / "forecasts.parquet"
    check_output(path)  # before the forecast is computed
    frame = Node(cfg).forecast()
    write_table(frame, path)
    journal.record_forecast(cfg, frame)
    console.print(f"{cfg.name}: {frame['sku'].nunique()} skus x {frame['date'].nunique()} periods -> {path}")
    if len(frame) and frame["source"].iloc[0] == "fallback":
        console.print(
            f"[yellow]fallback baseline, not the global model:[/yellow] {frame['source_reason'].iloc[0]}"
        )


@cli.command()
@click.option("--forecasts", "forecasts_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--stock", "stock_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--node", "node_name", default=None, help="Only this node's rows of a combined forecasts file.")
@click.option(
    "--policy",
    type=click.Choice(list(POLICIES)),
    default="probabilistic",
    show_default=True,
    help="How reorder point and order-up-to are set (see common/policies.py).",
)
@click.option(
    "--overrides",
    "overrides_path",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="Operator overrides: sku, who, why, status and/or block_promotion.",
)
@click.option(
    "--strategy-config",
    "strategy_path",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="TOML of strategy thresholds (fields of common.inventory.StrategyConfig).",
)
@one_line_errors
def replenish(
    forecasts_path: str,
    stock_path: str,
    out_dir: str,
    node_name: str | None,
    policy: str,
    overrides_path: str | None,
    strategy_path: str | None,
) -> None:
    """Write OUT/decisions.csv and OUT/strategy.csv for the skus of the stock file."""
    overrides = Path(overrides_path) if overrides_path else None
    strategy = Path(strategy_path) if strategy_path else None
    out = Path(out_dir)
    paths = Path(forecasts_path), Path(stock_path), out
    result = run_replenish(*paths, node_name, policy, overrides, strategy)
    counts = result.decisions["status"].value_counts().to_dict()
    console.print(f"decisions: {counts}; promotions: {result.strategy['promotion'].value_counts().to_dict()}")
    if overrides is not None:
        pinned = int((result.decisions["override_by"] != "").sum())
        console.print(f"overrides applied: {pinned} statuses pinned")
    partial = False
    for rejected, what, name in (
        (result.rejected, "stock rows", "rejected.csv"),
        (result.rejected_overrides, "override rows", "overrides_rejected.csv"),
    ):
        if len(rejected):
            partial = True
            console.print(f"[red]{len(rejected)} {what} rejected[/red], reasons in {Path(out_dir) / name}:")
            for reason, n in rejected["reason"].value_counts().items():
                console.print(f"  {n} x {reason}")
    if partial:
        sys.exit(EXIT_PARTIAL)


def _file(path: str | None) -> Path | None:
    return Path(path) if path else None


@cli.command()
@node_option
@click.option(
    "--out", "out_path", default=None, type=click.Path(dir_okay=False), help="Default NODE/out/report.html."
)
@click.option(
    "--decisions",
    "decisions_dir",
    default=None,
    type=click.Path(exists=True, file_okay=False),
    help="Where replenish wrote decisions.csv and strategy.csv (default NODE/out).",
)
@click.option(
    "--forecasts",
    "forecasts_path",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="Default NODE/out/forecasts.parquet.",
)
@click.option(
    "--stock",
    "stock_path",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="The stock file: its unit_cost ranks the skus by value.",
)
@click.option("--sku", "skus", multiple=True, help="Chart this sku too (repeatable).")
@click.option(
    "--top", default=8, show_default=True, type=click.IntRange(0, 200), help="Skus charted by value."
)
@one_line_errors
def report(
    node_dir: str,
    out_path: str | None,
    decisions_dir: str | None,
    forecasts_path: str | None,
    stock_path: str | None,
    skus: tuple[str, ...],
    top: int,
) -> None:
    """The operator's morning report: one HTML file of what to order today, availability and
    promotion advice, each top sku's history, forecast and stock, and the data's health."""
    from warehouse_node.site_report import build_site_report

    cfg = load_node_config(node_dir)
    path = build_site_report(
        cfg, _file(out_path), _file(decisions_dir), _file(forecasts_path), _file(stock_path), skus, top
    )
    console.print(f"report written: {path} (it names skus and stock: it stays on this node)")


@cli.command()
@click.option("--superlink", required=True, help="HOST:PORT of the federation's SuperLink.")
@node_option
@click.option("--data", "data_path", type=click.Path(exists=True, dir_okay=False), help="Raw data file.")
@click.option(
    "--keys", "keys_dir", type=click.Path(exists=True, file_okay=False), help="Folder with secret.ctx."
)
@click.option("--tls-ca", type=click.Path(dir_okay=False), help="CA certificate of the SuperLink.")
@click.option(
    "--auth-key",
    type=click.Path(dir_okay=False),
    help="This SuperNode's private key (node auth) [default with --tls-ca: NODE/keys/supernode.key "
    "when `fedstock-node authkey` made it].",
)
@click.option("--insecure", is_flag=True, help="No TLS: for a test network on one machine only.")
@click.option(
    "--fingerprint", default=None, help="The federation's key fingerprint (the key steward's keys.json)."
)
@click.option(
    "--port",
    default=None,
    type=click.IntRange(1, 65535),
    help="This SuperNode's local ClientApp port on 127.0.0.1 (one per SuperNode on a machine) "
    "[default: a free one the system gives].",
)
@click.option("--torch-threads", default=0, type=click.IntRange(0, 256), help="0: torch's default.")
@click.option("--verbose", is_flag=True, help="Show every line of Flower's output too.")
@one_line_errors
def join(
    superlink: str,
    node_dir: str,
    data_path: str | None,
    keys_dir: str | None,
    tls_ca: str | None,
    auth_key: str | None,
    insecure: bool,
    fingerprint: str | None,
    port: int | None,
    torch_threads: int,
    verbose: bool,
) -> None:
    """Check this site, then run its SuperNode in the foreground (Ctrl-C leaves cleanly)."""
    settings = JoinSettings(
        superlink,
        Path(node_dir),
        _file(data_path),
        _file(keys_dir),
        _file(tls_ca),
        _file(auth_key),
        insecure,
        fingerprint,
        port,
        torch_threads,
        verbose,
    )
    settings, cfg, checks = check_site(settings)
    for line in checks:
        console.print(f"[green]ok[/green] {line}", soft_wrap=True)
    if not superlink_reachable(superlink):
        console.print(
            f"[yellow]SuperLink {superlink} does not answer yet: the SuperNode keeps trying[/yellow]"
        )

    def say(line: str) -> None:
        console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {line}", highlight=False, soft_wrap=True)

    code = run_supernode(settings, cfg, say)
    if code:
        sys.exit(code)


@cli.command()
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="The new site folder."
)
@click.option(
    "--dataset", type=click.Choice(["walmart", "store_item"]), help="One store of a public dataset."
)
@click.option(
    "--data", "data_dir", type=click.Path(exists=True, file_okay=False), help="The dataset's folder."
)
@click.option("--store", type=int, help="Which store of the dataset.")
@click.option("--synthetic", type=click.IntRange(0), help="A generated warehouse instead: its number.")
@click.option("--seed", default=7, show_default=True, help="The synthetic warehouse's seed.")
@click.option(
    "--items", default=16, show_default=True, type=click.IntRange(1, 10_000), help="Synthetic skus."
)
@click.option(
    "--days", default=730, show_default=True, type=click.IntRange(120, 3650), help="Synthetic days."
)
@click.option("--name", default=None, help="The site's name [default: the folder's name].")
@click.option(
    "--keys",
    "keys_dir",
    type=click.Path(exists=True, file_okay=False),
    help="The federation's keys folder: its keys.json fingerprint goes into node.toml.",
)
@one_line_errors
def init(
    out_dir: str,
    dataset: str | None,
    data_dir: str | None,
    store: int | None,
    synthetic: int | None,
    seed: int,
    items: int,
    days: int,
    name: str | None,
    keys_dir: str | None,
) -> None:
    """Make a site folder from one store of a public dataset or a synthetic warehouse: raw/ and a
    node.toml to read and edit."""
    from common.synthetic import SyntheticSpec
    from warehouse_node.init import init_site

    spec = SyntheticSpec(items=items, days=days)
    toml = init_site(
        Path(out_dir), dataset, _file(data_dir), store, synthetic, seed, name, _file(keys_dir), spec
    )
    console.print(
        f"site folder {toml.parent}: edit {toml}, put the federation's secret.ctx and keys.json in "
        f"{toml.parent / 'keys'}, then fedstock-node authkey --node {toml.parent} and fedstock-node join"
    )


@cli.command()
@node_option
@one_line_errors
def authkey(node_dir: str) -> None:
    """Make this site's SuperNode key pair (node authentication): the private key stays in
    NODE/keys (0600); send only the .pub file to the planner, who registers it."""
    cfg = load_node_config(node_dir)
    public = make_node_key(cfg.folder / "keys", cfg.name)
    console.print(
        f"SuperNode key pair made: {public.with_suffix('')} (0600, stays here; join uses it). "
        f"Send {public} to the planner: fedstock-planner site add {public.name} --name {cfg.name}"
    )


@cli.command()
@node_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@one_line_errors
def status(node_dir: str, as_json: bool) -> None:
    """What this node has done: rounds answered, last global model and its hold-out score here,
    last forecast, its SuperNode."""
    cfg = load_node_config(node_dir)
    state = journal.read_status(cfg)
    try:
        scores = journal.read_holdout(cfg)["rounds"]
    except ValueError:  # the rest of the status is still worth showing
        damaged = f"private/{journal.HOLDOUT_FILE} is damaged: the next round keeps it aside, starts anew"
        scores = [{"error": damaged}]
    holdout = scores[-1] if scores else None
    rows = dict(status_lines(state, holdout))
    if as_json:
        shown = {**state, "supernode": rows["supernode"], "holdout": holdout}
        print(json.dumps(shown, indent=2, default=str))
        return
    table = Table(title=f"{cfg.name}: node status ({journal.status_path(cfg)})", show_header=False)
    for what, value in rows.items():
        table.add_row(what, value)
    console.print(table)


@cli.command()
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="This site's keys folder: secret.ctx (0600), public.ctx, keys.json.",
)
@click.option(
    "--publish",
    "publish_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for the public half (public.ctx, keys.json): what the coordinator and planner get.",
)
@one_line_errors
def keygen(out_dir: str, publish_dir: str) -> None:
    """Make the federation's CKKS key pair at this site (the key steward).

    Hand secret.ctx to the other sites over a channel you trust; the coordinator and the planner
    get only the --publish folder, and refuse a secret context. Parameters: N=4096, moduli [56, 20]
    bits, scale 2^35 (128-bit security; BENCHMARKS.md, "CKKS overhead")."""
    out = Path(out_dir)
    if (out / crypto.SECRET_CONTEXT_FILE).exists():
        raise click.ClickException(f"{out / crypto.SECRET_CONTEXT_FILE} exists: refusing to overwrite keys")
    if Path(publish_dir).resolve() == out.resolve():
        raise click.ClickException("--publish must be another folder than --out: it leaves this site")
    fingerprint = crypto.keygen(out)
    crypto.publish_keys(out, publish_dir)
    console.print(f"fingerprint {fingerprint}")
    console.print(f"  {out / crypto.SECRET_CONTEXT_FILE}  (secret, 0600: this site and the other sites only)")
    console.print(f"  {Path(publish_dir)}/  (public.ctx, keys.json: the coordinator and the planner)")
