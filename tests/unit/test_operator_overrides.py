"""Operator overrides: pinned statuses and blocked promotions, kept beside the model's suggestion."""

from __future__ import annotations

import pandas as pd
import pytest

from common.config import ConfigError
from common.inventory import order_quantity
from warehouse_node.overrides import apply_overrides, validate_overrides
from warehouse_node.replenish import replenish


def _forecasts(skus: tuple[str, ...]) -> pd.DataFrame:
    dates = pd.date_range("2025-01-11", periods=7, freq="D")
    return pd.DataFrame(
        [
            {"sku": s, "date": d, "mean": 10.0, "q10": 6.0, "q50": 10.0, "q90": 14.0}
            for s in skus
            for d in dates
        ]
    )


@pytest.fixture
def decided():
    stock = pd.DataFrame(
        {"sku": ["A", "B", "D"], "on_hand": [5, 500, 25], "lead_time": [2, 1, 1], "moq": [0, 0, 20]}
    )
    return replenish(_forecasts(("A", "B", "D")), stock, "D")


def test_pinned_status_and_blocked_promotion_sit_beside_the_models_suggestion(decided):
    model = decided.decisions.set_index("sku")
    assert model.loc["A", "status"] == "REPLENISH_NOW" and model.loc["A", "order_qty"] > 0
    assert model.loc["D", "status"] == "OBSERVE"
    assert decided.strategy.set_index("sku").loc["B", "promotion"] == "PROMOTE"
    overrides = pd.DataFrame(
        {
            "sku": ["A", "B", "D"],
            "who": ["ana", "raj", "ana"],
            "why": ["supplier closed this week", "brand asked to hold", "shelf reset"],
            "status": ["observe", "", "REPLENISH_NOW"],
            "block_promotion": ["", "true", "no"],
        }
    )
    usable, rejected = validate_overrides(overrides, set(model.index))
    assert rejected.empty
    d, s = apply_overrides(decided.decisions, decided.strategy, decided.decided_stock, usable)
    d, s = d.set_index("sku"), s.set_index("sku")
    assert (d.loc["A", "model_status"], d.loc["A", "status"], d.loc["A", "order_qty"]) == (
        "REPLENISH_NOW",
        "OBSERVE",
        0,
    )
    assert d.loc["A", "model_order_qty"] == model.loc["A", "order_qty"]
    assert (d.loc["A", "override_by"], d.loc["A", "override_why"]) == ("ana", "supplier closed this week")
    assert d.loc["D", "status"] == "REPLENISH_NOW"
    assert d.loc["D", "order_qty"] == order_quantity(model.loc["D", "order_up_to"] - 25, 20, 1)
    assert d.loc["B", "status"] == d.loc["B", "model_status"] and d.loc["B", "override_by"] == ""
    assert (s.loc["B", "model_promotion"], s.loc["B", "promotion"], s.loc["B", "override_by"]) == (
        "PROMOTE",
        "NEUTRAL",
        "raj",
    )
    assert d.loc["A", "reason"] == model.loc["A", "reason"], "the model's reason is kept"


def test_bad_override_rows_are_rejected_with_reasons(decided):
    overrides = pd.DataFrame(
        {
            "sku": ["ZZZ", "A", "B", "D", "D", "B2"],
            "who": ["ana", "", "raj", "ana", "ana", "x"],
            "why": ["w", "w", "w", "w", "w", "w"],
            "status": ["OBSERVE", "OBSERVE", "MAYBE", "OBSERVE", "WARNING", ""],
            "block_promotion": ["", "", "", "", "", ""],
        }
    )
    usable, rejected = validate_overrides(overrides, set(decided.decisions["sku"]))
    reasons = list(rejected["reason"])
    assert usable.empty and len(rejected) == 6
    assert "no decision" in reasons[0] and "who and why" in reasons[1] and "status must be" in reasons[2]
    assert "duplicate" in reasons[3] and "duplicate" in reasons[4] and "overrides nothing" in reasons[5]


def test_overrides_file_without_who_or_why_columns_is_refused(decided):
    with pytest.raises(ConfigError, match="missing columns: why"):
        validate_overrides(pd.DataFrame({"sku": ["A"], "who": ["ana"], "status": ["OBSERVE"]}), {"A"})


def test_the_promotion_advice_follows_the_order_an_override_leaves():
    stock = pd.DataFrame({"sku": ["A"], "on_hand": [15], "lead_time": [1], "review_period": [3], "moq": [40]})
    pin = pd.DataFrame({"sku": ["A"], "who": ["ana"], "why": ["supplier closed"], "status": ["OBSERVE"]})
    model = replenish(_forecasts(("A",)), stock, "D").strategy.iloc[0]
    pinned = replenish(_forecasts(("A",)), stock, "D", overrides=pin)
    assert "+ 40 ordered now" in model["reason"]
    assert pinned.decisions.iloc[0]["order_qty"] == 0 and pinned.rejected_overrides.empty
    assert "nothing ordered now" in pinned.strategy.iloc[0]["reason"]
