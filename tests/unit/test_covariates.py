"""Model inputs: the seasonal lag, unknown promotions, past-only covariates and named holidays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from common.config import ConfigError
from common.windows import (
    KNOWN_FEATURES,
    PAST_ONLY,
    build_windows,
    event_bucket,
    like_forecasts,
    series_stats,
)
from tests.conftest import model_config

LAG = KNOWN_FEATURES.index("lag_season")


def _panel(weeks: int = 120) -> pd.DataFrame:
    dates = pd.date_range("2010-02-05", periods=weeks, freq="W-FRI")
    demand = 100 + 10 * np.arange(weeks) % 52
    promo = np.where(np.arange(weeks) < 90, np.nan, 3.0)  # unknown before week 90
    return pd.DataFrame(
        {
            "series": "a",
            "date": dates,
            "demand": demand.astype(float),
            "price": 1.0,
            "promo": promo,
            "holiday": 0.0,
            "event": "",
            "temp": np.arange(weeks, dtype=float),
        }
    )


def test_seasonal_lag_is_demand_one_season_earlier_smoothed_and_flagged_unknown_before():
    panel = _panel()
    stats = series_stats(panel, ())
    w = build_windows(panel, stats, lookback=8, horizon=4, origins="last", lag=52)
    b = w.batch(np.array([0]))
    y = panel["demand"].to_numpy() / stats.scale["a"]
    t = np.arange(len(y) - 4, len(y)) - 52  # the same weeks a season earlier
    assert np.allclose(b["future"][0, :, LAG], 0.25 * y[t - 1] + 0.5 * y[t] + 0.25 * y[t + 1])
    assert b["future"][0, :, KNOWN_FEATURES.index("lag_known")].all()
    early = build_windows(panel.head(30), stats, lookback=8, horizon=4, origins="last", lag=52)
    assert not early.batch(np.array([0]))["future"][0, :, KNOWN_FEATURES.index("lag_known")].any()


def test_seasonal_lag_is_not_smoothed_with_demand_from_the_windows_own_horizon():
    panel = _panel()
    stats = series_stats(panel, ())
    y = panel["demand"].to_numpy() / stats.scale["a"]
    b = build_windows(panel, stats, lookback=8, horizon=52, origins="last", lag=52).batch(np.array([0]))
    assert np.allclose(b["future"][0, :, LAG], y[-52 - 52 : -52])  # raw: the next week is in the horizon


def test_seasonal_lag_keeps_a_holiday_peak_sharp():
    panel = _panel()
    peak = len(panel) - 2 - 52  # a season before the second-to-last week
    panel.loc[peak, ["demand", "holiday"]] = [900.0, 1.0]
    stats = series_stats(panel, ())
    b = build_windows(panel, stats, lookback=8, horizon=4, origins="last", lag=52).batch(np.array([0]))
    lags = b["future"][0, :, LAG] * stats.scale["a"]
    assert np.isclose(lags[2], 900.0)  # the holiday itself, unsmoothed
    assert np.allclose(lags[[1, 3]], panel["demand"].to_numpy()[[peak - 1, peak + 1]])  # its neighbours too


def test_series_with_a_season_of_history_train_only_on_windows_with_a_known_seasonal_lag():
    old, young = _panel(120), _panel(40).assign(series="b")
    panel = pd.concat([old, young], ignore_index=True)
    w = build_windows(panel, series_stats(panel, ()), lookback=8, horizon=4, origins="all", lag=52)
    kept = like_forecasts(w)
    known = kept.batch(np.arange(len(kept)))["future"][..., KNOWN_FEATURES.index("lag_known")]
    series = np.array(kept.series)[kept.index[:, 0]]
    assert known[series == "a"].all()  # every horizon step of "a" repeats a known season
    # "a" loses its first-year windows, and only those; "b" has no season yet and keeps all of its own
    first_year = (w.index[:, 0] == 0) & (w.index[:, 1] - 8 < 52)  # horizon starts within a season
    assert (series == "a").sum() == (w.index[:, 0] == 0).sum() - first_year.sum() > 0
    assert (series == "b").sum() == (w.index[:, 0] == 1).sum() > 0


def test_missing_promotion_is_unknown_not_zero():
    panel = _panel()
    w = build_windows(panel, series_stats(panel, ()), lookback=8, horizon=4, origins="all", lag=52)
    feats = w.past[0, 8:, PAST_ONLY:]
    known = feats[:, KNOWN_FEATURES.index("promo_known")]
    assert known[:90].sum() == 0 and known[90:].all()
    assert np.allclose(feats[90:, KNOWN_FEATURES.index("promo")], 1.0)  # relative to the node's median


def test_observed_covariates_never_reach_the_horizon():
    panel = _panel()
    stats = series_stats(panel, (), observed=("temp",))
    w = build_windows(panel, stats, lookback=8, horizon=4, origins="last", lag=52)
    b = w.batch(np.array([0]))
    assert b["future"].shape[-1] == len(KNOWN_FEATURES)  # no past-only slot in future inputs
    assert np.abs(b["past"][0, :, 2]).max() > 0  # standardised temperature is fed in the past


def test_named_holidays_get_distinct_event_ids():
    ids = {event_bucket(n) for n in ("super_bowl", "labor_day", "thanksgiving", "christmas")}
    assert len(ids) == 4 and 0 not in ids
    assert event_bucket("") == 0 and event_bucket("Thanksgiving") == event_bucket("thanksgiving")


def test_anchor_shifts_last_season_by_this_years_change_in_level():
    import torch

    from common.model import SHIFT_SHRINK, build_model

    lookback, horizon, k = 10, 3, len(KNOWN_FEATURES)
    past = torch.zeros(1, lookback, PAST_ONLY + k)
    past[..., 0], past[..., 1] = 2.0, 1.0  # recent demand 2, observed: one above a season ago
    past[..., PAST_ONLY + LAG], past[..., PAST_ONLY + KNOWN_FEATURES.index("lag_known")] = 1.0, 1.0
    future = torch.zeros(1, horizon, k)
    future[..., LAG] = torch.tensor([3.0, 0.5, 4.0])
    future[0, :2, KNOWN_FEATURES.index("lag_known")] = 1.0  # the last step has no season-earlier value
    shape = {"lookback": lookback, "horizon": horizon, "hidden": 8, "heads": 2}
    seasonal = build_model(model_config(**shape, anchor="seasonal"), 0)
    shift = SHIFT_SHRINK * 1.0  # this year's demand is 1 above last season's
    assert torch.allclose(seasonal._anchor(past, future), torch.tensor([[3.0 + shift, 0.5 + shift, 2.0]]))
    level = build_model(model_config(**shape, anchor="level"), 0)
    assert torch.allclose(level._anchor(past, future), torch.tensor([[2.0, 2.0, 2.0]]))


def _inputs(lookback: int = 10, horizon: int = 3, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    k = len(KNOWN_FEATURES)
    past, future = torch.rand(2, lookback, PAST_ONLY + k, generator=g), torch.rand(2, horizon, k, generator=g)
    past[..., 1], past[..., PAST_ONLY + KNOWN_FEATURES.index("lag_known")] = 1.0, 1.0
    future[..., KNOWN_FEATURES.index("lag_known")] = 1.0
    events = torch.zeros(2, lookback, dtype=torch.long), torch.zeros(2, horizon, dtype=torch.long)
    return past, future, *events, torch.zeros(2, 4, dtype=torch.long), torch.ones(2)


def test_untrained_anchored_model_forecasts_its_anchor_with_ordered_quantiles():
    import torch

    from common.model import build_model

    model = build_model(model_config(lookback=10, horizon=3, hidden=8, heads=2, anchor="seasonal"), 0).eval()
    past, future, *rest = _inputs()
    q = model(past, future, *rest)
    assert torch.allclose(q[..., model.median_index], model._anchor(past, future))
    assert (q.diff(dim=-1) > 0).all()


def test_seasonal_anchor_ignores_the_position_in_the_year():
    import torch

    from common.model import YEAR_POSITION, build_model

    past, future, *rest = _inputs()
    shifted_past, shifted_future = past.clone(), future.clone()
    shifted_past[..., [PAST_ONLY + j for j in YEAR_POSITION]] += 0.7
    shifted_future[..., list(YEAR_POSITION)] -= 0.4
    for anchor, same in (("seasonal", True), ("level", False)):
        model = build_model(model_config(lookback=10, horizon=3, hidden=8, heads=2, anchor=anchor), 1).eval()
        torch.nn.init.normal_(model.head.weight)  # as if trained: the network's output matters
        a, b = model(past, future, *rest), model(shifted_past, shifted_future, *rest)
        assert torch.allclose(a, b) is same


def test_a_planned_promotion_reaches_the_horizon_with_yes_as_one_and_empty_as_unknown(tmp_path):
    from common.config import load_node_config
    from common.deid import load_or_create_secret, pseudonym
    from warehouse_node.pipeline import _apply_plan

    (tmp_path / "node.toml").write_text(
        '[node]\nname = "n"\nsecret_context = "s.ctx"\n[data]\npath = "x.csv"\ntimestamp = "ts"\n'
        'quantity = "q"\nseries_keys = ["sku"]\npromo = "promo"\nfuture = "future.csv"\n'
    )
    (tmp_path / "future.csv").write_text("sku,date,promo\nA,2025-01-02,yes\nA,2025-01-03,\nB,2025-01-02,2\n")
    cfg = load_node_config(tmp_path)
    secret = load_or_create_secret(cfg.private_dir)
    dates = pd.to_datetime(["2025-01-02", "2025-01-03", "2025-01-04"])
    fut = pd.DataFrame({"series": pseudonym(secret, "A"), "date": dates, "promo": 0.5, "price": 1.0})
    planned = _apply_plan(cfg, fut)["promo"].tolist()
    assert planned[0] == 1.0 and np.isnan(planned[1]) and planned[2] == 0.5  # the last day is not planned
    (tmp_path / "future.csv").write_text("sku,date,promo\nA,2025-01-02,lots\n")
    with pytest.raises(ConfigError, match=r"column 'promo': 1 values that are not numbers, the first 'lots'"):
        _apply_plan(cfg, fut)


def test_a_plan_with_only_its_header_plans_nothing(tmp_path):
    from common.config import load_node_config
    from warehouse_node.pipeline import _apply_plan

    (tmp_path / "node.toml").write_text(
        '[node]\nname = "n"\nsecret_context = "s.ctx"\n[data]\npath = "x.csv"\ntimestamp = "ts"\n'
        'quantity = "q"\nseries_keys = ["store", "sku"]\npromo = "promo"\nfuture = "future.csv"\n'
    )
    (tmp_path / "future.csv").write_text("store,sku,date,promo\n")
    dates = pd.to_datetime(["2025-01-02", "2025-01-03"])
    fut = pd.DataFrame({"series": "x", "date": dates, "promo": 0.5, "price": 1.0})
    planned = _apply_plan(load_node_config(tmp_path), fut)
    assert len(planned) == 2 and planned["promo"].tolist() == [0.5, 0.5]
