"""Forecast accuracy metrics and the baselines the model must beat (no Flower, no torch).

Metrics follow the Kaggle Walmart competition: WMAE weighs holiday weeks 5×. Baselines work on a
pooled sales table ``[series keys..., date, target]`` because they are benchmarks, not nodes.
"""

from __future__ import annotations

import subprocess
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

HOLIDAY_WEIGHT = 5.0


def wmae(actual: np.ndarray, pred: np.ndarray, holiday: np.ndarray) -> float:
    w = np.where(np.asarray(holiday, bool), HOLIDAY_WEIGHT, 1.0)
    return float(np.sum(w * np.abs(np.asarray(actual) - np.asarray(pred))) / np.sum(w))


def mae(actual: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(actual) - np.asarray(pred))))


def smape(actual: np.ndarray, pred: np.ndarray) -> float:
    """Symmetric MAPE in percent; a period where both are 0 counts as 0 error."""
    a, p = np.asarray(actual, float), np.asarray(pred, float)
    denom = np.abs(a) + np.abs(p)
    return float(100 * np.mean(np.where(denom > 0, 2 * np.abs(a - p) / np.where(denom > 0, denom, 1), 0)))


def quantile_columns(frame: pd.DataFrame) -> dict[float, str]:
    return {int(c[1:]) / 100: c for c in frame.columns if c.startswith("q") and c[1:].isdigit()}


def pinball_per_point(pred: np.ndarray, actual: np.ndarray, levels: tuple[float, ...]) -> np.ndarray:
    """The pinball loss of each point of ``actual``, averaged over the quantile ``levels`` (the
    last axis of ``pred``). The training loss is its torch twin (common/model.py)."""
    diff = np.asarray(actual, float)[..., None] - np.asarray(pred, float)
    lv = np.asarray(levels, float)
    return np.maximum(lv * diff, (lv - 1) * diff).mean(-1)


def pinball(actual: np.ndarray, frame: pd.DataFrame) -> float:
    """Mean pinball loss over every output quantile and row (in the data's units)."""
    levels = quantile_columns(frame)
    pred = frame[list(levels.values())].to_numpy(float)
    return float(pinball_per_point(pred, actual, tuple(levels)).mean())


# A model's hold-out sums (warehouse_node/pipeline.py ``holdout_metrics``): sums, not means, so that
# the sites' can be added encrypted (common/codec.py EVAL_METRICS); ``holdout_means`` reads them.
HOLDOUT_SUMS = ("abs_err_model", "abs_err_naive", "pinball_scaled", "covered_80", "points")


def holdout_means(sums: Mapping[str, float]) -> dict[str, float]:
    """Per-point means of hold-out sums, a site's own or the federation's summed ones."""
    per_point = max(float(sums["points"]), 1.0)
    return {
        "mae": float(sums["abs_err_model"]) / per_point,
        "naive_mae": float(sums["abs_err_naive"]) / per_point,
        "pinball": float(sums["pinball_scaled"]) / per_point,
        "coverage_80": float(sums["covered_80"]) / per_point,
    }


