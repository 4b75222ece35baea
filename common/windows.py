"""Turn a demand panel into model inputs: per-series scaling, covariates, sliding windows.

Known-future covariates (same columns in the past and in the horizon), ``KNOWN_FEATURES``:

* holiday flag, and the holiday's name as an event id (hashed, embedded by the model), so that
  Thanksgiving and Christmas are different events even when they fall in different weeks;
* promotion intensity relative to the node's typical promotion, plus a "known" flag: a missing
  promotion value (NaN, e.g. Walmart markdowns before Nov 2011) is unknown, not "no promotion";
* log price relative to the series' median price;
* position in the year (two harmonics) and in the week;
* the series' own demand one season earlier (52 weeks, or 364 days for daily data), smoothed over
  its neighbours outside holidays, with a flag saying whether it exists and whether that period
  was a holiday. It is history, so it is known for every horizon step as long as the horizon is
  shorter than the season. Optionally (``season_blend``) it mixes in demand two seasons earlier,
  re-levelled to last season: the yearly shape then averages two years' noise instead of one's.

Past-only inputs: scaled demand, an "observed" mask (0 before a series started or in the horizon)
and up to ``MAX_OBSERVED`` observed covariates (e.g. temperature, CPI), standardised with the
node's training statistics. They are never fed for horizon steps: their future values are unknown.

Static inputs: configured static categorical columns hashed into a shared bucket space, and log1p
of the series scale. Windows are not materialised: a set keeps one padded array per series and
gathers windows by index, so memory stays linear in the history length.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from common.config import MAX_OBSERVED

KNOWN_FEATURES = (
    "holiday",
    "promo",
    "promo_known",
    "log_price",
    "year_sin",
    "year_cos",
    "year_sin2",
    "year_cos2",
    "week_sin",
    "week_cos",
    "lag_season",
    "lag_known",
    "lag_holiday",
)
PAST_ONLY = 2 + MAX_OBSERVED  # scaled demand, observed mask, observed covariates
MAX_STATIC = 4
STATIC_BUCKETS = 256
EVENT_BUCKETS = 32
SEASON_LAG = {"D": 364, "W": 52}
# Two seasons are re-levelled by their mean difference over this many periods either side of the
# lagged period: long enough to average out single weeks, short enough to follow a trend.
BLEND_HALF_WIDTH = 6


def static_bucket(column: str, value: object) -> int:
    """Unkeyed, stable hash of a coarse attribute into 1..STATIC_BUCKETS-1 (0 is padding)."""
    digest = hashlib.sha256(f"{column}={value}".encode()).digest()
    return 1 + int.from_bytes(digest[:4], "big") % (STATIC_BUCKETS - 1)


def event_bucket(name: object) -> int:
    """Event id of a holiday name in 1..EVENT_BUCKETS-1; 0 for no event."""
    if not isinstance(name, str) or not name:
        return 0
    digest = hashlib.sha256(f"event={name.strip().lower()}".encode()).digest()
    return 1 + int.from_bytes(digest[:4], "big") % (EVENT_BUCKETS - 1)


def season_lag(frequency: str) -> int:
    return SEASON_LAG["D" if frequency == "D" else "W"]


@dataclass
class SeriesStats:
    """Per-series and per-node quantities fixed at training time and reused for forecasting."""

    scale: pd.Series  # mean demand over the training span
    median_price: pd.Series
    static_ids: pd.DataFrame  # series -> MAX_STATIC bucket ids
    promo_ref: float = 1.0  # the node's median positive promotion value
    observed: tuple[str, ...] = ()
    observed_mean: tuple[float, ...] = ()
    observed_std: tuple[float, ...] = ()


def series_stats(
    panel: pd.DataFrame, static_cols: tuple[str, ...], observed: tuple[str, ...] = ()
) -> SeriesStats:
    g = panel.groupby("series", sort=True)
    scale = g["demand"].mean().clip(lower=1e-3)
    scale[scale <= 1e-3] = 1.0
    median_price = g["price"].median()
    first = g.first()
    ids = pd.DataFrame(0, index=scale.index, columns=range(MAX_STATIC), dtype=np.int64)
    for j, col in enumerate(static_cols[:MAX_STATIC]):
        ids[j] = [static_bucket(col, v) for v in first[col]]
    promo = panel["promo"].to_numpy(dtype=float)
    positive = promo[np.isfinite(promo) & (promo > 0)]
    observed = tuple(observed[:MAX_OBSERVED])
    values = [panel[c].to_numpy(dtype=float) for c in observed]
    return SeriesStats(
        scale,
        median_price,
        ids,
        promo_ref=float(np.median(positive)) if len(positive) else 1.0,
        observed=observed,
        observed_mean=tuple(float(np.nanmean(v)) if np.isfinite(v).any() else 0.0 for v in values),
        observed_std=tuple(float(np.nanstd(v)) or 1.0 if np.isfinite(v).any() else 1.0 for v in values),
    )


def known_covariates(frame: pd.DataFrame, stats: SeriesStats) -> np.ndarray:
    """Calendar, price and promotion columns of KNOWN_FEATURES (the seasonal-lag ones are added later)."""
    dates = pd.DatetimeIndex(frame["date"])
    year = 2 * np.pi * (dates.day_of_year.to_numpy() - 1) / 365.25
    week = 2 * np.pi * dates.day_of_week.to_numpy() / 7
    ref = frame["series"].map(stats.median_price).to_numpy(dtype=float)
    price = frame["price"].to_numpy(dtype=float)
    log_price = np.where(
        np.isfinite(price) & (price > 0) & (ref > 0),
        np.log(np.clip(price, 1e-9, None) / np.clip(ref, 1e-9, None)),
        0.0,
    )
    promo = frame["promo"].to_numpy(dtype=float)
    known = np.isfinite(promo)
    intensity = np.clip(np.where(known, promo, 0.0) / stats.promo_ref, 0.0, 5.0)
    return np.column_stack(
        [
            frame["holiday"].to_numpy(dtype=float),
            intensity,
            known.astype(float),
            np.clip(log_price, -2, 2),
            np.sin(year),
            np.cos(year),
            np.sin(2 * year),
            np.cos(2 * year),
            np.sin(week),
            np.cos(week),
        ]
    ).astype(np.float32)


def observed_covariates(frame: pd.DataFrame, stats: SeriesStats) -> np.ndarray:
    """[rows, MAX_OBSERVED] standardised past-only covariates; unknown values are 0."""
    out = np.zeros((len(frame), MAX_OBSERVED), dtype=np.float32)
    for j, col in enumerate(stats.observed):
        v = (frame[col].to_numpy(dtype=float) - stats.observed_mean[j]) / stats.observed_std[j]
        out[:, j] = np.clip(np.nan_to_num(v, nan=0.0), -5, 5)
    return out


def _seasonal_lag(
    y: np.ndarray, observed: np.ndarray, holiday: np.ndarray, lag: int, horizon: int, blend: float = 0.0
) -> np.ndarray:
    """[T, 3]: demand one season earlier, whether it was observed, whether it was a holiday.
    ``y`` is the demand the lag repeats: the series' own, or its cross-site denoised history.

    The value is smoothed over the same period a week before and after (weights 1/4, 1/2, 1/4;
    the neighbours are ``lag // 52`` periods away, so daily data keeps its weekday) unless one of
    the three was a holiday or unobserved: one noisy week a year ago is a poor guide, a holiday
    peak must stay sharp. Picked on origins before the benchmark window (BENCHMARKS.md notes).
    Not smoothed when the horizon reaches the later neighbour: a training window would see demand
    from its own horizon.
    """
    out = np.zeros((len(y), 3), dtype=np.float32)
    if len(y) <= lag:
        return out
    step = max(1, lag // 52)
    value = y[:-lag].copy()
    centre = np.arange(step, min(len(value), len(y) - step))
    before, after = centre - step, centre + step
    smooth = (
        (observed[before] * observed[centre] * observed[after] > 0)
        & (holiday[before] + holiday[centre] + holiday[after] == 0)
        & (horizon <= lag - step)
    )
    value[centre[smooth]] = 0.25 * y[before[smooth]] + 0.5 * y[centre[smooth]] + 0.25 * y[after[smooth]]
    out[lag:, 0] = value
    out[lag:, 1] = observed[:-lag]
    out[lag:, 2] = holiday[:-lag]
    if blend:
        _blend_two_seasons(out, lag, horizon, blend)
    return out


def _blend_two_seasons(out: np.ndarray, lag: int, horizon: int, blend: float) -> None:
    """In place: where demand two seasons earlier exists, the lag becomes (1 − blend) × last season
    + blend × the season before, shifted by how much the two seasons differ on average over
    BLEND_HALF_WIDTH periods either side. One year's department curve carries that year's noise;
    two years average it (on Walmart, 2012-01-27, the origin before the benchmark window where two
    seasons exist: the anchor's WMAE fell 2.8% with blend 0.3, BENCHMARKS.md notes). The
    re-levelling of a horizon step reads demand up to BLEND_HALF_WIDTH + 1 periods after the one it
    lags, so a horizon longer than the season minus that would read a training window's targets."""
    longest = lag - BLEND_HALF_WIDTH - max(1, lag // 52)
    if horizon > longest:
        raise ValueError(f"season blend needs a horizon of at most {longest} periods, got {horizon}")
    if len(out) <= 2 * lag:
        return
    before = np.zeros_like(out)
    before[lag:] = out[:-lag]
    both = (out[:, 1] > 0) & (before[:, 1] > 0)
    width = np.ones(2 * BLEND_HALF_WIDTH + 1)
    gap = np.convolve(np.where(both, before[:, 0] - out[:, 0], 0.0), width, "same")
    count = np.convolve(both.astype(np.float64), width, "same")
    use = both & (count > BLEND_HALF_WIDTH)
    relevelled = before[use, 0] - gap[use] / count[use]
    out[use, 0] = (1 - blend) * out[use, 0] + blend * relevelled


@dataclass
class WindowSet:
    """Padded per-series arrays plus the (series, origin) index of every window."""

    series: list[str]
    past: np.ndarray  # [S, L + T, PAST_ONLY + K]
    events: np.ndarray  # [S, L + T] event ids
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
        events = self.events[s[:, None], steps]
        return {
            "past": full[:, : self.lookback],
            "future": full[:, self.lookback :, PAST_ONLY:],
            "past_events": events[:, : self.lookback],
            "future_events": events[:, self.lookback :],
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
    lag: int = 52,
    season_blend: float = 0.0,
) -> WindowSet:
    """Windows over a panel. ``origins="all"``: every origin with ≥ min_history past periods and
    a full horizon of targets; ``"last"``: one window per series whose horizon is its last periods.
    Rows whose demand is NaN (the horizon of a forecast) are unobserved inputs."""
    min_history = min_history or max(1, lookback // 2)
    panel = panel.sort_values(["series", "date"])
    cov = known_covariates(panel, stats)
    obs_cov = observed_covariates(panel, stats)
    demand = panel["demand"].to_numpy(dtype=np.float32)
    # what the seasonal lag repeats: the cross-site denoised history where the node has one
    source = panel["profile"].fillna(panel["demand"]) if "profile" in panel else panel["demand"]
    lag_source = source.to_numpy(dtype=np.float32)
    holiday = panel["holiday"].to_numpy(dtype=np.float32)
    event_ids = (
        panel["event"].map(event_bucket).to_numpy(dtype=np.int64)
        if "event" in panel
        else np.zeros(len(panel), np.int64)
    )
    names, pasts, events, targets, index = [], [], [], [], []
    for i, (series, rows) in enumerate(panel.groupby("series", sort=True).indices.items()):
        scale = float(stats.scale.get(series, 1.0))
        observed = np.isfinite(demand[rows]).astype(np.float32)
        y = np.nan_to_num(demand[rows] / scale, nan=0.0).astype(np.float32)
        repeated = np.nan_to_num(lag_source[rows] / scale, nan=0.0).astype(np.float32)
        seasonal = _seasonal_lag(repeated, observed, holiday[rows], lag, horizon, season_blend)
        feats = np.column_stack([y, observed, obs_cov[rows], cov[rows], seasonal])
        pasts.append(np.vstack([np.zeros((lookback, feats.shape[1]), np.float32), feats]))
        events.append(np.concatenate([np.zeros(lookback, np.int64), event_ids[rows]]))
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
    event = np.zeros((len(pasts), width), dtype=np.int64)
    target = np.zeros((len(pasts), width), dtype=np.float32)
    for i, (p, e, t) in enumerate(zip(pasts, events, targets, strict=True)):
        past[i, : len(p)], event[i, : len(e)], target[i, : len(t)] = p, e, t
    return WindowSet(
        series=names,
        past=past,
        events=event,
        target=target,
        static_ids=stats.static_ids.loc[names].to_numpy(dtype=np.int64),
        log_scale=np.log1p(stats.scale.loc[names].to_numpy(dtype=np.float32)),
        index=np.asarray(index, dtype=np.int64).reshape(-1, 2),
        lookback=lookback,
        horizon=horizon,
    )


def like_forecasts(windows: WindowSet) -> WindowSet:
    """The windows of each series that resemble its next forecast: where a series has windows whose
    whole horizon has a known seasonal lag (as its forecast will), only those; otherwise all of its
    windows (a young series forecasts from its level). With a seasonal anchor the rest would train
    the network on level-anchored windows, whose large seasonal corrections it then applied to
    seasonal ones: on origins before the benchmark window they made training worse than the
    untrained anchor (BENCHMARKS.md notes)."""
    col = PAST_ONLY + KNOWN_FEATURES.index("lag_known")
    series, origin = windows.index[:, 0], windows.index[:, 1]
    steps = origin[:, None] + np.arange(windows.horizon)[None, :]
    seasonal = (windows.past[series[:, None], steps, col] > 0).all(axis=1)
    has_seasonal = np.bincount(series[seasonal], minlength=len(windows.series)) > 0
    keep = seasonal | ~has_seasonal[series]
    return replace(windows, index=windows.index[keep])


def concat_windows(sets: list[WindowSet]) -> WindowSet:
    """Pool several nodes' windows into one set (the centralized baseline)."""
    sets = [s for s in sets if len(s.series)]
    width = max(s.past.shape[1] for s in sets)

    def pad(a: np.ndarray) -> np.ndarray:
        return np.pad(a, [(0, 0), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2))

    offsets = np.cumsum([0] + [len(s.series) for s in sets[:-1]])
    return WindowSet(
        series=[name for s in sets for name in s.series],
        past=np.concatenate([pad(s.past) for s in sets]),
        events=np.concatenate([pad(s.events) for s in sets]),
        target=np.concatenate([pad(s.target) for s in sets]),
        static_ids=np.concatenate([s.static_ids for s in sets]),
        log_scale=np.concatenate([s.log_scale for s in sets]),
        index=np.concatenate([s.index + np.array([off, 0]) for s, off in zip(sets, offsets, strict=True)]),
        lookback=sets[0].lookback,
        horizon=sets[0].horizon,
    )
