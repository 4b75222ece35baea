"""The year-long replay of whole systems, and the distribution center on the network forecast.

``Forecasts`` turns one system's long table (scripts/inventory_systems.py) into arrays over
(sku, review, step); ``sweep`` replays it with a stocking policy at every lead time, lost sales
and backorders, and every target in TARGETS (common/replay.py). ``distribution_center`` builds the
network forecast that the sites would sum under CKKS (common/network.py cells: the sum of means,
the sites' variances Σ var_site and Σ sd_site), calibrates the cross-site dependence from the
errors the sites saw before each review (``HoldoutSums``) and the correlation along the horizon
from the network errors of every step seen (``horizon_correlation``), scores the 80% interval of
the next period's network total, and replays a DC that stocks the network total from it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from common.inventory import ar1_normals, sample_paths_many
from common.network import HORIZON_FALLBACK, Z90, HoldoutSums, calibrated_sd, horizon_correlation
from common.policies import POLICIES, DemandForecast
from common.replay import ReplaySettings, plan_reviews, replay, summarise

# up to 0.999: with shortage at 50% of value and holding at 25% a year, the cost-optimal target is high
TARGETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.925, 0.95, 0.975, 0.99, 0.995, 0.999)
PATHS = 1000


@dataclass
class Forecasts:
    """One system's forecasts as arrays: mean [N, T, steps]; quantiles [N, T, steps, Q] or sd
    [N, T]; rho [N] (the correlation along the horizon of each sku's sample paths)."""

    mean: np.ndarray
    quantiles: np.ndarray | None
    levels: tuple[float, ...]
    sd: np.ndarray | None
    rho: np.ndarray
    missing: float  # share of (sku, review) without a forecast

    @classmethod
    def of(
        cls, panel: pd.DataFrame, keys: list[str], skus: pd.MultiIndex, origins: pd.DatetimeIndex, steps: int
    ):
        panel = panel[panel["step"] < steps]
        qcols = sorted(
            (c for c in panel.columns if c[0] == "q" and c[1:].isdigit()), key=lambda c: int(c[1:])
        )
        row = skus.get_indexer(pd.MultiIndex.from_frame(panel[keys]))
        col = origins.get_indexer(pd.DatetimeIndex(panel["origin"]))
        ok = (row >= 0) & (col >= 0)
        at = (row[ok], col[ok], panel["step"].to_numpy()[ok])
        shape = (len(skus), len(origins), steps)

        def filled(column: str) -> np.ndarray:
            out = np.full(shape, np.nan)
            out[at] = panel[column].to_numpy(dtype=float)[ok]
            return out

        quantiles = np.stack([filled(c) for c in qcols], axis=-1) if qcols else None
        sd_col = "sd" if "sd" in panel else "residual_sd" if "residual_sd" in panel else None
        rho = np.full(len(skus), 0.5)
        if "path_corr" in panel:
            rho = np.nan_to_num(np.nanmedian(filled("path_corr")[..., 0], axis=1), nan=0.5)
        mean = filled("mean")
        levels = tuple(int(c[1:]) / 100 for c in qcols)
        sd = filled(sd_col)[..., 0] if sd_col else None
        return cls(mean, quantiles, levels, sd, rho, float(np.isnan(mean[..., 0]).mean()))

    def at(self, t: int, probabilistic: bool, seed: int) -> DemandForecast:
        """The forecast in use at review t over every sku (NaN rows: no forecast, no order)."""
        mean = self.mean[:, t]
        if probabilistic:
            q = self.quantiles[:, t]
            rng = np.random.default_rng([seed, t])  # the same draws for every system and lead
            paths = sample_paths_many(np.nan_to_num(q), self.levels, self.rho, PATHS, rng)
            paths[np.isnan(q).any(axis=(1, 2))] = np.nan
            return DemandForecast(paths)
        sd = None if self.sd is None else np.nan_to_num(self.sd[:, t])
        return DemandForecast(mean[:, None, :], sd)


def sweep(
    fc: Forecasts,
    policy: str,
    demand: np.ndarray,
    leads: tuple[int, ...],
    warmup: int,
    year: float,
    seed: int,
) -> pd.DataFrame:
    """Every lead time × lost sales / backorders × target for one system and policy."""
    rows = []
    probabilistic = policy == "probabilistic"
    targets = TARGETS if policy != "seed-rule" else (TARGETS[0],)  # the seed rule ignores the target
    for lead in leads:
        base = ReplaySettings(
            lead_time=lead, review_period=1, warmup=warmup, holding_rate=0.25 / year, periods_per_year=year
        )
        at = _OneReview(fc, probabilistic, seed)
        plans = plan_reviews(at, demand.shape[1], POLICIES[policy], targets, base)
        for backorders in (False, True):
            settings = replace(base, backorders=backorders)
            for alpha, plan in plans.items():
                safety = plan.order_up_to - plan.cycle_demand
                rows.append(
                    {
                        "lead": lead,
                        "sales": "backorders" if backorders else "lost sales",
                        "target": alpha,
                        **summarise(replay(demand, plan, settings)),
                        "safety_stock": float(np.nansum(np.nanmean(safety[:, warmup:], axis=1))),
                    }
                )
    return pd.DataFrame(rows)


class _OneReview:
    """``forecast_at`` over a system's forecasts, keeping only the review asked last (the sample
    paths of every review would not fit in memory)."""

    def __init__(self, fc: Forecasts, probabilistic: bool, seed: int) -> None:
        self.fc, self.probabilistic, self.seed = fc, probabilistic, seed
        self.kept: tuple[int, DemandForecast] | None = None

    def __call__(self, t: int) -> tuple[DemandForecast, int]:
        if self.kept is None or self.kept[0] != t:
            self.kept = (t, self.fc.at(t, self.probabilistic, self.seed))
        return self.kept[1], 0


def at_fill(curve: pd.DataFrame, fill: float, column: str = "on_hand_value") -> float:
    """``column`` at an achieved fill rate, by linear interpolation along the curve (NaN outside)."""
    c = curve.sort_values("fill_rate")
    if c["fill_rate"].nunique() < 2 or not c["fill_rate"].min() <= fill <= c["fill_rate"].max():
        return float("nan")
    return float(np.interp(fill, c["fill_rate"], c[column]))


@dataclass(frozen=True)
class NetworkForecast:
    """Per review t and step: the network mean, Σ_s var_site and Σ_s sd_site (what the planner
    decrypts), the network total's error (once its period is seen), each site's own total and
    error terms, and the truth."""

    mean: np.ndarray  # [T, steps]
    var_site: np.ndarray  # [T, steps]
    sd_site: np.ndarray  # [T, steps]
    site_mean: np.ndarray  # [sites, T] step 0
    site_var: np.ndarray  # [sites, T] step 0
    site_actual: np.ndarray  # [sites, T] the period each step-0 forecast is for
    error: np.ndarray  # [T, steps] network actual - mean of the period review t's step h is for
    sites_path_corr: float  # the mean of the sites' own correlation along the horizon (reported)

    @classmethod
    def of(cls, fc: Forecasts, demand: np.ndarray, site_of: np.ndarray) -> NetworkForecast:
        lo, hi = fc.levels.index(0.1), fc.levels.index(0.9)
        sd = np.clip(fc.quantiles[..., hi] - fc.quantiles[..., lo], 0, None) / (2 * Z90)  # [N, T, steps]
        sites = np.unique(site_of)
        by_site = np.stack([np.nansum(sd[site_of == s], axis=0) for s in sites])  # [S, T, steps]
        means = np.stack([np.nansum(fc.mean[site_of == s], axis=0) for s in sites])
        actual = np.stack([demand[site_of == s].sum(axis=0) for s in sites])  # [S, T]
        periods, steps = fc.mean.shape[1:]
        truth = np.append(actual.sum(0), np.full(steps, np.nan))  # periods past the end: unseen
        ahead = np.arange(periods)[:, None] + np.arange(steps)[None, :]
        return cls(
            means.sum(0),
            np.square(by_site).sum(0),
            by_site.sum(0),
            means[..., 0],
            np.square(by_site[..., 0]),
            actual,
            truth[ahead] - means.sum(0),
            float(np.nanmean(fc.rho)),
        )

    def calibration(self, t: int, window: int) -> tuple[float, float, float]:
        """(ρ, k) from the step-0 errors of reviews whose period was seen before review t, and the
        correlation along the horizon from the network errors of every step seen by then."""
        seen = slice(max(0, t - window), t)  # review τ forecasts period τ; seen by review t when τ < t
        errors = self.site_actual[:, seen] - self.site_mean[:, seen]
        along = self.error[seen].copy()
        along[np.arange(seen.start, t)[:, None] + np.arange(along.shape[1])[None, :] >= t] = np.nan
        rho_time = horizon_correlation(along)
        rho_time = HORIZON_FALLBACK if rho_time is None else rho_time
        if errors.shape[1] < 2:
            return 1.0, 1.0, rho_time
        sums = HoldoutSums(
            errors.sum(axis=0),
            float(np.square(errors).mean(axis=1).sum()),
            float(np.sqrt(np.square(errors).mean(axis=1)).sum()),
            float(self.site_var[:, seen].mean(axis=1).sum()),
        )
        return (*sums.dependence(), rho_time)


def distribution_center(
    net: NetworkForecast, first: int, warmup: int, leads: tuple[int, ...], year: float, window: int, seed: int
) -> tuple[pd.DataFrame, dict]:
    """Replay the DC over reviews ``first``.. (the earlier ones only calibrate) and score the
    interval: returns the DC's sweep and the coverage / dependence figures."""
    reviews = net.mean.shape[0] - first
    cal = [net.calibration(first + t, window) for t in range(reviews)]
    rho, k, rho_time = (np.array(c) for c in zip(*cal, strict=True))
    sd = calibrated_sd(net.var_site[first:], net.sd_site[first:], rho[:, None], k[:, None])
    truth = net.site_actual[:, first:].sum(axis=0)
    mean = net.mean[first:]
    scored = slice(warmup, None)
    inside = {}
    for name, spread in {
        "calibrated": sd,
        "site": np.sqrt(net.var_site[first:]),
        "network": net.sd_site[first:],
    }.items():
        hit = np.abs(truth - mean[:, 0]) <= Z90 * spread[:, 0]
        inside[name] = float(hit[scored].mean())
    rng = np.random.default_rng(seed)
    z = ar1_normals(rng.standard_normal((reviews, PATHS, mean.shape[1])), rho_time[:, None])
    paths = np.clip(mean[:, None, :] + sd[:, None, :] * z, 0, None)  # [T, n, steps]
    rows = []
    for lead in leads:
        base = ReplaySettings(
            lead_time=lead, review_period=1, warmup=warmup, holding_rate=0.25 / year, periods_per_year=year
        )
        plans = plan_reviews(
            lambda t: (DemandForecast(paths[t][None]), 0), reviews, POLICIES["probabilistic"], TARGETS, base
        )
        for alpha, plan in plans.items():
            safety = plan.order_up_to - plan.cycle_demand
            rows.append(
                {
                    "lead": lead,
                    "sales": "lost sales",
                    "target": alpha,
                    **summarise(replay(truth[None], plan, base)),
                    "safety_stock": float(np.nanmean(safety[:, warmup:])),
                }
            )
    figures = {
        "coverage80": inside,
        "rho_median": float(np.median(rho[scored])),
        "k_median": float(np.median(k[scored])),
        "horizon_rho_median": float(np.median(rho_time[scored])),
        "sites_path_corr": net.sites_path_corr,
        "weeks": int(len(truth) - warmup),
    }
    return pd.DataFrame(rows), figures
