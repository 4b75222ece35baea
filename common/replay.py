"""Replay stocking decisions over actual demand, many skus at once (periodic review).

Each period t: orders due arrive (backorders are served first); at a review (every R periods) the
plan for t gives the reorder point s, the order-up-to level S and the mean demand expected before
the next review, all set from the forecast made just before period t (``plan_reviews``). When the
node's decision rule (common.inventory.review_status) says REPLENISH_NOW or WARNING for the
inventory position (on hand + on order − backorders), an order for S − position, raised to the MOQ
and rounded up to whole packs, is placed and arrives L periods later. Then demand is served from
stock; what cannot be served is lost or backordered. A review with no plan (NaN) orders nothing.

Metrics count the periods after ``warmup`` only (the opening stock, S at the first review, no
longer matters there): fill rate (demand served from stock in its own period / demand), cycle
service level (share of review cycles without a shortage), average on-hand in units and value,
stockout periods, orders placed, holding + shortage cost and inventory turnover (a year's sales
over the average stock, in value). Deterministic: no randomness beyond the given forecasts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from common.policies import DemandForecast, Policy


@dataclass(frozen=True)
class ReplaySettings:
    lead_time: int = 1
    review_period: int = 1
    backorders: bool = False  # False: unmet demand is lost
    moq: float = 0.0
    pack_size: float = 1.0
    warmup: int = 0  # periods replayed but not counted
    holding_rate: float = 0.25 / 52  # per period, as a share of unit value (25% a year, weekly)
    shortage_rate: float = 0.5  # per unit short, as a share of unit value (lost margin, goodwill)
    periods_per_year: float = 52.0

    def __post_init__(self) -> None:
        for name in ("lead_time", "review_period"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be a whole number of periods >= 1, got {value!r}")
        if self.moq < 0 or self.pack_size <= 0:
            raise ValueError("moq must be >= 0 and pack_size > 0")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0 periods, got {self.warmup}")


@dataclass(frozen=True)
class ReviewPlan:
    """What the policy says at each period's review, per sku: arrays [skus, periods], NaN where
    no forecast reaches R + L periods from that review."""

    reorder_point: np.ndarray
    order_up_to: np.ndarray
    review_demand: np.ndarray
    cycle_demand: np.ndarray  # mean demand over R + L: S minus it is the safety stock


def plan_reviews(
    forecast_at: Callable[[int], tuple[DemandForecast, int] | None],
    periods: int,
    policy: Policy,
    alphas: Sequence[float],
    s: ReplaySettings,
) -> dict[float, ReviewPlan]:
    """One plan per target service level. ``forecast_at(t)``: the forecast in use at period t's
    review (one DemandForecast over every sku) and period t's step in its horizon, or None."""
    lead, review = s.lead_time, s.review_period
    plans: dict[float, list[np.ndarray]] | None = None
    for t in range(periods):
        found = forecast_at(t) if t % review == 0 else None
        if found is not None and found[1] + lead + review > found[0].paths.shape[-1]:
            found = None  # R + L no longer fit in the forecast's horizon
        if plans is None and found is not None:
            skus = found[0].paths.shape[0]
            plans = {a: [np.full((skus, periods), np.nan) for _ in range(4)] for a in alphas}
        if found is None or plans is None:
            continue
        forecast, step = found
        expected, cycle = forecast.mean_sum(step, review), forecast.mean_sum(step, lead + review)
        for alpha in alphas:
            low, high = policy.bounds(forecast, step, lead, review, alpha)
            for arr, value in zip(plans[alpha], (low, high, expected, cycle), strict=True):
                arr[:, t] = value
    if plans is None:
        raise ValueError("no review has a forecast that reaches R + L periods")
    return {a: ReviewPlan(*arrays) for a, arrays in plans.items()}


def latest(made: Sequence[DemandForecast | None]) -> Callable[[int], tuple[DemandForecast, int] | None]:
    """``forecast_at`` for forecasts made at some periods (``made[t]``: the one made just before
    period t, its first step being period t; None where none was made): each review uses the
    latest one made by then."""

    def at(t: int) -> tuple[DemandForecast, int] | None:
        for when in range(min(t, len(made) - 1), -1, -1):
            if made[when] is not None:
                return made[when], t - when
        return None

    return at


