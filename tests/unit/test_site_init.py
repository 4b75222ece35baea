"""fedstock-node init: a site folder from a public dataset's store or a synthetic warehouse,
ready to prepare once the operator has read node.toml."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from common import crypto
from common.config import load_node_config
from tests.conftest import SHARED
from warehouse_node.cli import cli


def test_a_synthetic_site_is_made_named_and_prepared(tmp_path, keys):
    site = tmp_path / "north"
    made = CliRunner().invoke(cli, ["init", "--out", str(site), "--synthetic", "2", "--keys", str(keys)])
    assert made.exit_code == 0, made.output
    cfg = load_node_config(site)
    assert cfg.name == "north" and cfg.key_fingerprint == crypto.load_public(keys).fingerprint
    assert CliRunner().invoke(cli, ["prepare", "--node", str(site)]).exit_code == 0
    assert (site / "private" / "demand.parquet").is_file()


def test_one_store_of_walmart_becomes_a_site(tmp_path):
    if not (SHARED / "walmart").is_dir():
        pytest.skip("../shared/data/walmart is not available")
    site = tmp_path / "store-3"
    args = [
        "init",
        "--out",
        str(site),
        "--dataset",
        "walmart",
        "--data",
        str(SHARED / "walmart"),
        "--store",
        "3",
    ]
    assert CliRunner().invoke(cli, args).exit_code == 0
    cfg = load_node_config(site)
    assert list(cfg.data.series_keys) == ["Store", "Dept"] and (site / "raw" / "sales.parquet").is_file()
    again = CliRunner().invoke(cli, args)
    assert (
        again.exit_code == 1
        and again.output.strip() == f"Error: {site} is not empty: choose a new folder for the site"
    )
    args[2], args[-1] = str(tmp_path / "nowhere"), "99"
    missing = CliRunner().invoke(cli, args)
    assert missing.output.strip() == "Error: no store 99 in the data: its stores are 1..45"
    assert not (tmp_path / "nowhere").exists()


def test_init_asks_for_one_source(tmp_path):
    both = CliRunner().invoke(
        cli, ["init", "--out", str(tmp_path / "s"), "--synthetic", "1", "--dataset", "walmart"]
    )
    assert (
        both.output.strip() == "Error: choose one: --dataset NAME --data FOLDER --store N, or --synthetic N"
    )


def test_a_keys_folder_without_keys_json_is_refused_before_anything_is_written(tmp_path):
    site = tmp_path / "s"
    refused = CliRunner().invoke(
        cli, ["init", "--out", str(site), "--synthetic", "1", "--keys", str(tmp_path)]
    )
    assert (
        refused.output.strip()
        == f"Error: {tmp_path / 'keys.json'} is not the federation's keys.json (with its fingerprint)"
    )
    assert not site.exists()
