import re

import numpy as np
import pandas as pd
import pytest

from common.config import ConfigError
from common.policies import POLICIES
from warehouse_node.replenish import replenish


def _forecasts(skus=("A", "B", "C"), horizon=7) -> pd.DataFrame:
    dates = pd.date_range("2025-01-11", periods=horizon, freq="D")
    rows = [
        {"node": "n", "sku": s, "date": d, "mean": 10.0, "q10": 6.0, "q50": 10.0, "q90": 14.0}
        for s in skus
        for d in dates
    ]
    return pd.DataFrame(rows)


def test_valid_rows_are_decided_and_bad_rows_rejected_with_reasons():
    stock = pd.DataFrame(
        {
            "sku": ["A", "B", "C", "ZZZ", "A2", "B2", "C2", "D2", "E2", "F2"],
            "on_hand": ["5", "50", "x", "1", "-3", "4", "4", "4", "4", "4"],
            "lead_time": ["2", "1", "1", "1", "1", "0", "1.5", "1", "8", "1"],
            "service_level": ["0.9", "", "0.9", "0.9", "0.9", "0.9", "0.9", "1.5", "0.9", "0.9"],
        }
    )
    forecasts = _forecasts(("A", "B", "C", "A2", "B2", "C2", "D2", "E2", "F2"))
    result = replenish(forecasts, pd.concat([stock, stock.iloc[[9]]], ignore_index=True), "D")
    assert sorted(result.decisions["sku"]) == ["A", "B"]
    assert list(result.decisions.columns) == [
        "sku",
        "status",
        "order_qty",
        "on_hand",
        "on_order",
        "reorder_point",
        "order_up_to",
        "safety_stock",
        "stockout_risk",
        "reason",
    ]
    assert list(result.strategy.columns) == ["sku", "availability", "restock_date", "promotion", "reason"]
    reasons = dict(zip(result.rejected["sku"], result.rejected["reason"], strict=False))
    assert "not a number" in reasons["C"]
    assert "unknown sku" in reasons["ZZZ"]
    assert "negative" in reasons["A2"]
    assert "whole number" in reasons["B2"] and "whole number" in reasons["C2"]
    assert "(0, 1)" in reasons["D2"]
    assert "horizon" in reasons["E2"]
    assert "duplicate" in reasons["F2"]
    assert len(result.rejected) == 9  # both F2 rows


def test_missing_required_column_is_a_clear_error():
    with pytest.raises(ConfigError, match="lead_time"):
        replenish(_forecasts(), pd.DataFrame({"sku": ["A"], "on_hand": [1]}), "D")


def test_defaults_fill_optional_columns():
    result = replenish(_forecasts(), pd.DataFrame({"sku": ["A"], "on_hand": [0], "lead_time": [1]}), "D")
    assert len(result.decisions) == 1 and len(result.rejected) == 0
    assert result.decisions["status"].iloc[0] == "REPLENISH_NOW"
    assert np.isfinite(result.decisions["order_up_to"].iloc[0])


def test_restock_date_follows_the_on_order_due_period_and_bad_due_is_rejected():
    stock = pd.DataFrame(
        {
            "sku": ["A", "B", "C"],
            "on_hand": [0, 0, 0],
            "on_order": [30, 0, 30],
            "on_order_due": ["1", "", "0"],
            "lead_time": [3, 3, 3],
        }
    )
    result = replenish(_forecasts(), stock, "D")
    strategy = result.strategy.set_index("sku")
    assert strategy.loc["A", "restock_date"] == "2025-01-11"  # origin 2025-01-10 + 1 day
    assert "30 on order arrives in 1 periods" in strategy.loc["A", "reason"]
    assert strategy.loc["B", "restock_date"] == "2025-01-13"  # nothing on order: now + lead time
    assert "on_order_due" in result.rejected.set_index("sku").loc["C", "reason"]


