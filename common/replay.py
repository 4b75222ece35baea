"""Replay a stocking policy over a held-out window of actual demand (periodic review).

Each period: orders due arrive; at a review (every R periods) the policy sets (s, S) from the
latest forecast: the one made at the window's origin, or, when the sku has them, the last one
re-made with the demand seen so far (``reforecasts``), using its steps from this period on. When
the node's decision rule (common.inventory.review_status) says REPLENISH_NOW or WARNING for the
inventory position (on hand + on order − backorders), an order for S − position, raised to
the MOQ and rounded up to whole packs, is placed and arrives L periods later. Then demand is
served from stock; what cannot be served is lost or backordered. Reviews stop once R + L periods
no longer fit in the horizon of the forecast in use.

Metrics: fill rate (demand served from stock in its own period / demand), cycle service level
(share of review cycles without a shortage), average on-hand in units and value, stockout periods,
orders placed, holding + shortage cost. Deterministic: no randomness beyond the given sample paths.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from common.inventory import OBSERVE, order_quantity, review_status
from common.policies import DemandForecast, Policy


@dataclass(frozen=True)
class ReplaySettings:
    lead_time: int = 1
    review_period: int = 1
    backorders: bool = False  # False: unmet demand is lost
    moq: float = 0.0
    pack_size: float = 1.0
    start_cover: float | None = None  # periods of mean forecast on hand at the start; None: S at t = 0
    holding_rate: float = 0.25 / 52  # per period, as a share of unit value (25% a year, weekly)
    shortage_rate: float = 0.5  # per unit short, as a share of unit value (lost margin, goodwill)

    def __post_init__(self) -> None:
        for name in ("lead_time", "review_period"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be a whole number of periods >= 1, got {value!r}")
        if self.moq < 0 or self.pack_size <= 0:
            raise ValueError("moq must be >= 0 and pack_size > 0")


@dataclass(frozen=True)
class SkuHistory:
    """One sku for the replay: actual demand over the window, the origin's forecast, unit value,
    and optionally ``reforecasts[t]``: the forecast made at the start of period t (before its
    demand), its first step being period t; None where none was made that period."""

    sku: str
    demand: np.ndarray
    forecast: DemandForecast
    unit_value: float = 1.0
    reforecasts: tuple[DemandForecast | None, ...] = ()

    def forecast_at(self, t: int) -> tuple[DemandForecast, int]:
        """The latest forecast made by period t, and period t's step in its horizon."""
        for made in range(min(t, len(self.reforecasts) - 1), 0, -1):
            if self.reforecasts[made] is not None:
                return self.reforecasts[made], t - made
        return self.forecast, t


def replay_sku(item: SkuHistory, policy: Policy, alpha: float, s: ReplaySettings) -> dict[str, float]:
    """Sums for one sku (aggregate them with ``summarise``)."""
    demand = np.clip(np.nan_to_num(item.demand.astype(float)), 0.0, None)
    periods = len(demand)
    lead, review = s.lead_time, s.review_period
    if s.start_cover is None:
        on_hand = policy.levels(item.forecast, 0, lead, review, alpha).order_up_to
    else:
        on_hand = s.start_cover * float(item.forecast.mean.mean())
    arrivals = np.zeros(periods + lead + 1)
    backlog = served_total = on_hand_total = orders = stockouts = 0.0
    cycle_short = np.zeros(-(-periods // review), bool)
    for t in range(periods):
        on_hand += arrivals[t]
        if s.backorders and backlog > 0:
            cleared = min(on_hand, backlog)
            on_hand, backlog = on_hand - cleared, backlog - cleared
        if t % review == 0:
            orders += _review(item, policy, alpha, s, t, on_hand - backlog, arrivals)
        served = min(on_hand, demand[t])
        short = demand[t] - served
        on_hand -= served
        served_total += served
        backlog += short if s.backorders else 0.0
        stockouts += short > 1e-9
        cycle_short[t // review] |= short > 1e-9
        on_hand_total += on_hand
    value = item.unit_value
    return {
        "demand": float(demand.sum()),
        "served": served_total,
        "short": float(demand.sum()) - served_total,
        "on_hand_units": on_hand_total / periods,
        "on_hand_value": on_hand_total / periods * value,
        "stockout_periods": stockouts,
        "periods": float(periods),
        "cycles": float(len(cycle_short)),
        "cycles_ok": float((~cycle_short).sum()),
        "orders": orders,
        "holding_cost": on_hand_total * value * s.holding_rate,
        "shortage_cost": (float(demand.sum()) - served_total) * value * s.shortage_rate,
    }


def _review(
    item: SkuHistory,
    policy: Policy,
    alpha: float,
    s: ReplaySettings,
    t: int,
    net: float,
    arrivals: np.ndarray,
) -> bool:
    """The review in period t: order up to S when the decision rule says so (the order lands in
    ``arrivals`` L periods on). ``net``: on hand − backorders. True when an order was placed."""
    forecast, step = item.forecast_at(t)
    if step + s.lead_time + s.review_period > forecast.paths.shape[1]:
        return False  # R + L no longer fit in the forecast's horizon
    levels = policy.levels(forecast, step, s.lead_time, s.review_period, alpha)
    position = net + arrivals[t + 1 :].sum()
    if review_status(position, levels.reorder_point, forecast.mean_sum(step, s.review_period)) == OBSERVE:
        return False
    qty = order_quantity(levels.order_up_to - position, s.moq, s.pack_size)
    arrivals[t + s.lead_time] += qty
    return qty > 0


def replay(items: list[SkuHistory], policy: Policy, alpha: float, s: ReplaySettings) -> pd.DataFrame:
    """Per-sku sums of one policy at one target service level."""
    rows = [{"sku": it.sku, **replay_sku(it, policy, alpha, s)} for it in items]
    return pd.DataFrame(rows)


def summarise(per_sku: pd.DataFrame) -> dict[str, float]:
    """Portfolio metrics: on-hand is the total over skus, averaged over periods."""
    total = per_sku.drop(columns=["sku"]).sum()
    return {
        "fill_rate": float(total["served"] / total["demand"]) if total["demand"] > 0 else 1.0,
        "cycle_service_level": float(total["cycles_ok"] / total["cycles"]),
        "on_hand_units": float(total["on_hand_units"]),
        "on_hand_value": float(total["on_hand_value"]),
        "stockout_periods": float(total["stockout_periods"]),
        "orders": float(total["orders"]),
        "holding_cost": float(total["holding_cost"]),
        "shortage_cost": float(total["shortage_cost"]),
        "total_cost": float(total["holding_cost"] + total["shortage_cost"]),
    }
