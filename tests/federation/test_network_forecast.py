"""The network's demand: exact encrypted sums of site totals, never fewer than the minimum of sites."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from common import crypto
from common.config import load_node_config
from common.network import (
    DIGIT_SCALE_BITS,
    Layout,
    NetworkError,
    from_digits,
    holdout_cells,
    network_table,
    site_cells,
    summed_holdout,
    to_digits,
)
from coordinator.checkpoints import NETWORK_FILE, NETWORK_META
from coordinator.planner.cli import cli as planner
from coordinator.planner.inprocess import run_inprocess
from coordinator.planner.runs import fan_chart, network_forecast, run_status
from coordinator.server_app import app as server_app
from tests.conftest import run_config
from warehouse_node import client_app as client_module
from warehouse_node.backtest import holdout_forecast
from warehouse_node.node import NETWORK_TOTALS_FILE
from warehouse_node.pipeline import DEMAND_FILE, read_private

SKUS = "SKU-0000,SKU-0001"


def test_digits_rebuild_values_across_fourteen_orders_of_magnitude_exactly():
    values = np.array([0.0, 1e-3, 0.5, 1.0, 123.456789, 2.0**24 - 1e-9, 3.3e9, 1.7e13, 2.0**48 - 1])
    rebuilt = from_digits(to_digits(values), len(values))
    assert np.allclose(rebuilt, values, rtol=1e-12, atol=2.0**-24)


@pytest.mark.parametrize("bad", [[-1.0], [np.nan], [np.inf], [2.0**48]])
def test_digits_refuse_negative_missing_and_too_large_values(bad):
    with pytest.raises(NetworkError):
        to_digits(np.array(bad))


def test_a_digit_sum_that_is_not_an_integer_is_refused_as_corrupt():
    digits = to_digits(np.array([5.0, 7.0]))
    digits[3] += 0.4
    with pytest.raises(NetworkError, match="not exact"):
        from_digits(digits, 2)


def test_encrypted_digit_sums_of_a_hundred_sites_are_exact_to_one_in_a_million(secret_key, public_key):
    rng = np.random.default_rng(4)
    sites = [rng.lognormal(mean=rng.uniform(0, 25), sigma=1.0, size=60) for _ in range(100)]
    vectors = [crypto.encrypt(secret_key, to_digits(v), DIGIT_SCALE_BITS, addends=100) for v in sites]
    total = crypto.add(public_key, vectors, DIGIT_SCALE_BITS)
    rebuilt = from_digits(crypto.decrypt(secret_key, total), 60)
    assert np.allclose(rebuilt, np.sum(sites, axis=0), rtol=1e-6, atol=1e-6)


def test_site_cells_sum_series_per_group_and_keep_unlisted_values_as_other():
    dates = list(pd.date_range("2024-01-07", periods=2, freq="W"))
    rows = pd.DataFrame(
        {
            "sku": ["a", "a", "b", "b", "c", "c"],
            "date": dates * 3,
            "mean": [10.0, 20.0, 1.0, 2.0, 5.0, 5.0],
            "q10": [8.0, 18.0, 0.0, 0.0, 5.0, 5.0],
            "q90": [12.0, 22.0, 2.0, 4.0, 5.0, 5.0],
        }
    )
    layout = Layout.of("sku", "a,b", 2)
    values, table = site_cells(rows, layout, dates)
    assert layout.groups == ("total", "a", "b", "other") and len(values) == layout.cells
    total = table[table["group"] == "total"].set_index("date")
    assert list(total["mean"]) == [16.0, 27.0]
    sd_a, sd_b = 4 / 2.563103, 2 / 2.563103
    assert total["sd_site"].iloc[0] == pytest.approx(sd_a + sd_b, rel=1e-5)
    assert total["var_series"].iloc[0] == pytest.approx(sd_a**2 + sd_b**2, rel=1e-5)
    assert list(table.loc[table["group"] == "other", "mean"]) == [5.0, 5.0]
    frame = network_table(values, layout, dates, "series")
    first = frame[(frame["group"] == "total")].iloc[0]
    assert first["q50"] == pytest.approx(16.0) and first["q90"] > first["q50"] > first["q10"]


def test_hold_out_cells_carry_the_sites_error_by_period_and_its_moments():
    dates = list(pd.date_range("2024-01-07", periods=2, freq="W"))
    holdout = pd.DataFrame(
        {
            "date": dates * 2,
            "mean": [10.0, 20.0, 5.0, 5.0],
            "q10": [8.0, 18.0, 5.0, 4.0],
            "q90": [12.0, 22.0, 5.0, 6.0],
            "actual": [13.0, 18.0, 6.0, 3.0],
        }
    )
    cells = holdout_cells(holdout, periods=2)
    # the site's total errs by +4 then -4: positive parts, negative parts, mean square 16, rms 4
    assert list(cells[:4]) == [4.0, 0.0, 0.0, 4.0] and list(cells[4:6]) == [16.0, 4.0]
    sd = np.array([4 + 0, 4 + 2]) / 2.5631031311
    assert cells[6] == pytest.approx(np.mean(sd**2), rel=1e-6)
    layout = Layout.of("", "", 2)
    forecast = holdout.drop(columns="actual")
    values, _ = site_cells(forecast, layout, dates, holdout)
    sums = summed_holdout(values, layout)
    assert list(sums.network_error) == [4.0, -4.0] and sums.squared == 16.0
    assert list(site_cells(forecast, layout, dates)[0][-8:-1]) == [0.0] * 7  # no hold-out: zeros


def _federate(dirs, keys, run_dir, min_nodes, **extra) -> dict:
    rc = {
        **run_config(keys, run_dir, rounds=1, min_nodes=min_nodes),
        "network-forecast": True,
        "network-group": "sku",
        "network-groups": SKUS,
        **extra,
    }
    run_inprocess(server_app, client_module.app, dirs, rc)
    return json.loads((run_dir / NETWORK_META).read_text())


def test_network_forecast_is_the_exact_sum_of_the_sites_own_totals(nodes, keys, published_keys, tmp_path):
    dirs, _ = nodes
    meta = _federate(dirs, keys, tmp_path / "run", min_nodes=3)
    assert meta["status"] == "opened" and meta["sites"] == 3 and meta["opened_by"] == 3
    frame = network_forecast(tmp_path / "run")
    own = pd.concat([pd.read_parquet(d / "out" / NETWORK_TOTALS_FILE) for d in dirs])
    expected = own.groupby(["group", "date"], sort=False)["mean"].sum()
    got = frame.set_index(["group", "date"])["mean"].loc[expected.index]
    assert np.allclose(got, expected, rtol=1e-6, atol=0)
    assert set(frame["group"]) == {"total", "SKU-0000", "SKU-0001", "other"}
    assert (frame["sites"] == 3).all() and (frame["q90"] >= frame["q10"]).all()
    total = frame[frame["group"] == "total"]["mean"].to_numpy()
    parts = frame[frame["group"] != "total"].groupby("date", sort=False)["mean"].sum().to_numpy()
    assert np.allclose(total, parts, rtol=0, atol=1e-6)  # each cell is rounded to 2^-24
    png = fan_chart(frame, tmp_path / "fan.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    status = run_status(tmp_path / "run", crypto.load_public(published_keys).fingerprint)
    assert status["rounds_done"] == 1 and status["rounds_planned"] == 1
    assert status["network_forecast"] == {"status": "opened", "sites": 3}
    assert len(status["rounds"][0]["trained"]) == 3 and status["rounds"][0]["train_loss"] > 0
    common = ["--runs", str(tmp_path), "--keys", str(published_keys)]
    table = CliRunner().invoke(planner, ["status", "run", *common])
    assert table.exit_code == 0 and "rounds 1 of at most 1" in table.output, table.output
    assert "the sites forecast with round 1's" in table.output.replace("\n", " ")
    first = status["rounds"][0]["trained"][0]  # sites registered with `site add` are named
    (tmp_path / ".flwr").mkdir()
    (tmp_path / ".flwr" / "sites.json").write_text(json.dumps({"wh-a": int(first), "wh-z": 999}))
    named = json.loads(CliRunner().invoke(planner, ["status", "run", *common, "--json"]).output)
    round1 = named["rounds"][0]
    assert "wh-a" in round1["trained_sites"] and round1["sites_not_trained"] == ["wh-z"]
    table = CliRunner().invoke(planner, ["status", "run", *common])
    assert "registered sites that did not train: round 1: wh-z" in table.output, table.output
    out = tmp_path / "net" / "network.parquet"
    shown = CliRunner().invoke(planner, ["network-forecast", "run", *common, "--out", str(out)])
    assert shown.exit_code == 0 and "3 sites" in shown.output, shown.output
    assert pd.read_parquet(out)["dependence"].eq("calibrated").all() and out.with_suffix(".png").is_file()
    as_csv = out.with_suffix(".csv")
    written = CliRunner().invoke(planner, ["network-forecast", "run", *common, "--out", str(as_csv)])
    assert written.exit_code == 0, written.output
    assert len(pd.read_csv(as_csv)) == len(pd.read_parquet(out))
    xlsx = str(tmp_path / "n.xlsx")
    refused = CliRunner().invoke(planner, ["network-forecast", "run", *common, "--out", xlsx])
    assert refused.exit_code != 0 and "end its name in .parquet or .csv" in refused.output


def test_two_sites_are_never_summed_and_never_decrypted(nodes, keys, published_keys, tmp_path):
    dirs, _ = nodes
    meta = _federate(dirs[:2], keys, tmp_path / "run", min_nodes=2)
    assert meta["status"] == "refused" and not (tmp_path / "run" / NETWORK_FILE).exists()
    with pytest.raises(NetworkError, match="no network forecast was opened by the sites"):
        network_forecast(tmp_path / "run")
    common = ["--runs", str(tmp_path), "--keys", str(published_keys), "--out", str(tmp_path / "net.parquet")]
    refused = CliRunner().invoke(planner, ["network-forecast", "run", *common])
    assert refused.exit_code != 0 and "the minimum is 3" in refused.output, refused.output
    assert not (tmp_path / "net.parquet").exists()


def test_a_run_config_cannot_lower_the_minimum_of_sites(nodes, keys, tmp_path):
    with pytest.raises(ValueError, match="at least 3"):
        _federate(nodes[0][:2], keys, tmp_path / "run", min_nodes=2, **{"network-min-sites": 2})


def test_the_planner_takes_the_site_count_the_sites_opened_not_the_coordinators_word(nodes, keys, tmp_path):
    dirs, _ = nodes
    run = tmp_path / "run"
    _federate(dirs, keys, run, min_nodes=3)
    meta = json.loads((run / NETWORK_META).read_text())
    assert meta["totals"][-1] == 3  # counted inside the ciphertext the sites opened
    meta["totals"][-1] = 2.0  # a dishonest coordinator's sum of two sites, announced as three
    (run / NETWORK_META).write_text(json.dumps(meta))
    with pytest.raises(NetworkError, match="holds 2 sites"):
        network_forecast(run)
    with pytest.raises(NetworkError, match="at least 3"):
        network_forecast(run, min_sites=2)


def test_a_site_that_opts_out_sends_nothing_and_two_others_are_not_enough(nodes, keys, tmp_path):
    dirs, _ = nodes
    toml = dirs[0] / "node.toml"
    toml.write_text(toml.read_text() + "\n[network]\nshare = false\n")
    meta = _federate(dirs, keys, tmp_path / "run", min_nodes=3)
    assert meta["status"] == "refused" and "2 valid network replies" in meta["reason"]
    assert any("does not share network totals" in line for line in meta["refused"])
    assert not (dirs[0] / "out" / NETWORK_TOTALS_FILE).exists()


def test_a_resumed_run_with_every_round_done_still_sums_the_network_forecast(nodes, keys, tmp_path):
    dirs, _ = nodes
    run = tmp_path / "run"
    run_inprocess(server_app, client_module.app, dirs, run_config(keys, run, rounds=1))
    assert not (run / NETWORK_META).exists()  # the first attempt stopped before its network forecast
    meta = _federate(dirs, keys, run, min_nodes=3, resume=True)
    assert meta["status"] == "opened" and meta["sites"] == 3 and meta["round"] == 1


def test_the_summed_hold_out_errors_are_the_sites_own_and_calibrate_the_interval(nodes, keys, tmp_path):
    dirs, _ = nodes
    meta = _federate(dirs, keys, tmp_path / "run", min_nodes=3)
    layout = Layout(str(meta["group_by"]), tuple(meta["groups"]), len(meta["dates"]))
    own = []
    for d in dirs:  # what each site computed alone, with the model it kept and its hold-out window
        cfg = load_node_config(d)
        dates = np.sort(read_private(cfg, DEMAND_FILE)["date"].unique())
        own.append(holdout_cells(holdout_forecast(cfg, pd.Timestamp(dates[-15])), layout.periods))
    summed = summed_holdout(np.asarray(meta["totals"]), layout)
    expected = np.sum(own, axis=0)
    n = layout.periods
    assert np.allclose(summed.network_error, expected[:n] - expected[n : 2 * n], atol=1e-5)
    assert summed.squared == pytest.approx(expected[2 * n], rel=1e-6) and summed.squared > 0
    frame = network_forecast(tmp_path / "run")  # "calibrated" by default
    total = frame[frame["group"] == "total"]
    assert frame["dependence"].eq("calibrated").all()
    rho, k = summed.dependence()
    assert total["site_correlation"].iloc[0] == pytest.approx(rho)
    assert total["variance_scale"].iloc[0] == pytest.approx(k)
    site, network = total["sd_site"] ** 2, total["sd_network"] ** 2  # sites independent / in step
    assert np.allclose(total["sd"], np.sqrt(k * (site + rho * (network - site))), rtol=1e-9)
    along = summed.horizon_correlation()  # the network errors' persistence over hold-out periods
    assert along is not None and total["path_corr"].eq(along).all()


def test_the_distribution_center_decides_from_the_network_forecast_alone(
    nodes, keys, published_keys, tmp_path
):
    dirs, _ = nodes
    _federate(dirs, keys, tmp_path / "run", min_nodes=3)
    stock = tmp_path / "dc_stock.csv"
    stock.write_text(
        "sku,on_hand,on_order,lead_time,service_level,moq,pack_size\n"
        "total,0,0,2,0.95,0,10\n"
        "SKU-0000,1000000,0,1,0.9,0,1\n"
        "SKU-9999,5,0,1,0.9,0,1\n"
        "other,-3,0,1,0.9,0,1\n"
    )
    out = tmp_path / "dc"
    common = ["--runs", str(tmp_path), "--keys", str(published_keys)]
    done = CliRunner().invoke(
        planner, ["dc-replenish", "run", *common, "--stock", str(stock), "--out", str(out)]
    )
    assert done.exit_code == 0, done.output
    assert "DC decisions for 2 groups" in done.output and "2 rows rejected" in done.output
    decisions = pd.read_csv(out / "decisions.csv").set_index("sku")
    network = network_forecast(tmp_path / "run")
    first = network[network["group"] == "total"].sort_values("date")
    assert decisions.loc["total", "status"] == "REPLENISH_NOW"  # nothing on hand
    assert decisions.loc["total", "order_qty"] % 10 == 0  # whole packs
    assert decisions.loc["total", "order_up_to"] > first["mean"].iloc[:3].sum()  # R + L, with safety
    assert decisions.loc["SKU-0000", "status"] == "OBSERVE" and decisions.loc["SKU-0000", "order_qty"] == 0
    assert "P95 of 3-period demand" in decisions.loc["total", "reason"]
    rejected = pd.read_csv(out / "rejected.csv").set_index("sku")["reason"]
    assert rejected["SKU-9999"].startswith("unknown sku") and rejected["other"] == "on_hand is negative"
    assert not (out / "strategy.csv").exists()  # no shop-floor promotion advice for a DC
    stock.write_text("sku,lead_time\ntotal,1\n")
    bad = CliRunner().invoke(
        planner, ["dc-replenish", "run", *common, "--stock", str(stock), "--out", str(out)]
    )
    assert bad.exit_code != 0 and "stock file" in bad.output and "on_hand" in bad.output
    assert len(bad.output.strip().splitlines()) == 1
