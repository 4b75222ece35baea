"""The operators' and planner's command lines: contracts, one-line errors, exit codes."""

import json
import os
import stat

import numpy as np
import pandas as pd
from click.testing import CliRunner

from common import crypto
from coordinator.planner.cli import cli as planner
from tests.conftest import model_config
from warehouse_node.cli import EXIT_PARTIAL
from warehouse_node.cli import cli as node


def test_a_site_makes_the_key_pair_and_publishes_only_its_public_half(tmp_path):
    site, public = tmp_path / "site-keys", tmp_path / "for-the-planner"
    result = CliRunner().invoke(node, ["keygen", "--out", str(site), "--publish", str(public)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(os.stat(site / crypto.SECRET_CONTEXT_FILE).st_mode) == 0o600
    assert sorted(p.name for p in public.iterdir()) == [crypto.MANIFEST_FILE, crypto.PUBLIC_CONTEXT_FILE]
    published = crypto.load_public(public)
    assert not published.has_secret_key
    assert published.fingerprint == crypto.load_context(site / crypto.SECRET_CONTEXT_FILE).fingerprint
    again = CliRunner().invoke(node, ["keygen", "--out", str(site), "--publish", str(tmp_path / "p2")])
    assert again.exit_code != 0 and "refusing to overwrite" in again.output
    here = str(tmp_path / "s")
    same = CliRunner().invoke(node, ["keygen", "--out", here, "--publish", here])
    assert same.exit_code != 0 and "--publish must be another folder" in same.output


def test_no_planner_command_makes_or_reads_a_secret_key(tmp_path):
    assert "keygen" not in planner.commands
    result = CliRunner().invoke(planner, ["keygen", "--out", str(tmp_path / "k")])
    assert result.exit_code != 0 and not (tmp_path / "k").exists()


def _replenish(forecasts, stock, out, *extra):
    args = ["replenish", "--forecasts", str(forecasts), "--stock", str(stock), "--out", str(out), *extra]
    return CliRunner().invoke(node, args)


def test_prepare_forecast_replenish_on_a_node(nodes, tmp_path):
    from common.config import load_node_config
    from common.model import build_model, model_vector
    from warehouse_node.model_store import save_global_model

    node_dir = nodes[0][0]
    runner = CliRunner()
    result = runner.invoke(node, ["prepare", "--node", str(node_dir)])
    assert result.exit_code == 0, result.output
    assert "return" in result.output and "quarantine" in result.output
    m = model_config(lookback=21, horizon=14, hidden=16)
    save_global_model(load_node_config(node_dir), model_vector(build_model(m, 0)), m, 1)
    result = runner.invoke(node, ["forecast", "--node", str(node_dir)])
    assert result.exit_code == 0, result.output
    fc = pd.read_parquet(node_dir / "out" / "forecasts.parquet")
    assert list(fc.columns[:8]) == ["node", "sku", "date", "mean", "q02", "q05", "q10", "q25"]
    assert {"q50", "q90"} <= set(fc.columns) and fc["sku"].str.startswith("SKU-").all()
    assert (fc.filter(regex=r"^q\d\d$").diff(axis=1).iloc[:, 1:] >= -1e-6).all().all()
    out = tmp_path / "decide"
    result = _replenish(node_dir / "out" / "forecasts.parquet", node_dir / "stock.csv", out)
    assert result.exit_code == 0, result.output
    decisions = pd.read_csv(out / "decisions.csv")
    assert set(decisions["sku"]) == set(pd.read_csv(node_dir / "stock.csv")["sku"])
    assert set(decisions["status"]) <= {"REPLENISH_NOW", "WARNING", "OBSERVE"}
    assert (fc["residual_sd"] > 0).all() and np.isfinite(fc["residual_sd"]).all()
    for policy, cited in (("classical", "× σ"), ("seed-rule", "1.2 × forecast")):
        result = _replenish(
            node_dir / "out" / "forecasts.parquet", node_dir / "stock.csv", out, "--policy", policy
        )
        assert result.exit_code == 0, result.output
        assert pd.read_csv(out / "decisions.csv")["reason"].str.contains(cited, regex=False).all()
    result = _replenish(
        node_dir / "out" / "forecasts.parquet", node_dir / "stock.csv", out, "--policy", "guess"
    )
    assert result.exit_code != 0 and "guess" in result.output
    first = pd.read_csv(node_dir / "stock.csv")["sku"].iloc[0]
    pd.DataFrame(
        {
            "sku": [first, "SKU-NOPE"],
            "who": ["ana", "ana"],
            "why": ["recall", "typo"],
            "status": ["OBSERVE"] * 2,
        }
    ).to_csv(tmp_path / "overrides.csv", index=False)
    extra = ("--overrides", str(tmp_path / "overrides.csv"))
    result = _replenish(node_dir / "out" / "forecasts.parquet", node_dir / "stock.csv", out, *extra)
    assert result.exit_code == EXIT_PARTIAL, result.output
    pinned = pd.read_csv(out / "decisions.csv").set_index("sku").loc[first]
    assert (pinned["status"], pinned["override_by"], pinned["order_qty"]) == ("OBSERVE", "ana", 0)
    assert list(pd.read_csv(out / "overrides_rejected.csv")["sku"]) == ["SKU-NOPE"]
    # a bad stock file: decided rows written, bad rows listed, non-zero exit
    stock = pd.read_csv(node_dir / "stock.csv")
    stock.loc[0, "on_hand"] = -5
    stock.to_csv(tmp_path / "bad.csv", index=False)
    result = _replenish(node_dir / "out" / "forecasts.parquet", tmp_path / "bad.csv", out)
    assert result.exit_code == EXIT_PARTIAL
    assert (
        len(pd.read_csv(out / "rejected.csv")) == 1
        and len(pd.read_csv(out / "decisions.csv")) == len(stock) - 1
    )


def test_node_commands_take_the_folder_or_its_node_toml_under_either_name(nodes):
    from common.config import load_node_config
    from common.model import build_model, model_vector
    from warehouse_node.model_store import save_global_model

    node_dir = nodes[0][0]
    toml = str(node_dir / "node.toml")
    runner = CliRunner()
    assert runner.invoke(node, ["prepare", "--config", toml]).exit_code == 0
    m = model_config(lookback=21, horizon=14, hidden=16)
    save_global_model(load_node_config(node_dir), model_vector(build_model(m, 0)), m, 1)
    result = runner.invoke(node, ["forecast", "--config", toml])
    assert result.exit_code == 0, result.output
    for spelling in (["--node", str(node_dir)], ["--config", toml], ["--node", toml]):
        status = runner.invoke(node, ["status", *spelling, "--json"])
        assert status.exit_code == 0, status.output
        assert json.loads(status.output)["last_forecast"]["periods"] == 14


def test_a_forecast_written_as_csv_decides_as_the_parquet_one(nodes, tmp_path):
    from common.config import load_node_config
    from common.model import build_model, model_vector
    from warehouse_node.model_store import save_global_model

    node_dir = nodes[0][0]
    runner = CliRunner()
    assert runner.invoke(node, ["prepare", "--node", str(node_dir)]).exit_code == 0
    refused = runner.invoke(node, ["forecast", "--node", str(node_dir), "--out", str(tmp_path / "f.txt")])
    assert refused.exit_code != 0 and "end its name in .parquet or .csv" in refused.output
    m = model_config(lookback=21, horizon=14, hidden=16)
    save_global_model(load_node_config(node_dir), model_vector(build_model(m, 0)), m, 1)
    decisions = []
    for name in ("f.parquet", "f.csv"):
        result = runner.invoke(node, ["forecast", "--node", str(node_dir), "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        result = _replenish(tmp_path / name, node_dir / "stock.csv", tmp_path / name.replace(".", "-"))
        assert result.exit_code == 0, result.output
        decisions.append(pd.read_csv(tmp_path / name.replace(".", "-") / "decisions.csv"))
    assert "node,sku,date" in (tmp_path / "f.csv").read_text().splitlines()[0]
    pd.testing.assert_frame_equal(decisions[0], decisions[1])


def test_bad_inputs_give_one_line_errors_and_non_zero_exit(nodes, tmp_path):
    runner = CliRunner()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "node.toml").write_text("[data]\npath = 'x.csv'\n")
    result = runner.invoke(node, ["prepare", "--node", str(broken)])
    assert result.exit_code != 0 and "missing the required key" in result.output
    (broken / "node.toml").write_text("[data\n")
    result = runner.invoke(node, ["prepare", "--node", str(broken)])
    assert result.exit_code != 0 and "not valid TOML" in result.output
    result = runner.invoke(node, ["forecast", "--node", str(nodes[0][1])])  # no global model: degraded
    said = " ".join(result.output.split())
    assert result.exit_code == 0 and "fallback baseline, not the global model: no global model yet" in said
    (tmp_path / "f.csv").write_text("sku,date\n")
    result = runner.invoke(
        node,
        [
            "replenish",
            "--forecasts",
            str(tmp_path / "f.csv"),
            "--stock",
            str(nodes[0][0] / "stock.csv"),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code != 0 and "mean" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_simulate_refuses_bad_arguments_with_one_line_errors(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    unknown = CliRunner().invoke(
        planner, ["simulate", "--dataset", "m5", "--data", str(data), "--out", str(tmp_path / "o")]
    )
    assert unknown.exit_code == 2 and "m5" in unknown.output
    missing = CliRunner().invoke(
        planner, ["simulate", "--dataset", "walmart", "--data", str(data), "--out", str(tmp_path / "o")]
    )
    assert missing.exit_code == 1
    assert missing.output.strip().splitlines()[-1].startswith("Error: dataset file not found")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("keep me")
    refused = CliRunner().invoke(
        planner, ["simulate", "--dataset", "walmart", "--data", str(data), "--out", str(busy)]
    )
    assert refused.exit_code == 1 and "not empty" in refused.output
    assert (busy / "x").read_text() == "keep me"
