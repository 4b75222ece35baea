"""The network interval's cross-site dependence, calibrated from sums the sites can encrypt."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from common.inventory import ar1_normals
from common.network import (
    HORIZON_FALLBACK,
    HoldoutSums,
    Layout,
    calibrated_sd,
    holdout_cells,
    horizon_correlation,
    network_table,
    summed_holdout,
)


def _sums(rho: float, sites: int = 30, periods: int = 4000, predicted_scale: float = 1.0) -> HoldoutSums:
    rng = np.random.default_rng(0)
    sd = rng.uniform(1, 5, sites)  # sites of different sizes
    cov = rho * np.outer(sd, sd) + (1 - rho) * np.diag(sd**2)
    errors = rng.multivariate_normal(np.zeros(sites), cov, size=periods).T  # [sites, periods]
    per_site = np.square(errors).mean(axis=1)  # what each site computes alone
    return HoldoutSums(
        errors.sum(axis=0),
        float(per_site.sum()),
        float(np.sqrt(per_site).sum()),
        float((sd**2).sum() * predicted_scale),
    )


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.8])
def test_the_correlation_between_sites_is_recovered_from_the_sums(rho):
    estimated, k = _sums(rho).dependence()
    assert estimated == pytest.approx(rho, abs=0.05)
    assert k == pytest.approx(1.0, rel=0.05)


def test_a_forecast_that_is_too_wide_at_the_sites_is_scaled_down():
    _, k = _sums(0.3, predicted_scale=4.0).dependence()
    assert k == pytest.approx(0.25, rel=0.05)


def test_no_correlation_and_full_correlation_are_the_site_and_network_assumptions():
    var_site, sd_site = np.array([4.0, 9.0]), np.array([6.0, 10.0])
    np.testing.assert_allclose(calibrated_sd(var_site, sd_site, 0.0, 1.0), np.sqrt(var_site))
    np.testing.assert_allclose(calibrated_sd(var_site, sd_site, 1.0, 1.0), sd_site)
    np.testing.assert_allclose(calibrated_sd(var_site, sd_site, 1.0, 4.0), 2 * sd_site)


@pytest.mark.parametrize("persistence", [0.0, 0.5, 0.9])
def test_the_persistence_of_network_errors_along_the_horizon_is_recovered(persistence):
    rng = np.random.default_rng(1)
    errors = ar1_normals(rng.standard_normal((400, 8)), persistence) * 50.0  # 400 origins, 8 steps
    errors[-3:, -2:] = np.nan  # periods not seen yet
    assert horizon_correlation(errors) == pytest.approx(persistence, abs=0.05)


def test_too_few_errors_measure_no_persistence():
    assert horizon_correlation(np.array([[1.0, 2.0, 3.0]])) is None  # two pairs
    assert horizon_correlation(np.zeros((5, 4))) is None


def _site_holdout(dates, error: np.ndarray) -> pd.DataFrame:
    mean = np.full(len(error), 100.0)
    return pd.DataFrame(
        {"date": dates, "mean": mean, "q10": mean - 12.8, "q90": mean + 12.8, "actual": mean + error}
    )


def test_periods_after_every_hold_out_window_count_as_unseen_not_as_zero_error():
    """A hold-out window shorter than the network's periods leaves zeros in the cells: they are no
    period of perfect forecasts."""
    rng = np.random.default_rng(2)
    dates = pd.date_range("2024-01-01", periods=6, freq="D")
    errors = ar1_normals(rng.standard_normal((3, 6)), 0.6) * 10  # three sites
    holdouts = [_site_holdout(dates, e) for e in errors]
    short, full = Layout.of("", "", 10), Layout.of("", "", 6)  # 4 periods past the hold-out
    totals = {
        name: np.concatenate(
            [
                np.zeros(layout.forecast_cells),
                np.sum([holdout_cells(h, layout.periods) for h in holdouts], 0),
                [3],
            ]
        )
        for name, layout in (("short", short), ("full", full))
    }
    padded, exact = summed_holdout(totals["short"], short), summed_holdout(totals["full"], full)
    assert np.isnan(padded.network_error[6:]).all()
    assert padded.dependence() == pytest.approx(exact.dependence())
    assert padded.horizon_correlation() == pytest.approx(exact.horizon_correlation())


def test_a_network_forecast_without_hold_out_errors_says_its_horizon_correlation_is_assumed():
    layout = Layout.of("", "", 4)
    cells = np.zeros((1, 4, 4))
    cells[..., 0], cells[..., 1:] = 100.0, 25.0
    totals = np.concatenate([cells.ravel(), np.zeros(2 * 4 + 3), [3]])
    table = network_table(totals, layout, list(pd.date_range("2024-01-01", periods=4)))
    assert table["path_corr"].eq(HORIZON_FALLBACK).all()
