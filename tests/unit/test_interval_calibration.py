"""Conformal interval calibration: nominal coverage per scale group, and the calibration windows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from common.calibration import IntervalCalibration, conformal_margins
from common.windows import series_stats
from tests.conftest import model_config
from warehouse_node.pipeline import NodeData

LEVELS = (0.1, 0.25, 0.5, 0.75, 0.9)


def _intervals(n: int, half_widths: tuple[float, float]) -> np.ndarray:
    """[n, 1, Q] quantiles around 0 with the given 25..75 and 10..90 half-widths."""
    inner, outer = half_widths
    return np.tile(np.array([-outer, -inner, 0.0, inner, outer]), (n, 1, 1))


def _covered(pred: np.ndarray, actual: np.ndarray) -> float:
    return float(((actual >= pred[..., 0]) & (actual <= pred[..., -1])).mean())


def test_margins_widen_too_narrow_intervals_to_nominal_coverage_on_fresh_data():
    rng = np.random.default_rng(0)
    pred = _intervals(4000, (0.3, 0.6))  # N(0, 1) demand: 10..90 should be ±1.28
    margins = conformal_margins(pred[:, 0], rng.normal(size=4000), LEVELS)
    assert abs(margins[0.1] - (1.2816 - 0.6)) < 0.08
    assert abs(margins[0.25] - (0.6745 - 0.3)) < 0.08
    calibrated = IntervalCalibration(LEVELS, np.zeros(0), (margins,)).apply(pred, np.zeros(4000))
    assert abs(_covered(calibrated, rng.normal(size=(4000, 1))) - 0.8) < 0.03


def test_each_scale_group_is_calibrated_on_its_own_errors():
    """Small series under-covered and large ones over-covered (what Walmart showed) both end near 80%."""
    rng = np.random.default_rng(1)
    n = 3000
    log_scale = np.concatenate([np.full(n, 1.0), np.full(n, 8.0)])
    noise = np.concatenate([rng.normal(scale=3.0, size=n), rng.normal(scale=0.2, size=n)])[:, None]
    pred = _intervals(2 * n, (0.5, 1.0))
    cal = IntervalCalibration.fit(pred, noise, np.ones_like(noise), log_scale, LEVELS)
    fresh = np.concatenate([rng.normal(scale=3.0, size=n), rng.normal(scale=0.2, size=n)])[:, None]
    out = cal.apply(pred, log_scale)
    small, large = slice(0, n), slice(n, 2 * n)
    assert _covered(pred[small], fresh[small]) < 0.35 and _covered(pred[large], fresh[large]) == 1.0
    assert abs(_covered(out[small], fresh[small]) - 0.8) < 0.04
    assert abs(_covered(out[large], fresh[large]) - 0.8) < 0.04
    assert np.all(np.diff(out, axis=-1) >= 0), "calibrated quantiles cross"
    assert np.array_equal(out[..., 2], pred[..., 2]), "the median moved"


def test_too_few_or_unobserved_points_leave_intervals_unchanged():
    pred = _intervals(30, (0.1, 0.2))
    actual = np.full((30, 1), 5.0)
    cal = IntervalCalibration.fit(pred, actual, np.ones_like(actual), np.zeros(30), LEVELS)
    assert np.array_equal(cal.apply(pred, np.zeros(30)), pred)
    many = _intervals(1000, (0.1, 0.2))
    unseen = IntervalCalibration.fit(
        many, np.full((1000, 1), 5.0), np.zeros((1000, 1)), np.zeros(1000), LEVELS
    )
    assert np.array_equal(unseen.apply(many, np.zeros(1000)), many)


def test_calibration_windows_cover_the_same_weeks_one_season_before_each_series_next_forecast():
    rows = []
    for series, weeks in (("long", 120), ("short", 100)):  # "short" ended 20 weeks earlier
        for d in pd.date_range("2010-02-05", periods=weeks, freq="W-FRI"):
            rows.append((series, d, 10.0, 1.0, 0.0, 0.0, ""))
    panel = pd.DataFrame(rows, columns=["series", "date", "demand", "price", "promo", "holiday", "event"])
    data = NodeData(panel, panel, series_stats(panel, ()), panel["date"].max(), lag=52)
    m = model_config(lookback=8, horizon=12, hidden=8, heads=2, quantiles=LEVELS)
    windows = data.calibration_windows(m)
    length = {"long": 120, "short": 100}
    seasons_back = [length[windows.series[s]] - (t - m.lookback) for s, t in windows.index]
    assert sorted(set(seasons_back)) == list(range(52 - 4, 52 + 5))
    assert {windows.series[s] for s in windows.index[:, 0]} == {"long", "short"}


def test_a_node_younger_than_a_season_calibrates_on_its_most_recent_windows():
    dates = pd.date_range("2010-02-05", periods=40, freq="W-FRI")
    panel = pd.DataFrame({"series": "a", "date": dates, "demand": 10.0, "price": 1.0, "promo": 0.0})
    panel = panel.assign(holiday=0.0, event="")
    data = NodeData(panel, panel, series_stats(panel, ()), dates[-1], lag=52)
    m = model_config(lookback=8, horizon=12, hidden=8, heads=2, quantiles=LEVELS)
    first_target = data.calibration_windows(m).index[:, 1] - m.lookback
    assert sorted(first_target) == list(range(40 - 12 - 8, 40 - 12 + 1))