def test_strategy_thresholds_come_from_a_toml_file_and_bad_settings_are_refused(tmp_path):
    from warehouse_node.replenish import load_strategy_config

    path = tmp_path / "strategy.toml"
    path.write_text("promo_uplift = 1.5\npromote_min_cover = 4\n")
    cfg = load_strategy_config(path)
    assert (cfg.promo_uplift, cfg.promote_min_cover, cfg.suppress_stockout_prob) == (1.5, 4, 0.2)
    for text, message in (
        ("promo_lift = 2\n", "unknown strategy setting 'promo_lift'"),
        ("promo_uplift = 'big'\n", "must be a number"),
        ("suppress_stockout_prob = 1.5\n", "must be in (0, 1)"),
        ("promo_uplift = \n", "strategy config"),
    ):
        path.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_strategy_config(path)


def test_rejected_rows_are_listed_as_written_and_a_sku_in_other_letter_case_is_named():
    stock = pd.DataFrame(
        {
            "sku": ["A", "B", "c"],
            "on_hand": ["1,234", " 7 ", "3"],
            "lead_time": ["2", "2.0", "1"],
            "service_level": ["95%", "0.9", "0.9"],
        }
    )
    result = replenish(_forecasts(), stock, "D")
    rejected = result.rejected.set_index("sku")
    assert (rejected.loc["A", "on_hand"], rejected.loc["A", "service_level"]) == ("1,234", "95%")
    assert (
        rejected.loc["c", "reason"]
        == "unknown sku: no forecast for it; the forecasts have 'C', in other letter case"
    )
    assert list(result.decisions["sku"]) == ["B"]


def test_a_stock_sku_that_nearly_matches_a_forecast_says_how():
    """Leading zeros a spreadsheet dropped, another Unicode form of the same letters: named."""
    forecasts = pd.concat(
        [_forecasts(skus=(sku,)) for sku in ("00123", "Caf\u00e9", "ＸＬ-1")], ignore_index=True
    )
    stock = pd.DataFrame({"sku": ["123", "Cafe\u0301", "XL-1"], "on_hand": "3", "lead_time": "1"})
    reasons = replenish(forecasts, stock, "D").rejected.set_index("sku")["reason"]
    zeros = "with the leading zeros a spreadsheet drops"
    assert reasons["123"] == f"unknown sku: no forecast for it; the forecasts have '00123', {zeros}"
    unicode = "in another Unicode form (accents or full-width letters)"
    assert (
        reasons["Cafe\u0301"] == f"unknown sku: no forecast for it; the forecasts have 'Caf\u00e9', {unicode}"
    )
    assert reasons["XL-1"] == f"unknown sku: no forecast for it; the forecasts have 'ＸＬ-1', {unicode}"


def test_forecast_dates_re_saved_day_first_are_read_day_first_not_misread():
    day_first = _forecasts().assign(date=lambda f: pd.to_datetime(f["date"]).dt.strftime("%d/%m/%Y"))
    stock = pd.DataFrame({"sku": ["B"], "on_hand": "3", "lead_time": "1"})
    assert replenish(day_first, stock, "D").decisions.equals(replenish(_forecasts(), stock, "D").decisions)


def test_skus_padded_with_spaces_on_either_side_still_match_their_forecast():
    forecasts = _forecasts(("A  ", "B"))  # an ERP that pads its codes, as prepare kept them
    stock = pd.DataFrame({"sku": ["A  ", " B"], "on_hand": ["1", "2"], "lead_time": ["1", "1"]})
    result = replenish(forecasts, stock, "D")
    assert sorted(result.decisions["sku"]) == ["A", "B"] and result.rejected.empty


def test_forecast_skus_that_differ_only_in_surrounding_spaces_are_refused():
    stock = pd.DataFrame({"sku": ["A"], "on_hand": ["1"], "lead_time": ["1"]})
    with pytest.raises(ConfigError, match=r"differ only in surrounding spaces: 'A', 'A '$"):
        replenish(_forecasts(("A", "A ")), stock, "D")


