"""Metrics and baselines of the accuracy benchmark, checked against hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from common.evaluation import coverage, pinball, score, seasonal_naive, smape, wmae


def test_wmae_weighs_holiday_periods_five_times():
    actual, pred = np.array([10.0, 10.0]), np.array([8.0, 14.0])
    assert wmae(actual, pred, np.array([False, True])) == pytest.approx((2 + 5 * 4) / 6)


def test_smape_counts_zero_against_zero_as_no_error():
    assert smape(np.array([0.0, 10.0]), np.array([0.0, 30.0])) == pytest.approx(100 * (0 + 2 * 20 / 40) / 2)


def test_pinball_and_coverage_of_quantile_columns():
    frame = pd.DataFrame({"q10": [1.0, 1.0], "q50": [5.0, 5.0], "q90": [9.0, 9.0]})
    actual = np.array([5.0, 10.0])
    expected = np.mean([(0.1 * 4 + 0.1 * 9) / 2, 0 / 2 + (0.5 * 5) / 2, (0.1 * 4 + 0.9 * 1) / 2])
    assert pinball(actual, frame) == pytest.approx(expected)
    assert coverage(actual, frame["q10"], frame["q90"]) == 0.5


def _weekly(values: list[float], series: int = 1) -> pd.DataFrame:
    dates = pd.date_range("2020-01-03", periods=len(values), freq="W-FRI")
    return pd.DataFrame({"s": series, "d": dates, "y": values})


def test_seasonal_naive_repeats_last_season_and_scales_by_recent_level():
    season = 4
    hist = _weekly([1, 2, 3, 4, 2, 4, 6, 8])  # second season is twice the first
    plain = seasonal_naive(hist, ["s"], "d", "y", "W-FRI", 3, season)
    assert plain["mean"].tolist() == [2, 4, 6]
    assert plain["d"].iloc[0] == hist["d"].iloc[-1] + pd.Timedelta(weeks=1)
    scaled = seasonal_naive(hist, ["s"], "d", "y", "W-FRI", 3, season, level_window=2)
    assert scaled["mean"].tolist() == pytest.approx([2 * 2, 4 * 2, 6 * 2])  # (6+8)/(3+4) = 2


def test_missing_forecast_rows_count_as_zero_and_are_reported():
    actual = pd.DataFrame(
        {"s": [1, 2], "d": pd.Timestamp("2021-01-01"), "y": [4.0, 6.0], "h": [False, False]}
    )
    fc = pd.DataFrame({"s": [1], "d": [pd.Timestamp("2021-01-01")], "mean": [5.0]})
    result = score(actual, fc, ["s"], "d", "y", "h")
    assert result["missing_forecasts"] == 1
    assert result["wmae"] == pytest.approx((1 + 6) / 2)


def test_seasonal_naive_reaches_back_whole_seasons_when_the_horizon_is_longer():
    hist = _weekly([1, 2, 3, 4, 5, 6, 7])  # season 3: the last season is 5, 6, 7
    fc = seasonal_naive(hist, ["s"], "d", "y", "W-FRI", 7, 3)
    assert fc["mean"].tolist() == [5, 6, 7, 5, 6, 7, 5]
