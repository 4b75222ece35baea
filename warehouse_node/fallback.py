"""The degraded mode: a robust baseline forecast when the global model cannot be trusted.

The node forecasts with the federation's global model unless one of these holds, in which case it
forecasts every series with a seasonal-naive baseline instead and says so on every row
(``source`` = ``fallback``, ``source_reason``), in `replenish`'s reasons and in `fedstock-node status`:

* no global model has been kept yet (the site has not finished a round);
* the model was decrypted under another key than the site holds now (another federation);
* it is older than ``[forecast] max_model_age_days`` in node.toml;
* it scored worse than seasonal naive on this site's own hold-out window (the journal's scores);
* forecasting with it failed, or gave numbers that are not finite.

The baseline: the same period one season back, scaled by the last season's level against the one
before (clipped to [0.5, 2]); its quantiles add the empirical quantiles of that rule's own errors over
the last two seasons, so the intervals are as wide as the baseline has actually been wrong.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from common import crypto
from common.config import ConfigError, NodeConfig
from common.evaluation import naive_positions
from common.settings import DEFAULT_QUANTILES
from common.training import mean_from_quantiles
from warehouse_node import journal
from warehouse_node.model_store import model_facts
from warehouse_node.pipeline import (
    MAP_FILE,
    forecast,
    horizon_dates,
    load_panel,
    read_private,
    with_site_keys,
)

MODEL, FALLBACK = "model", "fallback"
LEVEL_CLIP = (0.5, 2.0)


def with_source(frame: pd.DataFrame, source: str, reason: str) -> pd.DataFrame:
    return frame.assign(source=source, source_reason=reason)


def model_trouble(cfg: NodeConfig, now: float | None = None) -> str | None:
    """Why the kept global model must not be used here; None when it may."""
    try:
        facts = model_facts(cfg)
    except ConfigError:
        return "the kept global model cannot be read (the site keeps a new one in its next round)"
    if facts is None:
        return "no global model yet: this site has not finished a federated round"
    if facts["fingerprint"] and (held := _held_key(cfg)) and held != facts["fingerprint"]:
        return f"the global model was decrypted under key {facts['fingerprint']}, this site now holds {held}"
    age = ((now or time.time()) - facts["saved_at"]) / 86400
    if cfg.max_model_age_days and age > cfg.max_model_age_days:
        return (
            f"the global model is {age:.0f} days old, older than [forecast] max_model_age_days = "
            f"{cfg.max_model_age_days:g}"
        )
    score = _holdout_of(cfg, journal.model_fingerprint(facts["vector"]))
    if score and score["points"] and score["mae"] > score["naive_mae"]:
        return (
            f"the global model scored worse than seasonal naive on this site's hold-out window "
            f"(MAE {score['mae']:.4g} vs {score['naive_mae']:.4g})"
        )
    return None


def _held_key(cfg: NodeConfig) -> str | None:
    """The fingerprint of the key this site holds (its pin in node.toml, else its secret.ctx)."""
    if cfg.key_fingerprint:
        return cfg.key_fingerprint
    try:
        return crypto.load_context(cfg.secret_context).fingerprint
    except (OSError, crypto.CryptoError):
        return None  # unknown: the model is not judged by it


def _holdout_of(cfg: NodeConfig, model: str) -> dict | None:
    try:
        rounds = journal.read_holdout(cfg)["rounds"]
    except ValueError:
        return None
    return next((r for r in reversed(rounds) if r.get("model") == model), None)


def forecast_or_fallback(cfg: NodeConfig, include_ended: bool = False) -> pd.DataFrame:
    """The global model's forecast, or the baseline's with the reason the model was not used."""
    trouble = model_trouble(cfg)
    if trouble is None:
        try:
            frame = forecast(cfg, include_ended)
        except RuntimeError as exc:  # torch: the model does not fit this site's inputs
            trouble = f"forecasting with the global model failed ({str(exc).splitlines()[0][:120]})"
        else:
            numbers = frame.select_dtypes("number")
            if np.isfinite(numbers.to_numpy(dtype=float)).all():
                return with_source(frame, MODEL, "")
            trouble = "the global model's forecast holds numbers that are not finite"
    return with_source(baseline_forecast(cfg, _horizon(cfg), include_ended), FALLBACK, trouble)


def _horizon(cfg: NodeConfig) -> int:
    """The federation's horizon where a readable model says it; else ``[forecast] baseline_horizon``."""
    try:
        facts = model_facts(cfg)
    except ConfigError:
        facts = None
    return facts["horizon"] if facts else cfg.fallback_horizon


def baseline_forecast(cfg: NodeConfig, horizon: int, include_ended: bool = False) -> pd.DataFrame:
    """Seasonal naive × level, with quantiles from the rule's own errors, for every series."""
    panel = load_panel(cfg).sort_values("date")
    key_map = read_private(cfg, MAP_FILE)
    ended = set(key_map.loc[key_map["ended"], "series"])
    season, levels = cfg.data.season, DEFAULT_QUANTILES
    names, preds, sds, corrs = [], [], [], []
    for series, rows in panel.groupby("series", sort=True):
        if series in ended and not include_ended:
            continue
        y = np.nan_to_num(rows["demand"].to_numpy(dtype=float), nan=0.0)
        point, errors = _series_baseline(y, horizon, season)
        if series in ended:
            point, errors = np.zeros(horizon), np.zeros(1)
        q = np.clip(point[:, None] + np.quantile(errors, levels)[None, :], 0.0, None)
        names.append(series)
        preds.append(q)
        sds.append(float(np.std(errors)))
        corrs.append(_lag1(errors))
    pred = np.stack(preds) if preds else np.zeros((0, horizon, len(levels)))
    dates = horizon_dates(cfg, panel["date"].max(), horizon)
    out = pd.DataFrame(
        {
            "node": cfg.name,
            "series": np.repeat(names, horizon),
            "date": np.tile(dates, len(names)),
            "mean": mean_from_quantiles(pred, levels).ravel(),
        }
    )
    for j, level in enumerate(levels):
        out[f"q{round(level * 100):02d}"] = pred[..., j].ravel()
    out["residual_sd"] = np.repeat(sds, horizon)
    corr = float(np.clip(np.nanmedian(corrs), 0.0, 1.0)) if corrs and not np.all(np.isnan(corrs)) else 0.0
    out["path_corr"] = corr
    if include_ended:
        out["ended"] = out["series"].isin(ended)
    return with_site_keys(cfg, out, key_map)


def _series_baseline(y: np.ndarray, horizon: int, season: int) -> tuple[np.ndarray, np.ndarray]:
    """One series' point forecast and the errors the same rule made over its last two seasons."""
    idx = naive_positions(len(y), horizon, season)
    recent = y[-season:].mean() if len(y) else 0.0
    point = np.where(idx >= 0, y[np.clip(idx, 0, None)] if len(y) else 0.0, recent)
    if len(y) >= 2 * season:
        before = y[-2 * season : -season].sum()
        ratio = y[-season:].sum() / before if before > 0 else 1.0
        point = point * float(np.clip(ratio, *LEVEL_CLIP))
    errors = (y[season:] - y[:-season])[-2 * season :] if len(y) > season else y - recent
    return np.clip(point, 0.0, None), errors if len(errors) else np.zeros(1)


def _lag1(errors: np.ndarray) -> float:
    if len(errors) < 3 or np.std(errors[:-1]) == 0 or np.std(errors[1:]) == 0:
        return float("nan")
    return float(np.corrcoef(errors[:-1], errors[1:])[0, 1])
