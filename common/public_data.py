"""Split the shared public datasets into warehouse node folders, in the node's input format.

Each node gets what a real site would hold: its own raw sales file, a holiday calendar, a plan of
known-future promotions and a ``node.toml`` mapping the columns. The simulation then runs every
node through the same pipeline as user data (de-identification included); nothing here trains.

* Walmart (weekly): node = Store, series = Dept. Known in advance: holiday weeks and which holiday
  (Super Bowl, Labor Day, Thanksgiving, Christmas fall in different weeks each year; the calendar
  names them so the model can align them), planned markdowns (their sum; NaN = unknown) and the
  calendar. Temperature, fuel price, CPI and unemployment are past-only inputs: their realized
  future values would be an oracle, so they are written only for weeks up to the cutoff.
  Static: department, store type and a store-size band.
* store_item (daily): node = store, series = item; static: item.

The source files are read from ``../shared/data`` and never copied into the project.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common.config import ConfigError, require_columns

WALMART_EVENTS = {2: "super_bowl", 9: "labor_day", 11: "thanksgiving", 12: "christmas"}
MARKDOWNS = [f"MarkDown{i}" for i in range(1, 6)]
OBSERVED = ["Temperature", "Fuel_Price", "CPI", "Unemployment"]


@dataclass(frozen=True)
class Dataset:
    """How a public dataset maps onto nodes and what a forecast of it looks like."""

    name: str
    frequency: str
    horizon: int
    keys: tuple[str, str]  # node key, series key, as the dataset spells them
    date: str
    target: str


DATASETS = {
    "walmart": Dataset("walmart", "W-FRI", 13, ("Store", "Dept"), "Date", "Weekly_Sales"),
    "store_item": Dataset("store_item", "D", 90, ("store", "item"), "date", "sales"),
}


def _read(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.is_file():
        raise ConfigError(f"dataset file not found: {path}")
    frame = pd.read_parquet(path)
    require_columns(frame, columns, str(path))
    return frame


def load_sales(name: str, data_dir: Path) -> pd.DataFrame:
    """The dataset's sales table with a datetime date column."""
    ds = DATASETS[name]
    sales = _read(Path(data_dir) / "sales.parquet", [*ds.keys, ds.date, ds.target])
    sales[ds.date] = pd.to_datetime(sales[ds.date])
    return sales


def _toml(name: str, data: dict[str, object]) -> str:
    def value(v: object) -> str:
        if isinstance(v, list):
            return "[" + ", ".join(f'"{x}"' for x in v) + "]"
        if isinstance(v, bool):
            return str(v).lower()
        return f'"{v}"'

    lines = ["[node]", f'name = "{name}"', 'secret_context = "keys/secret.ctx"', "", "[data]"]
    return "\n".join(lines + [f"{k} = {value(v)}" for k, v in data.items()]) + "\n"


def walmart_calendar(features: pd.DataFrame) -> pd.DataFrame:
    """Holiday weeks with their names (the flag alone does not say which holiday it is)."""
    weeks = pd.to_datetime(features.loc[features["IsHoliday"].astype(bool), "Date"]).drop_duplicates()
    names = weeks.dt.month.map(WALMART_EVENTS)
    if names.isna().any():
        raise ConfigError(f"holiday week in an unexpected month: {weeks[names.isna()].iloc[0].date()}")
    return pd.DataFrame({"date": weeks.dt.strftime("%Y-%m-%d"), "holiday": names}).sort_values("date")


