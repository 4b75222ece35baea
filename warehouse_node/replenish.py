"""Stock file + forecasts -> decisions.csv, strategy.csv (and rejected.csv for rows that cannot be decided).

Stock file columns: ``sku``, ``on_hand``, ``lead_time`` (required); ``on_order`` (0),
``on_order_due`` (periods until it arrives; the lead time), ``review_period`` (1),
``service_level`` (0.95), ``moq`` (0), ``pack_size`` (1); other columns are not read. Each row
that cannot be decided is listed as written, with its reason; the others are decided.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from common.cells import parse_dates, row_numbers
from common.config import ConfigError, require_columns
from common.files import check_output
from common.inventory import StrategyConfig, decide, sample_paths
from common.policies import POLICIES, Policy
from common.tables import MalformedLine, read_table
from warehouse_node.overrides import apply_overrides, validate_overrides

MAX_QUANTITY = 1e12  # larger on-hand, on-order, MOQ or pack figures are typos, not stock
REQUIRED = ("sku", "on_hand", "lead_time")
DECISION_COLUMNS = [  # decisions.csv, in order (an override adds model_status, model_order_qty, who, why)
    "sku",
    "status",
    "order_qty",
    "on_hand",
    "on_order",
    "reorder_point",
    "order_up_to",
    "safety_stock",
    "stockout_risk",
    "reason",
]
DEFAULTS = {"on_order": 0.0, "review_period": 1, "service_level": 0.95, "moq": 0.0, "pack_size": 1.0}
NUMERIC = ("on_hand", "on_order", "lead_time", "review_period", "service_level", "moq", "pack_size")
_QUANTILE_COL = re.compile(r"^q(\d{2})$")


@dataclass
class ReplenishResult:
    decisions: pd.DataFrame
    strategy: pd.DataFrame
    rejected: pd.DataFrame
    decided_stock: pd.DataFrame = field(default_factory=pd.DataFrame)  # validated, defaults filled
    rejected_overrides: pd.DataFrame = field(default_factory=pd.DataFrame)


def require_forecast_columns(forecasts: pd.DataFrame) -> None:
    require_columns(forecasts, ("sku", "date", "mean"), "forecasts file")
    if forecasts.empty:
        raise ConfigError("forecasts file has no rows")


def forecast_quantiles(forecasts: pd.DataFrame) -> tuple[tuple[float, ...], list[str]]:
    cols = sorted((c for c in forecasts.columns if _QUANTILE_COL.match(c)), key=lambda c: int(c[1:]))
    if len(cols) < 3:
        raise ConfigError("forecasts file needs at least three quantile columns named qNN")
    return tuple(int(c[1:]) / 100 for c in cols), cols


def trimmed_skus(skus: pd.Series) -> pd.Series:
    """Forecast skus without surrounding spaces, as stock rows are matched (an ERP may pad codes)."""
    raw = skus.astype("string")
    trimmed = raw.str.strip()
    pairs = pd.DataFrame({"raw": raw, "trimmed": trimmed}).drop_duplicates()
    clash = pairs[pairs["trimmed"].duplicated(keep=False)].sort_values("raw")
    if not clash.empty:
        names = ", ".join(repr(v) for v in clash["raw"].head(4))
        raise ConfigError(f"forecasts file has skus that differ only in surrounding spaces: {names}")
    return trimmed


def unusable_forecasts(forecasts: pd.DataFrame, qcols: list[str], freq: str, need_sd: bool) -> dict[str, str]:
    """sku -> why its forecast rows [sorted by sku, parsed date; numbers parsed, NaN where not;
    ``written_date``] cannot be decided on: an unreadable date, a date twice or a period missing,
    a value that is missing, not finite or negative, quantiles that cross, or (``need_sd``) no
    usable residual_sd."""
    values = forecasts[["mean", *qcols]]
    q = values[qcols].to_numpy(dtype=float)
    tolerance = 1e-6 * (1 + np.abs(q).max(axis=1, initial=0.0))  # float rounding is not crossing
    dates = forecasts["date"]
    step = pd.Timedelta(days=1 if freq == "D" else 7)
    gap = (dates.diff() > step) & (forecasts["sku"] == forecasts["sku"].shift())
    checks = [
        (dates.isna(), "has an unreadable date"),
        (forecasts.duplicated(["sku", "date"], keep=False), "has a date twice"),
        (gap, "misses the period before"),
        (~np.isfinite(values).all(axis=1), "has a missing or non-finite value"),
        ((values < 0).any(axis=1), "has a negative value"),
        ((np.diff(q, axis=1) < -tolerance[:, None]).any(axis=1), "has quantiles that cross"),
    ]
    if need_sd:
        sd = forecasts["residual_sd"]
        checks.append((~np.isfinite(sd) | (sd < 0), "has no usable residual_sd"))
    if "path_corr" in forecasts:
        checks.append((~forecasts["path_corr"].between(-1, 1), "has no usable path_corr"))
    reasons: dict[str, str] = {}
    for mask, why in checks:
        for sku, date in forecasts.loc[mask, ["sku", "written_date"]].itertuples(index=False):
            reasons.setdefault(sku, f"its forecast {why} ({date})")
    return reasons


# How a sku is mangled between two tools, and how to undo it: (what happened, the key it leaves)
NEAR_MISSES = (
    ("in other letter case", str.casefold),
    ("with the leading zeros a spreadsheet drops", lambda sku: sku.lstrip("0") or "0"),
    (
        "in another Unicode form (accents or full-width letters)",
        lambda sku: unicodedata.normalize("NFKC", sku),
    ),
)


def unknown_sku_reason(sku: str, known: set[str]) -> str:
    """Why a stock sku has no forecast, naming the forecast sku it nearly matches."""
    for how, key in NEAR_MISSES:
        matches = sorted(k for k in known if key(k) == key(sku))
        if matches:
            return f"unknown sku: no forecast for it; the forecasts have {matches[0]!r}, {how}"
    return "unknown sku: no forecast for it"


def validate_stock(
    stock: pd.DataFrame, horizons: dict[str, int], unusable: dict[str, str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split stock rows into (decidable rows with defaults filled, rejected rows with a reason)."""
    require_columns(stock, REQUIRED, "stock file")
    as_given = stock  # rejected rows are listed as the operator wrote them
    stock = stock.copy()
    stock["sku"] = stock["sku"].astype("string").str.strip()
    for col, default in DEFAULTS.items():
        if col not in stock.columns:
            stock[col] = default
        stock[col] = stock[col].where(stock[col].notna() & (stock[col].astype(str) != ""), default)
    reasons = pd.Series("", index=stock.index)

    def reject(mask: pd.Series, why: str) -> None:
        reasons[mask & (reasons == "")] = why

    reject(stock["sku"].isna() | (stock["sku"] == ""), "missing sku")
    reject(stock["sku"].duplicated(keep=False), "duplicate sku in stock file")
    values = {}
    for col in NUMERIC:
        values[col], either = row_numbers(stock[col])
        reject(
            either, f"{col} reads as a thousands or a decimal comma: write it without a thousands separator"
        )
        reject(values[col].isna() | ~np.isfinite(values[col]), f"{col} is missing or not a number")
    for col in ("on_hand", "on_order", "moq", "pack_size"):  # sums of these must stay exact
        reject(values[col].abs() > MAX_QUANTITY, f"{col} is beyond {MAX_QUANTITY:.0e}: not a stock quantity")
    reject(values["on_hand"] < 0, "on_hand is negative")
    reject(values["on_order"] < 0, "on_order is negative")
    for col in ("lead_time", "review_period"):
        reject((values[col] < 1) | (values[col] % 1 != 0), f"{col} must be a whole number of periods >= 1")
    reject((values["service_level"] <= 0) | (values["service_level"] >= 1), "service_level must be in (0, 1)")
    reject((values["moq"] < 0) | (values["pack_size"] <= 0), "moq must be >= 0 and pack_size > 0")
    forecast_trouble = stock["sku"].map(unusable or {})
    unusable_rows = forecast_trouble.notna() & (reasons == "")
    reasons[unusable_rows] = forecast_trouble[unusable_rows]
    horizon = stock["sku"].map(horizons)  # each sku's own forecast periods
    for periods in sorted(horizon.dropna().unique()):
        reject(
            (horizon == periods) & (values["lead_time"] + values["review_period"] > periods),
            f"lead_time + review_period exceeds the forecast horizon of {int(periods)} periods",
        )
    known = set(horizons)
    unknown = ~stock["sku"].isin(known) & (reasons == "")
    reasons[unknown] = stock.loc[unknown, "sku"].map(lambda sku: unknown_sku_reason(sku, known))
    if "on_order_due" in stock.columns:  # periods until the on-order stock arrives; default lead time
        written = stock["on_order_due"].astype("string").str.strip().fillna("")
        due = pd.to_numeric(written.where(written != ""), errors="coerce").astype(float)
        reject(due.isna() & (written != ""), "on_order_due is not a number")
        due = due.fillna(values["lead_time"])  # empty: the stock on order arrives after the lead time
        reject((due < 1) | (due % 1 != 0), "on_order_due must be a whole number of periods >= 1")
        stock["on_order_due"] = due
    for col in NUMERIC:
        stock[col] = values[col]
    bad = reasons != ""
    rejected = as_given[bad].assign(reason=reasons[bad])
    return stock[~bad], rejected


