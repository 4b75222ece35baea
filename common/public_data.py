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

The source files are read from ``../shared/data`` and never copied into the project. A folder of
Kaggle's own CSV files (``train.csv``, ``features.csv``, ``stores.csv``) is read the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common.config import ConfigError, require_columns
from common.tables import read_table

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


# Kaggle ships the sales table as train.csv; our shared copies are Parquet.
_KAGGLE_NAMES = {"sales": "train.csv"}
# How each known column of a public CSV is parsed; a column not listed stays text.
_KINDS = {
    **dict.fromkeys(["Store", "Dept", "Size", "store", "item"], "integer"),
    **dict.fromkeys(["Date", "date"], "date"),
    "IsHoliday": "flag",
    **dict.fromkeys(["Weekly_Sales", "sales", *MARKDOWNS, *OBSERVED], "number"),
}
_FLAGS = {"true": True, "false": False, "1": True, "0": False}


def _find(data_dir: Path, stem: str) -> Path:
    """STEM.parquet, STEM.csv or Kaggle's own name for it: exactly one of them."""
    names = [f"{stem}.parquet", f"{stem}.csv", *filter(None, [_KAGGLE_NAMES.get(stem)])]
    found = [data_dir / name for name in names if (data_dir / name).is_file()]
    if len(found) > 1:
        raise ConfigError(f"{data_dir} holds both {found[0].name} and {found[1].name}: keep only one")
    if not found:
        zipped = [name for name in names if (data_dir / f"{name}.zip").is_file()]
        hint = f"; unzip {zipped[0]}.zip there first" if zipped else ""
        raise ConfigError(f"dataset file not found: {data_dir / names[0]} (or {', '.join(names[1:])}){hint}")
    return found[0]


def _read(data_dir: Path, stem: str, columns: list[str]) -> pd.DataFrame:
    path = _find(Path(data_dir), stem)
    frame = read_table(path)
    require_columns(frame, columns, str(path))
    return frame if path.suffix == ".parquet" else _typed(frame, path)


def _typed(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Parse a public CSV's known columns; the first cell that does not parse stops the run.

    An empty number is missing (a markdown not planned, a sale the node pipeline quarantines);
    keys, dates and flags must be there, since rows are split into nodes and weeks by them.
    """
    for column in [c for c in frame.columns if c in _KINDS]:
        kind = _KINDS[column]
        text = frame[column].str.strip()
        if kind == "date":
            parsed = pd.to_datetime(text, format="%Y-%m-%d", errors="coerce")
        elif kind == "flag":
            parsed = text.str.lower().map(_FLAGS)
        else:
            parsed = pd.to_numeric(text, errors="coerce")
            if kind == "integer":
                parsed = parsed.where(parsed.mod(1) == 0)
        bad = parsed.isna() & (text.notna() if kind == "number" else True)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            value = "an empty cell" if pd.isna(text.iloc[row]) else repr(text.iloc[row])
            wanted = {"date": "a YYYY-MM-DD date", "flag": "TRUE or FALSE", "integer": "an integer"}
            wanted = wanted.get(kind, "a number")
            raise ConfigError(f"{path}: column {column!r} has {value} in data row {row + 1}, not {wanted}")
        casts = {"flag": bool, "integer": np.int64}
        frame[column] = parsed.astype(casts[kind]) if kind in casts else parsed
    return frame


def load_sales(name: str, data_dir: Path) -> pd.DataFrame:
    """The dataset's sales table with a datetime date column."""
    ds = DATASETS[name]
    sales = _read(data_dir, "sales", [*ds.keys, ds.date, ds.target])
    sales[ds.date] = pd.to_datetime(sales[ds.date])
    return sales


def _history_until(sales: pd.DataFrame, date: str, until: str | None) -> pd.DataFrame:
    """The rows dated ``until`` or earlier; none at all is an error, not an empty federation."""
    if until is None:
        return sales
    kept = sales[sales[date] <= pd.Timestamp(until)]
    if kept.empty:
        raise ConfigError(f"no sales on or before {until}: the data starts on {sales[date].min().date()}")
    return kept


def _chosen(sales: pd.DataFrame, column: str, only: list[int] | None):
    """The rows of the stores in ``only`` (all without it), by store; a store the data lacks is
    an error."""
    held = sorted(int(v) for v in sales[column].unique())
    if not held:
        raise ConfigError("the sales table has no rows: no store to make a site of")
    if only is not None and (missing := sorted(set(only) - set(held))):
        raise ConfigError(f"no store {missing[0]} in the data: its stores are {held[0]}..{held[-1]}")
    chosen = sales if only is None else sales[sales[column].isin(only)]
    return chosen.groupby(column, sort=True)


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


def write_walmart_nodes(
    data_dir: Path, out: Path, until: str | None = None, only: list[int] | None = None
) -> list[Path]:
    """One node folder per store (``only``: those stores) with history up to ``until`` (inclusive;
    default: all)."""
    data_dir = Path(data_dir)
    sales = load_sales("walmart", data_dir)
    features = _read(data_dir, "features", ["Store", "Date", "IsHoliday", *MARKDOWNS, *OBSERVED])
    stores = _read(data_dir, "stores", ["Store", "Type", "Size"])
    features["Date"] = pd.to_datetime(features["Date"])
    sales = _history_until(sales, "Date", until)
    last = sales["Date"].max()
    horizon = pd.date_range(last + pd.Timedelta(weeks=1), periods=DATASETS["walmart"].horizon, freq="7D")
    features["markdown"] = features[MARKDOWNS].clip(lower=0).sum(axis=1, min_count=1)  # NaN = unknown
    stores["SizeBand"] = "size-" + (stores["Size"] // 40_000).astype(int).astype(str)
    calendar = walmart_calendar(features)
    past = features[features["Date"] <= last]
    dirs = []
    for store, rows in _chosen(sales, "Store", only):
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


def write_store_item_nodes(
    data_dir: Path, out: Path, until: str | None = None, only: list[int] | None = None
) -> list[Path]:
    """One node folder per store (daily units per item), history up to ``until``."""
    sales = load_sales("store_item", Path(data_dir))
    sales = _history_until(sales, "date", until)
    dirs = []
    for store, rows in _chosen(sales, "store", only):
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
    made = [c for c in ("origin", "step") if c in out.columns]  # a backtest's forecasts from many origins
    cols = [*ds.keys, *made, ds.date, "mean", *quantiles, *extra]
    return out[cols].sort_values([*ds.keys, *made, ds.date]).reset_index(drop=True)
