"""The distribution center upstream: its replenishment decisions from the network forecast.

The DC supplies the sites and sees only what the planner holds: the network forecast that the
sites summed under CKKS and opened (``fedstock-planner network-forecast``). Each row of the DC's
stock file names a network group (``total``, a department, ``other``) in its ``sku`` column; the
contract, the checks and the outputs are the node's ``replenish`` (warehouse_node/replenish.py):
decisions.csv (status, order quantity, reorder point, order-up-to, safety stock, reason) and
rejected.csv. The group's forecast distribution is normal per period, with the spread of the
chosen dependence (by default calibrated from the sites' summed hold-out errors), and its periods
are correlated as much as the network's hold-out errors persisted from one period to the next
(``path_corr``): a DC with a long lead time stocks the sum of many periods, whose spread that sets.
"""

from __future__ import annotations

from pathlib import Path

import click
import pandas as pd
from rich.console import Console

from common.cli_errors import one_line_errors
from coordinator.planner.console import (
    dependence_option,
    keys_option,
    min_sites_option,
    opened_network_forecast,
    runs_option,
)

console = Console()


def dc_forecasts(network: pd.DataFrame) -> pd.DataFrame:
    """The network table in the shape of a node's forecasts file: one ``sku`` per group."""
    quantiles = [c for c in network.columns if c[0] == "q" and c[1:].isdigit()]
    out = network[["group", "date", "mean", *quantiles, "path_corr"]].rename(columns={"group": "sku"})
    return out.assign(residual_sd=network["sd"], date=pd.to_datetime(out["date"]).dt.strftime("%Y-%m-%d"))


@click.command("dc-replenish")
@click.argument("run_id")
@keys_option
@runs_option
@click.option(
    "--stock",
    "stock_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The DC's stock file (one row per network group).",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for decisions.csv and rejected.csv.",
)
@click.option(
    "--policy",
    type=click.Choice(["probabilistic", "classical", "seed-rule"]),
    default="probabilistic",
    show_default=True,
)
@min_sites_option
@dependence_option
@one_line_errors
def dc_replenish_cmd(
    run_id: str,
    keys_dir: str,
    runs_dir: str,
    stock_path: str,
    out_dir: str,
    policy: str,
    min_sites: int,
    dependence: str,
) -> None:
    """Decisions for the distribution center's stock from the network forecast of RUN_ID."""
    from warehouse_node.replenish import run_replenish  # the sampling needs torch: loaded only here

    network = opened_network_forecast(run_id, keys_dir, runs_dir, min_sites, dependence)
    out = Path(out_dir)
    result = run_replenish(dc_forecasts(network), Path(stock_path), out, policy=policy, write_strategy=False)
    counts = result.decisions["status"].value_counts().to_dict()
    said = ", ".join(f"{v} {k}" for k, v in counts.items())
    sites = int(network["sites"].iloc[0])
    console.print(
        f"DC decisions for {len(result.decisions)} groups ({said}), {len(result.rejected)} rows rejected; "
        f"{dependence} dependence, {sites} sites; wrote {out / 'decisions.csv'} and {out / 'rejected.csv'}"
    )
