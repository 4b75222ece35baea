"""From a node's raw file to a clean demand panel: one row per series per period.

Documented rules (every row they touch is written to the quarantine file with its reason):

* rows without a series key, a readable timestamp or a numeric quantity are dropped; so are rows
  dated after today, and stray rows: cut off from the rest of the history by ``ended_after`` or
  more periods with no rows, and under 1% of the rows (a mistyped year). A timestamp column
  of numbers (epoch seconds? spreadsheet days?) is refused, never guessed at;
* unreadable prices are set to unknown (repaired);
* returns: a negative order line is a return, not negative demand — it is excluded from demand;
  a negative per-period value (``kind = "periods"``) is clipped to 0;
* duplicate rows of one series and period in per-period data are summed;
* calendar: each series runs from its first observed period to the node's last period; missing
  periods inside that span are demand 0 (for per-period data each filled period is quarantined as a
  repair). A series with no demand in its last ``ended_after`` periods (no rows, or rows of 0), or
  none at all, has ended: it is kept for training up to its last row but is not forecast;
* a promotion value that is missing is unknown (NaN), not "no promotion"; observed covariates
  (``observed``) are averaged per period and carried forward over gaps;
* outliers: demand above a robust local level + 3σ (rolling median, σ = 1.4826·MAD floored at
  √level) is capped to that bound — except in holiday or promotion periods, whose spikes the model
  explains through its covariates, and except seasonal peaks: a spike that recurs one season
  earlier or later (52 weeks, 364 days) is demand, not an error. ``cap_outliers = false`` in
  ``[data]`` keeps every spike: for already-aggregated sales whose spikes are real demand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from common.cells import FLAG_WORDS, MAX_VALUE, parse_all_dates, parse_dates, parse_numbers, refuse_nested
from common.config import ConfigError, DataConfig
from common.deid import DeidReport, deidentify
from common.tables import MalformedLine, read_table

QUARANTINE_COLUMNS = ["series", "date", "value", "repaired_to", "reason", "source"]
RowLocator = Callable[[np.ndarray], list[str]]  # 0-based positions of raw rows -> "line 12" / "row 11"
OUTLIER_SIGMAS = 3.0


@dataclass
class Prepared:
    panel: pd.DataFrame  # series, date, demand, price, promo, holiday, static...
    key_map: pd.DataFrame  # series (pseudonym) -> sku + original keys: PRIVATE
    quarantine: pd.DataFrame
    deid: DeidReport
    ended: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        by_reason = self.quarantine["reason"].str.split(":").str[0].value_counts()
        return {str(k): int(v) for k, v in by_reason.items()}


def _quarantine_malformed(lines: list[MalformedLine]) -> pd.DataFrame:
    """Quarantine rows for skipped lines: the line number only (its text may hold personal data)."""
    return pd.DataFrame(
        {
            "series": pd.Series([pd.NA] * len(lines), dtype="string"),
            "date": pd.NA,
            "value": pd.NA,
            "repaired_to": np.nan,
            "reason": [m.reason for m in lines],
            "source": [m.source for m in lines],
        },
        columns=QUARANTINE_COLUMNS,
    )


def _quarantine(
    rows: pd.DataFrame,
    reason: str,
    value: str | None = None,
    repaired: pd.Series | float | None = None,
    raw_rows: bool = False,
) -> pd.DataFrame:
    """``raw_rows``: ``rows`` are rows of the raw file, indexed by position, so the quarantine can
    say where they are; otherwise they are periods made by aggregation."""
    out = pd.DataFrame(
        {
            "series": rows["series"].astype("string"),
            "date": rows["date"].astype(str) if "date" in rows else rows.get("_ts_raw", pd.NA),
            "value": rows[value].astype(str) if value else pd.NA,
            "repaired_to": repaired if repaired is not None else np.nan,
            "reason": reason,
            "source": pd.NA,
            "_row": pd.array(rows.index if raw_rows else [pd.NA] * len(rows), dtype="Int64"),
        }
    )
    return out[[*QUARANTINE_COLUMNS, "_row"]]


def _located(bad: list[pd.DataFrame], locate: RowLocator | None) -> pd.DataFrame:
    """The quarantine, each raw row with where it is in its file."""
    if not bad:
        return pd.DataFrame(columns=QUARANTINE_COLUMNS)
    out = pd.concat(bad, ignore_index=True)
    if "_row" not in out:  # e.g. only series that ended: no raw row behind them
        return out.reindex(columns=QUARANTINE_COLUMNS)
    at = out["_row"].notna().to_numpy()
    if at.any():
        positions = out.loc[at, "_row"].to_numpy(dtype=np.int64)
        found = locate(positions) if locate else [f"row {p + 1}" for p in positions]
        out["source"] = out["source"].astype(object)
        out.loc[at, "source"] = found
    return out.reindex(columns=QUARANTINE_COLUMNS)


def _parse(frame: pd.DataFrame, cfg: DataConfig, ended_after: int, bad: list[pd.DataFrame]) -> pd.DataFrame:
    frame = frame.rename(columns={cfg.timestamp: "_ts_raw", cfg.quantity: "_qty_raw"})
    for col, name in (("_ts_raw", cfg.timestamp), ("_qty_raw", cfg.quantity)):
        refuse_nested(frame[col], name)
    frame["timestamp"] = parse_dates(frame["_ts_raw"], f"timestamp column {cfg.timestamp!r}", cfg.date_order)
    frame["quantity"] = parse_numbers(frame["_qty_raw"], f"quantity column {cfg.quantity!r}")
    checks = [
        (frame["series"].isna(), "missing series key", "_qty_raw"),
        (frame["timestamp"].isna(), "unreadable timestamp", "_ts_raw"),
        (
            frame["quantity"].isna() & _numeric(frame["_qty_raw"]),
            f"quantity not finite or beyond {MAX_VALUE:g}",
            "_qty_raw",
        ),
        (frame["quantity"].isna(), "missing or non-numeric quantity", "_qty_raw"),
    ]
    keep = pd.Series(True, index=frame.index)
    for mask, reason, col in checks:
        mask = mask & keep
        if mask.any():
            bad.append(_quarantine(frame[mask], reason, col, raw_rows=True))
        keep &= ~mask
    frame = frame[keep].copy()
    frame["timestamp"] = (
        frame["timestamp"].dt.tz_localize(None) if frame["timestamp"].dt.tz else frame["timestamp"]
    )
    frame = _drop_implausible_dates(frame, cfg, ended_after, bad)
    frame["date"] = frame["timestamp"].dt.to_period(cfg.period_freq).dt.end_time.dt.normalize()
    columns = [(cfg.price, "price"), (cfg.promo, "promo"), (cfg.holiday, "holiday")]
    for src, dst in [*columns, *((c, c) for c in cfg.observed)]:
        if not src:  # no price: unknown; no promotion or holiday column: none
            frame[dst] = np.nan if dst == "price" else 0.0
            continue
        raw = frame[src]
        refuse_nested(raw, src)
        if not pd.api.types.is_numeric_dtype(raw) or pd.api.types.is_bool_dtype(raw):  # True/"yes" flags
            raw = raw.map(lambda v: FLAG_WORDS.get(str(v).strip().lower(), v) if pd.notna(v) else v)
        parsed = parse_numbers(raw, f"{dst} column {src!r}")
        unreadable = parsed.isna() & raw.notna()
        if unreadable.any():
            reason = f"unreadable {dst}: treated as unknown"
            bad.append(_quarantine(frame[unreadable], reason, src, raw_rows=True))
        frame[dst] = parsed.fillna(0.0) if dst == "holiday" else parsed  # NaN promotion = unknown
    return frame


def _numeric(cells: pd.Series) -> pd.Series:
    """Cells that are numbers, however large (text such as 1e400 included)."""
    return pd.to_numeric(cells, errors="coerce").notna() | cells.astype(
        "string"
    ).str.strip().str.lower().isin(["inf", "-inf", "infinity", "-infinity"])


def _drop_implausible_dates(
    frame: pd.DataFrame, cfg: DataConfig, ended_after: int, bad: list[pd.DataFrame]
) -> pd.DataFrame:
    """Quarantine sales dated after today, and stray dates: rows cut off from the rest of the
    history by at least ``ended_after`` periods without any row, holding under 1% of the rows.
    Both are mistyped dates (2202 for 2022); kept, one row would end every other series."""
    future = frame["timestamp"].dt.normalize() > pd.Timestamp.now().normalize() + pd.Timedelta(days=1)
    if future.any():
        reason = "timestamp after today: sales cannot be in the future"
        bad.append(_quarantine(frame[future], reason, "_ts_raw", raw_rows=True))
        frame = frame[~future]
    if frame.empty:
        return frame
    ordinal = pd.PeriodIndex(frame["timestamp"].dt.to_period(cfg.period_freq)).asi8
    distinct = np.unique(ordinal)
    gaps = np.diff(distinct) - 1
    segment = np.concatenate([[0], np.cumsum(gaps >= ended_after)])[np.searchsorted(distinct, ordinal)]
    rows = np.bincount(segment)
    stray = (rows < 0.01 * len(frame)) & (rows < rows.max())
    if not stray.any():
        return frame
    gap_at = np.concatenate([[np.inf], gaps[gaps >= ended_after], [np.inf]])
    for seg in np.flatnonzero(stray):
        empty = int(min(gap_at[seg], gap_at[seg + 1]))
        reason = f"stray timestamp: {empty} periods with no rows between it and the rest of the history"
        bad.append(_quarantine(frame[segment == seg], reason, "_ts_raw", raw_rows=True))
    return frame[~stray[segment]]


def _aggregate(frame: pd.DataFrame, cfg: DataConfig, bad: list[pd.DataFrame]) -> pd.DataFrame:
    if cfg.kind == "orders":
        returns = frame["quantity"] < 0
        if returns.any():
            reason = "return: negative order line excluded from demand"
            bad.append(_quarantine(frame[returns], reason, "_qty_raw", raw_rows=True))
        frame = frame[~returns]
    else:
        dup = frame.duplicated(["series", "date"], keep=False)
        if dup.any():
            bad.append(_quarantine(frame[dup], "duplicate period row: summed", "_qty_raw", raw_rows=True))
    frame = frame.assign(_pq=frame["price"] * frame["quantity"].clip(lower=0))
    static = {c: (c, "first") for c in cfg.static}
    static.update({c: (c, "mean") for c in cfg.observed if c not in static})
    agg = (
        frame.groupby(["series", "date"], sort=True)
        .agg(
            demand=("quantity", "sum"),
            _pq=("_pq", "sum"),
            _price_mean=("price", "mean"),
            promo=("promo", "max"),
            holiday=("holiday", "max"),
            **static,
        )
        .reset_index()
    )
    qty_pos = frame.assign(q=frame["quantity"].clip(lower=0)).groupby(["series", "date"])["q"].sum()
    weighted = agg["_pq"] / qty_pos.to_numpy()
    agg["price"] = weighted.where(qty_pos.to_numpy() > 0, agg["_price_mean"])
    agg = agg.drop(columns=["_pq", "_price_mean"])
    negative = agg["demand"] < 0
    if negative.any():
        bad.append(_quarantine(agg[negative], "negative demand clipped to 0", "demand", 0.0))
        agg.loc[negative, "demand"] = 0.0
    return agg


def _align(
    agg: pd.DataFrame, cfg: DataConfig, ended_after: int, bad: list[pd.DataFrame]
) -> tuple[pd.DataFrame, list[str]]:
    freq = cfg.period_freq
    last = agg["date"].max()
    all_dates = pd.period_range(agg["date"].min(), last, freq=freq).end_time.normalize()
    pieces, ended = [], []
    for series, grp in agg.groupby("series", sort=True):
        start, stop = grp["date"].min(), grp["date"].max()
        sold = grp.loc[grp["demand"] > 0, "date"]  # rows of zero sales are no demand either
        since = sold.max() if len(sold) else start - pd.tseries.frequencies.to_offset(freq)
        gap = len(all_dates[(all_dates > since) & (all_dates <= last)])
        if gap >= ended_after:
            ended.append(series)
            bad.append(
                pd.DataFrame(
                    [
                        {
                            "series": series,
                            "date": str(stop.date()),
                            "value": pd.NA,
                            "repaired_to": np.nan,
                            "reason": (
                                f"series ended: no demand in last {gap} periods"
                                if len(sold)
                                else f"series ended: no demand in its {gap} periods"
                            )
                            + "; not forecast (0 in simulations)",
                        }
                    ]
                )
            )
        else:
            stop = last
        idx = all_dates[(all_dates >= start) & (all_dates <= stop)]
        full = grp.set_index("date").reindex(idx)
        full.index.name = "date"
        missing = full["demand"].isna()
        if cfg.kind == "periods" and missing.any():
            filled = pd.DataFrame({"series": series, "date": full.index[missing]})
            bad.append(_quarantine(filled, "missing period filled with 0", None, 0.0))
        full["series"] = series
        full["demand"] = full["demand"].fillna(0.0)
        full["holiday"] = full["holiday"].fillna(0.0)
        full["price"] = full["price"].ffill().bfill()
        for col in (*cfg.static, *cfg.observed):
            full[col] = full[col].ffill().bfill()
        pieces.append(full.reset_index())
    return pd.concat(pieces, ignore_index=True), ended


def cap_outliers(panel: pd.DataFrame, cfg: DataConfig, bad: list[pd.DataFrame]) -> pd.DataFrame:
    """Cap demand above robust local level + 3σ, outside holiday, promotion and recurring peaks."""
    window = 15 if cfg.frequency == "D" else 9
    grouped = panel.groupby("series", sort=False)["demand"]
    level = grouped.transform(lambda s: s.rolling(window, center=True, min_periods=3).median())
    mad = (
        (panel["demand"] - level)
        .abs()
        .groupby(panel["series"], sort=False)
        .transform(lambda s: s.rolling(window, center=True, min_periods=3).median())
    )
    sigma = np.maximum(1.4826 * mad, np.sqrt(level.clip(lower=1.0)))
    bound = level + OUTLIER_SIGMAS * sigma
    high = (panel["demand"] > bound) & bound.notna()
    lag = 364 if cfg.frequency == "D" else 52
    by_series = high.groupby(panel["series"], sort=False)
    recurring = by_series.shift(lag, fill_value=False) | by_series.shift(-lag, fill_value=False)
    explained = (panel["promo"] > 0) | (panel["holiday"] > 0) | recurring
    over = high & ~explained
    if over.any():
        rows = panel[over].assign(date=panel.loc[over, "date"].dt.date)
        bad.append(
            _quarantine(
                rows,
                f"outlier capped at level + {OUTLIER_SIGMAS:g} sigma",
                "demand",
                bound[over].round(4).to_numpy(),
            )
        )
        panel.loc[over, "demand"] = bound[over]
    return panel


def holiday_events(cfg: DataConfig) -> dict[pd.Timestamp, str]:
    """Period end date -> holiday name, from the node's calendar file (columns date[, holiday])."""
    if cfg.calendar is None:
        return {}
    cal = read_table(cfg.calendar)
    if "date" not in cal.columns:
        raise ConfigError(f"calendar {cfg.calendar} needs a 'date' column")
    names = cal["holiday"] if "holiday" in cal.columns else pd.Series("holiday", index=cal.index)
    days = parse_all_dates(cal["date"], f"calendar {cfg.calendar}", cfg.date_order)
    ends = days.dt.to_period(cfg.period_freq).dt.end_time.dt.normalize()
    events: dict[pd.Timestamp, str] = {}
    for end, name in zip(ends, names.fillna("holiday").astype(str), strict=True):
        events[end] = "+".join(sorted({*events.get(end, "").split("+"), name} - {""}))
    return events


