"""The year-long inventory benchmark's own rules: its schedule never trains on a period it scores,
and the network interval calibrated from summed errors covers as it says where sites co-move."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from common.inventory import ar1_normals
from scripts.inventory_replay import Forecasts, NetworkForecast, distribution_center
from scripts.inventory_systems import SETUPS, Timeline


@pytest.mark.parametrize("name", ["walmart", "store_item"])
def test_every_review_is_served_once_by_a_model_trained_before_it(name):
    setup = SETUPS[name]
    freq = "7D" if name == "walmart" else "D"
    dates = pd.date_range("2010-02-05", periods=setup.scored + setup.warmup + 400, freq=freq)
    tl = Timeline.of(pd.DataFrame({"Date" if name == "walmart" else "date": dates}), name, setup)
    served = [o for k in range(tl.trainings) for o in tl.served_by(k)]
    assert served == list(tl.origins) and len(tl.replay_dates) == setup.scored + setup.warmup
    assert tl.replay_dates[-1] == dates[-1]  # the last year of the history is scored
    for k in range(tl.trainings):
        assert min(tl.served_by(k)) >= tl.training_origin(k)  # never forecasts before its training
    calibration = tl.served_by(0, calibration=True)[: tl.calibration]
    assert calibration[-1] < tl.origins[0] and len(calibration) == tl.calibration


def _network(
    rho: float, reviews: int = 400, sites: int = 12, seed: int = 0, persistence: float = 0.0
) -> NetworkForecast:
    """Sites whose one-period errors are normal with sd 10 and correlation ``rho`` between sites,
    and ``persistence`` from one period to the next; each site's forecast says sd 10 (q10/q90 at
    ∓12.8) around a mean of 100."""
    rng = np.random.default_rng(seed)
    cov = 100 * (rho * np.ones((sites, sites)) + (1 - rho) * np.eye(sites))
    shocks = rng.multivariate_normal(np.zeros(sites), cov, size=reviews).T  # [sites, T]
    demand = 100 + ar1_normals(shocks, persistence)
    mean = np.full((sites, reviews, 3), 100.0)
    z = 1.2815515655446004 * 10
    levels = np.stack([mean - z, mean, mean + z], axis=-1)
    fc = Forecasts(mean, levels, (0.1, 0.5, 0.9), None, np.zeros(sites), 0.0)
    return NetworkForecast.of(fc, demand, np.arange(sites))


@pytest.mark.parametrize("rho", [0.0, 0.4])
def test_the_calibrated_network_interval_covers_80_percent_where_sites_move_together(rho):
    _, figures = distribution_center(_network(rho), 52, 4, (1,), 52.0, 52, seed=1)
    assert figures["coverage80"]["calibrated"] == pytest.approx(0.8, abs=0.06)
    assert figures["rho_median"] == pytest.approx(rho, abs=0.12)
    if rho:  # sites assumed independent under-cover; all moving together over-covers
        assert figures["coverage80"]["site"] < 0.7 and figures["coverage80"]["network"] > 0.9


def test_the_distribution_center_holds_more_stock_for_a_higher_target():
    dc, _ = distribution_center(_network(0.4), 52, 4, (1, 2), 52.0, 52, seed=1)
    for _, g in dc.groupby("lead"):
        g = g.sort_values("target")
        assert g["on_hand_value"].is_monotonic_increasing and g["fill_rate"].iloc[-1] > g["fill_rate"].iloc[0]


@pytest.mark.parametrize("persistence", [0.0, 0.7])
def test_the_dc_correlates_its_periods_as_much_as_the_network_errors_persisted(persistence):
    _, figures = distribution_center(_network(0.4, persistence=persistence), 52, 4, (2,), 52.0, 52, seed=1)
    assert figures["horizon_rho_median"] == pytest.approx(persistence, abs=0.12)
    assert figures["sites_path_corr"] == 0.0  # what the sites' own paths said: not what was used
