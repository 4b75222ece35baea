"""Forecasts a node would have made at past review dates with the model it holds (a backtest).

The model was trained on the history up to ``trained_until``. What the node derives from its
history when it keeps a model (series scales, interval calibration, each series' residual σ, the
correlation along the horizon) is computed from that history only. Each forecast from a later
origin reads the history through that origin: its window's inputs end there, and its horizon
carries only inputs known in advance (calendar, holidays, planned markdowns), as in
``pipeline.forecast``. Forecasts from every origin are made in one pass over the panel, which is
what lets a year of weekly (or daily) reviews be replayed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from common.config import NodeConfig
from common.training import mean_from_quantiles, predict_scaled
from common.windows import build_windows
from warehouse_node.model_store import load_global_model
from warehouse_node.pipeline import (
    DEMAND_FILE,
    MAP_FILE,
    CalibrationErrors,
    NodeData,
    _future_rows,
    _path_correlation,
    read_private,
    with_site_keys,
)


def forecasts_at(
    cfg: NodeConfig, trained_until: pd.Timestamp, origins: list[pd.Timestamp], steps: int
) -> pd.DataFrame:
    """The first ``steps`` periods of the forecast made at each origin (the last period of history it
    reads), one row per (sku, origin, step): mean, quantiles, residual_sd and path_corr."""
    out = _by_series(cfg, read_private(cfg, DEMAND_FILE), trained_until, origins, steps)
    return with_site_keys(cfg, out, read_private(cfg, MAP_FILE)) if len(out) else out


def holdout_forecast(cfg: NodeConfig, cutoff: pd.Timestamp) -> pd.DataFrame:
    """The model's forecast of the node's hold-out window (the periods after ``cutoff``, which it
    was not trained on) beside the demand that came: date, mean, quantiles and ``actual``."""
    panel = read_private(cfg, DEMAND_FILE)
    steps = int((pd.DatetimeIndex(panel["date"].unique()) > cutoff).sum())
    out = _by_series(cfg, panel, cutoff, [cutoff], steps)
    if not len(out):
        return out
    actual = panel.set_index(["series", "date"])["demand"]
    at = pd.MultiIndex.from_arrays([out["series"], pd.DatetimeIndex(out["date"])])
    return out.assign(actual=np.nan_to_num(actual.reindex(at).to_numpy(dtype=float)))


def _by_series(
    cfg: NodeConfig, panel: pd.DataFrame, trained_until: pd.Timestamp, origins: list[pd.Timestamp], steps: int
) -> pd.DataFrame:
    model, m, _ = load_global_model(cfg)
    trained = NodeData.of_panel(cfg, panel[panel["date"] <= trained_until], m.horizon, 0, m.denoise)
    full = NodeData.of_panel(cfg, panel, m.horizon, 0, m.denoise)  # the profile applied, if any
    live = sorted(trained.stats.scale.index)
    extended = pd.concat([full.panel, _future_rows(cfg, full, m, live)], ignore_index=True)
    extended = extended[extended["series"].isin(live)].sort_values(["series", "date"])
    windows = build_windows(
        extended,
        trained.stats,
        m.lookback,
        m.horizon,
        min_history=1,
        lag=trained.lag,
        season_blend=m.season_blend,
    )
    first_step = _first_step_dates(extended, windows)
    wanted = pd.DatetimeIndex(origins)
    keep = pd.DatetimeIndex(first_step).isin(_next_periods(cfg, wanted))
    picked = windows.index[keep]
    if not len(picked):
        return pd.DataFrame()
    chosen = type(windows)(**{**windows.__dict__, "index": picked})
    rows = picked[:, 0]
    errors = CalibrationErrors.of(model, trained.calibration_windows(m), m)
    scaled = errors.interval_calibration(m).apply(predict_scaled(model, chosen), chosen.log_scale[rows])
    scale = np.expm1(chosen.log_scale[rows])[:, None, None]
    pred = np.clip(scaled * scale, 0.0, None)[:, :steps]
    names = [windows.series[i] for i in rows]
    scale_of = np.expm1(
        np.log1p(trained.stats.scale.loc[live].to_numpy(dtype=np.float32))
    )  # as the windows hold it
    residual = pd.Series(errors.residual_sd(m, live, scale_of), index=live)
    origin_dates = _origin_dates(cfg, pd.DatetimeIndex(first_step[keep]))
    out = pd.DataFrame(
        {
            "node": cfg.name,
            "series": np.repeat(names, steps),
            "origin": np.repeat(origin_dates, steps),
            "step": np.tile(np.arange(steps), len(names)),
            "mean": mean_from_quantiles(pred, m.quantiles).ravel(),
        }
    )
    out["date"] = _shift(cfg, pd.DatetimeIndex(out["origin"]), out["step"].to_numpy() + 1)
    for j, level in enumerate(m.quantiles):
        out[f"q{round(level * 100):02d}"] = pred[..., j].ravel()
    out["residual_sd"] = out["series"].map(residual).to_numpy()
    out["path_corr"] = _path_correlation(model, trained.holdout_windows(m), m)
    return out


def _first_step_dates(extended: pd.DataFrame, windows) -> np.ndarray:
    """The date of each window's first horizon period."""
    dates = extended.groupby("series", sort=True)["date"].apply(lambda d: d.to_numpy())
    by_row = [dates[name] for name in windows.series]
    return np.array([by_row[s][t - windows.lookback] for s, t in windows.index], dtype="datetime64[ns]")


def _shift(cfg: NodeConfig, dates: pd.DatetimeIndex, periods) -> np.ndarray:
    freq = cfg.data.period_freq
    shifted = pd.PeriodIndex(dates, freq=freq) + np.asarray(periods)
    return pd.PeriodIndex(shifted, freq=freq).end_time.normalize().to_numpy()


def _next_periods(cfg: NodeConfig, dates: pd.DatetimeIndex) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(_shift(cfg, dates, np.ones(len(dates), int)))


def _origin_dates(cfg: NodeConfig, first: pd.DatetimeIndex) -> np.ndarray:
    return _shift(cfg, first, -np.ones(len(first), int))