def replenish(
    forecasts: pd.DataFrame,
    stock: pd.DataFrame,
    freq: str,
    cfg: StrategyConfig | None = None,
    policy: Policy = POLICIES["probabilistic"],
    overrides: pd.DataFrame | None = None,
) -> ReplenishResult:
    """Decide every stock row that can be decided; ``overrides`` as read from an overrides file."""
    cfg = cfg or StrategyConfig()
    require_forecast_columns(forecasts)
    if policy.name == "classical" and "residual_sd" not in forecasts.columns:
        raise ConfigError("the classical policy needs a residual_sd column in the forecasts file")
    levels, qcols = forecast_quantiles(forecasts)
    numeric = [c for c in ("mean", *qcols, "residual_sd", "path_corr") if c in forecasts]
    forecasts = forecasts.assign(
        **{
            c: row_numbers(forecasts[c])[0] for c in numeric
        },  # a spreadsheet's decimal commas read; NaN: rejected
        sku=trimmed_skus(forecasts["sku"]),
        date=parse_dates(forecasts["date"], "forecasts file column 'date'"),  # NaT: rejected
        written_date=forecasts["date"].astype(str).str[:10],
    ).sort_values(["sku", "date"])
    rows_of = forecasts.groupby("sku", sort=False).indices  # sku -> row positions in date order
    unusable = unusable_forecasts(forecasts, qcols, freq, policy.name == "classical")
    horizons = {sku: len(at) for sku, at in rows_of.items()}
    good, rejected = validate_stock(stock, horizons, unusable)
    usable, rejected_overrides = (
        validate_overrides(overrides, set(good["sku"])) if overrides is not None else (None, pd.DataFrame())
    )
    pinned = usable["status"].to_dict() if usable is not None else {}
    rng = np.random.default_rng(cfg.seed)
    quantiles, dates = forecasts[qcols].to_numpy(dtype=float), forecasts["date"].to_numpy()
    per_sku = {c: forecasts[c].to_numpy() for c in ("path_corr", "residual_sd") if c in forecasts}
    step = pd.tseries.frequencies.to_offset(freq)
    decisions, strategies = [], []
    for _, row in good.iterrows():
        at = rows_of[row["sku"]]
        rho = float(per_sku["path_corr"][at[0]]) if "path_corr" in per_sku else 0.5
        paths = sample_paths(quantiles[at], levels, rho, cfg.paths, rng)
        sd = float(per_sku["residual_sd"][at[0]]) if "residual_sd" in per_sku else None
        origin = pd.Timestamp(dates[at[0]]) - step
        decision, strategy = decide(row, paths, origin, freq, cfg, policy, sd, pinned.get(row["sku"]))
        decisions.append(decision)
        strategies.append(strategy)
    cols_s = ["sku", "availability", "restock_date", "promotion", "reason"]
    result = ReplenishResult(
        pd.DataFrame(decisions, columns=DECISION_COLUMNS),
        pd.DataFrame(strategies, columns=cols_s),
        rejected,
        good,
    )
    if usable is not None:
        result.decisions, result.strategy = apply_overrides(result.decisions, result.strategy, good, usable)
        result.rejected_overrides = rejected_overrides
    cite_fallback(result, forecasts)
    return result


