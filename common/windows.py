"""Turn a demand panel into model inputs: per-series scaling, covariates, sliding windows.

Known-future covariates (same columns in the past and in the horizon), ``KNOWN_FEATURES``:
holiday flag, promotion, log price relative to the series' median price, and the position in the
year and in the week as sine/cosine pairs. Past-only inputs: scaled demand and an "observed" mask
(0 before a series started; young series are left-padded). Static inputs: the configured static
categorical columns, hashed into a shared bucket space, and log1p of the series scale.

Windows are not materialised: a dataset keeps one padded array per node and gathers windows by
index, so memory stays linear in the history length.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

KNOWN_FEATURES = ("holiday", "promo", "log_price", "year_sin", "year_cos", "week_sin", "week_cos")
MAX_STATIC = 4
STATIC_BUCKETS = 64


def static_bucket(column: str, value: object) -> int:
    """Unkeyed, stable hash of a coarse attribute into 1..STATIC_BUCKETS-1 (0 is padding)."""
    digest = hashlib.sha256(f"{column}={value}".encode()).digest()
    return 1 + int.from_bytes(digest[:4], "big") % (STATIC_BUCKETS - 1)


def known_covariates(frame: pd.DataFrame, median_price: pd.Series) -> np.ndarray:
    """Covariate matrix [rows, len(KNOWN_FEATURES)] for rows with series, date, holiday, promo, price."""
    dates = pd.DatetimeIndex(frame["date"])
    year = 2 * np.pi * (dates.day_of_year.to_numpy() - 1) / 365.25
    week = 2 * np.pi * dates.day_of_week.to_numpy() / 7
    ref = frame["series"].map(median_price).to_numpy(dtype=float)
    price = frame["price"].to_numpy(dtype=float)
    log_price = np.where(
        np.isfinite(price) & (price > 0) & (ref > 0),
        np.log(np.clip(price, 1e-9, None) / np.clip(ref, 1e-9, None)),
        0.0,
    )
    return np.column_stack(
        [
            frame["holiday"].to_numpy(dtype=float),
            frame["promo"].to_numpy(dtype=float),
            np.clip(log_price, -2, 2),
            np.sin(year),
            np.cos(year),
            np.sin(week),
            np.cos(week),
        ]
    ).astype(np.float32)


@dataclass
class SeriesStats:
    """Per-series quantities fixed at training time and reused for forecasting."""

    scale: pd.Series  # mean demand over the training span
    median_price: pd.Series
    static_ids: pd.DataFrame  # series -> MAX_STATIC bucket ids


def series_stats(panel: pd.DataFrame, static_cols: tuple[str, ...]) -> SeriesStats:
    g = panel.groupby("series", sort=True)
    scale = g["demand"].mean().clip(lower=1e-3)
    scale[scale <= 1e-3] = 1.0
    median_price = g["price"].median()
    first = g.first()
    ids = pd.DataFrame(0, index=scale.index, columns=range(MAX_STATIC), dtype=np.int64)
    for j, col in enumerate(static_cols[:MAX_STATIC]):
        ids[j] = [static_bucket(col, v) for v in first[col]]
    return SeriesStats(scale, median_price, ids)


@dataclass
class WindowSet:
    """Padded per-series arrays plus the (series, origin) index of every window."""

    series: list[str]
    past: np.ndarray  # [S, L + T, 2 + K]: scaled demand, observed, known covariates
    target: np.ndarray  # [S, L + T] scaled demand (0 in padding)
    static_ids: np.ndarray  # [S, MAX_STATIC]
    log_scale: np.ndarray  # [S]
    index: np.ndarray  # [N, 2]: series row, origin position in the padded time axis
    lookback: int
    horizon: int

    def __len__(self) -> int:
        return len(self.index)

    def batch(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        s, t = self.index[rows, 0], self.index[rows, 1]
        steps = t[:, None] + np.arange(-self.lookback, self.horizon)[None, :]
        full = self.past[s[:, None], steps]
        return {
            "past": full[:, : self.lookback],
            "future": full[:, self.lookback :, 2:],
            "target": self.target[s[:, None], steps[:, self.lookback :]],
            "static_ids": self.static_ids[s],
            "log_scale": self.log_scale[s],
        }


def build_windows(
    panel: pd.DataFrame,
    stats: SeriesStats,
    lookback: int,
    horizon: int,
    min_history: int | None = None,
    origins: str = "all",
) -> WindowSet:
    """Windows over a panel. ``origins="all"``: every origin with ≥ min_history past periods and
    a full horizon of targets; ``"last"``: one window per series whose horizon is its last periods."""
    min_history = min_history or max(1, lookback // 2)
    panel = panel.sort_values(["series", "date"])
    cov = known_covariates(panel, stats.median_price)
    names, pasts, targets, index = [], [], [], []
    for i, (series, rows) in enumerate(panel.groupby("series", sort=True).indices.items()):
        scale = float(stats.scale.get(series, 1.0))
        y = panel["demand"].to_numpy(dtype=np.float32)[rows] / scale
        feats = np.column_stack([y, np.ones_like(y), cov[rows]])
        pad = np.zeros((lookback, feats.shape[1]), dtype=np.float32)
        pasts.append(np.vstack([pad, feats]))
        targets.append(np.concatenate([np.zeros(lookback, np.float32), y]))
        names.append(series)
        n = len(rows)
        if origins == "last":
            starts = [n - horizon] if n - horizon >= min_history else []
        else:
            starts = range(min_history, n - horizon + 1)
        index.extend((i, lookback + t) for t in starts)
    width = max(len(p) for p in pasts)
    past = np.zeros((len(pasts), width, pasts[0].shape[1]), dtype=np.float32)
    target = np.zeros((len(pasts), width), dtype=np.float32)
    for i, (p, t) in enumerate(zip(pasts, targets, strict=True)):
        past[i, : len(p)], target[i, : len(t)] = p, t
    return WindowSet(
        series=names,
        past=past,
        target=target,
        static_ids=stats.static_ids.loc[names].to_numpy(dtype=np.int64),
        log_scale=np.log1p(stats.scale.loc[names].to_numpy(dtype=np.float32)),
        index=np.asarray(index, dtype=np.int64).reshape(-1, 2),
        lookback=lookback,
        horizon=horizon,
    )