def write_walmart_nodes(data_dir: Path, out: Path, until: str | None = None) -> list[Path]:
    """One node folder per store with history up to ``until`` (inclusive; default: all)."""
    data_dir = Path(data_dir)
    sales = load_sales("walmart", data_dir)
    features = _read(data_dir / "features.parquet", ["Store", "Date", "IsHoliday", *MARKDOWNS, *OBSERVED])
    stores = _read(data_dir / "stores.parquet", ["Store", "Type", "Size"])
    features["Date"] = pd.to_datetime(features["Date"])
    if until is not None:
        sales = sales[sales["Date"] <= pd.Timestamp(until)]
    last = sales["Date"].max()
    horizon = pd.date_range(last + pd.Timedelta(weeks=1), periods=DATASETS["walmart"].horizon, freq="7D")
    features["markdown"] = features[MARKDOWNS].clip(lower=0).sum(axis=1, min_count=1)  # NaN = unknown
    stores["SizeBand"] = "size-" + (stores["Size"] // 40_000).astype(int).astype(str)
    calendar = walmart_calendar(features)
    past = features[features["Date"] <= last]
    dirs = []
    for store, rows in sales.groupby("Store", sort=True):
        node = Path(out) / f"store-{int(store):02d}"
        raw = node / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        own = past[past["Store"] == store][["Date", "markdown", *OBSERVED]]
        table = rows.merge(own, on="Date", how="left").merge(
            stores[stores["Store"] == store][["Store", "Type", "SizeBand"]], on="Store", how="left"
        )
        table.to_parquet(raw / "sales.parquet", index=False)
        calendar.to_csv(raw / "calendar.csv", index=False)
        plan = features[(features["Store"] == store) & features["Date"].isin(horizon)][["Date", "markdown"]]
        depts = rows["Dept"].drop_duplicates()
        future = depts.to_frame().merge(plan, how="cross").assign(Store=store)
        future["date"] = future.pop("Date").dt.strftime("%Y-%m-%d")
        future.to_csv(raw / "future.csv", index=False)
        mapping = {
            "path": "raw/sales.parquet",
            "kind": "periods",
            "frequency": "W-FRI",
            "timestamp": "Date",
            "quantity": "Weekly_Sales",
            "series_keys": ["Store", "Dept"],
            "promo": "markdown",
            "holiday": "IsHoliday",
            "static": ["Dept", "Type", "SizeBand"],
            "observed": OBSERVED,
            "calendar": "raw/calendar.csv",
            "future": "raw/future.csv",
            # Weekly department totals: a one-off spike is real demand, and capping it also
            # bends next year's seasonal anchor (BENCHMARKS.md, notes on the accuracy run).
            "cap_outliers": False,
        }
        (node / "node.toml").write_text(_toml(node.name, mapping))
        dirs.append(node)
    return dirs


def write_store_item_nodes(data_dir: Path, out: Path, until: str | None = None) -> list[Path]:
    """One node folder per store (daily units per item), history up to ``until``."""
    sales = load_sales("store_item", Path(data_dir))
    if until is not None:
        sales = sales[sales["date"] <= pd.Timestamp(until)]
    dirs = []
    for store, rows in sales.groupby("store", sort=True):
        node = Path(out) / f"store-{int(store):02d}"
        (node / "raw").mkdir(parents=True, exist_ok=True)
        rows.to_parquet(node / "raw" / "sales.parquet", index=False)
        mapping = {
            "path": "raw/sales.parquet",
            "kind": "periods",
            "frequency": "D",
            "timestamp": "date",
            "quantity": "sales",
            "series_keys": ["store", "item"],
            "static": ["item"],
        }
        (node / "node.toml").write_text(_toml(node.name, mapping))
        dirs.append(node)
    return dirs


WRITERS = {"walmart": write_walmart_nodes, "store_item": write_store_item_nodes}


def to_dataset_columns(name: str, forecasts: pd.DataFrame) -> pd.DataFrame:
    """Node forecasts (original keys mapped back by each node) in the dataset's own columns."""
    ds = DATASETS[name]
    out = forecasts.rename(columns={"date": ds.date})
    for key in ds.keys:
        out[key] = pd.to_numeric(out[key]).astype(np.int64)
    quantiles = sorted(c for c in out.columns if c.startswith("q") and c[1:].isdigit())
    extra = [c for c in ("residual_sd", "path_corr") if c in out.columns]
    cols = [*ds.keys, ds.date, "mean", *quantiles, *extra]
    return out[cols].sort_values([*ds.keys, ds.date]).reset_index(drop=True)