def cite_fallback(result: ReplenishResult, forecasts: pd.DataFrame) -> None:
    """Say in each reason when a sku's forecast came from the fallback baseline, not the model."""
    if "source" not in forecasts.columns:
        return
    first = forecasts.groupby("sku", sort=False)[["source", "source_reason"]].first()
    fallback = first[first["source"].astype(str) == "fallback"]
    for frame in (result.decisions, result.strategy):
        why = frame["sku"].map(fallback["source_reason"])
        cited = why.notna()
        frame.loc[cited, "reason"] = (
            frame.loc[cited, "reason"]
            + "; forecast from the fallback baseline ("
            + why[cited].astype(str)
            + ")"
        )


def load_strategy_config(path: Path) -> StrategyConfig:
    """Strategy thresholds from a TOML file of StrategyConfig fields; anything else is refused."""
    try:
        values = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"strategy config {path}: {exc}") from None
    known = {f.name: f.type for f in fields(StrategyConfig)}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"unknown strategy setting {key!r}: choose from {', '.join(known)}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"strategy setting {key!r} must be a number, got {value!r}")
    cfg = StrategyConfig(**values)
    for key in ("suppress_stockout_prob", "promote_max_stockout_prob"):
        if not 0 < getattr(cfg, key) < 1:
            raise ConfigError(f"strategy setting {key!r} must be in (0, 1)")
    if cfg.promo_uplift <= 0 or cfg.promote_min_cover < 0 or cfg.paths < 100:
        raise ConfigError("promo_uplift must be > 0, promote_min_cover >= 0 and paths >= 100")
    return cfg


