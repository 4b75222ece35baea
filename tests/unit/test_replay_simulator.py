"""Replay of a policy over actual demand: hand-traced cases, backorders, warm-up, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from common.policies import Classical, DemandForecast, Probabilistic, SeedRule
from common.replay import ReplaySettings, latest, plan_reviews, replay, summarise

SPIKE = np.array([[10.0, 10, 20, 10, 10, 10]])  # actual demand: 10 except a spike of 20 at t = 2


SEED_RULE = SeedRule()


def _run(demand, made, policy=SEED_RULE, alpha=0.95, value=2.0, **settings) -> dict[str, float]:
    s = ReplaySettings(**{"lead_time": 1, "review_period": 1, **settings})
    plan = plan_reviews(latest(made), demand.shape[1], policy, [alpha], s)[alpha]
    return {k: float(v.sum()) for k, v in replay(demand, plan, s, value).items()}


def _flat(value: float = 10.0, horizon: int = 6, skus: int = 1) -> DemandForecast:
    return DemandForecast(np.full((skus, 50, horizon), value))


def test_lost_sales_trace_matches_hand_computation():
    # Seed rule: s = 12, S = 24, 10 expected before the next review; start at S = 24.
    # t=0: 24 − 10 > 12, no order → 14 left. t=1: 14 − 10 ≤ 12 (WARNING) → order 10 → 4 left.
    # t=2: 10 arrive → 14; order 10; demand 20 → 6 lost, 0 left. t=3: 10 arrive; 10 ≤ 12
    # (REPLENISH_NOW) → order 14 → 0 left. t=4: 14 arrive; order 10 → 4 left. t=5: 10 arrive, no
    # review (R + L no longer fits in the horizon) → 4 left.
    out = _run(SPIKE, [_flat()])
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
    out = _run(SPIKE, [_flat()], backorders=True)
    assert out["served"] == pytest.approx(58) and out["stockout_periods"] == 2
    assert out["on_hand_units"] == pytest.approx((14 + 4 + 0 + 0 + 4 + 4) / 6)


def test_orders_respect_moq_and_pack_size():
    out = _run(SPIKE, [_flat()], moq=30, pack_size=25)
    # t=1: need 10 → MOQ 30 → 2 packs = 50; that covers the rest of the window.
    assert out["orders"] == 1 and out["short"] == 0
    assert out["on_hand_units"] == pytest.approx((14 + 4 + 34 + 24 + 14 + 4) / 6)


def test_warmup_periods_are_replayed_but_not_counted():
    # the same trace as the lost-sales case, counting from t = 3 on: on hand 0, 4, 4; no shortage
    out = _run(SPIKE, [_flat()], warmup=3)
    assert out["demand"] == pytest.approx(30) and out["short"] == 0
    assert out["on_hand_units"] == pytest.approx(8 / 3)
    assert out["orders"] == 2 and out["cycles"] == 3


def test_many_skus_replay_as_each_alone():
    rng = np.random.default_rng(3)
    demand = rng.gamma(4, 5, size=(5, 13))
    paths = rng.gamma(4, 5, size=(5, 400, 13))
    residual = rng.uniform(2, 6, size=5)
    for policy in (SeedRule(), Classical(), Probabilistic()):
        many = _run(demand, [DemandForecast(paths, residual)], policy, value=3.0)
        alone = [
            _run(
                demand[i : i + 1], [DemandForecast(paths[i : i + 1], residual[i : i + 1])], policy, value=3.0
            )
            for i in range(5)
        ]
        for key in ("served", "on_hand_value", "orders", "stockout_periods"):
            assert many[key] == pytest.approx(sum(a[key] for a in alone))


def test_higher_service_target_buys_fill_rate_with_stock_and_replays_identically():
    rng = np.random.default_rng(3)
    demand = rng.gamma(4, 5, size=(20, 13))
    forecast = DemandForecast(rng.gamma(4, 5, size=(20, 2000, 13)))
    settings = ReplaySettings(lead_time=2, review_period=1)
    plans = plan_reviews(latest([forecast]), 13, Probabilistic(), [0.8, 0.99], settings)
    value = 1.0 + np.arange(20)
    low = summarise(replay(demand, plans[0.8], settings, value))
    high = summarise(replay(demand, plans[0.99], settings, value))
    assert high["fill_rate"] > low["fill_rate"] and high["on_hand_value"] > low["on_hand_value"]
    assert high["turnover"] < low["turnover"]
    assert summarise(replay(demand, plans[0.99], settings, value)) == high


@pytest.mark.parametrize(
    "bad", [{"lead_time": 0}, {"review_period": 1.5}, {"pack_size": 0}, {"moq": -1}, {"warmup": -1}]
)
def test_invalid_replay_settings_are_refused(bad):
    with pytest.raises(ValueError):
        ReplaySettings(**bad)


def test_forecasts_remade_at_reviews_follow_a_step_in_demand():
    # Demand steps from 10 to 20 at t = 2; the origin's forecast keeps saying 10. Forecasts
    # re-made from t = 3 on (after the step was seen) say 20, and the replay stocks for it.
    demand = np.array([[10, 10, 20, 20, 20, 20, 20, 20]], dtype=float)
    origin = _flat(horizon=8)
    again = [origin, None, None, *(_flat(20.0, horizon=4) for _ in range(5))]
    once = _run(demand, [origin])
    remade = _run(demand, again)
    assert remade["short"] < once["short"] and remade["on_hand_units"] > once["on_hand_units"]
    # the origin's forecast stops reviews at t = 6 (R + L must fit); the re-made ones reach t = 7
    assert remade["orders"] > once["orders"]
    assert _run(demand, [origin, *([None] * 7)]) == once


def test_reviews_between_remade_forecasts_use_the_latest_one():
    origin, weekly = _flat(horizon=8), _flat(3.0, horizon=8)
    at = latest([origin, None, None, weekly, None, None])
    for t, (made, step) in {2: (origin, 2), 3: (weekly, 0), 5: (weekly, 2), 7: (weekly, 4)}.items():
        forecast, when = at(t)
        assert forecast is made and when == step
    assert latest([None, origin])(0) is None