def mark_events(frame: pd.DataFrame, cfg: DataConfig) -> pd.DataFrame:
    """Holiday flag and event name per row: the calendar's name, else "holiday" for flagged rows."""
    events = holiday_events(cfg)
    named = frame["date"].map(events).astype("string")
    frame["holiday"] = np.maximum(frame["holiday"].fillna(0.0), named.notna().astype(float))
    frame["event"] = np.where(frame["holiday"] > 0, named.fillna("holiday").to_numpy(str), "")
    return frame


def prepare(
    raw: pd.DataFrame,
    cfg: DataConfig,
    secret: bytes,
    ended_after: int | None = None,
    malformed: list[MalformedLine] | None = None,
    locate: RowLocator | None = None,
) -> Prepared:
    """De-identify FIRST, then parse, aggregate, align, cap. Nothing raw survives in the result.

    ``malformed``: lines that ``read_table`` skipped, quarantined first. ``locate`` names where raw
    rows are in their file (``common.tables.row_locator``); without it, "row N" of ``raw``.
    """
    frame, key_map, report = deidentify(raw, cfg, secret)
    frame.index = pd.RangeIndex(len(frame))  # positions in the raw file: the quarantine cites them
    del raw
    bad: list[pd.DataFrame] = [_quarantine_malformed(malformed)] if malformed else []
    ended_after = ended_after or (28 if cfg.frequency == "D" else 8)
    frame = _parse(frame, cfg, ended_after, bad)
    if frame.empty:
        raise ConfigError("no usable rows after parsing: check the column mapping")
    agg = _aggregate(frame, cfg, bad)
    panel, ended = _align(agg, cfg, ended_after, bad)
    panel = mark_events(panel, cfg)
    if cfg.cap_outliers:
        panel = cap_outliers(panel, cfg, bad)
    quarantine = _located(bad, locate)
    observed = [c for c in cfg.observed if c not in cfg.static]
    cols = ["series", "date", "demand", "price", "promo", "holiday", "event", *cfg.static, *observed]
    return Prepared(panel[cols], key_map, quarantine, report, ended)
