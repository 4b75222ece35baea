"""The documented data rules: every dropped, capped or repaired row is quarantined with its reason."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common.config import ConfigError, parse_data_config
from common.demand import prepare

SECRET = b"s" * 32


def _periods_cfg(tmp_path: Path, **extra):
    return parse_data_config(
        {
            **extra,
            "path": "x.csv",
            "kind": "periods",
            "frequency": "W-FRI",
            "timestamp": "Date",
            "quantity": "Weekly_Sales",
            "series_keys": ["Dept"],
            "holiday": "IsHoliday",
        },
        tmp_path,
    )


def _weekly(dept: str, weeks: pd.DatetimeIndex, values) -> pd.DataFrame:
    return pd.DataFrame(
        {"Dept": dept, "Date": weeks.strftime("%Y-%m-%d"), "Weekly_Sales": values, "IsHoliday": "False"}
    )


def test_periods_rules_negative_gaps_ended_and_duplicates(tmp_path):
    weeks = pd.date_range("2011-01-07", periods=30, freq="W-FRI")
    a = _weekly("1", weeks, np.full(30, 100.0))
    a.loc[5, "Weekly_Sales"] = -20.0  # a return week
    a = a.drop(index=[10, 11])  # two missing weeks
    b = _weekly("2", weeks[:15], np.full(15, 50.0))  # ended half way
    dup = _weekly("1", weeks[20:21], [7.0])
    raw = pd.concat([a, b, dup], ignore_index=True)
    out = prepare(raw, _periods_cfg(tmp_path), SECRET)
    counts = out.counts()
    assert counts["negative demand clipped to 0"] == 1
    assert counts["missing period filled with 0"] == 2
    assert counts["series ended"] == 1
    assert counts["duplicate period row"] == 2
    series_a = out.key_map.loc[out.key_map["Dept"] == "1", "series"].item()
    a_panel = out.panel[out.panel["series"] == series_a]
    assert len(a_panel) == 30 and a_panel["demand"].min() == 0.0
    assert a_panel["demand"].sum() == pytest.approx(100 * 26 + 107)
    assert out.ended == [out.key_map.loc[out.key_map["Dept"] == "2", "series"].item()]


def test_a_series_whose_sales_are_zero_rows_has_ended_like_one_whose_rows_stopped(tmp_path):
    """Zeros are no demand: a dept that sells nothing in its last 8 weeks, or never, has ended
    (trained on, not forecast), whether its export stops or keeps writing 0."""
    weeks = pd.date_range("2011-01-07", periods=30, freq="W-FRI")
    live = _weekly("1", weeks, np.full(30, 100.0))
    stopped = _weekly("2", weeks, np.r_[np.full(20, 50.0), np.zeros(10)])  # ten weeks of 0 written
    never = _weekly("3", weeks, np.zeros(30))
    quiet = _weekly("4", weeks, np.r_[np.full(25, 5.0), np.zeros(5)])  # five quiet weeks: still live
    out = prepare(pd.concat([live, stopped, never, quiet], ignore_index=True), _periods_cfg(tmp_path), SECRET)
    dept = out.key_map.set_index("series")["Dept"]
    assert sorted(dept[out.ended]) == ["2", "3"]
    reasons = out.quarantine.loc[out.quarantine["reason"].str.startswith("series ended"), "reason"]
    assert sorted(reasons) == [
        "series ended: no demand in its 30 periods; not forecast (0 in simulations)",
        "series ended: no demand in last 10 periods; not forecast (0 in simulations)",
    ]


def test_outlier_capped_but_not_in_promotion_or_holiday_periods(tmp_path):
    weeks = pd.date_range("2011-01-07", periods=40, freq="W-FRI")
    values = 100 + np.tile([-3.0, 0.0, 3.0], 14)[:40]
    values[10], values[20] = 1000.0, 1000.0
    raw = _weekly("1", weeks, values)
    raw.loc[20, "IsHoliday"] = "True"
    out = prepare(raw, _periods_cfg(tmp_path), SECRET)
    demand = out.panel.sort_values("date")["demand"].to_numpy()
    assert demand[10] < 200 and demand[20] == 1000.0
    capped = out.quarantine[out.quarantine["reason"].str.startswith("outlier")]
    assert len(capped) == 1 and capped["value"].astype(float).item() == 1000.0


def test_outlier_capping_can_be_switched_off_for_aggregated_sales(tmp_path):
    weeks = pd.date_range("2011-01-07", periods=40, freq="W-FRI")
    values = 100 + np.tile([-3.0, 0.0, 3.0], 14)[:40]
    values[10] = 1000.0
    out = prepare(_weekly("1", weeks, values), _periods_cfg(tmp_path, cap_outliers=False), SECRET)
    assert out.panel.sort_values("date")["demand"].to_numpy()[10] == 1000.0
    assert not out.quarantine["reason"].str.startswith("outlier").any()


def test_cap_outliers_must_be_a_boolean(tmp_path):
    with pytest.raises(ConfigError, match="cap_outliers must be true or false"):
        _periods_cfg(tmp_path, cap_outliers="no")


def test_recurring_seasonal_peak_is_demand_not_an_outlier(tmp_path):
    weeks = pd.date_range("2010-01-08", periods=110, freq="W-FRI")
    values = 100 + np.tile([-3.0, 0.0, 3.0], 40)[:110]
    values[47], values[99] = 900.0, 950.0  # the same week in two years: a seasonal peak
    values[70] = 1000.0  # once only: an outlier
    out = prepare(_weekly("1", weeks, values), _periods_cfg(tmp_path), SECRET)
    demand = out.panel.sort_values("date")["demand"].to_numpy()
    assert demand[47] == 900.0 and demand[99] == 950.0 and demand[70] < 200
    capped = out.quarantine[out.quarantine["reason"].str.startswith("outlier")]
    assert capped["value"].astype(float).tolist() == [1000.0]


def test_missing_promotion_value_stays_unknown_and_observed_covariates_are_kept(tmp_path):
    weeks = pd.date_range("2011-01-07", periods=12, freq="W-FRI")
    raw = _weekly("1", weeks, np.full(12, 50.0)).assign(
        MarkDown=[None] * 6 + ["100"] * 6, Temperature=[str(t) for t in range(12)]
    )
    cfg = _periods_cfg(tmp_path, promo="MarkDown", observed=["Temperature"])
    panel = prepare(raw, cfg, SECRET).panel.sort_values("date")
    assert panel["promo"].isna().sum() == 6 and (panel["promo"].dropna() == 100).all()
    assert panel["Temperature"].tolist() == list(range(12))


def test_malformed_order_lines_are_quarantined_and_returns_excluded(tmp_path):
    cfg = parse_data_config(
        {"path": "x.csv", "timestamp": "ts", "quantity": "qty", "series_keys": ["sku"]}, tmp_path
    )
    raw = pd.DataFrame(
        {
            "ts": [
                "2024-01-01T10:00",
                "garbage",
                "2024-01-01T11:00",
                "2024-01-02T09:00",
                "2024-01-02T09:30",
                "2024-01-03",
            ],
            "qty": ["3", "2", "abc", "-2", "5", "1"],
            "sku": ["A", "A", "A", "A", "A", None],
        }
    )
    out = prepare(raw, cfg, SECRET)
    reasons = out.quarantine["reason"].tolist()
    assert any(r.startswith("unreadable timestamp") for r in reasons)
    assert any(r.startswith("missing or non-numeric quantity") for r in reasons)
    assert any(r.startswith("return") for r in reasons)
    assert any(r.startswith("missing series key") for r in reasons)
    assert out.panel.sort_values("date")["demand"].tolist() == [3.0, 5.0]


def _two_depts(weeks: pd.DatetimeIndex) -> pd.DataFrame:
    return pd.concat([_weekly(d, weeks, np.full(len(weeks), 100.0)) for d in ("1", "2")], ignore_index=True)


def test_a_mistyped_year_is_quarantined_instead_of_ending_every_series(tmp_path):
    weeks = pd.date_range("2011-01-07", periods=60, freq="W-FRI")
    raw = _two_depts(weeks)
    raw.loc[3, "Date"] = "2211-01-28"  # after today
    raw.loc[70, "Date"] = "1911-01-27"  # a century early: stray
    out = prepare(raw, _periods_cfg(tmp_path), SECRET)
    counts = out.counts()
    assert counts["timestamp after today"] == 1 and counts["stray timestamp"] == 1
    assert out.ended == [] and out.panel["date"].min() == pd.Timestamp("2011-01-07")
    assert out.panel["date"].max() == weeks[-1]
    stray = out.quarantine[out.quarantine["reason"].str.startswith("stray")]
    empty_weeks = (weeks[0] - pd.Timestamp("1911-01-27")).days // 7 - 1
    assert stray["value"].tolist() == ["1911-01-27"] and f"{empty_weeks} periods" in stray["reason"].item()


def test_a_closure_of_both_sides_large_keeps_all_history(tmp_path):
    weeks = pd.date_range("2011-01-07", periods=80, freq="W-FRI")
    raw = _two_depts(weeks.delete(range(30, 45)))  # closed 15 weeks, then reopened
    out = prepare(raw, _periods_cfg(tmp_path), SECRET)
    assert "stray timestamp" not in out.counts() and out.ended == []
    assert out.panel["date"].min() == weeks[0] and len(out.panel) == 2 * 80


def test_numbers_as_dates_are_read_by_their_size_and_other_numbers_are_refused(tmp_path):
    """Spreadsheet serial days, Unix seconds and milliseconds (as numbers, or as text in a CSV)
    read as the dates they are; a column of numbers of no such size is refused with an example."""
    weeks = pd.date_range("2011-01-07", periods=5, freq="W-FRI")
    iso = prepare(_two_depts(weeks), _periods_cfg(tmp_path), SECRET).panel
    seconds = (weeks - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)
    days = (weeks - pd.Timestamp("1899-12-30")) // pd.Timedelta(days=1)
    for cells in (seconds, seconds * 1000, days, days.astype(str)):
        raw = _two_depts(weeks).assign(Date=list(cells) * 2)
        assert prepare(raw, _periods_cfg(tmp_path), SECRET).panel.equals(iso), cells[:1]
    raw = _two_depts(weeks).assign(Date=1234)
    with pytest.raises(
        ConfigError, match=r"timestamp column 'Date' holds numbers \(e.g. 1234\) that are neither"
    ):
        prepare(raw, _periods_cfg(tmp_path), SECRET)


def test_decimal_commas_thousands_commas_and_dst_offsets_are_read_or_refused_by_column(tmp_path):
    weeks = pd.date_range("2011-01-07", periods=5, freq="W-FRI")
    base = _two_depts(weeks)
    iso = prepare(base, _periods_cfg(tmp_path), SECRET).panel
    comma = base.assign(Weekly_Sales=base["Weekly_Sales"].map(lambda v: f"{v:.1f}".replace(".", ",")))
    assert prepare(comma, _periods_cfg(tmp_path), SECRET).panel.equals(iso)
    thousands = base.assign(Weekly_Sales=base["Weekly_Sales"].map(lambda v: f"{v * 1000:,.1f}"))
    read = prepare(thousands, _periods_cfg(tmp_path), SECRET).panel
    assert np.allclose(read["demand"], iso["demand"] * 1000)
    either = base.assign(Weekly_Sales="1,234")
    with pytest.raises(
        ConfigError, match=r"reads as 1234 \(a thousands comma\) or 1\.234 \(a decimal comma\)"
    ):
        prepare(either, _periods_cfg(tmp_path), SECRET)
    # a day's sales around the switch to summer time: the offset changes, the local day does not
    local = pd.Series(["2024-03-30T23:30:00+01:00", "2024-03-31T23:30:00+02:00"])
    from common.cells import parse_dates

    assert parse_dates(local, "ts").dt.strftime("%Y-%m-%d %H:%M").tolist() == [
        "2024-03-30 23:30",
        "2024-03-31 23:30",
    ]


def test_day_month_dates_are_read_in_the_one_order_the_column_shows(tmp_path):
    weeks = pd.date_range("2011-01-07", periods=20, freq="W-FRI")
    iso = prepare(_two_depts(weeks), _periods_cfg(tmp_path), SECRET).panel
    raw = _two_depts(weeks)
    raw["Date"] = weeks.strftime("%d/%m/%Y").tolist() * 2  # 07/01/2011 is 7 January: 14/01 shows it
    assert prepare(raw, _periods_cfg(tmp_path), SECRET).panel.equals(iso)
    dashed = raw.assign(Date=weeks.strftime("%d-%m-%Y").tolist() * 2)  # 07-01-2011: dashes too
    assert prepare(dashed, _periods_cfg(tmp_path), SECRET).panel.equals(iso)
    raw.loc[1, "Date"] = "01/14/2011"  # the other order in the same column
    with pytest.raises(
        ConfigError, match=r"mixes day/month and month/day dates \('21/01/2011', '01/14/2011'\)"
    ):
        prepare(raw, _periods_cfg(tmp_path), SECRET)
    raw.loc[1, "Date"] = "14/01/2011"
    ambiguous = raw[raw["Date"].str[:2].astype(int) <= 12]  # every value reads either way
    with pytest.raises(ConfigError, match="set date_order"):
        prepare(ambiguous, _periods_cfg(tmp_path), SECRET)
    told = prepare(ambiguous, _periods_cfg(tmp_path, date_order="day-first"), SECRET)
    assert set(told.panel["date"]) <= set(iso["date"])
    raw.loc[1, "Date"] = "01/14/2011"  # contradicts the order the node set: quarantined, not swapped
    out = prepare(raw, _periods_cfg(tmp_path, date_order="day-first"), SECRET)
    assert out.counts()["unreadable timestamp"] == 1


def test_date_order_must_be_day_first_or_month_first(tmp_path):
    with pytest.raises(ConfigError, match="date_order must be one of 'day-first', 'month-first', got 'dmy'"):
        _periods_cfg(tmp_path, date_order="dmy")


def test_missing_configured_column_is_a_clear_error(tmp_path):
    cfg = parse_data_config(
        {"path": "x.csv", "timestamp": "ts", "quantity": "qty", "series_keys": ["sku"]}, tmp_path
    )
    with pytest.raises(ConfigError, match="missing columns: qty"):
        prepare(pd.DataFrame({"ts": ["2024-01-01"], "sku": ["A"]}), cfg, SECRET)


def test_unknown_config_keys_and_frequencies_are_refused(tmp_path):
    base = {"path": "x.csv", "timestamp": "ts", "quantity": "qty", "series_keys": ["sku"]}
    with pytest.raises(ConfigError, match="unknown keys: colour"):
        parse_data_config({**base, "colour": "red"}, tmp_path)
    with pytest.raises(ConfigError, match="frequency"):
        parse_data_config({**base, "frequency": "M"}, tmp_path)


def _orders_node(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / name).write_text(text)
    (tmp_path / "node.toml").write_text(
        f'[node]\nname = "w"\n\n[data]\npath = "{name}"\nkind = "orders"\nfrequency = "D"\n'
        'timestamp = "ts"\nquantity = "qty"\nseries_keys = ["sku"]\n'
    )
    return tmp_path


def test_quarantined_rows_name_their_line_in_the_raw_file(tmp_path):
    from common.config import load_node_config
    from warehouse_node.pipeline import QUARANTINE_FILE, prepare_node

    lines = [
        "ts,qty,sku,note",  # 1
        "2024-01-01T10:00,3,A,ok",  # 2
        "",  # 3: blank, pandas skips it
        '2024-01-02T10:00,2,A,"two',  # 4: a line break inside quotes: the record is named by its lines
        'lines"',  # 5
        "2024-01-03T10:00,1,A,x,extra",  # 6: malformed, skipped
        "garbage,4,A,x",  # 7
        "2024-01-04T10:00,-2,A,x",  # 8: a return
        "2024-01-05T10:00,abc,A,x",  # 9
        "2024-01-06T10:00,5,A,x",  # 10
    ]
    cfg = load_node_config(_orders_node(tmp_path, "orders.csv", "\n".join(lines) + "\n"))
    prepare_node(cfg)
    q = pd.read_csv(cfg.private_dir / QUARANTINE_FILE).set_index("reason")["source"]
    assert q.filter(like="malformed").tolist() == ["lines 4-5", "line 6"]
    assert q.filter(like="unreadable timestamp").tolist() == ["line 7"]
    assert q.filter(like="return").tolist() == ["line 8"]
    assert q.filter(like="non-numeric quantity").tolist() == ["line 9"]


def test_quarantined_rows_of_a_parquet_file_or_an_unmatched_csv_name_their_row(tmp_path):
    from common.tables import read_table, row_locator

    frame = pd.DataFrame({"ts": ["2024-01-01", "garbage", "2024-01-02"], "qty": ["1", "2", "-1"], "sku": "A"})
    frame.to_parquet(tmp_path / "orders.parquet")
    raw = read_table(tmp_path / "orders.parquet")
    assert row_locator(tmp_path / "orders.parquet", raw)(np.array([1, 2])) == ["row 2", "row 3"]
    frame.to_csv(tmp_path / "orders.csv", index=False)
    raw = read_table(tmp_path / "orders.csv")
    assert row_locator(tmp_path / "orders.csv", raw)(np.array([1, 2])) == ["line 3", "line 4"]
    changed = raw.assign(qty=["1", "9", "-1"])  # the rows no longer match the file's records
    assert row_locator(tmp_path / "orders.csv", changed)(np.array([1])) == ["row 2"]
    assert row_locator(tmp_path / "orders.csv", raw.iloc[:2])(np.array([1])) == ["row 2"]


def test_gigantic_or_infinite_quantities_are_quarantined_and_nested_cells_refused(tmp_path):
    weeks = pd.date_range("2011-01-07", periods=5, freq="W-FRI")
    raw = _two_depts(weeks).astype({"Weekly_Sales": object})
    raw.loc[1, "Weekly_Sales"], raw.loc[2, "Weekly_Sales"] = "1e300", "inf"
    out = prepare(raw, _periods_cfg(tmp_path), SECRET)
    assert out.counts()["quantity not finite or beyond 1e+12"] == 2
    assert np.isfinite(out.panel["demand"]).all()
    nested = _two_depts(weeks).astype({"Weekly_Sales": object})
    nested["Weekly_Sales"] = [[1.0, 2.0]] * len(nested)
    with pytest.raises(ConfigError, match="column 'Weekly_Sales' holds list cells"):
        prepare(nested, _periods_cfg(tmp_path), SECRET)


@pytest.mark.parametrize("kind", ["bool", "boolean"])
def test_holiday_flags_stored_as_booleans_are_read_not_quarantined(tmp_path, kind):
    """Parquet keeps IsHoliday as booleans (Walmart's files do): they are flags, not unreadable text."""
    weeks = pd.date_range("2011-01-07", periods=30, freq="W-FRI")
    raw = _weekly("1", weeks, np.full(30, 100.0))
    raw["IsHoliday"] = pd.Series([i in (5, 17) for i in range(30)], dtype=kind)
    out = prepare(raw, _periods_cfg(tmp_path), SECRET)
    assert not out.quarantine["reason"].str.startswith("unreadable").any()
    holiday = out.panel.sort_values("date")["holiday"].to_numpy()
    assert list(np.flatnonzero(holiday)) == [5, 17]
