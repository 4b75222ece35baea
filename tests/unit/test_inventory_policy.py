import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.inventory import (
    OBSERVE,
    OUT_OF_STOCK,
    REPLENISH_NOW,
    SUPPRESS,
    WARNING,
    StrategyConfig,
    decide,
    order_quantity,
    sample_paths,
)
from tests.conftest import ROOT

LEVELS = (0.1, 0.5, 0.9)
ORIGIN = pd.Timestamp("2025-01-10")


def _row(**kw) -> pd.Series:
    base = {
        "sku": "A",
        "on_hand": 15.0,
        "on_order": 0.0,
        "lead_time": 2,
        "review_period": 1,
        "service_level": 0.95,
        "moq": 0.0,
        "pack_size": 1.0,
    }
    return pd.Series({**base, **kw})


def _constant_paths(value: float = 10.0, horizon: int = 7) -> np.ndarray:
    return np.full((1000, horizon), value)


@pytest.mark.parametrize(
    ("need", "moq", "pack", "expected"),
    [
        (0.0, 10, 4, 0),
        (-3.0, 10, 1, 0),
        (7.0, 10, 4, 12),
        (13.0, 0, 6, 18),
        (12.0, 0, 6, 12),
        (2.2, 0, 1, 3),
        (30.0, 24, 10, 30),
        (5.0, 24, 10, 30),
    ],
)
def test_order_quantity_respects_moq_and_pack(need, moq, pack, expected):
    assert order_quantity(need, moq, pack) == expected


@given(
    need=st.floats(0.001, 1e9),
    moq=st.floats(0, 1e6),
    pack=st.one_of(st.integers(1, 500).map(float), st.floats(0.01, 50)),
)
def test_an_order_is_whole_packs_never_below_the_need_or_moq_and_one_pack_at_most_above(need, moq, pack):
    qty = order_quantity(need, moq, pack)
    packs = qty / pack
    assert abs(packs - round(packs)) <= 1e-6 * max(1.0, packs)  # whole packs, fractional ones too
    assert qty >= max(need, moq) * (1 - 1e-9)
    assert qty - pack < max(need, moq) * (1 + 1e-9)  # the smallest such order


def test_fractional_packs_are_never_truncated_and_a_non_finite_need_is_refused():
    assert order_quantity(1.0, 0, 0.4) == 1.2 and order_quantity(0.3, 0, 0.1) == 0.3
    with pytest.raises(ValueError, match="not finite"):
        order_quantity(float("inf"), 0, 1)


def test_replenish_now_at_or_below_reorder_point():
    # demand 10/period, L=2, R=1: reorder point 20, order-up-to 30; position 15 -> need 15,
    # MOQ 24 -> 24, packs of 10 -> 30
    d, _ = decide(_row(moq=24.0, pack_size=10.0), _constant_paths(), ORIGIN, "D", StrategyConfig())
    assert d["status"] == REPLENISH_NOW
    assert d["reorder_point"] == pytest.approx(20) and d["order_up_to"] == pytest.approx(30)
    assert d["safety_stock"] == pytest.approx(0)
    assert d["order_qty"] == 30
    assert "20.0" in d["reason"] and "30.0" in d["reason"]


def test_warning_when_position_reaches_reorder_point_before_next_review():
    d, _ = decide(_row(on_hand=20.0, on_order=5.0), _constant_paths(), ORIGIN, "D", StrategyConfig())
    assert d["status"] == WARNING  # 25 - 10 = 15 <= 20
    assert d["order_qty"] == 5


def test_observe_when_position_covers_the_next_review():
    d, _ = decide(_row(on_hand=40.0), _constant_paths(), ORIGIN, "D", StrategyConfig())
    assert (d["status"], d["order_qty"]) == (OBSERVE, 0)


def test_boundary_position_equal_to_reorder_point_replenishes():
    d, _ = decide(_row(on_hand=20.0), _constant_paths(), ORIGIN, "D", StrategyConfig())
    assert d["status"] == REPLENISH_NOW


def test_out_of_stock_gets_restock_date_after_lead_time_and_promotion_suppressed():
    _, s = decide(_row(on_hand=0.0, lead_time=3), _constant_paths(), ORIGIN, "D", StrategyConfig())
    assert s["availability"] == OUT_OF_STOCK
    assert s["restock_date"] == "2025-01-13"
    assert s["promotion"] == SUPPRESS
    assert "100%" in s["reason"]


def test_promote_only_with_large_cover_and_low_stockout_risk():
    _, s = decide(_row(on_hand=500.0), _constant_paths(), ORIGIN, "D", StrategyConfig())
    assert s["promotion"] == "PROMOTE" and s["availability"] == "IN_STOCK" and s["restock_date"] == ""
    _, s = decide(_row(on_hand=90.0), _constant_paths(), ORIGIN, "D", StrategyConfig())
    assert s["promotion"] == "NEUTRAL"  # (90 - 70) / 10 = 2 periods of cover after the horizon


def test_quantile_of_sum_is_not_sum_of_quantiles():
    rng = np.random.default_rng(0)
    q = np.tile([5.0, 10.0, 15.0], (7, 1))  # each period: P10=5, P50=10, P90=15
    independent = sample_paths(q, LEVELS, 0.0, 20000, rng).sum(1)
    comonotone = sample_paths(q, LEVELS, 0.99, 20000, rng).sum(1)
    sum_of_p90 = 7 * 15.0
    assert np.quantile(independent, 0.9) < 0.9 * sum_of_p90
    assert np.quantile(comonotone, 0.9) == pytest.approx(sum_of_p90, rel=0.05)
    assert independent.mean() == pytest.approx(70, rel=0.02)


