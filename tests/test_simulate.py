"""`fedstock-planner simulate` on a slice of the real Walmart data (3 stores), every mode."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from common.public_data import write_walmart_nodes
from coordinator.planner_cli import cli as planner
from coordinator.simulate import SimulationSettings, prepare_nodes, simulate, train_and_forecast

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TINY = (("hidden", 8), ("heads", 2), ("max-batches", 2), ("lookback", 12), ("denoise-min-sites", 3))


@pytest.fixture(scope="module")
def walmart_slice(tmp_path_factory) -> Path:
    """Three stores of the shared Walmart files, written to a temporary folder (never the repo)."""
    src = SHARED / "walmart"
    if not (src / "sales.parquet").is_file():
        pytest.skip("../shared/data/walmart is not available")
    out = tmp_path_factory.mktemp("walmart")
    stores = [1, 2, 3]
    for name in ("sales", "features", "stores"):
        frame = pd.read_parquet(src / f"{name}.parquet")
        frame[frame["Store"].isin(stores)].to_parquet(out / f"{name}.parquet", index=False)
    return out


def test_walmart_nodes_know_holidays_by_name_and_get_no_future_oracle(walmart_slice, tmp_path):
    dirs = write_walmart_nodes(walmart_slice, tmp_path, until="2012-04-27")
    assert [d.name for d in dirs] == ["store-01", "store-02", "store-03"]
    calendar = pd.read_csv(dirs[0] / "raw" / "calendar.csv")
    thanksgiving = calendar.loc[calendar["holiday"] == "thanksgiving", "date"].tolist()
    assert thanksgiving[:3] == ["2010-11-26", "2011-11-25", "2012-11-23"]
    raw = pd.read_parquet(dirs[0] / "raw" / "sales.parquet")
    assert raw["Date"].max() == pd.Timestamp("2012-04-27")  # weather/CPI only up to the cutoff
    future = pd.read_csv(dirs[0] / "raw" / "future.csv")
    assert set(future.columns) == {"Dept", "Store", "date", "markdown"}  # planned markdowns only
    assert future["date"].min() == "2012-05-04" and future["date"].nunique() == 13


def _run(walmart_slice: Path, out: Path, mode: str) -> pd.DataFrame:
    settings = SimulationSettings(
        "walmart", walmart_slice, mode=mode, rounds=2, seed=3, until="2012-04-27", overrides=TINY
    )
    return simulate(out, settings, lambda line: None)


def test_simulate_he_writes_13_weeks_per_series_in_original_keys(walmart_slice, tmp_path):
    fc = _run(walmart_slice, tmp_path / "he", "he")
    assert (tmp_path / "he" / "forecasts.parquet").is_file()
    assert list(fc.columns[:4]) == ["Store", "Dept", "Date", "mean"]
    assert {"q10", "q50", "q90"} <= set(fc.columns)
    sales = pd.read_parquet(walmart_slice / "sales.parquet")
    sales = sales[pd.to_datetime(sales["Date"]) <= "2012-04-27"]
    expected = set(map(tuple, sales[["Store", "Dept"]].drop_duplicates().to_numpy().tolist()))
    assert set(map(tuple, fc[["Store", "Dept"]].drop_duplicates().to_numpy().tolist())) == expected
    assert (fc.groupby(["Store", "Dept"]).size() == 13).all()
    weeks = pd.date_range("2012-05-04", periods=13, freq="7D")
    assert sorted(fc["Date"].unique()) == list(weeks)
    assert (fc["q10"] <= fc["q50"]).all() and (fc["q50"] <= fc["q90"]).all() and (fc["q10"] >= 0).all()
    rounds = pd.read_csv(tmp_path / "he" / "rounds.csv")
    assert rounds["round"].tolist() == [1, 2]
    profile = json.loads((tmp_path / "he" / "checkpoints" / "profile.json").read_text())
    assert profile["status"] == "summed" and profile["sites"] == 3  # the preset's cross-site denoising


def test_encryption_costs_no_accuracy_he_matches_plaintext(walmart_slice, tmp_path):
    """Same prepared nodes, seeds and schedule: the only difference left is CKKS noise."""
    base = SimulationSettings("walmart", walmart_slice, rounds=2, seed=3, until="2012-04-27", overrides=TINY)
    nodes = prepare_nodes(base, tmp_path, lambda line: None)
    he = train_and_forecast(nodes, replace(base, mode="he"), tmp_path, lambda line: None)
    plain = train_and_forecast(nodes, replace(base, mode="plain"), tmp_path, lambda line: None)
    merged = he.merge(plain, on=["Store", "Dept", "Date"], suffixes=("_he", "_plain"))
    assert len(merged) == len(he) == len(plain)
    rel = np.abs(merged["mean_he"] - merged["mean_plain"]).sum() / merged["mean_plain"].abs().sum()
    assert rel < 1e-4


@pytest.mark.parametrize("mode", ["local", "central"])
def test_reference_modes_forecast_every_series(walmart_slice, tmp_path, mode):
    fc = _run(walmart_slice, tmp_path / mode, mode)
    assert fc["mean"].notna().all() and len(fc) % 13 == 0


def test_store_item_forecasts_90_days_per_item(tmp_path):
    src = SHARED / "store_item_demand" / "sales.parquet"
    if not src.is_file():
        pytest.skip("../shared/data/store_item_demand is not available")
    sales = pd.read_parquet(src)
    data = tmp_path / "data"
    data.mkdir()
    sales[sales["store"].isin([1, 2]) & sales["item"].isin([1, 2, 3])].to_parquet(data / "sales.parquet")
    settings = SimulationSettings("store_item", data, mode="he", rounds=1, seed=1, overrides=TINY)
    fc = simulate(tmp_path / "run", settings, lambda line: None)
    assert list(fc.columns[:4]) == ["store", "item", "date", "mean"]
    assert len(fc) == 2 * 3 * 90
    assert fc["date"].min() == pd.Timestamp("2017-10-03") and fc["date"].max() == pd.Timestamp("2017-12-31")


def test_simulate_with_differential_privacy_reports_epsilon(walmart_slice, tmp_path):
    args = ["simulate", "--dataset", "walmart", "--data", str(walmart_slice), "--until", "2012-04-27"]
    result = CliRunner().invoke(
        planner, [*args, "--out", str(tmp_path / "dp"), "--rounds", "1", "--dp-clip", "0.5"]
    )
    assert result.exit_code == 0, result.output
    privacy = json.loads((tmp_path / "dp" / "checkpoints" / "progress.json").read_text())["privacy"]
    assert privacy["nodes"] == 3 and privacy["clip"] == 0.5 and privacy["noise_multiplier"] == 1.0
    assert f"differential privacy: (ε = {privacy['epsilon']:.2f}, δ = 1e-05) over 1 rounds" in result.output
    misuse = CliRunner().invoke(
        planner, [*args, "--out", str(tmp_path / "x"), "--mode", "local", "--dp-clip", "1"]
    )
    assert misuse.exit_code == 2 and "--dp-clip needs --mode he" in misuse.output
