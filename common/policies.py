"""Stocking policies: one interface, used by the node's replenish command and the replay simulator.

A policy turns a sku's demand forecast into the two levels of a periodic-review (s, S) rule for a
review made ``start`` periods into the forecast horizon, with lead time L and review period R:
the reorder point s (protects the L periods until an order arrives) and the order-up-to level S
(protects the R + L periods until the order after next arrives).

1. ``seed-rule``: the rule of the project's seeds, as written: safety stock = 0.2 × forecast, so
   s = 1.2 × forecast over L and S = 1.2 × forecast over R + L; the service level plays no part.
2. ``classical``: s = mean demand over L + z·σ·√L, S likewise over R + L; σ is the standard
   deviation of the node's own one-period forecast errors and z the normal quantile of α.
3. ``probabilistic``: s and S are α-quantiles of the demand SUMMED over L and over R + L, taken
   from sample paths of the model's forecast distribution (summing per-period quantiles would
   overstate the spread of a sum).

``bounds`` gives (s, S) for one sku or, with paths [skus, n, H], for many at once (the replay);
``levels`` adds the reason's numbers for one sku (the node's decision).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class DemandForecast:
    """A sku's forecast over the next H periods: sample paths [n, H] of the model's distribution
    and the standard deviation of its one-period point-forecast errors (None when unknown). Many
    skus at once: paths [skus, n, H] and residual_sd [skus]."""

    paths: np.ndarray
    residual_sd: float | np.ndarray | None = None
    mean: np.ndarray = field(init=False, repr=False, compare=False)  # per period
    _sorted_sums: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", self.paths.mean(axis=-2))  # computed once, read at every review

    def mean_sum(self, start: int, periods: int) -> float | np.ndarray:
        """Mean demand summed over ``periods`` from ``start`` (one per sku)."""
        return _one(self.mean[..., _span(self, start, periods)].sum(-1))

    def sum_quantile(self, start: int, periods: int, alpha: float) -> float | np.ndarray:
        """α-quantile (linear interpolation) of demand summed over ``periods`` from ``start``; the
        sorted sums are kept, as a replay asks for the same span at many service levels."""
        key = (start, periods)
        if key not in self._sorted_sums:
            self._sorted_sums[key] = np.sort(self.paths[..., _span(self, start, periods)].sum(-1), axis=-1)
        sums = self._sorted_sums[key]
        n = sums.shape[-1]
        pos = alpha * (n - 1)
        lo = int(np.floor(pos))
        hi = min(lo + 1, n - 1)
        return _one(sums[..., lo] + (pos - lo) * (sums[..., hi] - sums[..., lo]))


@dataclass(frozen=True)
class StockLevels:
    reorder_point: float
    order_up_to: float
    basis: str  # how the levels were set, with numbers, for the decision's reason


class Policy(Protocol):
    name: str

    def bounds(self, f: DemandForecast, start: int, lead: int, review: int, alpha: float) -> tuple: ...

    def levels(self, f: DemandForecast, start: int, lead: int, review: int, alpha: float) -> StockLevels: ...


def _span(f: DemandForecast, start: int, periods: int) -> slice:
    horizon = f.paths.shape[-1]
    if start < 0 or start + periods > horizon:
        raise ValueError(
            f"periods {start}..{start + periods - 1} reach past the forecast horizon of {horizon}"
        )
    return slice(start, start + periods)


def _one(value: np.ndarray) -> float | np.ndarray:
    """A plain float for one sku, the array for many."""
    return float(value) if np.ndim(value) == 0 else value


@dataclass(frozen=True)
class SeedRule:
    name: str = "seed-rule"
    safety_share: float = 0.2

    def bounds(self, f: DemandForecast, start: int, lead: int, review: int, alpha: float) -> tuple:
        k = 1 + self.safety_share
        return k * f.mean_sum(start, lead), k * f.mean_sum(start, lead + review)

    def levels(self, f: DemandForecast, start: int, lead: int, review: int, alpha: float) -> StockLevels:
        s, big_s = self.bounds(f, start, lead, review, alpha)
        k = 1 + self.safety_share
        return StockLevels(
            s,
            big_s,
            f"reorder point {s:.1f} = {k:g} × forecast over {lead} periods, "
            f"order-up-to {big_s:.1f} = {k:g} × forecast over {lead + review} periods",
        )


@dataclass(frozen=True)
class Classical:
    name: str = "classical"

    def bounds(self, f: DemandForecast, start: int, lead: int, review: int, alpha: float) -> tuple:
        if f.residual_sd is None or not np.all(np.isfinite(f.residual_sd)):
            raise ValueError("the classical policy needs the forecast's residual standard deviation")
        z = NormalDist().inv_cdf(alpha)
        s = f.mean_sum(start, lead) + z * f.residual_sd * np.sqrt(lead)
        return s, f.mean_sum(start, lead + review) + z * f.residual_sd * np.sqrt(lead + review)

    def levels(self, f: DemandForecast, start: int, lead: int, review: int, alpha: float) -> StockLevels:
        s, big_s = self.bounds(f, start, lead, review, alpha)
        z = NormalDist().inv_cdf(alpha)
        lead_mean = f.mean_sum(start, lead)
        return StockLevels(
            s,
            big_s,
            f"reorder point {s:.1f} = mean {lead_mean:.1f} over {lead} periods + z {z:.2f} × σ "
            f"{f.residual_sd:.1f} × √{lead}, order-up-to {big_s:.1f} over {lead + review} periods",
        )


@dataclass(frozen=True)
class Probabilistic:
    name: str = "probabilistic"

    def bounds(self, f: DemandForecast, start: int, lead: int, review: int, alpha: float) -> tuple:
        return f.sum_quantile(start, lead, alpha), f.sum_quantile(start, lead + review, alpha)

    def levels(self, f: DemandForecast, start: int, lead: int, review: int, alpha: float) -> StockLevels:
        s, big_s = self.bounds(f, start, lead, review, alpha)
        pct = f"P{alpha * 100:.0f}"
        return StockLevels(
            s,
            big_s,
            f"reorder point {s:.1f} = {pct} of {lead}-period demand, "
            f"order-up-to {big_s:.1f} = {pct} of {lead + review}-period demand",
        )


POLICIES: dict[str, Policy] = {p.name: p for p in (SeedRule(), Classical(), Probabilistic())}
