"""Replay of a policy over actual demand: hand-traced cases, backorders, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from common.policies import DemandForecast, Probabilistic, SeedRule
from common.replay import ReplaySettings, SkuHistory, replay, replay_sku, summarise


def _item(periods: int = 6) -> SkuHistory:
    """Forecast 10 a period; actual demand 10 except a spike of 20 at t = 2."""
    demand = np.full(periods, 10.0)
    demand[2] = 20.0
    return SkuHistory("A", demand, DemandForecast(np.full((50, periods), 10.0)), unit_value=2.0)


def test_lost_sales_trace_matches_hand_computation():
    # Seed rule: s = 12, S = 24, 10 expected before the next review; start at S = 24.
    # t=0: 24 − 10 > 12, no order → 14 left. t=1: 14 − 10 ≤ 12 (WARNING) → order 10 → 4 left.
    # t=2: 10 arrive → 14; order 10; demand 20 → 6 lost, 0 left. t=3: 10 arrive; 10 ≤ 12
    # (REPLENISH_NOW) → order 14 → 0 left. t=4: 14 arrive; order 10 → 4 left. t=5: 10 arrive, no
    # review (R + L no longer fits in the horizon) → 4 left.
    out = replay_sku(_item(), SeedRule(), 0.95, ReplaySettings(lead_time=1, review_period=1))
    assert out["served"] == pytest.approx(64) and out["short"] == pytest.approx(6)
    assert out["stockout_periods"] == 1 and out["orders"] == 4
    assert out["on_hand_units"] == pytest.approx(26 / 6)
    assert out["on_hand_value"] == pytest.approx(2 * 26 / 6)
    assert out["cycles"] == 6 and out["cycles_ok"] == 5
    s = ReplaySettings()
    assert out["holding_cost"] == pytest.approx(26 * 2 * s.holding_rate)
    assert out["shortage_cost"] == pytest.approx(6 * 2 * s.shortage_rate)


def test_backorders_are_served_first_when_stock_arrives():
    # t=2: 6 backordered. t=3: 10 arrive, 6 go to the backlog, position 4 → order 20; demand 10:
    # 4 served, 6 backordered. t=4: 20 arrive, backlog cleared, 14 → order 10 → 4 left. t=5: 14 → 4.
    settings = ReplaySettings(lead_time=1, review_period=1, backorders=True)
    out = replay_sku(_item(), SeedRule(), 0.95, settings)
    assert out["served"] == pytest.approx(58) and out["stockout_periods"] == 2
    assert out["on_hand_units"] == pytest.approx((14 + 4 + 0 + 0 + 4 + 4) / 6)


def test_orders_respect_moq_and_pack_size():
    settings = ReplaySettings(lead_time=1, review_period=1, moq=30, pack_size=25)
    out = replay_sku(_item(), SeedRule(), 0.95, settings)
    # t=1: need 10 → MOQ 30 → 2 packs = 50; that covers the rest of the window.
    assert out["orders"] == 1 and out["short"] == 0
    assert out["on_hand_units"] == pytest.approx((14 + 4 + 34 + 24 + 14 + 4) / 6)


def test_higher_service_target_buys_fill_rate_with_stock_and_replays_identically():
    rng = np.random.default_rng(3)
    items = [
        SkuHistory(
            f"s{i}",
            rng.gamma(4, 5, size=13),
            DemandForecast(rng.gamma(4, 5, size=(2000, 13))),
            unit_value=1.0 + i,
        )
        for i in range(20)
    ]
    settings = ReplaySettings(lead_time=2, review_period=1)
    low = summarise(replay(items, Probabilistic(), 0.8, settings))
    high = summarise(replay(items, Probabilistic(), 0.99, settings))
    assert high["fill_rate"] > low["fill_rate"] and high["on_hand_value"] > low["on_hand_value"]
    assert summarise(replay(items, Probabilistic(), 0.99, settings)) == high


@pytest.mark.parametrize("bad", [{"lead_time": 0}, {"review_period": 1.5}, {"pack_size": 0}, {"moq": -1}])
def test_invalid_replay_settings_are_refused(bad):
    with pytest.raises(ValueError):
        ReplaySettings(**bad)


def test_forecasts_remade_at_reviews_follow_a_step_in_demand():
    # Demand steps from 10 to 20 at t = 2; the origin's forecast keeps saying 10. Forecasts
    # re-made from t = 3 on (after the step was seen) say 20, and the replay stocks for it.
    demand = np.array([10, 10, 20, 20, 20, 20, 20, 20], dtype=float)
    origin = DemandForecast(np.full((50, 8), 10.0))
    again = (None, None, None, *(DemandForecast(np.full((50, 4), 20.0)) for _ in range(5)))
    settings = ReplaySettings(lead_time=1, review_period=1)
    once = replay_sku(SkuHistory("A", demand, origin), SeedRule(), 0.95, settings)
    remade = replay_sku(SkuHistory("A", demand, origin, reforecasts=again), SeedRule(), 0.95, settings)
    assert remade["short"] < once["short"] and remade["on_hand_units"] > once["on_hand_units"]
    # the origin's forecast stops reviews at t = 6 (R + L must fit); the re-made ones reach t = 7
    assert remade["orders"] > once["orders"]
    unused = replay_sku(SkuHistory("A", demand, origin, reforecasts=(None,) * 8), SeedRule(), 0.95, settings)
    assert unused == once


def test_reviews_between_remade_forecasts_use_the_latest_one():
    origin = DemandForecast(np.full((50, 8), 10.0))
    weekly = DemandForecast(np.arange(8.0)[None].repeat(50, 0))
    item = SkuHistory("A", np.full(8, 10.0), origin, reforecasts=(None, None, None, weekly, None, None))
    for t, (made, step) in {2: (origin, 2), 3: (weekly, 0), 5: (weekly, 2), 7: (weekly, 4)}.items():
        forecast, at = item.forecast_at(t)
        assert forecast is made and at == step
