"""`fedstock-planner simulate` on a slice of the real Walmart data (3 stores): every mode, Kaggle CSVs."""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from common.config import load_node_config
from common.public_data import write_store_item_nodes, write_walmart_nodes
from coordinator.planner.cli import cli as planner
from coordinator.planner.simulate import SimulationSettings, prepare_nodes, simulate, train_and_forecast
from tests.conftest import SHARED

TINY = (("hidden", 8), ("heads", 2), ("max-batches", 2), ("lookback", 12), ("denoise-min-sites", 3))


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


KAGGLE = {"sales": "train.csv", "features": "features.csv", "stores": "stores.csv"}


def _as_kaggle_csv(parquet_dir: Path, out: Path) -> Path:
    """The slice as Kaggle ships it: TRUE/FALSE flags, NA for a missing markdown, stores.csv with CR lines."""
    out.mkdir()
    for stem, name in KAGGLE.items():
        frame = pd.read_parquet(parquet_dir / f"{stem}.parquet")
        flags = frame.select_dtypes(bool).columns
        frame[flags] = frame[flags].replace({True: "TRUE", False: "FALSE"})
        text = frame.to_csv(index=False, na_rep="NA")
        (out / name).write_bytes((text.replace("\n", "\r") if stem == "stores" else text).encode())
    return out


def test_kaggle_csv_files_make_the_same_nodes_as_the_shared_parquet(walmart_slice, tmp_path):
    kaggle = _as_kaggle_csv(walmart_slice, tmp_path / "kaggle")
    assert (
        "NA," in (kaggle / "features.csv").read_text() and b"\n" not in (kaggle / "stores.csv").read_bytes()
    )
    from_parquet = write_walmart_nodes(walmart_slice, tmp_path / "a", until="2012-04-27")
    from_csv = write_walmart_nodes(kaggle, tmp_path / "b", until="2012-04-27")
    assert [d.name for d in from_csv] == [d.name for d in from_parquet]
    for a, b in zip(from_parquet, from_csv, strict=True):
        sales_a, sales_b = (pd.read_parquet(d / "raw" / "sales.parquet") for d in (a, b))
        pd.testing.assert_frame_equal(sales_a, sales_b, check_dtype=False)
        assert sales_b["IsHoliday"].dtype == bool and sales_b["markdown"].notna().any()
        for name in ("raw/calendar.csv", "raw/future.csv", "node.toml"):
            assert (a / name).read_text() == (b / name).read_text()


# (file, line, text replaced, its replacement, the message after the file's path)
KAGGLE_DAMAGE = [
    ("train.csv", 3, "1,1,", "x1,1,", "column 'Store' has 'x1' in data row 2, not an integer"),
    ("train.csv", 4, "1,1,", ",1,", "column 'Store' has an empty cell in data row 3, not an integer"),
    (
        "train.csv",
        2,
        "2010-02-05",
        "05.02.2010",
        "column 'Date' has '05.02.2010' in data row 1, not a YYYY-MM-DD date",
    ),
    ("train.csv", 2, ",FALSE", "x,FALSE", "column 'Weekly_Sales' has '24924.5x' in data row 1, not a number"),
    ("features.csv", 3, ",TRUE", ",maybe", "column 'IsHoliday' has 'maybe' in data row 2, not TRUE or FALSE"),
    ("stores.csv", 2, ",151315", ",big", "column 'Size' has 'big' in data row 1, not an integer"),
]


