"""fedstock-node report before any federation: the fallback forecast is named as such, and bad
files are refused in one line."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from common.config import load_node_config
from tests.conftest import make_nodes
from warehouse_node.cli import cli
from warehouse_node.node import Node
from warehouse_node.replenish import run_replenish


@pytest.fixture
def site(tmp_path, keys):
    """A site that never trained: its forecast comes from the fallback baseline."""
    node = make_nodes(tmp_path / "nodes", keys, n=1)[0][0]
    cfg = load_node_config(node)
    Node(cfg).prepare()
    assert CliRunner().invoke(cli, ["forecast", "--node", str(node)]).exit_code == 0
    run_replenish(cfg.out_dir / "forecasts.parquet", node / "stock.csv", cfg.out_dir)
    return node


def test_a_forecast_from_the_fallback_baseline_is_named_on_every_chart_and_in_the_health(site):
    result = CliRunner().invoke(cli, ["report", "--node", str(site)])
    assert result.exit_code == 0, result.output
    page = (site / "out" / "report.html").read_text()
    health = page[page.index("id='health'") :]
    assert "FALLBACK" in health and "MODEL" not in health
    assert "forecast source</td><td>FALLBACK baseline:" in health  # the node's status, with the why
    assert page.count("forecast from the FALLBACK baseline") == 5  # each sku's chart says it too


def test_a_decisions_file_without_its_columns_or_with_a_bad_number_is_named_in_one_line(site):
    (site / "out" / "decisions.csv").write_text("sku,state\nSKU-0000,OBSERVE\n")
    result = CliRunner().invoke(cli, ["report", "--node", str(site)])
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: {site / 'out' / 'decisions.csv'} is missing columns: status, order_qty, reason "
        "(its columns: sku, state)"
    )
    (site / "out" / "decisions.csv").write_text("sku,status,order_qty,reason\nSKU-0000,OBSERVE,lots,x\n")
    bad = CliRunner().invoke(cli, ["report", "--node", str(site)])
    assert bad.exit_code == 1
    assert (
        bad.output.strip()
        == f"Error: {site / 'out' / 'decisions.csv'}: order_qty is not a number in row 2 ('lots')"
    )