def test_weekly_restock_date_follows_period_ends():
    _, s = decide(
        _row(on_hand=0.0, lead_time=2),
        _constant_paths(),
        pd.Timestamp("2012-07-27"),
        "W-FRI",
        StrategyConfig(),
    )
    assert s["restock_date"] == "2012-08-10"


def test_promotion_risk_counts_the_order_placed_now_from_the_period_it_arrives():
    row = _row(on_hand=15.0, lead_time=1, review_period=3, moq=40.0)  # demand 10 a period
    decision, s = decide(row, _constant_paths(), ORIGIN, "D", StrategyConfig())
    assert (decision["status"], decision["order_qty"]) == (WARNING, 40)
    # 15 on hand, +40 from period 1: 13, 26, 39, 52 of promoted demand are all served
    assert s["promotion"] == "NEUTRAL" and "0% with a promotion" in s["reason"]
    assert "+ 40 ordered now (arrives in 1 periods)" in s["reason"]
    _, s = decide(row, _constant_paths(), ORIGIN, "D", StrategyConfig(), pinned_status=OBSERVE)
    assert s["promotion"] == SUPPRESS and "nothing ordered now" in s["reason"]
    assert "100% with a promotion" in s["reason"]


def test_stock_on_order_serves_demand_only_from_its_due_period():
    row = _row(on_hand=5.0, on_order=100.0, on_order_due=2, lead_time=3, review_period=1)
    decision, s = decide(row, _constant_paths(), ORIGIN, "D", StrategyConfig())
    assert decision["status"] == OBSERVE  # position 105 covers the lead time and the review
    assert s["promotion"] == SUPPRESS  # but period 0 already wants 10 of the 5 on hand
    assert "over the next 4 periods 100% as forecast" in s["reason"]


def _replenish_benchmark():
    import importlib.util

    path = ROOT / "scripts" / "benchmark_replenish.py"
    spec = importlib.util.spec_from_file_location("benchmark_replenish", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("rho", [0.0, 0.4, 0.95])
def test_sample_paths_draw_the_same_paths_as_an_explicit_cholesky_factor(rho):
    q = np.sort(np.random.default_rng(1).uniform(0, 100, (14, 9)), axis=1)
    levels = (0.02, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.98)
    ours = sample_paths(q, levels, rho, 4000, np.random.default_rng(3))
    reference = _replenish_benchmark().cholesky_paths(q, levels, rho, 4000, np.random.default_rng(3))
    assert np.abs(ours - reference).max() < 1e-5  # the reference adds 1e-9 to the covariance


def test_replenish_benchmark_writes_decisions_per_second_and_both_draws(tmp_path):
    from click.testing import CliRunner

    out = tmp_path / "BENCHMARKS.md"
    args = ["--skus", "20,40", "--repeats", "1", "--path-draws", "5", "--output", str(out)]
    result = CliRunner().invoke(_replenish_benchmark().main, args)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "| 20 |" in text and "| 40 |" in text and "| Cholesky + matrix product |" in text


def test_restock_date_is_the_first_arrival_and_none_when_nothing_is_coming():
    late = _row(on_hand=0.0, on_order=100.0, on_order_due=5, lead_time=2)  # due after a new order
    decision, s = decide(late, _constant_paths(), ORIGIN, "D", StrategyConfig())
    assert decision["order_qty"] == 0  # position 100 is above the reorder point: no new order
    assert s["restock_date"] == "2025-01-15" and "100 on order arrives in 5 periods" in s["reason"]
    trickle = _row(on_hand=0.0, on_order=5.0, on_order_due=5, lead_time=2)  # a new order comes first
    decision, s = decide(trickle, _constant_paths(), ORIGIN, "D", StrategyConfig())
    assert decision["order_qty"] > 0 and s["restock_date"] == "2025-01-12"
    empty = _row(on_hand=0.0, lead_time=2)
    decision, s = decide(empty, _constant_paths(), ORIGIN, "D", StrategyConfig())
    assert decision["order_qty"] > 0 and s["restock_date"] == "2025-01-12"
    assert f"the {decision['order_qty']} ordered now arrive after the 2-period lead time" in s["reason"]
    _, s = decide(empty, _constant_paths(), ORIGIN, "D", StrategyConfig(), pinned_status=OBSERVE)
    assert s["restock_date"] == "" and "nothing is on order and nothing is ordered now" in s["reason"]


def test_stockout_risk_ranks_the_skus_that_run_out_before_an_order_could_arrive():
    """Demand 10/period, lead 2 + review 1: 30 units are needed before an order placed at the next
    review arrives; the risk counts what is on hand and on order, never an order placed now."""
    paths = _constant_paths() + np.random.default_rng(0).normal(0, 3, size=_constant_paths().shape)
    risk = {
        on_hand: decide(_row(on_hand=on_hand), paths, ORIGIN, "D", StrategyConfig())[0]["stockout_risk"]
        for on_hand in (5.0, 25.0, 30.0, 45.0)
    }
    assert risk[5.0] == 1.0 and risk[45.0] < 0.01
    assert risk[5.0] > risk[25.0] > risk[30.0] > risk[45.0]
    row = _row(on_hand=20.0, on_order=40.0, on_order_due=1)  # arrives after one period's demand
    d, _ = decide(row, paths, ORIGIN, "D", StrategyConfig())
    assert d["stockout_risk"] < 0.01 and (d["on_hand"], d["on_order"]) == (20.0, 40.0)
