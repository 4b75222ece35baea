"""The seasonal-lag input blended with demand two seasons earlier (``season_blend``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from common.windows import KNOWN_FEATURES, build_windows, series_stats
from tests.conftest import model_config, node_round

LAG = KNOWN_FEATURES.index("lag_season")
HORIZON = 13


def _panel(demand: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "series": "a",
            "date": pd.date_range("2010-02-05", periods=len(demand), freq="W-FRI"),
            "demand": demand.astype(float),
            "price": 1.0,
            "promo": np.nan,
            "holiday": 0.0,
            "event": "",
        }
    )


def _shape(weeks: int) -> np.ndarray:
    return 100 + 30 * np.sin(2 * np.pi * np.arange(weeks) / 52)


def _lags(panel: pd.DataFrame, blend: float, origins: str = "last", horizon: int = HORIZON) -> np.ndarray:
    w = build_windows(panel, series_stats(panel, ()), 8, horizon, origins=origins, lag=52, season_blend=blend)
    return w.batch(np.arange(len(w)))["future"][..., LAG]


def test_two_seasons_of_one_shape_at_different_levels_repeat_last_season():
    weeks = 160
    demand = _shape(weeks) + 40 * (np.arange(weeks) // 52)  # each year 40 higher
    panel = _panel(demand)
    assert np.allclose(_lags(panel, 0.5), _lags(panel, 0.0), atol=1e-5)


def test_blend_averages_out_noise_that_each_season_has_on_its_own():
    weeks, rng = 160, np.random.default_rng(3)
    truth = _shape(weeks)
    panel = pd.concat(
        [_panel(truth + rng.normal(0, 10, weeks)).assign(series=f"s{i}") for i in range(20)],
        ignore_index=True,
    )
    scale = series_stats(panel, ()).scale.to_numpy()[:, None]
    target = truth[-HORIZON:] / scale  # the same shape repeats every season
    last_only = np.abs(_lags(panel, 0.0) - target).mean()
    blended = np.abs(_lags(panel, 0.5) - target).mean()
    assert blended < 0.85 * last_only


def test_blend_reads_no_demand_from_a_training_windows_horizon():
    weeks, origin, horizon = 240, 160, 45  # the longest horizon a weekly blend allows
    demand = _shape(weeks) + np.random.default_rng(4).normal(0, 5, weeks)
    changed = demand.copy()
    changed[origin:] += 500.0  # the window's horizon and everything after it
    stats = series_stats(_panel(demand[:origin]), ())  # scales from the history before the origin

    def lag(d: np.ndarray, blend: float) -> np.ndarray:
        w = build_windows(_panel(d), stats, 8, horizon, origins="all", season_blend=blend)
        row = np.flatnonzero(w.index[:, 1] == 8 + origin)  # the window whose horizon starts at origin
        return w.batch(row)["future"][0, :, LAG]

    assert np.allclose(lag(demand, 0.3), lag(changed, 0.3))
    assert not np.allclose(lag(demand, 0.3), lag(demand, 0.0))  # the blend is on


def test_series_without_two_seasons_of_history_keep_last_season():
    panel = _panel(_shape(90) + np.random.default_rng(5).normal(0, 5, 90))
    assert np.array_equal(_lags(panel, 0.3, origins="all"), _lags(panel, 0.0, origins="all"))


def test_blend_refuses_a_horizon_that_would_reach_its_own_targets():
    panel = _panel(_shape(160))
    with pytest.raises(ValueError, match="season blend needs a horizon of at most 45 periods, got 46"):
        _lags(panel, 0.3, horizon=46)


@pytest.mark.parametrize("blend", [-0.1, 1.0])
def test_blend_outside_zero_to_one_is_refused(blend: float):
    with pytest.raises(ValueError, match="season blend must be in"):
        model_config(season_blend=blend)


def test_season_blend_reaches_the_node_model_from_the_run_config():
    assert node_round({"season-blend": 0.3}).model.season_blend == 0.3
    with pytest.raises(ValueError, match="'season-blend' must be float"):
        node_round({"season-blend": "half"})
