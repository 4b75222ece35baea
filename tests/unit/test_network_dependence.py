"""The network interval's cross-site dependence, calibrated from sums the sites can encrypt."""

from __future__ import annotations

import numpy as np
import pytest

from common.network import HoldoutSums, calibrated_sd


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