def replay(
    demand: np.ndarray, plan: ReviewPlan, s: ReplaySettings, unit_value: np.ndarray | float = 1.0
) -> dict[str, np.ndarray]:
    """Per-sku sums over the counted periods (aggregate them with ``summarise``). demand [skus, T]."""
    demand = np.clip(np.nan_to_num(np.asarray(demand, dtype=float)), 0.0, None)
    skus, periods = demand.shape
    lead, review = s.lead_time, s.review_period
    first = np.argmax(np.isfinite(plan.order_up_to), axis=1)  # each sku opens at S of its first review
    on_hand = np.nan_to_num(plan.order_up_to[np.arange(skus), first])
    arrivals = np.zeros((skus, periods + lead + 1))
    backlog = np.zeros(skus)
    sums = {k: np.zeros(skus) for k in ("demand", "served", "on_hand", "stockouts", "orders")}
    cycles, cycles_ok = 0, np.zeros(skus)
    cycle_short = np.zeros(skus, bool)
    for t in range(periods):
        on_hand += arrivals[:, t]
        if s.backorders:
            cleared = np.minimum(on_hand, backlog)
            on_hand, backlog = on_hand - cleared, backlog - cleared
        if t % review == 0:
            sums["orders"] += _order(plan, t, s, on_hand - backlog, arrivals) * (t >= s.warmup)
        served = np.minimum(on_hand, demand[:, t])
        short = demand[:, t] - served
        on_hand -= served
        if s.backorders:
            backlog += short
        counted = t >= s.warmup
        cycle_short |= short > 1e-9
        if (t + 1) % review == 0 or t == periods - 1:  # a review cycle ends
            if counted:
                cycles += 1
                cycles_ok += ~cycle_short
            cycle_short[:] = False
        if counted:
            sums["demand"] += demand[:, t]
            sums["served"] += served
            sums["on_hand"] += on_hand
            sums["stockouts"] += short > 1e-9
    return _per_sku(sums, cycles, cycles_ok, periods - min(s.warmup, periods), unit_value, s)


def _order(plan: ReviewPlan, t: int, s: ReplaySettings, net: np.ndarray, arrivals: np.ndarray) -> np.ndarray:
    """The review in period t for every sku: order up to S where the decision rule says so (the
    orders land in ``arrivals`` L periods on). Returns 1 where an order was placed."""
    low, high, expected = plan.reorder_point[:, t], plan.order_up_to[:, t], plan.review_demand[:, t]
    position = net + arrivals[:, t + 1 :].sum(axis=1)
    planned = np.isfinite(low)
    # review_status: REPLENISH_NOW at or below s, WARNING when the next review's demand reaches s
    act = planned & (np.nan_to_num(position - expected, nan=np.inf) <= np.nan_to_num(low, nan=-np.inf))
    need = np.where(act, np.nan_to_num(high) - position, 0.0)
    qty = np.where(need > 0, np.maximum(need, s.moq), 0.0)
    packs = np.ceil(qty / s.pack_size - 1e-9 * np.maximum(1.0, qty / s.pack_size))
    qty = packs * s.pack_size
    arrivals[:, t + s.lead_time] += qty
    return (qty > 0).astype(float)


def _per_sku(sums: dict, cycles: int, cycles_ok: np.ndarray, periods: int, value, s: ReplaySettings) -> dict:
    value = np.broadcast_to(np.asarray(value, dtype=float), sums["demand"].shape)
    periods = max(periods, 1)
    short = sums["demand"] - sums["served"]
    return {
        "demand": sums["demand"],
        "served": sums["served"],
        "short": short,
        "sales_value": sums["served"] * value,
        "on_hand_units": sums["on_hand"] / periods,
        "on_hand_value": sums["on_hand"] / periods * value,
        "stockout_periods": sums["stockouts"],
        "periods": np.full(len(value), float(periods)),
        "cycles": np.full(len(value), float(cycles)),
        "cycles_ok": cycles_ok.astype(float),
        "orders": sums["orders"],
        "holding_cost": sums["on_hand"] * value * s.holding_rate,
        "shortage_cost": short * value * s.shortage_rate,
        "periods_per_year": np.full(len(value), s.periods_per_year),
    }


def summarise(per_sku: dict[str, np.ndarray]) -> dict[str, float]:
    """Portfolio metrics: on-hand is the total over skus, averaged over periods; turnover is a
    year's sales value over the average stock value."""
    total = {k: float(np.sum(v)) for k, v in per_sku.items()}
    periods = float(per_sku["periods"][0]) if len(per_sku["periods"]) else 1.0
    year = float(per_sku["periods_per_year"][0]) if len(per_sku["periods"]) else 52.0
    on_hand_value = total["on_hand_value"]
    return {
        "fill_rate": total["served"] / total["demand"] if total["demand"] > 0 else 1.0,
        "cycle_service_level": total["cycles_ok"] / total["cycles"] if total["cycles"] else 1.0,
        "on_hand_units": total["on_hand_units"],
        "on_hand_value": on_hand_value,
        "stockout_periods": total["stockout_periods"],
        "orders": total["orders"],
        "holding_cost": total["holding_cost"],
        "shortage_cost": total["shortage_cost"],
        "total_cost": total["holding_cost"] + total["shortage_cost"],
        "turnover": total["sales_value"] / periods * year / on_hand_value if on_hand_value > 0 else np.inf,
    }
