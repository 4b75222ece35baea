"""fedstock-node: what a warehouse operator runs on the node."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from common.cli_errors import one_line_errors
from common.config import load_node_config
from common.policies import POLICIES
from warehouse_node.pipeline import QUARANTINE_FILE, forecast, prepare_node
from warehouse_node.replenish import run_replenish

console = Console(stderr=True)
EXIT_PARTIAL = 3  # some input rows could not be used: see the rejected / quarantine file


@click.group()
def cli() -> None:
    """Warehouse node: prepare data, forecast with the global model, decide replenishment."""


@cli.command()
@click.option(
    "--node",
    "node_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Node folder holding node.toml.",
)
@one_line_errors
def prepare(node_dir: str) -> None:
    """De-identify and clean the raw data into NODE/private (quarantine counts printed)."""
    cfg = load_node_config(node_dir)
    counts = prepare_node(cfg)
    table = Table(title=f"{cfg.name}: prepared")
    table.add_column("item")
    table.add_column("count", justify="right")
    for key, value in counts.items():
        table.add_row(key, str(value))
    console.print(table)
    console.print(f"quarantine: {cfg.private_dir / QUARANTINE_FILE}")


@cli.command(name="forecast")
@click.option("--node", "node_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Output parquet (default NODE/out/forecasts.parquet).",
)
@one_line_errors
def forecast_cmd(node_dir: str, out_path: str | None) -> None:
    """Forecast the next H periods of every live series with the last global model."""
    cfg = load_node_config(node_dir)
    frame = forecast(cfg)
    path = Path(out_path) if out_path else cfg.out_dir / "forecasts.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    console.print(f"{cfg.name}: {frame['sku'].nunique()} skus x {frame['date'].nunique()} periods -> {path}")


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
