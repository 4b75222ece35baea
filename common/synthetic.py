"""Built-in synthetic warehouses: raw order lines with personal data, for the demo and scale tests.

Each warehouse gets ``raw/orders.csv`` (order lines with customer names, e-mails, phones, addresses
and ids — unique canary values, so tests can prove none of them leaves the node), a holiday
calendar, planned promotions and prices for the next weeks, a stock file and its ``node.toml``.
Demand has weekly and yearly seasonality, holiday peaks, promotion uplift with price cuts,
intermittent items and very different volumes across warehouses; the raw file also carries a few
returns, bulk-order outliers and malformed rows that the pipeline must quarantine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

CATEGORIES = ("grocery", "household", "electronics", "apparel")
VOLUME_BY_NODE = (1.0, 4.0, 0.35, 2.0, 0.8)
_FIRST = ("Avelina", "Borromir", "Cressida", "Dagobert", "Elowen", "Fintan", "Ghislaine", "Hollis")
_LAST = ("Quillfeather", "Marrowdale", "Thistlewick", "Ashgrove", "Pemberly", "Vantablack")


@dataclass(frozen=True)
class SyntheticSpec:
    items: int = 16
    start: str = "2023-01-01"
    days: int = 730
    horizon_days: int = 42
    customers: int = 300


def holiday_calendar(start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    rows = []
    for year in range(start.year, end.year + 1):
        nov = pd.date_range(f"{year}-11-01", f"{year}-11-30")
        thanksgiving = nov[nov.day_of_week == 3][3]
        for day, name in (
            (f"{year}-01-01", "new_year"),
            (f"{year}-07-04", "independence_day"),
            (thanksgiving + pd.Timedelta(days=1), "black_friday"),
            (f"{year}-12-24", "christmas_eve"),
            (f"{year}-12-25", "christmas"),
        ):
            rows.append({"date": pd.Timestamp(day), "holiday": name})
    cal = pd.DataFrame(rows)
    return cal[(cal["date"] >= start) & (cal["date"] <= end)].reset_index(drop=True)


def _promotions(rng: np.random.Generator, n_days: int, per_year: float = 5.0) -> np.ndarray:
    promo = np.zeros(n_days)
    for _ in range(rng.poisson(per_year * n_days / 365)):
        s = rng.integers(0, n_days)
        promo[s : s + rng.integers(4, 10)] = 1.0
    return promo


def _daily_demand(
    rng: np.random.Generator,
    dates: pd.DatetimeIndex,
    level: float,
    promo: np.ndarray,
    holidays: set[pd.Timestamp],
) -> np.ndarray:
    weekday = np.array([0.85, 0.9, 0.95, 1.0, 1.15, 1.3, 0.85])[dates.day_of_week]
    yearly = 1 + 0.25 * np.sin(2 * np.pi * (dates.day_of_year - 80) / 365.25)
    near_holiday = np.array(
        [
            1.8
            if d in holidays
            else 1.3
            if (d + pd.Timedelta(days=1)) in holidays or (d + pd.Timedelta(days=2)) in holidays
            else 1.0
            for d in dates
        ]
    )
    trend = 1 + 0.1 * np.arange(len(dates)) / 365
    mean = level * weekday * yearly * near_holiday * trend * (1 + 0.6 * promo)
    shape = 3.0  # negative binomial dispersion: over-dispersed counts
    return rng.poisson(rng.gamma(shape, mean / shape)).astype(int)


def _split_into_lines(rng: np.random.Generator, units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split per-(item, day) units into order lines of 1..4 units; return (cell index, qty)."""
    k = np.maximum(1, np.round(units / 2.5).astype(int)) * (units > 0)
    cell = np.repeat(np.arange(len(units)), k)
    base = np.repeat(units // np.maximum(k, 1), k)
    rem = np.repeat(units % np.maximum(k, 1), k)
    offset = np.arange(len(cell)) - np.repeat(np.cumsum(k) - k, k)
    del rng
    return cell, base + (offset < rem)


def _customers(rng: np.random.Generator, node: int, n: int) -> pd.DataFrame:
    ids = [f"CUST-{node:02d}-{i:05d}-{rng.integers(16**6):06x}" for i in range(n)]
    first = rng.choice(_FIRST, n)
    last = rng.choice(_LAST, n)
    tags = [f"{rng.integers(16**5):05x}" for _ in range(n)]
    return pd.DataFrame(
        {
            "customer_id": ids,
            "customer_name": [
                f"{f} {tag.upper()} {ln}" for f, tag, ln in zip(first, tags, last, strict=True)
            ],
            "customer_email": [
                f"{f.lower()}.{tag}@canary-mail.example" for f, tag in zip(first, tags, strict=True)
            ],
            "customer_phone": [
                f"+1 555 {rng.integers(100, 999)} {rng.integers(1000, 9999)}" for _ in range(n)
            ],
            "shipping_address": [f"{rng.integers(1, 999)} Canary {tag} Lane, Springfield" for tag in tags],
        }
    )


def generate_orders(
    node: int, spec: SyntheticSpec, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Return (order lines, future plan, item master) for one warehouse."""
    rng = np.random.default_rng([seed, node])
    start = pd.Timestamp(spec.start)
    dates = pd.date_range(start, periods=spec.days, freq="D")
    future_dates = pd.date_range(dates[-1] + pd.Timedelta(days=1), periods=spec.horizon_days)
    holidays = set(holiday_calendar(start, future_dates[-1])["date"])
    volume = VOLUME_BY_NODE[node % len(VOLUME_BY_NODE)]
    items = pd.DataFrame(
        {
            "sku": [f"SKU-{i:04d}" for i in range(spec.items)],
            "category": [CATEGORIES[i % len(CATEGORIES)] for i in range(spec.items)],
            "base_price": np.round(rng.uniform(2, 80, spec.items), 2),
            "level": volume
            * np.where(
                rng.random(spec.items) < 0.2,
                rng.uniform(0.2, 0.6, spec.items),
                rng.lognormal(2.0, 0.6, spec.items),
            ),
        }
    )
    n_all = spec.days + spec.horizon_days
    promo_all = np.stack([_promotions(rng, n_all) for _ in range(spec.items)])
    units = np.stack(
        [
            _daily_demand(rng, dates, lvl, promo_all[i, : spec.days], holidays)
            for i, lvl in enumerate(items["level"])
        ]
    ).ravel()  # item-major
    cell, qty = _split_into_lines(rng, units)
    item_idx, day_idx = cell // spec.days, cell % spec.days
    price = items["base_price"].to_numpy()[item_idx] * np.where(promo_all[item_idx, day_idx] > 0, 0.8, 1.0)
    customers = _customers(rng, node, spec.customers)
    who = rng.integers(0, spec.customers, len(cell))
    seconds = rng.integers(6 * 3600, 22 * 3600, len(cell))
    lines = pd.DataFrame(
        {
            "order_id": [f"ORD-{node:02d}-{i:08d}" for i in range(len(cell))],
            "order_ts": (dates[day_idx] + pd.to_timedelta(seconds, unit="s")).strftime("%Y-%m-%dT%H:%M:%S"),
            "sku": items["sku"].to_numpy()[item_idx],
            "category": items["category"].to_numpy()[item_idx],
            "quantity": qty.astype(int).astype(str),
            "unit_price": np.round(price, 2).astype(str),
            "promo": promo_all[item_idx, day_idx].astype(int).astype(str),
        }
    )
    lines = pd.concat([lines, customers.iloc[who].reset_index(drop=True)], axis=1)
    lines = _inject_faults(rng, lines)
    future = pd.DataFrame(
        {
            "sku": np.repeat(items["sku"].to_numpy(), spec.horizon_days),
            "date": np.tile(future_dates.strftime("%Y-%m-%d"), spec.items),
            "promo": promo_all[:, spec.days :].ravel().astype(int),
            "unit_price": np.round(
                np.repeat(items["base_price"].to_numpy(), spec.horizon_days)
                * np.where(promo_all[:, spec.days :].ravel() > 0, 0.8, 1.0),
                2,
            ),
        }
    )
    return lines, future, items


def _inject_faults(rng: np.random.Generator, lines: pd.DataFrame) -> pd.DataFrame:
    n = len(lines)
    returns = rng.choice(n, max(1, n // 200), replace=False)
    lines.loc[returns, "quantity"] = "-" + lines.loc[returns, "quantity"]
    bulk = rng.choice(np.flatnonzero(lines["promo"].to_numpy() == "0"), 3, replace=False)
    lines.loc[bulk, "quantity"] = "400"
    broken = rng.choice(n, 4, replace=False)
    lines.loc[broken[:2], "order_ts"] = "not-a-date"
    lines.loc[broken[2:], "quantity"] = ""
    return lines


def _stock_file(rng: np.random.Generator, items: pd.DataFrame) -> pd.DataFrame:
    n = len(items)
    daily = items["level"].to_numpy()
    cover = rng.choice([0.0, 2.0, 6.0, 15.0, 45.0], n, p=[0.1, 0.25, 0.3, 0.2, 0.15])
    return pd.DataFrame(
        {
            "sku": items["sku"],
            "on_hand": np.round(daily * cover).astype(int),
            "on_order": np.where(rng.random(n) < 0.3, np.round(daily * 5).astype(int), 0),
            "lead_time": rng.choice([2, 3, 5], n),
            "review_period": rng.choice([1, 7], n),
            "service_level": rng.choice([0.9, 0.95, 0.98], n),
            "moq": rng.choice([0, 10, 24], n),
            "pack_size": rng.choice([1, 6, 12], n),
            "unit_cost": np.round(items["base_price"] * 0.6, 2),
        }
    )


NODE_TOML = """[node]
name = "{name}"
secret_context = "keys/secret.ctx"

[data]
path = "raw/orders.csv"
kind = "orders"
frequency = "D"
timestamp = "order_ts"
quantity = "quantity"
series_keys = ["sku"]
price = "unit_price"
promo = "promo"
static = ["category"]
drop_columns = ["customer_id", "order_id"]
calendar = "raw/calendar.csv"
future = "raw/future.csv"
"""


def write_warehouse(
    folder: Path, node: int, spec: SyntheticSpec = SyntheticSpec(), seed: int = 0
) -> dict[str, list[str]]:
    """Write one synthetic warehouse folder; return its PII canary values by column."""
    raw = folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    lines, future, items = generate_orders(node, spec, seed)
    lines.to_csv(raw / "orders.csv", index=False)
    future.to_csv(raw / "future.csv", index=False)
    start = pd.Timestamp(spec.start)
    end = start + pd.Timedelta(days=spec.days + spec.horizon_days + 366)
    holiday_calendar(start, end).to_csv(raw / "calendar.csv", index=False)
    _stock_file(np.random.default_rng([seed, node, 1]), items).to_csv(folder / "stock.csv", index=False)
    (folder / "node.toml").write_text(NODE_TOML.format(name=f"warehouse-{node:02d}"))
    pii = ["customer_id", "customer_name", "customer_email", "customer_phone", "shipping_address"]
    return {c: sorted(set(lines[c])) for c in pii}