def infer_frequency(forecasts: pd.DataFrame) -> str:
    read = pd.to_datetime(forecasts["date"], errors="coerce", format="mixed").dropna()  # NaT: rejected
    dates = pd.DatetimeIndex(sorted(read.unique()))
    if len(dates) < 2:
        raise ConfigError("forecasts file has fewer than two dates: cannot tell the period length")
    step = (dates[1] - dates[0]).days
    if step == 1:
        return "D"
    if step == 7:
        return f"W-{dates[0].day_name()[:3].upper()}"
    raise ConfigError(f"forecast dates are {step} days apart: only daily or weekly periods are supported")


def _with_malformed(rejected: pd.DataFrame, lines: list[MalformedLine]) -> pd.DataFrame:
    """Rejected rows plus the lines read_table skipped (their fields cannot be trusted to a column)."""
    if not lines:
        return rejected
    return pd.concat([rejected, pd.DataFrame({"reason": [str(m) for m in lines]})], ignore_index=True)


def run_replenish(
    forecasts: Path | pd.DataFrame,
    stock_path: Path,
    out_dir: Path,
    node: str | None = None,
    policy: str = "probabilistic",
    overrides_path: Path | None = None,
    strategy_path: Path | None = None,
    write_strategy: bool = True,
) -> ReplenishResult:
    """Decide a stock file on a forecasts file (or on a forecasts table: the network's, for a
    distribution center) and write decisions, rejected rows and, with ``write_strategy``, the
    customer-facing strategy to ``out_dir``."""
    check_output(out_dir, folder=True)  # before any file is read
    forecasts = forecasts if isinstance(forecasts, pd.DataFrame) else read_table(forecasts)
    if node is not None and "node" in forecasts.columns:
        nodes = sorted(forecasts["node"].astype(str).unique())
        if node not in nodes:
            shown = ", ".join(nodes[:8]) + (" …" if len(nodes) > 8 else "")
            raise ConfigError(f"forecasts file has no rows for node {node!r} (its nodes: {shown})")
        forecasts = forecasts[forecasts["node"].astype(str) == node]
    require_forecast_columns(forecasts)
    bad_stock: list[MalformedLine] = []
    stock = read_table(stock_path, bad_stock)
    if stock.empty and not bad_stock:
        raise ConfigError(f"stock file {stock_path} has no rows under its header: nothing to decide")
    cfg = load_strategy_config(strategy_path) if strategy_path else None
    bad_overrides: list[MalformedLine] = []
    overrides = read_table(overrides_path, bad_overrides) if overrides_path is not None else None
    result = replenish(forecasts, stock, infer_frequency(forecasts), cfg, POLICIES[policy], overrides)
    result.rejected = _with_malformed(result.rejected, bad_stock)
    if overrides is not None:
        result.rejected_overrides = _with_malformed(result.rejected_overrides, bad_overrides)
        out_dir.mkdir(parents=True, exist_ok=True)
        result.rejected_overrides.to_csv(out_dir / "overrides_rejected.csv", index=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    result.decisions.to_csv(out_dir / "decisions.csv", index=False)
    if write_strategy:
        result.strategy.to_csv(out_dir / "strategy.csv", index=False)
    result.rejected.to_csv(out_dir / "rejected.csv", index=False)
    return result
