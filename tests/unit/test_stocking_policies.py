"""The three stocking policies, checked against hand-computed levels."""

from __future__ import annotations

import numpy as np
import pytest

from common.policies import Classical, DemandForecast, Probabilistic, SeedRule


def _flat(value: float = 10.0, horizon: int = 6, sd: float | None = 3.0) -> DemandForecast:
    return DemandForecast(np.full((100, horizon), value), residual_sd=sd)


def test_seed_rule_is_forecast_plus_twenty_percent_whatever_the_service_level():
    for alpha in (0.8, 0.99):
        levels = SeedRule().levels(_flat(), start=0, lead=2, review=1, alpha=alpha)
        assert levels.reorder_point == pytest.approx(24.0)
        assert levels.order_up_to == pytest.approx(36.0)


def test_classical_adds_z_sigma_root_lead_time():
    levels = Classical().levels(_flat(), start=0, lead=2, review=1, alpha=0.95)
    assert levels.reorder_point == pytest.approx(20 + 1.644854 * 3 * np.sqrt(2), rel=1e-5)
    assert levels.order_up_to == pytest.approx(30 + 1.644854 * 3 * np.sqrt(3), rel=1e-5)
    assert "z 1.64" in levels.basis


def test_classical_without_residuals_is_refused():
    with pytest.raises(ValueError, match="residual standard deviation"):
        Classical().levels(_flat(sd=None), 0, 2, 1, 0.95)


def test_probabilistic_takes_the_quantile_of_the_sum_not_the_sum_of_quantiles():
    rng = np.random.default_rng(0)
    paths = 10 + 3 * rng.standard_normal((200_000, 6))  # independent periods
    levels = Probabilistic().levels(DemandForecast(paths), start=1, lead=2, review=1, alpha=0.95)
    assert levels.order_up_to == pytest.approx(30 + 1.644854 * 3 * np.sqrt(3), abs=0.1)
    sum_of_quantiles = 3 * float(np.quantile(paths[:, 1], 0.95))
    assert levels.order_up_to < sum_of_quantiles - 4


def test_levels_later_in_the_horizon_use_those_periods():
    paths = np.tile(np.arange(1.0, 7.0), (10, 1))  # demand 1, 2, ..., 6
    assert SeedRule().levels(DemandForecast(paths), start=3, lead=1, review=1, alpha=0.9).order_up_to == (
        pytest.approx(1.2 * (4 + 5))
    )
    with pytest.raises(ValueError, match="past the forecast horizon"):
        Probabilistic().levels(DemandForecast(paths), start=4, lead=2, review=1, alpha=0.9)


def test_cached_quantile_of_the_sum_equals_numpys_at_every_service_level():
    rng = np.random.default_rng(5)
    f = DemandForecast(rng.gamma(2.0, 4.0, size=(999, 5)))
    for alpha in (0.5, 0.8, 0.95, 0.999):
        expected = np.quantile(f.paths[:, 1:4].sum(1), alpha)
        assert f.sum_quantile(1, 3, alpha) == pytest.approx(expected, rel=1e-12)
