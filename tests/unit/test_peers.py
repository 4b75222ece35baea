"""Benchmark peers (scripts/peers.py): output shape, quantile order and no look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("lightgbm")
pytest.importorskip("statsforecast")

from scripts import peers

KEYS = ["Store", "Dept"]
HORIZON = 13


def weekly_history(weeks: int = 120, seed: int = 0) -> pd.DataFrame:
    """2 stores × 3 depts of seasonal weekly sales; one dept is too short for a season."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2015-01-02", periods=weeks, freq="W-FRI")
    rows = []
    for store in (1, 2):
        for dept in (1, 2, 3):
            base = 50.0 * store * dept
            y = base * (1 + 0.3 * np.sin(np.arange(weeks) * 2 * np.pi / 52)) + rng.normal(0, 5, weeks)
            keep = slice(weeks - 20, None) if (store, dept) == (2, 3) else slice(None)
            frame = pd.DataFrame({"Store": store, "Dept": dept, "Date": dates, "Weekly_Sales": y})
            rows.append(frame.iloc[keep])
    return pd.concat(rows, ignore_index=True)


def forecast(method, history: pd.DataFrame) -> pd.DataFrame:
    args = (history, KEYS, "Date", "Weekly_Sales", "W-FRI", HORIZON)
    return peers.autoets(*args, 52) if method == "autoets" else getattr(peers, method)(*args, rounds=20)


@pytest.mark.parametrize("method", ["autoets", "lightgbm_global", "lightgbm_per_store"])
def test_one_ordered_row_per_series_and_horizon_date(method):
    history = weekly_history()
    out = forecast(method, history)
    last = history["Date"].max()
    expected = pd.date_range(last, periods=HORIZON + 1, freq="W-FRI")[1:]
    assert list(out.columns) == [*KEYS, "Date", "mean", "q10", "q50", "q90"]
    assert len(out) == 6 * HORIZON and not out.duplicated([*KEYS, "Date"]).any()
    assert set(out["Date"]) == set(expected)
    assert not out.isna().any().any()
    assert (out["q10"] <= out["q50"]).all() and (out["q50"] <= out["q90"]).all()
    assert np.allclose(out["mean"], out["q50"])
    # the seasonal series is followed: forecasts are in the range of its own level, not another's
    big = out[(out["Store"] == 2) & (out["Dept"] == 2)]["mean"].mean()
    small = out[(out["Store"] == 1) & (out["Dept"] == 1)]["mean"].mean()
    assert big > 2.5 * small


def test_forecast_ignores_rows_after_the_cutoff_it_is_given():
    """What the benchmark hands over is history ≤ cutoff; different futures give the same forecast."""
    full = weekly_history(133)
    cutoff = full["Date"].sort_values().unique()[119]
    changed = full.copy()
    after = changed["Date"] > cutoff
    changed.loc[after, "Weekly_Sales"] *= 10
    a = forecast("lightgbm_global", full[full["Date"] <= cutoff])
    b = forecast("lightgbm_global", changed[changed["Date"] <= cutoff])
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("spec", [peers.WEEKLY, peers.DAILY], ids=["weekly", "daily"])
def test_features_at_origin_plus_h_use_only_data_up_to_the_origin(spec):
    horizon = 13 if spec is peers.WEEKLY else 90
    rng = np.random.default_rng(1)
    values = rng.random((2 * spec.season + 3 * horizon, 4))
    origin = 2 * spec.season + horizon
    before = peers.feature_frame(values, spec, [origin], horizon)
    perturbed = values.copy()
    perturbed[origin + 1 :] = rng.random(perturbed[origin + 1 :].shape) * 100
    after = peers.feature_frame(perturbed, spec, [origin], horizon)
    features = [c for c in before.columns if c != "y"]
    pd.testing.assert_frame_equal(before[features], after[features])
    assert not np.allclose(before["y"], after["y"])  # the target itself is read at origin + h
    # the seasonal lag is the value exactly one season before the target period
    row = before[(before["h"] == horizon) & (before["series"] == 0)].iloc[0]
    assert row[f"lag_s{spec.season}"] == values[origin + horizon - spec.season, 0]
    assert row["lag_o0"] == values[origin, 0]


def test_seasonal_lags_must_be_longer_than_the_horizon():
    with pytest.raises(ValueError, match="longer than the horizon"):
        peers.feature_frame(np.ones((200, 2)), peers.WEEKLY, [150], 60)


def test_missing_extra_names_the_install_command(monkeypatch):
    def refuse(name):
        raise ImportError(name)

    monkeypatch.setattr(peers.importlib, "import_module", refuse)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[peers\]'"):
        peers.lightgbm_global(weekly_history(), KEYS, "Date", "Weekly_Sales", "W-FRI", HORIZON)


@pytest.mark.parametrize("length", [1, 3, 30])
def test_autoets_falls_back_on_series_too_short_for_ets(length):
    low, mean, high = peers._ets_one(np.linspace(5.0, 6.0, length), 52, HORIZON)
    assert all(len(v) == HORIZON and np.isfinite(v).all() for v in (low, mean, high))
    assert (low <= mean).all() and (mean <= high).all()


@pytest.mark.parametrize("peer", ["lightgbm", "autoets"])
def test_a_fitted_peer_asked_from_later_origins_reads_only_history_up_to_each(peer):
    """The inventory replay fits once and asks again from later origins with more history at hand:
    each forecast must be the one that history up to its own origin gives."""
    full = weekly_history(133)
    dates = np.sort(full["Date"].unique())
    fitted_at, origins = dates[110], list(pd.DatetimeIndex(dates[112:116]))
    shape = (KEYS, "Date", "Weekly_Sales", "W-FRI")
    fit = full[full["Date"] <= fitted_at]
    if peer == "lightgbm":
        model = peers.RollingLightGBM.fit(fit, *shape, HORIZON, levels=(0.1, 0.5, 0.9), rounds=20)
    else:
        model = peers.RollingETS.fit(fit, *shape, 52)
    together = model.predict_at(full, origins, 3)
    # the short series starts after the fit: the fitted peer does not know it
    assert len(together) == 5 * len(origins) * 3 and set(together["origin"]) == set(origins)
    for origin in origins:  # each origin alone, with nothing after it at hand
        alone = model.predict_at(full[full["Date"] <= origin], [origin], 3)
        mine = together[together["origin"] == origin].reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, alone.reset_index(drop=True))
        assert (mine["step"].between(0, 2)).all()