def test_a_sku_whose_forecast_rows_are_broken_is_rejected_and_the_others_decided():
    fc = _forecasts(tuple("ABCDEFGHI")).astype({"date": object, "q50": object})
    fc.loc[fc.index[fc["sku"] == "G"][3], "date"] = "soon"
    fc.loc[3, "q50"] = np.nan  # A, 2025-01-14
    fc.loc[8, "q10"] = -1.0  # B, 2025-01-12
    fc.loc[16, "q10"] = 11.0  # C, 2025-01-13: above q50
    fc = pd.concat([fc, fc.iloc[[22]]])  # D, 2025-01-12 twice
    fc = fc.drop(index=fc.index[(fc["sku"] == "F") & (fc["date"] == pd.Timestamp("2025-01-13"))])
    fc["residual_sd"], fc["path_corr"] = 1.0, 0.4
    fc.loc[fc["sku"] == "I", "path_corr"] = 7.0
    fc.loc[fc["sku"] == "H", "q50"] = "x"  # a CSV forecasts file can hold text anywhere
    fc.loc[fc["sku"] == "E", "residual_sd"] = np.nan
    stock = pd.DataFrame({"sku": list("ABCDEFGHI"), "on_hand": ["5"] * 9, "lead_time": ["1"] * 9})
    result = replenish(fc, stock, "D")
    assert dict(zip(result.rejected["sku"], result.rejected["reason"], strict=True)) == {
        "A": "its forecast has a missing or non-finite value (2025-01-14)",
        "B": "its forecast has a negative value (2025-01-12)",
        "C": "its forecast has quantiles that cross (2025-01-13)",
        "D": "its forecast has a date twice (2025-01-12)",
        "F": "its forecast misses the period before (2025-01-14)",
        "G": "its forecast has an unreadable date (soon)",
        "H": "its forecast has a missing or non-finite value (2025-01-11)",
        "I": "its forecast has no usable path_corr (2025-01-11)",
    }
    assert list(result.decisions["sku"]) == ["E"]  # residual_sd is read by the classical policy only
    classical = replenish(fc, stock, "D", policy=POLICIES["classical"])
    reasons = classical.rejected.set_index("sku")["reason"]
    assert reasons["E"] == "its forecast has no usable residual_sd (2025-01-11)"


def test_each_sku_is_held_to_its_own_forecast_horizon():
    fc = pd.concat([_forecasts(("A",), horizon=7), _forecasts(("B",), horizon=3)], ignore_index=True)
    stock = pd.DataFrame({"sku": ["A", "B"], "on_hand": ["5", "5"], "lead_time": ["4", "4"]})
    result = replenish(fc, stock, "D")
    assert list(result.decisions["sku"]) == ["A"]
    reason = result.rejected.set_index("sku").loc["B", "reason"]
    assert reason == "lead_time + review_period exceeds the forecast horizon of 3 periods"


def test_stock_numbers_with_decimal_or_thousands_commas_are_read_and_ambiguous_ones_rejected():
    stock = pd.DataFrame(
        {
            "sku": ["A", "B", "C", "D"],
            "on_hand": ["12,5", "1.234,5", "1,234.5", "1,234"],  # as an ERP in one locale or another writes
            "lead_time": "1",
        }
    )
    result = replenish(_forecasts(skus=("A", "B", "C", "D")), stock, "D")
    assert result.decided_stock.set_index("sku")["on_hand"].to_dict() == {"A": 12.5, "B": 1234.5, "C": 1234.5}
    rejected = result.rejected.set_index("sku")
    assert rejected.loc["D", "reason"] == (
        "on_hand reads as a thousands or a decimal comma: write it without a thousands separator"
    )
    assert rejected.loc["D", "on_hand"] == "1,234"  # listed as written