@pytest.mark.parametrize(
    "damage", KAGGLE_DAMAGE, ids=[d[4].split(" has ")[0] + f" ({d[0]})" for d in KAGGLE_DAMAGE]
)
def test_a_kaggle_cell_that_does_not_parse_stops_simulate_naming_file_column_and_row(
    walmart_slice, tmp_path, damage
):
    name, line, old, new, message = damage
    kaggle = _as_kaggle_csv(walmart_slice, tmp_path / "kaggle")
    ending = "\r" if name == "stores.csv" else "\n"
    lines = (kaggle / name).read_bytes().decode().split(ending)
    assert lines[line - 1].count(old) >= 1
    lines[line - 1] = lines[line - 1].replace(old, new, 1)
    (kaggle / name).write_bytes(ending.join(lines).encode())
    args = ["simulate", "--dataset", "walmart", "--data", str(kaggle), "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(planner, [*args, "--mode", "local", "--rounds", "1"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"Error: {kaggle / name}: {message}"]
    assert not (tmp_path / "run").exists()


def test_the_dataset_folder_must_hold_one_file_per_table_and_a_zipped_one_is_named(walmart_slice, tmp_path):
    kaggle = _as_kaggle_csv(walmart_slice, tmp_path / "kaggle")
    shutil.copy(walmart_slice / "sales.parquet", kaggle)
    args = ["simulate", "--dataset", "walmart", "--data", str(kaggle), "--out", str(tmp_path / "run")]
    both = CliRunner().invoke(planner, args)
    assert both.exit_code == 1
    assert both.output.strip() == f"Error: {kaggle} holds both sales.parquet and train.csv: keep only one"
    (kaggle / "sales.parquet").unlink()
    with zipfile.ZipFile(kaggle / "train.csv.zip", "w") as archive:
        archive.write(kaggle / "train.csv", "train.csv")
    (kaggle / "train.csv").unlink()
    zipped = CliRunner().invoke(planner, args)
    assert zipped.exit_code == 1
    assert zipped.output.strip() == (
        f"Error: dataset file not found: {kaggle}/sales.parquet (or sales.csv, train.csv); "
        "unzip train.csv.zip there first"
    )


def test_a_cutoff_before_the_first_week_is_refused_before_any_node_is_written(walmart_slice, tmp_path):
    args = ["simulate", "--dataset", "walmart", "--data", str(walmart_slice), "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(planner, [*args, "--until", "2009-12-31"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: no sales on or before 2009-12-31: the data starts on 2010-02-05"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("banana", "unknown training device 'banana': use cpu, cuda or cuda:N"),
        pytest.param(
            "cuda",
            "training device 'cuda': this machine has no CUDA GPU",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU"),
        ),
    ],
)
def test_simulate_on_a_device_this_machine_lacks_stops_before_any_node_is_written(
    device, message, walmart_slice, tmp_path
):
    args = ["simulate", "--dataset", "walmart", "--data", str(walmart_slice), "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(planner, [*args, "--device", device])
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1
    assert result.output.startswith(f"Error: {message}")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_simulate_on_the_gpu_writes_the_device_into_every_node_and_forecasts(walmart_slice, tmp_path):
    settings = SimulationSettings(
        "walmart", walmart_slice, rounds=2, seed=3, until="2012-04-27", overrides=TINY, device="cuda"
    )
    fc = simulate(tmp_path / "run", settings, lambda line: None)
    nodes = sorted((tmp_path / "run" / "nodes").iterdir())
    assert nodes and all(load_node_config(d).training_device == "cuda" for d in nodes)
    assert len(fc) and np.isfinite(fc["mean"]).all()


def _run(walmart_slice: Path, out: Path, mode: str, seed: int = 3) -> pd.DataFrame:
    settings = SimulationSettings(
        "walmart", walmart_slice, mode=mode, rounds=2, seed=seed, until="2012-04-27", overrides=TINY
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
    he, _ = train_and_forecast(nodes, replace(base, mode="he"), tmp_path, lambda line: None)
    plain, _ = train_and_forecast(nodes, replace(base, mode="plain"), tmp_path, lambda line: None)
    merged = he.merge(plain, on=["Store", "Dept", "Date"], suffixes=("_he", "_plain"))
    assert len(merged) == len(he) == len(plain)
    rel = np.abs(merged["mean_he"] - merged["mean_plain"]).sum() / merged["mean_plain"].abs().sum()
    assert rel < 1e-4


@pytest.mark.parametrize("mode", ["local", "central"])
def test_reference_modes_forecast_every_series(walmart_slice, tmp_path, mode):
    fc = _run(walmart_slice, tmp_path / mode, mode)
    assert fc["mean"].notna().all() and len(fc) % 13 == 0
    if mode == "local":  # a simulation is repeatable for its seed: the same keys, batches, weights
        again = _run(walmart_slice, tmp_path / "again", mode)
        pd.testing.assert_frame_equal(fc, again)
        other = _run(walmart_slice, tmp_path / "other", mode, seed=4)
        assert not np.allclose(fc["mean"], other["mean"])


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


def test_kaggle_store_item_train_csv_makes_the_same_nodes_as_the_shared_parquet(tmp_path):
    src = SHARED / "store_item_demand" / "sales.parquet"
    if not src.is_file():
        pytest.skip("../shared/data/store_item_demand is not available")
    sales = pd.read_parquet(src)
    sales = sales[sales["store"].isin([1, 2]) & sales["item"].isin([1, 2])]
    (tmp_path / "pq").mkdir()
    (tmp_path / "kaggle").mkdir()
    sales.to_parquet(tmp_path / "pq" / "sales.parquet")
    sales.to_csv(tmp_path / "kaggle" / "train.csv", index=False)
    a = write_store_item_nodes(tmp_path / "pq", tmp_path / "a")
    b = write_store_item_nodes(tmp_path / "kaggle", tmp_path / "b")
    assert [d.name for d in a] == [d.name for d in b] == ["store-01", "store-02"]
    for x, y in zip(a, b, strict=True):
        pd.testing.assert_frame_equal(
            *(pd.read_parquet(d / "raw" / "sales.parquet").reset_index(drop=True) for d in (x, y)),
            check_dtype=False,
        )


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