def naive_positions(length: int, horizon: int, season: int) -> np.ndarray:
    """Where seasonal naive reads each of ``horizon`` periods after a history of ``length``: the same
    period the fewest whole seasons back, y(T+h) = y(T+h − season·⌈h/season⌉)."""
    h = np.arange(1, horizon + 1)
    return length - 1 + h - season * -(-h // season)


def coverage(actual: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    a = np.asarray(actual, float)
    return float(np.mean((a >= np.asarray(low)) & (a <= np.asarray(high))))


def score(
    actuals: pd.DataFrame,
    forecasts: pd.DataFrame,
    keys: list[str],
    date: str,
    target: str,
    holiday: str | None = None,
) -> dict[str, float]:
    """Join forecasts onto actual rows (a missing forecast counts as 0) and score them."""
    merged = actuals.merge(forecasts, on=[*keys, date], how="left", validate="one_to_one")
    missing = int(merged["mean"].isna().sum())
    merged = merged.fillna({c: 0.0 for c in forecasts.columns if c not in (*keys, date)})
    point = merged["q50"] if "q50" in merged else merged["mean"]
    result = {
        "rows": len(merged),
        "missing_forecasts": missing,
        "mae": mae(merged[target], point),
        "smape": smape(merged[target], point),
    }
    if holiday:
        result["wmae"] = wmae(merged[target], point, merged[holiday])
    if {"q10", "q90"} <= set(merged.columns):
        result["pinball"] = pinball(merged[target], merged[list(quantile_columns(forecasts).values())])
        result["coverage_80"] = coverage(merged[target], merged["q10"], merged["q90"])
    return result


def _regular(history: pd.DataFrame, keys: list[str], date: str, target: str, freq: str) -> pd.DataFrame:
    """Wide table [date × series] on the full calendar; missing periods are 0 sales."""
    wide = history.pivot_table(index=date, columns=keys, values=target, aggfunc="sum")
    full = pd.date_range(wide.index.min(), wide.index.max(), freq=freq)
    return wide.reindex(full).fillna(0.0)


def _long(wide: pd.DataFrame, keys: list[str], date: str) -> pd.DataFrame:
    out = wide.stack(list(range(len(keys))), future_stack=True).rename("mean").reset_index()
    return out.rename(columns={"level_0": date})


def seasonal_naive(
    history: pd.DataFrame,
    keys: list[str],
    date: str,
    target: str,
    freq: str,
    horizon: int,
    season: int,
    level_window: int = 0,
) -> pd.DataFrame:
    """ŷ(T+h) = y(T+h−k·season), k the fewest whole seasons back into the history. With
    ``level_window`` w, scaled by the last w periods over the same w periods one season earlier
    (the ratio clipped to [0.5, 2] and 1 when undefined)."""
    wide = _regular(history, keys, date, target, freq)
    future = pd.date_range(wide.index[-1], periods=horizon + 1, freq=freq)[1:]
    values = np.vstack([wide.iloc[i].to_numpy() for i in naive_positions(len(wide), horizon, season)])
    if level_window:
        recent = wide.iloc[-level_window:].sum().to_numpy()
        before = wide.iloc[-season - level_window : -season].sum().to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(before > 0, recent / before, 1.0)
        values = values * np.clip(np.nan_to_num(ratio, nan=1.0), 0.5, 2.0)
    return _long(pd.DataFrame(np.clip(values, 0, None), index=future, columns=wide.columns), keys, date)


def ets(
    history: pd.DataFrame, keys: list[str], date: str, target: str, freq: str, horizon: int, season: int
) -> pd.DataFrame:
    """Per-series Holt-Winters (statsmodels ExponentialSmoothing, additive damped trend and additive
    season). A series too short for two seasons, or whose fit fails, falls back to seasonal naive."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    wide = _regular(history, keys, date, target, freq)
    naive = seasonal_naive(history, keys, date, target, freq, horizon, season)
    fallback = naive.pivot_table(index=date, columns=keys, values="mean").reindex(columns=wide.columns)
    out = fallback.copy()
    firsts = (wide > 0).idxmax()
    for col in wide.columns:
        y = wide.loc[firsts[col] :, col].to_numpy(dtype=float)
        if len(y) < 2 * season + 2 or not np.any(y):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = ExponentialSmoothing(
                    y,
                    trend="add",
                    damped_trend=True,
                    seasonal="add",
                    seasonal_periods=season,
                    initialization_method="heuristic",
                ).fit(use_brute=False)
            pred = fit.forecast(horizon)
        except (ValueError, np.linalg.LinAlgError):
            continue
        if np.all(np.isfinite(pred)):
            out[col] = np.clip(pred, 0, None)
    return _long(out, keys, date)


def current_commit(root: Path) -> str:
    """Short hash of the checkout a benchmark runs from, for its tables; '?' outside git."""
    try:
        args = ["git", "rev-parse", "--short", "HEAD"]
        head = subprocess.run(args, cwd=root, capture_output=True, text=True)
    except OSError:  # no git on this machine (a lent GPU machine, say)
        return "?"
    return head.stdout.strip() or "?"


def write_marked_section(path: Path, name: str, lines: list[str]) -> None:
    """Replace the text between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in a Markdown file
    (appended when absent), so each benchmark rewrites its own tables and nothing else."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = "\n".join([begin, *lines, end])
    if begin in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
